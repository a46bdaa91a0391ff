// SPDX-License-Identifier: Apache-2.0
// Stored solvers (format 1.2): the loader's checks (each refusal names its cause), the format
// version writers record, add_solvers' copy of a model (everything else unchanged, same results),
// selection by name through the C++ and C APIs, and validate_embedded re-running the test vector.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.h"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"
#include "support/byte_span.hpp"

namespace {

using siflow::Method;
using siflow::Model;
using siflow::ModelBuilder;
using siflow::OdeOptions;
using siflow::Plan;
using siflow::Status;
using siflow::StatusCode;
using siflow::StoredSolver;

std::unique_ptr<Model> load(const std::vector<uint8_t>& bytes, Status* status = nullptr) {
  const siflow_test::ByteSpan misaligned(bytes, 1);  // copied: the model outlives the span
  std::unique_ptr<Model> model;
  const Status s = Model::load(misaligned.data(), misaligned.size(), siflow::LoadOptions(), &model);
  if (status) *status = s;
  return model;
}

ModelBuilder base_builder() {
  ModelBuilder b(2);
  const uint32_t h =
      b.unary(b.fully_connected(b.concat({b.x(), b.t()}), 6,
                                {0.3f, -0.2f, 0.5f, 0.1f, 0.4f, -0.3f, -0.5f, 0.2f, 0.1f, 0.2f,
                                 0.2f, 0.6f, 0.7f, -0.1f, 0.3f, -0.4f, 0.3f, 0.2f},
                                {0.1f, -0.1f, 0.0f, 0.2f, 0.0f, 0.1f}),
              siflow::UnaryKind::kTanh);
  b.set_output(b.fully_connected(
      h, 2, {0.4f, -0.3f, 0.2f, 0.1f, 0.5f, -0.2f, 0.1f, 0.3f, -0.4f, 0.2f, 0.3f, 0.2f}));
  b.set_name("solver-test");
  b.add_metadata("k", "v");
  b.set_normalization({0.5f, -0.5f}, {2.0f, 0.5f});
  b.set_velocity_tests({0.5f}, {0.1f, 0.2f}, {0.0f, 0.0f}, 1e6f);
  return b;
}

// A valid solver: ab2 on 5 steps of a non-uniform grid, with a test vector computed by a plan.
StoredSolver good_solver(const std::vector<uint8_t>& model_bytes) {
  StoredSolver s;
  s.name = "tuned-5";
  s.method = Method::kAB2;
  s.grid = {0.0, 0.3, 0.55, 0.75, 0.9, 1.0};
  s.nfe = 5;
  s.sample_error = 0.01;
  s.test_start = {0.1f, -0.2f, 1.0f, 0.5f};
  std::unique_ptr<Model> m = load(model_bytes);
  REQUIRE(m);
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*m, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  OdeOptions o;
  o.method = s.method;
  o.grid = s.grid.data();
  o.grid_size = s.grid.size();
  s.test_end.resize(4);
  REQUIRE(plan->decode(2, s.test_start.data(), o, siflow::DivergenceOptions(), s.test_end.data(),
                       nullptr)
              .ok());
  s.test_tolerance = 1e-5f;
  return s;
}

void expect_refused(const StoredSolver& s, std::initializer_list<const char*> fragments,
                    StoredSolver* second = nullptr) {
  ModelBuilder b = base_builder();
  b.add_solver(s);
  if (second) b.add_solver(*second);
  Status st;
  CHECK_FALSE(load(b.finish(), &st));
  INFO("message: " << std::string(st.message()));
  CHECK(st.code() == StatusCode::kInvalidModel);
  for (const char* f : fragments) CHECK(std::string(st.message()).find(f) != std::string::npos);
}

}  // namespace

TEST_CASE("a model with a solver records format 1.2 and lists the solver") {
  const std::vector<uint8_t> plain = base_builder().finish();
  std::unique_ptr<Model> p = load(plain);
  REQUIRE(p);
  CHECK(p->info().format_minor == 0);
  CHECK(p->info().solver_count == 0);
  ModelBuilder b = base_builder();
  b.add_solver(good_solver(plain));
  std::unique_ptr<Model> m = load(b.finish());
  REQUIRE(m);
  CHECK(m->info().format_minor == 2);
  CHECK(m->info().solver_count == 1);
  siflow::SolverInfo info;
  REQUIRE(m->solver(0, &info));
  CHECK(std::string(info.name) == "tuned-5");
  CHECK(info.method == Method::kAB2);
  CHECK(info.steps == 5);
  CHECK(info.nfe == 5);
  CHECK(info.grid[2] == 0.55);
  CHECK(info.label == -1);
  CHECK(info.guidance == 1.0);
  CHECK(info.test_count == 2);
  CHECK_FALSE(m->solver(1, &info));
}

