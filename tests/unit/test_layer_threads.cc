// SPDX-License-Identifier: Apache-2.0
// Threads within a layer: GroupNorm, the attention MatMuls, softmax, Resize and the broadcast
// Add/Mul on the simd kernels, and Concat, split a sample's groups, rows, channels, units or
// inputs over the pool, so batch 1 uses every thread. Velocities and Hutchinson log-likelihoods
// at batch 1 and 3 must have the same bits on 1, 2 and 3 threads (ctest entry
// test_layer_threads_pool, skipped without a thread pool).
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/requirements.hpp"

namespace {

std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

// x [48, 16, 16]: GroupNorm (8 groups) plus a per-channel time embedding, attention over the 256
// positions, the residual, nearest up-sampling to 32 x 32, another per-channel embedding and a
// square there, bilinear back to 16 x 16, times x, a Concat of three and a Slice of it. Sizes
// are such that every one of these layers splits a batch-1 sample between threads.
std::vector<uint8_t> layer_model() {
  std::mt19937 rng(91);
  siflow::ModelBuilder b(48 * 16 * 16);
  b.set_x_shape({48, 16, 16});
  uint32_t h = b.group_norm(b.x(), 8, random_floats(48, rng, 0.5f, 1.5f),
                            random_floats(48, rng, -0.5f, 0.5f));
  const uint32_t e = b.reshape(b.mul_constant(b.t(), random_floats(48, rng, -1, 1)), {48, 1, 1});
  h = b.add(h, e);
  const uint32_t flat = b.reshape(h, {48, 256});
  const uint32_t qt = b.transpose(flat, {48, 256}, {1, 0});  // [256, 48]
  const uint32_t attn = b.softmax(b.matmul(qt, qt, true, 0.1f));
  const uint32_t out = b.matmul(flat, attn, true);  // [48, 256]
  h = b.add(b.reshape(out, {48, 16, 16}), b.x());
  h = b.resize(h, siflow::ModelBuilder::Resize::kNearest, 32, 32);
  const uint32_t e2 = b.reshape(b.mul_constant(b.t(), random_floats(48, rng, -1, 1)), {48, 1, 1});
  h = b.add(h, e2);
  h = b.mul(h, h);
  h = b.resize(h, siflow::ModelBuilder::Resize::kBilinear, 16, 16);
  h = b.mul(h, b.x());
  // A three-input Concat ([144, 16, 16], split between threads by input); the Slice keeps half of
  // h and half of x.
  const uint32_t cat = b.reshape(b.concat({h, b.x(), h}), {144, 16, 16});
  b.set_output(b.slice(cat, {144, 16, 16}, 0, 24, 72));
  return b.finish();
}

struct Run {
  std::vector<float> v;
  std::vector<double> logp;
};

Run run(const siflow::Model& m, uint32_t threads, size_t n) {
  siflow::PlanOptions po;
  po.max_batch = n;
  po.backend = siflow::Backend::kSimd;
  po.threads = threads;
  po.divergence = siflow::DivergenceMode::kHutchinson;
  po.max_probes = 1;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  const size_t d = m.info().dim;
  std::mt19937 rng(5);
  Run r;
  const auto y = random_floats(n * d, rng, -1, 1);
  const auto t = random_floats(n, rng, 0.1f, 0.9f);
  r.v.resize(n * d);
  REQUIRE(plan->velocity(n, t.data(), y.data(), r.v.data()).ok());
  siflow::LogProbOptions lo;
  lo.ode.steps = 1;
  lo.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lo.divergence.probes = 1;
  r.logp.resize(n);
  const siflow::Status ls = plan->log_prob(n, y.data(), lo, r.logp.data());
  REQUIRE_MESSAGE(ls.ok(), std::string(ls.message()));
  return r;
}

TEST_CASE("the split layers of the model run on the simd kernels") {
  const auto bytes = layer_model();
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &m).ok());
  siflow::PlanOptions po;
  po.backend = siflow::Backend::kSimd;
  std::unique_ptr<siflow::Plan> plan;
  REQUIRE(siflow::Plan::create(*m, po, nullptr, 0, &plan).ok());
  // GroupNorm, the Mul and Adds, both MatMuls, the softmax and both Resizes (Concat has only the
  // reference kernel, which is what splits it).
  for (uint32_t node : {0u, 1u, 3u, 6u, 7u, 8u, 10u, 11u, 12u, 14u, 15u, 16u, 17u}) {
    INFO("node " << node);
    CHECK(std::string(plan->node_kernel(node)).rfind("simd/", 0) == 0);
  }
}

TEST_CASE("image layers split within a sample: the same bits on 1, 2 and 3 threads" *
          SIFLOW_NEEDS_POOL) {
  const auto bytes = layer_model();
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &m).ok());
  for (size_t n : {size_t{1}, size_t{3}}) {
    INFO("batch " << n);
    const Run one = run(*m, 1, n);
    for (uint32_t threads : {2u, 3u}) {
      INFO(threads << " threads");
      const Run more = run(*m, threads, n);
      CHECK(std::memcmp(more.v.data(), one.v.data(), one.v.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(more.logp.data(), one.logp.data(), one.logp.size() * sizeof(double)) == 0);
    }
  }
}

}  // namespace
