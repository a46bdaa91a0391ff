// SPDX-License-Identifier: Apache-2.0
// Threads within a layer: GroupNorm, the attention MatMuls, softmax, Resize and the broadcast
// Add/Mul on the simd kernels, and Concat, split a sample's groups, rows, channels, units or
// inputs over the pool, so batch 1 uses every thread; on an XNNPACK plan the NHWC Resize,
// GroupNorm and SiLU between convolutions, and the convolutions' parts, too. Velocities and
// Hutchinson log-likelihoods at batch 1 and 3 must have the same bits on 1, 2 and 3 threads (on
// every simd variant for the XNNPACK plan, and within 1e-5 of the reference backend) (ctest entry
// test_layer_threads_pool, skipped without a thread pool).
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "siflow/siflow.hpp"
#include "support/env_guard.hpp"
#include "support/requirements.hpp"
#include "support/simd_variants.hpp"
#include "support/split_layers_model.hpp"
#include "support/velocity_gap.hpp"

namespace {

using test_support::EnvGuard;

struct Run {
  std::vector<float> v;
  std::vector<double> logp;
};

// The model of `bytes`, read in place where they are aligned: they must outlive it.
std::unique_ptr<siflow::Model> load(const std::vector<uint8_t>& bytes) {
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  std::unique_ptr<siflow::Model> m;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &m).ok());
  return m;
}

Run run(const siflow::Model& m, uint32_t threads, size_t n,
        siflow::Backend backend = siflow::Backend::kSimd, bool tune = false,
        uint32_t* velocity_threads = nullptr, size_t* block_rows = nullptr) {
  siflow::PlanOptions po;
  po.max_batch = n;
  po.backend = backend;
  po.threads = threads;
  po.tune = tune;
  po.divergence = siflow::DivergenceMode::kHutchinson;
  po.max_probes = 1;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  if (velocity_threads) *velocity_threads = plan->velocity_threads();
  if (block_rows) *block_rows = plan->block_rows();
  const size_t d = m.info().dim;
  std::mt19937 rng(5);
  Run r;
  const auto y = test_support::split_random_floats(n * d, rng, -1, 1);
  const auto t = test_support::split_random_floats(n, rng, 0.1f, 0.9f);
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
  const auto bytes = test_support::split_layers_model();
  const std::unique_ptr<siflow::Model> m = load(bytes);
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
  const auto bytes = test_support::split_layers_model();
  const std::unique_ptr<siflow::Model> m = load(bytes);
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

TEST_CASE(
    "tuning may keep velocity runs on the caller's thread: the same bits, and velocity_threads "
    "says which" *
    SIFLOW_NEEDS_POOL) {
  const auto bytes = test_support::split_layers_model();
  const std::unique_ptr<siflow::Model> m = load(bytes);
  const EnvGuard forced("SIFLOW_VELOCITY_ON_CALLER");
  const auto same = [](const Run& a, const Run& b) {
    return std::memcmp(a.v.data(), b.v.data(), a.v.size() * sizeof(float)) == 0 &&
           std::memcmp(a.logp.data(), b.logp.data(), a.logp.size() * sizeof(double)) == 0;
  };
  // Every node of this model splits a batch-1 sample; the tuned plan's kernels are the fixed
  // rule's (nothing here is an XNNPACK candidate), so its bits are the one-thread plan's.
  for (size_t n : {size_t{1}, size_t{3}}) {
    INFO("batch " << n);
    forced.set(nullptr);
    uint32_t vt = 0;
    const Run one = run(*m, 1, n, siflow::Backend::kAuto, true, &vt);
    CHECK(vt == 1);
    // Forced: velocities on the caller's thread, or split (log_prob has tangents: it splits
    // in both plans). A plan running data-parallel blocks (at least two) has no choice to make.
    forced.set("1");
    size_t block = 0;
    const Run caller = run(*m, 2, n, siflow::Backend::kAuto, true, &vt, &block);
    INFO("block_rows " << block);
    CHECK(vt == (block < n ? 2u : 1u));
    CHECK(same(caller, one));
    forced.set("0");
    const Run split = run(*m, 2, n, siflow::Backend::kAuto, true, &vt);
    CHECK(vt == 2);
    CHECK(same(split, one));
    // Timed: either, with the same bits.
    forced.set(nullptr);
    const Run timed = run(*m, 2, n, siflow::Backend::kAuto, true, &vt);
    CHECK((vt == 1 || vt == 2));
    CHECK(same(timed, one));
    MESSAGE("batch " << n << ": the timed choice runs velocities on " << vt << " of 2 threads");
    // Without tuning nothing is timed, and the variable is not read.
    forced.set("1");
    run(*m, 2, n, siflow::Backend::kAuto, false, &vt);
    CHECK(vt == 2);
  }
}

TEST_CASE(
    "NHWC Resize, GroupNorm and SiLU split within a sample: the same bits on 1, 2 and 3 threads, "
    "every simd variant" *
    SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  const auto bytes = test_support::nhwc_split_model();
  const std::unique_ptr<siflow::Model> m = load(bytes);
  {  // the layers under test run NHWC on the simd kernels
    siflow::PlanOptions po;
    po.backend = siflow::Backend::kXnnpack;
    std::unique_ptr<siflow::Plan> plan;
    REQUIRE(siflow::Plan::create(*m, po, nullptr, 0, &plan).ok());
    for (uint32_t node : {3u, 4u, 5u, 6u, 8u, 9u}) {
      const std::string k = plan->node_kernel(node);
      INFO("node " << node << ": " << k);
      CHECK(k.rfind("simd/", 0) == 0);
      CHECK(k.find("nhwc") != std::string::npos);
    }
  }
  EnvGuard guard("SIFLOW_SIMD_ISA");
  for (size_t n : {size_t{1}, size_t{3}}) {
    INFO("batch " << n);
    const Run ref = run(*m, 1, n, siflow::Backend::kReference);
    for (const siflow::simd::Kernels* k : test_support::simd_variants()) {
      INFO(k->isa);
      setenv("SIFLOW_SIMD_ISA", k->isa, 1);
      const Run one = run(*m, 1, n, siflow::Backend::kXnnpack);
      const test_support::VelocityGap gap = test_support::velocity_gap(one.v, ref.v);
      CHECK(gap.worst <= 1e-5 * gap.scale);
      for (size_t i = 0; i < n; ++i)
        CHECK(std::abs(one.logp[i] - ref.logp[i]) <= 1e-4 * (1.0 + std::abs(ref.logp[i])));
      for (uint32_t threads : {2u, 3u}) {
        INFO(threads << " threads");
        const Run more = run(*m, threads, n, siflow::Backend::kXnnpack);
        CHECK(std::memcmp(more.v.data(), one.v.data(), one.v.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(more.logp.data(), one.logp.data(), one.logp.size() * sizeof(double)) ==
              0);
      }
    }
  }
}