TEST_CASE("the loader refuses inconsistent solvers, naming the cause") {
  const std::vector<uint8_t> plain = base_builder().finish();
  const StoredSolver good = good_solver(plain);
  StoredSolver s = good;
  s.name = "";
  expect_refused(s, {"name must have 1 to 64"});
  s = good;
  s.name = "bad name";
  expect_refused(s, {"name holds byte 0x20"});
  s = good;
  s.name = std::string(65, 'a');
  expect_refused(s, {"name must have 1 to 64"});
  StoredSolver twin = good;
  expect_refused(good, {"both named 'tuned-5'"}, &twin);
  s = good;
  s.method = Method::kDopri5;
  expect_refused(s, {"method 'dopri5' is not a fixed-grid method"});
  s = good;
  s.grid = {0.0, 0.5, 0.5, 0.8, 0.9, 1.0};
  expect_refused(s, {"not strictly increasing at point 2"});
  s = good;
  s.grid = {0.0, 0.3, 0.55, 0.75, 0.9, 0.99};
  expect_refused(s, {"not over the model's time range"});
  s = good;
  s.grid = {0.0, 0.3, NAN, 0.75, 0.9, 1.0};
  expect_refused(s, {"grid point 2 is not finite"});
  s = good;
  s.grid = {0.0};
  expect_refused(s, {"time grid has 1 points"});
  s = good;
  s.nfe = 6;
  expect_refused(s, {"nfe 6, but ab2 on 5 steps takes 5"});
  s = good;
  s.method = Method::kAB4;
  s.nfe = 5;
  expect_refused(s, {"takes 14 evaluations"});  // 3 RK4 steps (12) + 2
  s = good;
  s.sample_error = -1;
  expect_refused(s, {"sample error -1"});
  s = good;
  s.label = -2;
  expect_refused(s, {"label -2"});
  // A label or guidance weight the model cannot run (base_builder takes no class label).
  s = good;
  s.label = 1;
  expect_refused(s, {"solver 'tuned-5': tuned for label 1, but the model takes no class label"});
  s = good;
  s.guidance = 2.0;
  expect_refused(s, {"solver 'tuned-5': guidance 2, but the model has no null label"});
  s = good;
  s.test_end.pop_back();
  expect_refused(s, {"solver 'tuned-5': test end has 3 values, expected 4"});
  s = good;
  s.test_start[1] = INFINITY;
  expect_refused(s, {"solver 'tuned-5': test start[1] is not finite"});
  s = good;
  s.test_tolerance = -1.0f;
  expect_refused(s, {"bad test tolerance"});
  // Solvers in a file that says 1.1 or older: the version was recorded wrongly.
  ModelBuilder b = base_builder();
  b.add_solver(good);
  b.set_format_version(1, 1);
  Status st;
  CHECK_FALSE(load(b.finish(), &st));
  CHECK(std::string(st.message()).find("need format 1.2") != std::string::npos);
  // More solvers than the limit.
  ModelBuilder many = base_builder();
  for (uint32_t i = 0; i <= siflow::Limits::kMaxSolvers; ++i) {
    StoredSolver k = good;
    k.name = "s" + std::to_string(i);
    many.add_solver(k);
  }
  CHECK_FALSE(load(many.finish(), &st));
  CHECK(std::string(st.message()).find("65 solvers, the limit is 64") != std::string::npos);
}

