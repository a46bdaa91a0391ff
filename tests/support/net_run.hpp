// SPDX-License-Identifier: Apache-2.0
// One plan's outputs on a small image net, for the layout and kernel comparisons (test_nhwc,
// test_conv_nhwc): 17 rows of the velocity, a one-step Heun exact log p and a Hutchinson log p
// (3 probes), and every node's kernel name; bit and bound comparisons of two such runs.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "siflow/siflow.hpp"
#include "support/env_guard.hpp"
#include "support/parallel.hpp"
#include "support/velocity_gap.hpp"

namespace test_support {

struct NetRun {
  std::vector<float> v;
  std::vector<double> exact, hutch;
  std::vector<std::string> kernels;  // every node's
};

// The plan made with SIFLOW_CONV=conv_kernel (nhwc unless said) when nhwc_conv and
// SIFLOW_LAYOUT=nchw when all_nchw (both unset otherwise, and restored after). One Heun step
// evaluates the net with its tangents twice, which is what the comparisons need (an exact log p
// over every tangent is these tests' cost, under the sanitizers above all).
inline NetRun run_net(const siflow::Model& m, siflow::Backend backend, uint32_t threads,
                      size_t block, bool nhwc_conv, bool all_nchw,
                      const char* conv_kernel = "nhwc") {
  const EnvGuard conv("SIFLOW_CONV"), layout("SIFLOW_LAYOUT");
  conv.set(nhwc_conv ? conv_kernel : nullptr);
  layout.set(all_nchw ? "nchw" : nullptr);
  siflow::PlanOptions po;
  po.max_batch = 17;
  po.backend = backend;
  po.threads = threads;
  po.max_probes = 3;
  po.block_rows = block;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), s.message());
  const size_t n = 17, d = m.info().dim;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> y(n * d), t(n);
  for (float& f : y) f = u(rng);
  for (size_t i = 0; i < n; ++i) t[i] = (i + 0.5f) / n;
  NetRun r;
  for (uint32_t i = 0; i < m.info().node_count; ++i) r.kernels.push_back(plan->node_kernel(i));
  r.v.resize(n * d);
  REQUIRE(plan->velocity(n, t.data(), y.data(), r.v.data()).ok());
  siflow::LogProbOptions lo;
  lo.ode.method = siflow::Method::kHeun;
  lo.ode.steps = 1;
  r.exact.resize(n);
  REQUIRE(plan->log_prob(n, y.data(), lo, r.exact.data()).ok());
  lo.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lo.divergence.probes = 3;
  lo.divergence.seed = 4;
  r.hutch.resize(n);
  REQUIRE(plan->log_prob(n, y.data(), lo, r.hutch.data()).ok());
  return r;
}

inline bool same_bits(const NetRun& a, const NetRun& b) {
  return std::memcmp(a.v.data(), b.v.data(), a.v.size() * sizeof(float)) == 0 &&
         std::memcmp(a.exact.data(), b.exact.data(), a.exact.size() * sizeof(double)) == 0 &&
         std::memcmp(a.hutch.data(), b.hutch.data(), a.hutch.size() * sizeof(double)) == 0;
}

// A model loaded from bytes. The bytes must outlive it: a buffer that is 64-byte aligned is read in
// place, not copied (the rvalue overload is deleted so a temporary cannot be passed).
inline std::unique_ptr<siflow::Model> load_model(const std::vector<uint8_t>& bytes) {
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  std::unique_ptr<siflow::Model> m;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &m).ok());
  return m;
}
std::unique_ptr<siflow::Model> load_model(const std::vector<uint8_t>&& bytes) = delete;

// Every node's kernel, "[name] " each, for a failure's context.
inline std::string kernel_list(const NetRun& r) {
  std::string names;
  for (const std::string& s : r.kernels) names += "[" + s + "] ";
  return names;
}

// `one` (the simd plan with SIFLOW_CONV=conv_kernel, one thread, the plan's block) has the bits of
// the same plan with blocks of 1 and 5 rows and, where the build has a thread pool, of two
// threads with blocks 0, 1 and 5.
inline void check_blocks_and_threads(const siflow::Model& m, const NetRun& one,
                                     const char* conv_kernel) {
  const bool pool = siflow::RowPool::available();
  for (size_t block : {size_t{0}, size_t{1}, size_t{5}}) {
    INFO("block " << block);
    if (block)
      CHECK(same_bits(one, run_net(m, siflow::Backend::kSimd, 1, block, true, false, conv_kernel)));
    if (pool)
      CHECK(same_bits(one, run_net(m, siflow::Backend::kSimd, 2, block, true, false, conv_kernel)));
  }
}

// The velocity within bound times the reference's scale, each log p within 10 bound relative.
inline void check_close(const NetRun& fast, const NetRun& ref, double bound) {
  const VelocityGap gap = velocity_gap(fast.v, ref.v);
  INFO("worst velocity difference " << gap.worst << " at scale " << gap.scale);
  CHECK(gap.worst <= bound * gap.scale);
  for (size_t i = 0; i < ref.exact.size(); ++i) {
    INFO("row " << i << ": exact " << fast.exact[i] << " vs " << ref.exact[i] << ", Hutchinson "
                << fast.hutch[i] << " vs " << ref.hutch[i]);
    CHECK(std::fabs(fast.exact[i] - ref.exact[i]) <= 10 * bound * (1.0 + std::fabs(ref.exact[i])));
    CHECK(std::fabs(fast.hutch[i] - ref.hutch[i]) <= 10 * bound * (1.0 + std::fabs(ref.hutch[i])));
  }
}

// How many nodes' kernel names contain text.
inline size_t count_with(const NetRun& r, const char* text) {
  size_t n = 0;
  for (const std::string& k : r.kernels) n += k.find(text) != std::string::npos;
  return n;
}

}  // namespace test_support
