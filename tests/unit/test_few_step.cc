// SPDX-License-Identifier: Apache-2.0
// Few-step integration through the Plan and C APIs: the NFE each call reports, Adams-Bashforth
// and dopri5 for sample/decode/encode/log_prob (exact and Hutchinson), grid kinds and their
// checks, the struct_size rule for the appended OdeOptions fields, and the refusals.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.h"
#include "siflow/siflow.hpp"

namespace {

using siflow::DivergenceMode;
using siflow::GridKind;
using siflow::Method;
using siflow::Model;
using siflow::OdeOptions;
using siflow::Plan;
using siflow::Status;
using siflow::StatusCode;

std::string text(const Status& s) { return s.message(); }

struct Fixture {
  Fixture() {
    siflow::ModelBuilder b(2);
    const uint32_t h =
        b.unary(b.fully_connected(b.concat({b.x(), b.t()}), 6,
                                  {0.3f, -0.2f, 0.5f, 0.1f, 0.4f, -0.3f, -0.5f, 0.2f, 0.1f, 0.2f,
                                   0.2f, 0.6f, 0.7f, -0.1f, 0.3f, -0.4f, 0.3f, 0.2f},
                                  {0.1f, -0.1f, 0.0f, 0.2f, 0.0f, 0.1f}),
                siflow::UnaryKind::kTanh);
    b.set_output(b.fully_connected(
        h, 2, {0.4f, -0.3f, 0.2f, 0.1f, 0.5f, -0.2f, 0.1f, 0.3f, -0.4f, 0.2f, 0.3f, 0.2f}));
    bytes = b.finish();
    REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
    siflow::PlanOptions po;
    po.max_batch = 8;  // 20-row requests run in 3 chunks
    po.max_probes = 4;
    REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
  }
  std::vector<uint8_t> bytes;
  std::unique_ptr<Model> model;
  std::unique_ptr<Plan> plan;
};

OdeOptions ode(Method m, uint32_t steps, GridKind kind = GridKind::kUniform, double param = 0) {
  OdeOptions o;
  o.method = m;
  o.steps = steps;
  o.grid_kind = kind;
  o.grid_param = param;
  return o;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

}  // namespace

TEST_CASE("each call reports the NFE it used") {
  Fixture f;
  const size_t n = 20;
  std::vector<float> x(2 * n), z(2 * n);
  std::vector<double> logp(n);
  CHECK(f.plan->evaluations() == 0);
  siflow::SampleOptions so;
  struct Case {
    Method m;
    uint32_t steps;
    uint64_t nfe;
  };
  for (const Case& c :
       {Case{Method::kRK4, 10, 40}, Case{Method::kEuler, 7, 7}, Case{Method::kAB2, 8, 8},
        Case{Method::kAB3, 8, 10}, Case{Method::kAB4, 8, 17}, Case{Method::kAB4, 2, 8}}) {
    so.ode = ode(c.m, c.steps, GridKind::kCosine);
    REQUIRE(f.plan->sample(n, so, x.data(), logp.data()).ok());
    CAPTURE(siflow::method_name(c.m));
    CHECK(f.plan->evaluations() == c.nfe);
    REQUIRE(f.plan->encode(n, x.data(), so.ode, z.data()).ok());
    CHECK(f.plan->evaluations() == c.nfe);
  }
  so.ode = ode(Method::kDopri5, 1);
  REQUIRE(f.plan->sample(n, so, x.data(), nullptr).ok());
  CHECK(f.plan->evaluations() > 6);
  CHECK((f.plan->evaluations() - 1) % 6 == 0);
}

TEST_CASE("ab4 and dopri5 agree with fine RK4 for sample, encode and log_prob") {
  Fixture f;
  const size_t n = 20;
  siflow::SampleOptions so;
  so.seed = 3;
  so.ode = ode(Method::kRK4, 400);
  std::vector<float> ref(2 * n), x(2 * n), back(2 * n), ref_back(2 * n);
  std::vector<double> ref_lp(n), lp(n);
  REQUIRE(f.plan->sample(n, so, ref.data(), ref_lp.data()).ok());
  REQUIRE(f.plan->encode(n, ref.data(), so.ode, ref_back.data()).ok());
  for (OdeOptions o : {ode(Method::kAB4, 40, GridKind::kPower, 2.0), ode(Method::kDopri5, 1)}) {
    o.rtol = o.atol = 1e-7;
    CAPTURE(siflow::method_name(o.method));
    so.ode = o;
    REQUIRE(f.plan->sample(n, so, x.data(), lp.data()).ok());
    CHECK(max_diff(x, ref) < 1e-4);
    for (size_t i = 0; i < n; ++i) CHECK(std::fabs(lp[i] - ref_lp[i]) < 1e-4);
    REQUIRE(f.plan->encode(n, ref.data(), o, back.data()).ok());
    CHECK(max_diff(back, ref_back) < 1e-4);
    siflow::LogProbOptions lo;
    lo.ode = o;
    std::vector<double> lp2(n);
    REQUIRE(f.plan->log_prob(n, ref.data(), lo, lp2.data()).ok());
    for (size_t i = 0; i < n; ++i) CHECK(std::fabs(lp2[i] - ref_lp[i]) < 1e-3);
    // Hutchinson: an unbiased estimate, so only check it runs and stays finite.
    lo.divergence.mode = DivergenceMode::kHutchinson;
    lo.divergence.probes = 2;
    REQUIRE(f.plan->log_prob(n, ref.data(), lo, lp2.data()).ok());
    for (size_t i = 0; i < n; ++i) CHECK(std::isfinite(lp2[i]));
  }
}

TEST_CASE("refusals: SDE with multistep or dopri5, bad grid kinds, bad tolerances") {
  Fixture f;
  std::vector<float> x(8);
  siflow::SampleOptions so;
  so.sde.epsilon = 0.5;
  for (Method m : {Method::kAB2, Method::kAB3, Method::kAB4, Method::kDopri5}) {
    so.ode = ode(m, 10);
    const Status s = f.plan->sample(4, so, x.data(), nullptr);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(text(s).find(siflow::method_name(m)) != std::string::npos);
  }
  siflow::SampleOptions plain;
  const double grid[] = {0.0, 0.5, 1.0};
  plain.ode = ode(Method::kAB2, 2, GridKind::kCosine);
  plain.ode.grid = grid;
  plain.ode.grid_size = 3;
  CHECK(text(f.plan->sample(4, plain, x.data(), nullptr)).find("exclude each other") !=
        std::string::npos);
  plain.ode = ode(Method::kAB2, 10, GridKind::kShift, 0.0);
  CHECK(text(f.plan->sample(4, plain, x.data(), nullptr)).find("parameter 0") != std::string::npos);
  plain.ode = ode(Method::kAB2, 10, static_cast<GridKind>(9));
  CHECK(text(f.plan->sample(4, plain, x.data(), nullptr)).find("unknown grid kind 9") !=
        std::string::npos);
  plain.ode = ode(Method::kDopri5, 10, GridKind::kCosine);
  CHECK(text(f.plan->sample(4, plain, x.data(), nullptr)).find("dopri5 chooses its own steps") !=
        std::string::npos);
  plain.ode = ode(Method::kDopri5, 10);
  plain.ode.rtol = 0;
  CHECK(text(f.plan->sample(4, plain, x.data(), nullptr)).find("rtol 0") != std::string::npos);
  plain.ode = ode(Method::kDopri5, 10);
  plain.ode.rtol = plain.ode.atol = 1e-12;
  plain.ode.max_steps = 4;
  const Status s = f.plan->sample(4, plain, x.data(), nullptr);
  CHECK(s.code() == StatusCode::kNumericalError);
  CHECK(text(s).find("max_steps = 4") != std::string::npos);
}

TEST_CASE("an OdeOptions struct_size that ends before the appended fields keeps their defaults") {
  Fixture f;
  std::vector<float> a(8), b(8);
  siflow::SampleOptions so;
  so.ode = ode(Method::kRK4, 6, GridKind::kCosine);
  so.ode.struct_size = offsetof(OdeOptions, grid_kind);  // a caller built before grid kinds
  REQUIRE(f.plan->sample(4, so, a.data(), nullptr).ok());
  so.ode = ode(Method::kRK4, 6);
  REQUIRE(f.plan->sample(4, so, b.data(), nullptr).ok());
  CHECK(a == b);
  so.ode = ode(Method::kRK4, 6, GridKind::kCosine);
  REQUIRE(f.plan->sample(4, so, b.data(), nullptr).ok());
  CHECK(a != b);
}

TEST_CASE("C API: ab3 on a power grid and dopri5 through siflow_run_options; NFE") {
  Fixture f;
  siflow_model* model = nullptr;
  REQUIRE(siflow_model_load(f.bytes.data(), f.bytes.size(), 1, &model, nullptr) == SIFLOW_OK);
  siflow_plan_options po;
  siflow_plan_options_init(&po);
  siflow_plan* plan = nullptr;
  REQUIRE(siflow_plan_create(model, &po, nullptr, 0, &plan, nullptr) == SIFLOW_OK);
  CHECK(siflow_plan_evaluations(plan) == 0);
  siflow_run_options o;
  siflow_run_options_init(&o);
  CHECK(o.rtol == 1e-6);
  CHECK(o.max_steps == 100000);
  o.method = SIFLOW_AB3;
  o.steps = 12;
  o.grid_kind = SIFLOW_GRID_POWER;
  o.grid_param = 2.0;
  std::vector<float> x(8), y(8);
  REQUIRE(siflow_sample(plan, 4, &o, x.data(), nullptr, nullptr) == SIFLOW_OK);
  CHECK(siflow_plan_evaluations(plan) == 14);
  siflow::SampleOptions so;
  so.ode = ode(Method::kAB3, 12, GridKind::kPower, 2.0);
  std::unique_ptr<Plan> cpp;
  REQUIRE(Plan::create(*f.model, siflow::PlanOptions(), nullptr, 0, &cpp).ok());
  REQUIRE(cpp->sample(4, so, y.data(), nullptr).ok());
  CHECK(x == y);
  o.method = SIFLOW_DOPRI5;
  o.grid_kind = SIFLOW_GRID_UNIFORM;
  o.max_steps = 2;
  o.rtol = o.atol = 1e-12;
  siflow_error e;
  CHECK(siflow_sample(plan, 4, &o, x.data(), nullptr, &e) == SIFLOW_NUMERICAL_ERROR);
  CHECK(std::string(e.message).find("max_steps = 2") != std::string::npos);
  CHECK(siflow_plan_evaluations(nullptr) == 0);
  siflow_plan_free(plan);
  siflow_model_free(model);
}