TEST_CASE("add_solvers copies everything else unchanged and replaces a solver of the same name") {
  const std::vector<uint8_t> plain = base_builder().finish();
  const StoredSolver solver = good_solver(plain);
  std::vector<uint8_t> with;
  REQUIRE(siflow::add_solvers(plain.data(), plain.size(), {solver}, &with).ok());
  std::unique_ptr<Model> a = load(plain), b = load(with);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(b->info().format_minor == 2);
  CHECK(std::string(b->info().name) == "solver-test");
  CHECK(b->info().metadata_count == 1);
  CHECK(b->info().test_vector_count == 1);
  CHECK(b->info().normalized);
  CHECK(b->info().parameter_count == a->info().parameter_count);
  // Same network, same results, bit for bit.
  std::unique_ptr<Plan> pa, pb;
  REQUIRE(Plan::create(*a, siflow::PlanOptions(), nullptr, 0, &pa).ok());
  REQUIRE(Plan::create(*b, siflow::PlanOptions(), nullptr, 0, &pb).ok());
  siflow::SampleOptions so;
  so.ode.steps = 7;
  std::vector<float> xa(20), xb(20);
  std::vector<double> la(10), lb(10);
  REQUIRE(pa->sample(10, so, xa.data(), la.data()).ok());
  REQUIRE(pb->sample(10, so, xb.data(), lb.data()).ok());
  CHECK(std::memcmp(xa.data(), xb.data(), xa.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(la.data(), lb.data(), la.size() * sizeof(double)) == 0);
  // Selecting the solver by name equals passing its method and grid.
  so.ode = OdeOptions();
  so.ode.solver = "tuned-5";
  REQUIRE(pb->sample(10, so, xb.data(), nullptr).ok());
  CHECK(pb->evaluations() == 5);
  so.ode = OdeOptions();
  so.ode.method = Method::kAB2;
  so.ode.grid = solver.grid.data();
  so.ode.grid_size = solver.grid.size();
  REQUIRE(pa->sample(10, so, xa.data(), nullptr).ok());
  CHECK(xa == xb);
  // A second copy with the same name replaces it; another name is added.
  StoredSolver again = solver, other = solver;
  again.sample_error = 0.5;
  other.name = "other";
  std::vector<uint8_t> twice;
  REQUIRE(siflow::add_solvers(with.data(), with.size(), {again, other}, &twice).ok());
  std::unique_ptr<Model> c = load(twice);
  REQUIRE(c);
  CHECK(c->info().solver_count == 2);
  siflow::SolverInfo info;
  REQUIRE(c->solver(0, &info));
  CHECK(std::string(info.name) == "tuned-5");
  CHECK(info.sample_error == 0.5);
  // Bad input is refused, not copied.
  std::vector<uint8_t> broken = plain;
  broken.resize(broken.size() / 2);
  std::vector<uint8_t> out;
  CHECK_FALSE(siflow::add_solvers(broken.data(), broken.size(), {solver}, &out).ok());
}

// A format 1.4 model of dim 8 with x [2, 2, 2]: conv, group norm, a class embedding (3 labels,
// null label 2), a 1.4 unary kind, clip, reshape and transpose; with test vectors, their labels
// and guidance weight 2 when `v` is given.
std::vector<uint8_t> shaped_conditional_model(const std::vector<float>& y,
                                              const std::vector<float>& v) {
  ModelBuilder b(8);
  b.set_x_shape({2, 2, 2});
  std::vector<float> w(2 * 2 * 9), table(3 * 8);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.2f * std::sin(0.9f * static_cast<float>(i));
  for (size_t i = 0; i < table.size(); ++i)
    table[i] = 0.3f * std::cos(0.7f * static_cast<float>(i));
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(b.x(), 2, {3, 3}, w, {0.1f, -0.1f}, same);
  h = b.mul(b.group_norm(h, 2, {1.0f, 0.5f}, {0.0f, 0.2f}), b.t());
  h = b.add(h, b.embedding(b.label_input(3, 2), 3, table));
  h = b.clip(b.unary(h, siflow::UnaryKind::kMish), -3.0f, 3.0f);
  h = b.transpose(b.reshape(h, {4, 2}), {4, 2}, {1, 0});
  b.set_output(b.reshape(h, {2, 2, 2}));
  if (!v.empty()) {
    b.set_velocity_tests({0.5f, 0.25f}, y, v, 1e-5f);
    b.set_test_conditioning({1, 0}, {}, 2.0f);
  }
  return b.finish();
}

TEST_CASE("add_solvers keeps every format 1.4 field: shapes, image, math and label ops, tests") {
  std::vector<float> y(16), v(16);
  for (size_t i = 0; i < y.size(); ++i) y[i] = std::sin(0.37f * static_cast<float>(i));
  const std::vector<float> t = {0.5f, 0.25f};
  const std::vector<int32_t> labels = {1, 0};
  siflow::Conditioning cd;
  cd.labels = labels.data();
  siflow::PlanOptions po;
  po.guidance = 2.0;
  {
    std::unique_ptr<Model> m = load(shaped_conditional_model(y, {}));
    REQUIRE(m);
    std::unique_ptr<Plan> plan;
    REQUIRE(Plan::create(*m, po, nullptr, 0, &plan).ok());
    REQUIRE(plan->velocity(2, t.data(), y.data(), cd, v.data()).ok());
  }
  const std::vector<uint8_t> plain = shaped_conditional_model(y, v);
  StoredSolver solver;
  solver.name = "guided";
  solver.method = Method::kRK4;
  solver.grid = {0.0, 0.5, 1.0};
  solver.nfe = 8;
  solver.label = 1;
  solver.guidance = 2.0;
  std::vector<uint8_t> with;
  const Status added = siflow::add_solvers(plain.data(), plain.size(), {solver}, &with);
  REQUIRE_MESSAGE(added.ok(), std::string(added.message()));
  std::unique_ptr<Model> a = load(plain), b = load(with);
  REQUIRE(a);
  REQUIRE(b);
  const siflow::ModelInfo& info = b->info();
  CHECK(info.format_minor == 4);
  CHECK(info.solver_count == 1);
  CHECK(info.x_rank == 3);
  CHECK((info.x_shape[0] == 2 && info.x_shape[1] == 2 && info.x_shape[2] == 2));
  CHECK(info.takes_labels);
  CHECK(info.label_classes == 3);
  CHECK(info.null_label == 2);
  CHECK(info.test_vector_count == 2);
  CHECK(info.parameter_count == a->info().parameter_count);
  const char *op_a = nullptr, *op_b = nullptr;
  uint32_t in_a = 0, in_b = 0, w_a = 0, w_b = 0, k = 0;
  for (; a->node(k, &op_a, &in_a, &w_a); ++k) {
    REQUIRE(b->node(k, &op_b, &in_b, &w_b));
    CHECK(std::string(op_a) == op_b);
    CHECK(in_a == in_b);
    CHECK(w_a == w_b);
  }
  CHECK_FALSE(b->node(k, &op_b, &in_b, &w_b));
  // The copy's test vectors keep their labels and guidance weight: validate passes on both.
  siflow::ValidationReport ra, rb;
  REQUIRE(siflow::validate_embedded(*a, &ra).ok());
  REQUIRE(siflow::validate_embedded(*b, &rb).ok());
  CHECK(ra.velocity_count == 2);
  CHECK(rb.velocity_count == 2);
  CHECK(rb.velocity_ok);
  CHECK(rb.velocity_max_error == ra.velocity_max_error);
  // Same network, same guided velocities, bit for bit.
  std::unique_ptr<Plan> pb;
  REQUIRE(Plan::create(*b, po, nullptr, 0, &pb).ok());
  std::vector<float> vb(16);
  REQUIRE(pb->velocity(2, t.data(), y.data(), cd, vb.data()).ok());
  CHECK(std::memcmp(v.data(), vb.data(), v.size() * sizeof(float)) == 0);
}

TEST_CASE("a stored solver is refused by name errors and for log_prob at an earlier time") {
  const std::vector<uint8_t> plain = base_builder().finish();
  ModelBuilder b = base_builder();
  b.add_solver(good_solver(plain));
  std::unique_ptr<Model> m = load(b.finish());
  REQUIRE(m);
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*m, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  std::vector<float> x(4, 0.1f);
  std::vector<double> lp(2);
  siflow::LogProbOptions lo;
  lo.ode.solver = "tuned-5";
  REQUIRE(plan->log_prob(2, x.data(), lo, lp.data()).ok());
  CHECK(plan->evaluations() == 5);
  lo.time = 0.5;
  Status s = plan->log_prob(2, x.data(), lo, lp.data());
  CHECK(std::string(s.message()).find("runs over the model's time range") != std::string::npos);
  lo = siflow::LogProbOptions();
  lo.ode.solver = "missing";
  s = plan->log_prob(2, x.data(), lo, lp.data());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("no solver named 'missing'") != std::string::npos);
  lo.ode.solver = "tuned-5";
  lo.ode.grid_kind = siflow::GridKind::kCosine;
  s = plan->log_prob(2, x.data(), lo, lp.data());
  CHECK(std::string(s.message()).find("excludes it") != std::string::npos);
}

