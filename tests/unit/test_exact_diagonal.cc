// SPDX-License-Identifier: Apache-2.0
// Exact divergence through a network whose output is a Conv2d: that conv computes only the
// diagonal of its tangents (ops::NodeRun::diagonal_first). Checked against the same network with
// an identity activation after the conv (which reads every tangent entry, so the conv computes
// them all) on odd shapes (odd H and W, channels not a multiple of the vector width, stride 2,
// dilation, groups), batch 1, 3 and 17, on every backend and forced simd variant; bit-identical
// over 1 and 2 threads and over tangent blocks.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/env_guard.hpp"
#include "support/parallel.hpp"
#include "support/simd_variants.hpp"

namespace {

using siflow::Backend;
using siflow::ImageWindow;
using siflow::ModelBuilder;
using siflow::UnaryKind;

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> out(n);
  for (float& v : out) v = u(rng);
  return out;
}

// x [3, 5, 7] -> conv 3x3 to 6 channels, SiLU, conv 3x3 groups 3 (2 inputs per group) back to 3
// channels; with `full`, an identity activation after the last conv.
std::vector<uint8_t> same_model(bool full) {
  std::mt19937 rng(21);
  ModelBuilder b(3 * 5 * 7);
  b.set_x_shape({3, 5, 7});
  ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(ModelBuilder::x(), 6, {3, 3}, random_floats(6 * 3 * 9, rng, 0.4f),
                        random_floats(6, rng, 0.1f), same);
  h = b.unary(h, UnaryKind::kSilu);
  ImageWindow grouped = same;
  grouped.groups = 3;
  h = b.conv2d(h, 3, {3, 3}, random_floats(3 * 2 * 9, rng, 0.4f), random_floats(3, rng, 0.1f),
               grouped);
  if (full) h = b.unary(h, UnaryKind::kIdentity);
  b.set_output(h);
  return b.finish();
}

// x [2, 6, 6] -> conv 3x3 to 17 channels, SiLU, conv 3x3 stride 2 dilation 2 (pads 2) to
// [8, 3, 3], reshaped to the output [72]; with `full`, an identity activation before the reshape.
std::vector<uint8_t> strided_model(bool full) {
  std::mt19937 rng(22);
  ModelBuilder b(72);
  b.set_x_shape({2, 6, 6});
  ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(ModelBuilder::x(), 17, {3, 3}, random_floats(17 * 2 * 9, rng, 0.4f),
                        random_floats(17, rng, 0.1f), same);
  h = b.unary(h, UnaryKind::kSilu);
  ImageWindow strided;
  strided.pads = {2, 2, 2, 2};
  strided.strides = {2, 2};
  strided.dilations = {2, 2};
  h = b.conv2d(h, 8, {3, 3}, random_floats(8 * 17 * 9, rng, 0.2f), {}, strided);
  if (full) h = b.unary(h, UnaryKind::kIdentity);
  b.set_output(b.reshape(h, {72}));
  return b.finish();
}

std::unique_ptr<siflow::Model> load(const std::vector<uint8_t>& bytes) {
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  const siflow::Status s = siflow::Model::load(bytes.data(), bytes.size(), lo, &m);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  return m;
}

std::vector<double> log_prob(const siflow::Model& m, Backend backend, uint32_t threads, size_t n,
                             uint32_t block, const std::vector<float>& x) {
  siflow::PlanOptions po;
  po.max_batch = 8;
  po.backend = backend;
  po.threads = threads;
  po.tangent_block = block;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  siflow::LogProbOptions lo;
  lo.ode.steps = 2;
  std::vector<double> out(n);
  REQUIRE(plan->log_prob(n, x.data(), lo, out.data()).ok());
  return out;
}

void check_model(std::vector<uint8_t> (*make)(bool), bool simd_only = false) {
  const std::vector<uint8_t> diag_bytes = make(false), full_bytes = make(true);  // the models
  const auto diag = load(diag_bytes), full = load(full_bytes);  // read them in place
  const uint32_t dim = diag->info().dim;
  std::vector<Backend> backends;
  if (!simd_only) backends.push_back(Backend::kReference);
#if defined(SIFLOW_WITH_SIMD)
  backends.push_back(Backend::kSimd);
#else
  MESSAGE("SKIPPED: the simd backend (this build has no simd kernels)");
#endif
#if defined(SIFLOW_WITH_XNNPACK)
  if (!simd_only) backends.push_back(Backend::kXnnpack);
#else
  MESSAGE("SKIPPED: the XNNPACK backend (this build has no XNNPACK)");
#endif
  for (size_t n : {size_t{1}, size_t{3}, size_t{17}}) {
    if (simd_only && n == 3) continue;
    std::mt19937 rng(static_cast<unsigned>(n));
    const std::vector<float> x = random_floats(n * dim, rng, 1.5f);
    for (Backend backend : backends) {
      CAPTURE(n);
      CAPTURE(static_cast<int>(backend));
      const std::vector<double> a = log_prob(*diag, backend, 1, n, 0, x);
      const std::vector<double> b = log_prob(*full, backend, 1, n, 0, x);
      for (size_t i = 0; i < n; ++i) {
        INFO("row " << i << ": diagonal " << a[i] << ", every entry " << b[i]);
        // The reference kernel sums the diagonal entry as the whole tangent does: same bits.
        // The fast kernels sum in other orders: a few float ulps of each of the 2 x 4 RK4
        // divergences (each a sum of d entries of size about 1).
        if (backend == Backend::kReference)
          CHECK(a[i] == b[i]);
        else
          CHECK(std::fabs(a[i] - b[i]) <= 1e-4 * (1.0 + std::fabs(b[i])));
      }
      // Tangent blocks of 5 directions: the same diagonal entries, summed in the same order.
      const std::vector<double> blocked = log_prob(*diag, backend, 1, n, 5, x);
      CHECK(std::memcmp(blocked.data(), a.data(), n * sizeof(double)) == 0);
      if (!siflow::RowPool::available()) {
        MESSAGE("SKIPPED: two-thread comparison (this build has no thread pool)");
        continue;
      }
      const std::vector<double> two = log_prob(*diag, backend, 2, n, 0, x);
      CHECK(std::memcmp(two.data(), a.data(), n * sizeof(double)) == 0);
    }
  }
}

TEST_CASE("exact divergence with a conv output: the diagonal alone, same as every entry") {
  check_model(same_model);
  check_model(strided_model);
}

TEST_CASE("exact divergence with a conv output, every forced simd variant") {
  const test_support::EnvGuard guard("SIFLOW_SIMD_ISA");
  for (const siflow::simd::Kernels* k : test_support::simd_variants()) {
    CAPTURE(std::string(k->isa));
    setenv("SIFLOW_SIMD_ISA", k->isa, 1);
    check_model(same_model, true);
    check_model(strided_model, true);
  }
}

}  // namespace
