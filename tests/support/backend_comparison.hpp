// SPDX-License-Identifier: Apache-2.0
// A whole model on the simd backend against the reference backend, shared by the image-op kernel
// tests: velocities within a bound relative to their scale, exact-divergence log-likelihoods
// within 1e-4, the named nodes on the expected kernels, and the simd run bit-equal on 1 and 2
// threads (skipped, and said so, when the build has no thread pool). Include after doctest.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "siflow/siflow.hpp"
#include "support/parallel.hpp"
#include "support/velocity_gap.hpp"

namespace test_support {

struct BackendRun {
  std::vector<float> v;
  std::vector<double> logp;
  std::vector<std::string> kernels;  // of the checked nodes
};

// Five rows of `dim` uniform values in [-1, 1] (seed 3) at t = 0.1, 0.3, ..., 0.9: the velocity
// and a 2-step log-likelihood.
inline BackendRun run_backend(const siflow::Model& m, siflow::Backend backend, uint32_t threads,
                              const std::vector<uint32_t>& nodes) {
  siflow::PlanOptions po;
  po.max_batch = 5;
  po.backend = backend;
  po.threads = threads;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  const size_t n = 5, d = m.info().dim;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> y(n * d);
  for (float& f : y) f = u(rng);
  const std::vector<float> t = {0.1f, 0.3f, 0.5f, 0.7f, 0.9f};
  BackendRun r;
  for (uint32_t i : nodes) r.kernels.push_back(plan->node_kernel(i));
  r.v.resize(n * d);
  REQUIRE(plan->velocity(n, t.data(), y.data(), r.v.data()).ok());
  siflow::LogProbOptions lo;
  lo.ode.steps = 2;
  r.logp.resize(n);
  REQUIRE(plan->log_prob(n, y.data(), lo, r.logp.data()).ok());
  return r;
}

// `nodes` must run on the reference kernels in the reference plan and on "simd/..." in the simd
// plan; `velocity_bound` is relative to the largest reference velocity.
inline void check_simd_against_reference(const std::vector<uint8_t>& bytes,
                                         const std::vector<uint32_t>& nodes,
                                         double velocity_bound) {
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &m).ok());
  const BackendRun ref = run_backend(*m, siflow::Backend::kReference, 1, nodes);
  const BackendRun fast = run_backend(*m, siflow::Backend::kSimd, 1, nodes);
  const VelocityGap gap = velocity_gap(fast.v, ref.v);
  const double worst = gap.worst, scale = gap.scale;
  INFO("worst velocity difference " << worst << " at scale " << scale);
  CHECK(worst <= velocity_bound * scale);
  for (const std::string& k : ref.kernels) CHECK(k == "reference");
  for (const std::string& k : fast.kernels) CHECK(k.rfind("simd/", 0) == 0);
  for (size_t i = 0; i < ref.logp.size(); ++i) {
    INFO("row " << i << ": " << fast.logp[i] << " vs " << ref.logp[i]);
    CHECK(std::fabs(fast.logp[i] - ref.logp[i]) <= 1e-4 * (1.0 + std::fabs(ref.logp[i])));
  }
  if (!siflow::RowPool::available()) {
    MESSAGE("SKIPPED: thread-count comparison (this build has no thread pool)");
    return;
  }
  const BackendRun two = run_backend(*m, siflow::Backend::kSimd, 2, nodes);
  CHECK(std::memcmp(two.v.data(), fast.v.data(), fast.v.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(two.logp.data(), fast.logp.data(), fast.logp.size() * sizeof(double)) == 0);
}

}  // namespace test_support