TEST_CASE("validate re-runs each solver's test vector and fails a wrong one") {
  const std::vector<uint8_t> plain = base_builder().finish();
  StoredSolver s = good_solver(plain);
  ModelBuilder b = base_builder();
  b.add_solver(s);
  std::unique_ptr<Model> m = load(b.finish());
  REQUIRE(m);
  siflow::ValidationReport r;
  REQUIRE(siflow::validate_embedded(*m, &r).ok());
  CHECK(r.solver_count == 1);
  CHECK(r.solver_ok);
  CHECK(r.solver_max_error <= 1e-6);
  CHECK(std::string(r.solver_worst) == "tuned-5");
  s.test_end[3] += 0.01f;
  ModelBuilder bad = base_builder();
  bad.add_solver(s);
  m = load(bad.finish());
  REQUIRE(m);
  REQUIRE(siflow::validate_embedded(*m, &r).ok());
  CHECK_FALSE(r.solver_ok);
  CHECK(r.solver_max_error > 1e-3);
}

namespace {

// v(t, x, y) = W2 tanh(W1 [x, t] + E[y]): 3 classes, null label `null_label` (-1: none).
ModelBuilder labeled_builder(int32_t null_label) {
  ModelBuilder b(2);
  const uint32_t e = b.embedding(b.label_input(3, null_label), 3,
                                 {0.8f, -0.4f, 0.2f, 0.5f, -0.6f, 0.1f, 0.3f, 0.9f, -0.2f, 0.0f,
                                  0.4f, -0.7f, 0.6f, 0.2f, -0.3f, -0.5f, 0.1f, 0.7f});
  const uint32_t h = b.fully_connected(b.concat({b.x(), b.t()}), 6,
                                       {0.3f, -0.2f, 0.5f, 0.1f, 0.4f, -0.3f, -0.5f, 0.2f, 0.1f,
                                        0.2f, 0.2f, 0.6f, 0.7f, -0.1f, 0.3f, -0.4f, 0.3f, 0.2f});
  b.set_output(b.fully_connected(
      b.unary(b.add(h, e), siflow::UnaryKind::kTanh), 2,
      {0.9f, -0.6f, 0.4f, 0.2f, 1.0f, -0.4f, 0.2f, 0.6f, -0.8f, 0.4f, 0.6f, 0.4f}));
  return b;
}

// A heun solver tuned for `label` under guidance `w` of labeled_builder(2), its test vector
// decoded with exactly that label and weight.
StoredSolver labeled_solver(int32_t label, double w) {
  const std::vector<uint8_t> plain = labeled_builder(2).finish();
  StoredSolver s;
  s.name = "guided";
  s.method = Method::kHeun;
  s.grid = {0.0, 0.4, 0.8, 1.0};
  s.nfe = 6;
  s.sample_error = 0.02;
  s.label = label;
  s.guidance = w;
  s.test_start = {0.1f, -0.2f, 1.0f, 0.5f};
  std::unique_ptr<Model> m = load(plain);
  REQUIRE(m);
  siflow::PlanOptions po;
  po.guidance = w;
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*m, po, nullptr, 0, &plan).ok());
  OdeOptions o;
  o.method = s.method;
  o.grid = s.grid.data();
  o.grid_size = s.grid.size();
  siflow::Conditioning c;
  c.label = label;
  s.test_end.resize(4);
  REQUIRE(plan->decode(2, s.test_start.data(), o, siflow::DivergenceOptions(), c, s.test_end.data(),
                       nullptr)
              .ok());
  s.test_tolerance = 1e-5f;
  return s;
}

