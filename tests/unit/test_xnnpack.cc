// SPDX-License-Identifier: Apache-2.0
// The xnnpack backend's resource contract: XNNPACK allocates only through the project's
// counting hook, only while a plan is created (operators) and never while it runs, and gives all
// of it back when the plan is destroyed. Builds without XNNPACK refuse the backend by name.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/requirements.hpp"
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/xnnpack/xnn_dense.hpp"
#endif

namespace {

std::vector<uint8_t> model_bytes() {
  siflow::ModelBuilder b(2);
  const uint32_t in = b.concat({b.x(), b.t()});
  std::vector<float> w1(32 * 3), w2(32 * 32), w3(2 * 32);
  for (size_t i = 0; i < w1.size(); ++i) w1[i] = 0.3f * std::sin(0.7f * i);
  for (size_t i = 0; i < w2.size(); ++i) w2[i] = 0.2f * std::cos(1.3f * i);
  for (size_t i = 0; i < w3.size(); ++i) w3[i] = 0.25f * std::sin(2.1f * i + 1.0f);
  const uint32_t h1 = b.unary(b.fully_connected(in, 32, w1), siflow::UnaryKind::kSilu);
  const uint32_t h2 = b.unary(b.fully_connected(h1, 32, w2), siflow::UnaryKind::kSilu);
  b.set_output(b.fully_connected(h2, 2, w3));
  return b.finish();
}

}  // namespace

TEST_CASE("the xnnpack backend is there exactly when the build has XNNPACK, else refused by name") {
  const std::vector<uint8_t> bytes = model_bytes();
  std::unique_ptr<siflow::Model> model;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  siflow::PlanOptions po;
  po.backend = siflow::Backend::kXnnpack;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(*model, po, nullptr, 0, &plan);
  if (siflow_test::kHaveXnnpack) {
    CHECK_MESSAGE(s.ok(), s.message());
  } else {
    CHECK(s.code() == siflow::StatusCode::kUnsupported);
    CHECK(std::string(s.message()).find("xnnpack is not in this build") != std::string::npos);
  }
}

TEST_CASE("XNNPACK allocates through the counting hook at plan creation only, and frees it all" *
          SIFLOW_NEEDS_XNNPACK) {
#if defined(SIFLOW_WITH_XNNPACK)
  const std::vector<uint8_t> bytes = model_bytes();
  std::unique_ptr<siflow::Model> model;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  siflow::PlanOptions po;
  po.backend = siflow::Backend::kXnnpack;
  po.max_batch = 32;
  std::unique_ptr<siflow::Plan> plan;
  // XNNPACK's own one-time state (initialized with the first plan) stays; take it first.
  REQUIRE(siflow::Plan::create(*model, po, nullptr, 0, &plan).ok());
  plan.reset();
  const siflow::xnn::AllocationStats before = siflow::xnn::allocation_stats();
  REQUIRE(siflow::Plan::create(*model, po, nullptr, 0, &plan).ok());
  const siflow::xnn::AllocationStats created = siflow::xnn::allocation_stats();
  CHECK(created.calls > before.calls);  // two operators per dense layer, with packed weights
  CHECK(created.live_bytes > before.live_bytes + 32 * 32 * sizeof(float));
  std::vector<float> x(100 * 2);
  std::vector<double> logp(100);
  siflow::SampleOptions so;
  so.ode.steps = 4;
  REQUIRE(plan->sample(100, so, x.data(), logp.data()).ok());
  const siflow::xnn::AllocationStats ran = siflow::xnn::allocation_stats();
  CHECK(ran.calls == created.calls);
  CHECK(ran.live_bytes == created.live_bytes);
  plan.reset();
  CHECK(siflow::xnn::allocation_stats().live_bytes == before.live_bytes);
#else
  FAIL("this build has no XNNPACK (the case runs only with --no-skip here)");
#endif
}