siflow::ValidationReport validate_with(const StoredSolver& s) {
  ModelBuilder b = labeled_builder(2);
  b.add_solver(s);
  std::unique_ptr<Model> m = load(b.finish());
  REQUIRE(m);
  siflow::ValidationReport r;
  const Status st = siflow::validate_embedded(*m, &r);
  REQUIRE_MESSAGE(st.ok(), std::string(st.message()));
  CHECK(r.solver_count == 1);
  return r;
}

}  // namespace

TEST_CASE("a solver tuned for a label and guidance weight is validated with them") {
  const StoredSolver s = labeled_solver(1, 2.0);
  const siflow::ValidationReport r = validate_with(s);
  CHECK(r.solver_ok);
  CHECK(r.solver_max_error <= 1e-6);
  {
    ModelBuilder b = labeled_builder(2);
    b.add_solver(s);
    std::unique_ptr<Model> m = load(b.finish());
    REQUIRE(m);
    siflow::SolverInfo info;
    REQUIRE(m->solver(0, &info));
    CHECK(info.label == 1);
    CHECK(info.guidance == 2.0);
  }
  // The same reference recorded for another label or weight fails: validate runs the ones
  // recorded (so the check above could fail).
  StoredSolver other = s;
  other.label = 0;
  CHECK_FALSE(validate_with(other).solver_ok);
  other = s;
  other.guidance = 1.0;
  CHECK_FALSE(validate_with(other).solver_ok);
  // Guidance 0 runs the null label alone: no label needed.
  const StoredSolver null_only = labeled_solver(-1, 0.0);
  CHECK(validate_with(null_only).solver_ok);
  CHECK(labeled_solver(2, 1.0).test_end == null_only.test_end);
  // add_solvers keeps both fields.
  std::vector<uint8_t> with;
  const std::vector<uint8_t> plain = labeled_builder(2).finish();
  REQUIRE(siflow::add_solvers(plain.data(), plain.size(), {s}, &with).ok());
  std::unique_ptr<Model> copied = load(with);
  REQUIRE(copied);
  siflow::SolverInfo info;
  REQUIRE(copied->solver(0, &info));
  CHECK(info.label == 1);
  CHECK(info.guidance == 2.0);
  siflow::ValidationReport r2;
  REQUIRE(siflow::validate_embedded(*copied, &r2).ok());
  CHECK(r2.solver_ok);
}

TEST_CASE("the loader refuses a solver's label or guidance the model cannot run") {
  StoredSolver s = labeled_solver(1, 1.0);
  s.label = 3;
  ModelBuilder b = labeled_builder(2);
  b.add_solver(s);
  Status st;
  CHECK_FALSE(load(b.finish(), &st));
  CHECK(std::string(st.message())
            .find("solver 'guided': label 3 is outside the model's classes "
                  "[0, 3)") != std::string::npos);
  s = labeled_solver(1, 1.0);
  s.guidance = 2.0;
  ModelBuilder no_null = labeled_builder(-1);
  no_null.add_solver(s);
  CHECK_FALSE(load(no_null.finish(), &st));
  CHECK(std::string(st.message()).find("solver 'guided': guidance 2, but the model has no null") !=
        std::string::npos);
  // Guidance 1 on a model without a null label is the plain conditional model: accepted.
  ModelBuilder plain = labeled_builder(-1);
  plain.add_solver(labeled_solver(1, 1.0));
  CHECK(load(plain.finish(), &st));
}

TEST_CASE("C API: a solver listed, selected by name, and reported by validate") {
  const std::vector<uint8_t> plain = base_builder().finish();
  ModelBuilder b = base_builder();
  b.add_solver(good_solver(plain));
  const std::vector<uint8_t> bytes = b.finish();
  siflow_model* model = nullptr;
  REQUIRE(siflow_model_load(bytes.data(), bytes.size(), 1, &model, nullptr) == SIFLOW_OK);
  siflow_model_info info;
  info.struct_size = sizeof info;
  REQUIRE(siflow_model_get_info(model, &info, nullptr) == SIFLOW_OK);
  CHECK(info.solver_count == 1);
  CHECK(info.format_minor == 2);
  const char* name = nullptr;
  uint32_t nfe = 0;
  double error = -1;
  REQUIRE(siflow_model_solver(model, 0, &name, &nfe, &error));
  CHECK(std::string(name) == "tuned-5");
  CHECK(nfe == 5);
  CHECK(error == 0.01);
  CHECK_FALSE(siflow_model_solver(model, 1, &name, &nfe, &error));
  siflow_plan_options po;
  siflow_plan_options_init(&po);
  siflow_plan* plan = nullptr;
  REQUIRE(siflow_plan_create(model, &po, nullptr, 0, &plan, nullptr) == SIFLOW_OK);
  siflow_run_options o;
  siflow_run_options_init(&o);
  CHECK(o.solver == nullptr);
  o.solver = "tuned-5";
  std::vector<float> x(8);
  REQUIRE(siflow_sample(plan, 4, &o, x.data(), nullptr, nullptr) == SIFLOW_OK);
  CHECK(siflow_plan_evaluations(plan) == 5);
  o.solver = "nope";
  siflow_error e;
  CHECK(siflow_sample(plan, 4, &o, x.data(), nullptr, &e) == SIFLOW_INVALID_ARGUMENT);
  CHECK(std::string(e.message).find("no solver named 'nope'") != std::string::npos);
  siflow_validation_report r;
  r.struct_size = sizeof r;
  REQUIRE(siflow_validate(model, nullptr, nullptr, nullptr, &r, nullptr) == SIFLOW_OK);
  CHECK(r.solver_count == 1);
  CHECK(r.solver_ok == 1);
  CHECK(std::string(r.solver_worst) == "tuned-5");
  siflow_plan_free(plan);
  siflow_model_free(model);
}

TEST_CASE("flipped bytes of a model with solvers load or fail cleanly (never crash)") {
  const std::vector<uint8_t> plain = base_builder().finish();
  ModelBuilder b = base_builder();
  b.add_solver(good_solver(plain));
  const std::vector<uint8_t> bytes = b.finish();
  uint64_t state = 12345;
  int refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> mutated = bytes;
    for (int k = 0; k < 3; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      mutated[(state >> 33) % mutated.size()] ^= static_cast<uint8_t>(1u << ((state >> 20) % 8));
    }
    Status s;
    std::unique_ptr<Model> m = load(mutated, &s);
    if (m) {
      siflow::ValidationReport r;
      (void)siflow::validate_embedded(*m, &r);
    } else {
      ++refused;
      CHECK(std::strlen(s.message()) > 0);
    }
  }
  CHECK(refused > 0);
}

TEST_CASE("add_solvers refuses a model whose tables hold fields it does not know") {
  // v = W x with one extra Model field (id 12, one past solvers): a newer writer's field. The
  // loader ignores it; a copy would drop it, so add_solvers refuses.
  namespace fb = siflow::fb;
  for (bool extra : {true, false}) {
    flatbuffers::FlatBufferBuilder fbb;
    auto shape = fbb.CreateVector(std::vector<uint32_t>{2, 2});
    const std::vector<float> w = {0.5f, 0.1f, -0.2f, 0.3f};
    fbb.ForceVectorAlignment(w.size(), sizeof(float), 64);
    auto values = fbb.CreateVector(w);
    auto weight = fb::CreateWeights(fbb, fb::DType::F32, shape, values);
    auto inputs = fbb.CreateVector(std::vector<uint32_t>{0});
    std::vector<flatbuffers::Offset<fb::Node>> nodes{fb::CreateNode(
        fbb, fb::OpType::FullyConnected, inputs, 0, fb::UnaryKind::Identity, 0.01f, weight)};
    auto graph = fb::CreateGraph(fbb, 2, fbb.CreateVector(nodes), 2);
    fb::ModelBuilder mb(fbb);
    mb.add_graph(graph);
    if (extra) fbb.AddElement<uint32_t>(static_cast<flatbuffers::voffset_t>(4 + 2 * 12), 7u, 0u);
    fbb.Finish(mb.Finish(), fb::ModelIdentifier());
    const std::vector<uint8_t> bytes(fbb.GetBufferPointer(),
                                     fbb.GetBufferPointer() + fbb.GetSize());
    REQUIRE(load(bytes));
    std::vector<uint8_t> out;
    const Status s = siflow::add_solvers(bytes.data(), bytes.size(), {}, &out);
    if (extra) {
      CHECK(s.code() == StatusCode::kUnsupported);
      CHECK(std::string(s.message()).find("Model table holds fields") != std::string::npos);
    } else {
      CHECK(s.ok());  // the same file without the extra field copies
      CHECK(load(out));
    }
  }
}

namespace {

// good_solver with per-step coefficients: ab2's weights on its grid moved by `shift` on every
// step (the newest velocity + shift, the older - shift), test vector recomputed with them.
StoredSolver coefficient_solver(const std::vector<uint8_t>& model_bytes, double shift) {
  StoredSolver s = good_solver(model_bytes);
  s.coefficients.resize(siflow::solver_coefficient_count(s.method, s.grid.size() - 1));
  REQUIRE(siflow::adams_bashforth_coefficients(s.method, s.grid.data(), s.grid.size(),
                                               s.coefficients.data())
              .ok());
  for (size_t r = 0; r < s.coefficients.size() / 2; ++r) {
    s.coefficients[2 * r] += shift;
    s.coefficients[2 * r + 1] -= shift;
  }
  std::unique_ptr<Model> m = load(model_bytes);
  REQUIRE(m);
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*m, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  OdeOptions o;
  o.method = s.method;
  o.grid = s.grid.data();
  o.grid_size = s.grid.size();
  o.coefficients = s.coefficients.data();
  o.coefficient_count = s.coefficients.size();
  REQUIRE(plan->decode(2, s.test_start.data(), o, siflow::DivergenceOptions(), s.test_end.data(),
                       nullptr)
              .ok());
  return s;
}

}  // namespace

TEST_CASE("a solver's per-step coefficients round-trip and are what sample --solver runs") {
  const std::vector<uint8_t> plain = base_builder().finish();
  const StoredSolver s = coefficient_solver(plain, 0.3);
  ModelBuilder b = base_builder();
  b.add_solver(s);
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<Model> m = load(bytes);
  REQUIRE(m);
  CHECK(m->info().format_minor == 2);  // coefficients need no newer format
  siflow::SolverInfo info;
  REQUIRE(m->solver(0, &info));
  REQUIRE(info.coefficient_count == 8);  // ab2 on 5 steps: steps 1..4, 2 each
  for (uint32_t i = 0; i < 8; ++i) CHECK(info.coefficients[i] == s.coefficients[i]);
  // add_solvers keeps them when it copies the solver, and writes them for a new one.
  std::vector<uint8_t> copied;
  StoredSolver other = s;
  other.name = "other";
  REQUIRE(siflow::add_solvers(bytes.data(), bytes.size(), {other}, &copied).ok());
  std::unique_ptr<Model> mc = load(copied);
  REQUIRE(mc);
  for (uint32_t k = 0; k < 2; ++k) {
    REQUIRE(mc->solver(k, &info));
    REQUIRE(info.coefficient_count == 8);
    for (uint32_t i = 0; i < 8; ++i) CHECK(info.coefficients[i] == s.coefficients[i]);
  }
  // Selected by name: the same bits as the explicit grid and coefficients, not those of ab2.
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*m, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  siflow::SampleOptions so;
  so.seed = 3;
  std::vector<float> by_name(16), explicit_run(16), plain_ab2(16);
  so.ode.solver = "tuned-5";
  REQUIRE(plan->sample(8, so, by_name.data(), nullptr).ok());
  CHECK(plan->evaluations() == 5);
  so.ode = OdeOptions();
  so.ode.method = Method::kAB2;
  so.ode.grid = s.grid.data();
  so.ode.grid_size = s.grid.size();
  REQUIRE(plan->sample(8, so, plain_ab2.data(), nullptr).ok());
  so.ode.coefficients = s.coefficients.data();
  so.ode.coefficient_count = s.coefficients.size();
  REQUIRE(plan->sample(8, so, explicit_run.data(), nullptr).ok());
  CHECK(by_name == explicit_run);
  CHECK(by_name != plain_ab2);
  // validate re-runs the test vector with the coefficients.
  siflow::ValidationReport r;
  REQUIRE(siflow::validate_embedded(*m, &r).ok());
  CHECK(r.solver_ok);
  CHECK(r.solver_max_error <= 1e-6);
  // encode and log_prob walk the grid backwards with the Adams-Bashforth weights.
  std::vector<float> z_solver(16), z_ab2(16);
  OdeOptions back;
  back.solver = "tuned-5";
  REQUIRE(plan->encode(8, by_name.data(), back, z_solver.data()).ok());
  back = OdeOptions();
  back.method = Method::kAB2;
  back.grid = s.grid.data();
  back.grid_size = s.grid.size();
  REQUIRE(plan->encode(8, by_name.data(), back, z_ab2.data()).ok());
  CHECK(z_solver == z_ab2);
}

TEST_CASE("the Adams-Bashforth weights as coefficients give ab<k>'s float samples bit for bit") {
  const std::vector<uint8_t> plain = base_builder().finish();
  std::unique_ptr<Model> m = load(plain);
  REQUIRE(m);
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*m, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  for (Method method : {Method::kAB2, Method::kAB3, Method::kAB4}) {
    CAPTURE(siflow::method_name(method));
    const std::vector<double> grid = {0.0, 0.1, 0.15, 0.35, 0.5, 0.62, 0.7, 0.82, 0.93, 1.0};
    std::vector<double> c(siflow::solver_coefficient_count(method, grid.size() - 1));
    REQUIRE(siflow::adams_bashforth_coefficients(method, grid.data(), grid.size(), c.data()).ok());
    siflow::SampleOptions so;
    so.ode.method = method;
    so.ode.grid = grid.data();
    so.ode.grid_size = grid.size();
    std::vector<float> ab(64), with(64);
    REQUIRE(plan->sample(32, so, ab.data(), nullptr).ok());
    so.ode.coefficients = c.data();
    so.ode.coefficient_count = c.size();
    REQUIRE(plan->sample(32, so, with.data(), nullptr).ok());
    // The step weights are h (w / h) in double instead of w; on this grid every one rounds to
    // the same float weight (IEEE double arithmetic, the same on every platform), so the
    // samples are bit-equal.
    CHECK(with == ab);
  }
}

TEST_CASE("the loader and OdeOptions refuse bad per-step coefficients, naming the cause") {
  const std::vector<uint8_t> plain = base_builder().finish();
  const StoredSolver good = coefficient_solver(plain, 0.1);
  StoredSolver s = good;
  s.coefficients.pop_back();
  expect_refused(s, {"solver 'tuned-5'", "7 per-step coefficients, but ab2 on 5 steps takes 8"});
  s = good;
  s.coefficients.resize(21);
  expect_refused(s, {"21 per-step coefficients for 5 steps (at most 4 a step)"});
  s = good;
  s.coefficients[3] = NAN;
  expect_refused(s, {"coefficient 1 of step 2 is not finite"});
  s = good;
  s.coefficients[4] = 1e6;
  s.coefficients[5] = 1.0 - 1e6;
  expect_refused(s, {"coefficient 0 of step 3 is 1e+06, outside [-64, 64]"});
  s = good;
  s.coefficients[6] += 0.5;
  expect_refused(s, {"the coefficients of step 4 sum to"});
  s = good;
  s.method = Method::kHeun;
  s.grid = {0.0, 0.5, 1.0};
  s.nfe = 4;
  s.coefficients = {1.0, 0.0};
  expect_refused(s, {"method heun takes none"});
  // A run's own coefficients: checked the same way; a stored solver excludes them.
  ModelBuilder b = base_builder();
  b.add_solver(good);
  std::unique_ptr<Model> m = load(b.finish());
  REQUIRE(m);
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*m, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  siflow::SampleOptions so;
  std::vector<float> x(8);
  so.ode.solver = "tuned-5";
  so.ode.coefficients = good.coefficients.data();
  so.ode.coefficient_count = good.coefficients.size();
  Status st = plan->sample(4, so, x.data(), nullptr);
  CHECK(std::string(st.message()).find("brings its own per-step coefficients") !=
        std::string::npos);
  so.ode.solver = nullptr;
  so.ode.method = Method::kRK4;
  so.ode.steps = 5;
  st = plan->sample(4, so, x.data(), nullptr);
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK(std::string(st.message())
            .find("OdeOptions.coefficients: 8 per-step coefficients, but "
                  "method rk4 takes none") != std::string::npos);
  so.ode.method = Method::kAB2;
  st = plan->sample(4, so, x.data(), nullptr);
  CHECK(st.ok());  // uniform grid of 5 steps: 8 coefficients fit
  std::vector<double> bad = good.coefficients;
  bad[0] = INFINITY;
  so.ode.coefficients = bad.data();
  st = plan->sample(4, so, x.data(), nullptr);
  CHECK(std::string(st.message()).find("coefficient 0 of step 1 is not finite") !=
        std::string::npos);
}

TEST_CASE("C API: a solver with coefficients selected by name gives the C++ API's samples") {
  const std::vector<uint8_t> plain = base_builder().finish();
  ModelBuilder b = base_builder();
  b.add_solver(coefficient_solver(plain, 0.3));
  const std::vector<uint8_t> bytes = b.finish();
  siflow_model* model = nullptr;
  REQUIRE(siflow_model_load(bytes.data(), bytes.size(), 1, &model, nullptr) == SIFLOW_OK);
  siflow_plan_options po;
  siflow_plan_options_init(&po);
  siflow_plan* plan = nullptr;
  REQUIRE(siflow_plan_create(model, &po, nullptr, 0, &plan, nullptr) == SIFLOW_OK);
  siflow_run_options o;
  siflow_run_options_init(&o);
  o.seed = 5;
  o.solver = "tuned-5";
  std::vector<float> from_c(16), from_cpp(16);
  REQUIRE(siflow_sample(plan, 8, &o, from_c.data(), nullptr, nullptr) == SIFLOW_OK);
  siflow_validation_report r;
  r.struct_size = sizeof r;
  REQUIRE(siflow_validate(model, nullptr, nullptr, nullptr, &r, nullptr) == SIFLOW_OK);
  CHECK(r.solver_ok == 1);
  siflow_plan_free(plan);
  siflow_model_free(model);
  std::unique_ptr<Model> m = load(bytes);
  REQUIRE(m);
  std::unique_ptr<Plan> cpp;
  REQUIRE(Plan::create(*m, siflow::PlanOptions(), nullptr, 0, &cpp).ok());
  siflow::SampleOptions so;
  so.seed = 5;
  so.ode.solver = "tuned-5";
  REQUIRE(cpp->sample(8, so, from_cpp.data(), nullptr).ok());
  CHECK(from_c == from_cpp);
}
