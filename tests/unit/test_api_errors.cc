// SPDX-License-Identifier: Apache-2.0
// Plan API argument checking: every bad input to create/sample/decode/encode/log_prob/velocity
// gets its own status code and a message naming the cause; plus chunking invariance (results
// are bit-identical for any max_batch) and per-sample reproducibility via first_index.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/byte_span.hpp"
#include "support/requirements.hpp"

namespace {

using siflow::DivergenceMode;
using siflow::DivergenceOptions;
using siflow::LogProbOptions;
using siflow::Model;
using siflow::ModelBuilder;
using siflow::OdeOptions;
using siflow::Plan;
using siflow::PlanOptions;
using siflow::SampleOptions;
using siflow::Status;
using siflow::StatusCode;

std::string text(const Status& s) { return std::string(s.message()); }

void expect_error(const Status& s, StatusCode code, std::initializer_list<const char*> fragments) {
  INFO("message: " << text(s));
  CHECK(s.code() == code);
  for (const char* f : fragments) {
    INFO("expected fragment: " << f);
    CHECK(text(s).find(f) != std::string::npos);
  }
}

// Loads through the copy path: the bytes sit one byte past a 64-byte boundary, so the model
// owns an aligned copy and outlives them. (A vector's storage may happen to be 64-byte aligned,
// and then the model would use it in place and dangle once it is freed.)
std::unique_ptr<Model> load(const ModelBuilder& b) {
  const siflow_test::ByteSpan misaligned(b.finish(), 1);
  std::unique_ptr<Model> model;
  const Status s = Model::load(misaligned.data(), misaligned.size(), siflow::LoadOptions(), &model);
  REQUIRE_MESSAGE(s.ok(), text(s));
  return model;
}

// A dim-2 nonlinear model with a Gaussian base and the trig interpolant (score available).
ModelBuilder gaussian_builder() {
  ModelBuilder b(2);
  const uint32_t h =
      b.unary(b.fully_connected(b.concat({b.x(), b.t()}), 6,
                                {0.3f, -0.2f, 0.5f, 0.1f, 0.4f, -0.3f, -0.5f, 0.2f, 0.1f, 0.2f,
                                 0.2f, 0.6f, 0.7f, -0.1f, 0.3f, -0.4f, 0.3f, 0.2f},
                                {0.1f, -0.1f, 0.0f, 0.2f, 0.0f, 0.1f}),
              siflow::UnaryKind::kTanh);
  b.set_output(b.fully_connected(
      h, 2, {0.4f, -0.3f, 0.2f, 0.1f, 0.5f, -0.2f, 0.1f, 0.3f, -0.4f, 0.2f, 0.3f, 0.2f}));
  return b;
}

std::unique_ptr<Model> gaussian_model() { return load(gaussian_builder()); }

std::unique_ptr<Plan> make_plan(const Model& model, size_t max_batch = 16,
                                DivergenceMode mode = DivergenceMode::kExact,
                                uint32_t max_probes = 4) {
  PlanOptions po;
  po.max_batch = max_batch;
  po.divergence = mode;
  po.max_probes = max_probes;
  std::unique_ptr<Plan> plan;
  const Status s = Plan::create(model, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), text(s));
  return plan;
}

std::vector<float> points(size_t n, uint32_t dim, float scale = 1.0f) {
  std::vector<float> x(n * dim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = scale * std::sin(1.7f * i + 0.3f);
  return x;
}

}  // namespace

TEST_CASE("n = 0 is refused by every call as an empty batch") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> x = points(1, 2), y(2), t = {0.5f};
  std::vector<double> logp(1);
  const char* empty = "n is 0 (empty batch)";
  expect_error(plan->sample(0, SampleOptions(), y.data(), nullptr), StatusCode::kInvalidArgument,
               {"sample", empty});
  expect_error(plan->decode(0, x.data(), OdeOptions(), DivergenceOptions(), y.data(), nullptr),
               StatusCode::kInvalidArgument, {"decode", empty});
  expect_error(plan->encode(0, x.data(), OdeOptions(), y.data()), StatusCode::kInvalidArgument,
               {"encode", empty});
  expect_error(plan->log_prob(0, x.data(), LogProbOptions(), logp.data()),
               StatusCode::kInvalidArgument, {"log_prob", empty});
  expect_error(plan->velocity(0, t.data(), x.data(), y.data()), StatusCode::kInvalidArgument,
               {"velocity", empty});
}

TEST_CASE("null input or output pointers are refused, naming which one") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> x = points(1, 2), y(2), t = {0.5f};
  std::vector<double> logp(1);
  const StatusCode bad = StatusCode::kInvalidArgument;
  expect_error(plan->sample(1, SampleOptions(), nullptr, nullptr), bad,
               {"sample", "output pointer is null"});
  expect_error(plan->decode(1, nullptr, OdeOptions(), DivergenceOptions(), y.data(), nullptr), bad,
               {"decode", "input pointer is null"});
  expect_error(plan->decode(1, x.data(), OdeOptions(), DivergenceOptions(), nullptr, nullptr), bad,
               {"decode", "output pointer is null"});
  expect_error(plan->encode(1, nullptr, OdeOptions(), y.data()), bad,
               {"encode", "input pointer is null"});
  expect_error(plan->encode(1, x.data(), OdeOptions(), nullptr), bad,
               {"encode", "output pointer is null"});
  expect_error(plan->log_prob(1, nullptr, LogProbOptions(), logp.data()), bad,
               {"log_prob", "input pointer is null"});
  expect_error(plan->log_prob(1, x.data(), LogProbOptions(), nullptr), bad,
               {"log_prob", "output pointer is null"});
  expect_error(plan->velocity(1, nullptr, x.data(), y.data()), bad, {"velocity", "t is null"});
  expect_error(plan->velocity(1, t.data(), nullptr, y.data()), bad,
               {"velocity", "input pointer is null"});
  expect_error(plan->velocity(1, t.data(), x.data(), nullptr), bad,
               {"velocity", "output pointer is null"});
  std::unique_ptr<Plan> out;
  expect_error(Plan::create(*model, PlanOptions(), nullptr, 0, nullptr), bad, {"out is null"});
  expect_error(siflow::arena_bytes(*model, PlanOptions(), nullptr), bad, {"bytes is null"});
}

TEST_CASE("a NaN or Inf input row is refused naming the row index") {
  auto model = gaussian_model();
  auto plan = make_plan(*model, 2);  // row 3 sits in the second chunk: the index is global
  const size_t n = 6;
  std::vector<float> x = points(n, 2), y(n * 2), t(n, 0.5f);
  std::vector<double> logp(n);
  x[3 * 2 + 1] = NAN;
  const StatusCode bad = StatusCode::kInvalidArgument;
  expect_error(plan->decode(n, x.data(), OdeOptions(), DivergenceOptions(), y.data(), nullptr), bad,
               {"decode: input", "row 3 holds NaN or Inf"});
  expect_error(plan->encode(n, x.data(), OdeOptions(), y.data()), bad, {"encode: input", "row 3"});
  expect_error(plan->log_prob(n, x.data(), LogProbOptions(), logp.data()), bad,
               {"log_prob: input", "row 3"});
  expect_error(plan->velocity(n, t.data(), x.data(), y.data()), bad, {"velocity: input", "row 3"});
  x[3 * 2 + 1] = 0.0f;
  x[4 * 2] = -INFINITY;
  expect_error(plan->encode(n, x.data(), OdeOptions(), y.data()), bad, {"row 4"});
  x[4 * 2] = 0.0f;
  t[5] = NAN;
  expect_error(plan->velocity(n, t.data(), x.data(), y.data()), bad, {"velocity: t", "row 5"});
}

TEST_CASE("option structs with an unknown struct_size are refused") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> x = points(1, 2), y(2);
  std::vector<double> logp(1);
  for (uint32_t size : {0u, 2u, 100000u}) {
    INFO("struct_size " << size);
    SampleOptions so;
    so.struct_size = size;
    expect_error(plan->sample(1, so, y.data(), nullptr), StatusCode::kInvalidArgument,
                 {"SampleOptions.struct_size"});
    LogProbOptions lp;
    lp.struct_size = size;
    expect_error(plan->log_prob(1, x.data(), lp, logp.data()), StatusCode::kInvalidArgument,
                 {"LogProbOptions.struct_size"});
    OdeOptions ode;
    ode.struct_size = size;
    expect_error(plan->encode(1, x.data(), ode, y.data()), StatusCode::kInvalidArgument,
                 {"encode", "OdeOptions.struct_size"});
    expect_error(plan->decode(1, x.data(), ode, DivergenceOptions(), y.data(), nullptr),
                 StatusCode::kInvalidArgument, {"decode", "OdeOptions.struct_size"});
    SampleOptions nested;
    nested.ode.struct_size = size;
    expect_error(plan->sample(1, nested, y.data(), nullptr), StatusCode::kInvalidArgument,
                 {"sample", "OdeOptions.struct_size"});
    PlanOptions po;
    po.struct_size = size;
    std::unique_ptr<Plan> p;
    expect_error(Plan::create(*model, po, nullptr, 0, &p), StatusCode::kInvalidArgument,
                 {"PlanOptions.struct_size"});
    size_t bytes = 0;
    expect_error(siflow::arena_bytes(*model, po, &bytes), StatusCode::kInvalidArgument,
                 {"PlanOptions.struct_size"});
  }
}

TEST_CASE("steps 0 or above the limit is refused") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> x = points(1, 2), y(2);
  for (uint32_t steps : {0u, siflow::Limits::kMaxSteps + 1}) {
    OdeOptions ode;
    ode.steps = steps;
    expect_error(plan->encode(1, x.data(), ode, y.data()), StatusCode::kInvalidArgument,
                 {"steps", "is outside [1, 1048576]"});
    SampleOptions so;
    so.ode.steps = steps;
    expect_error(plan->sample(1, so, y.data(), nullptr), StatusCode::kInvalidArgument,
                 {"sample", "steps"});
  }
}

TEST_CASE("unknown enum values in options are refused, each named") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> x = points(1, 2), y(2);
  std::vector<double> logp(1);
  OdeOptions ode;
  ode.method = static_cast<siflow::Method>(9);
  expect_error(plan->encode(1, x.data(), ode, y.data()), StatusCode::kInvalidArgument,
               {"unknown integration method 9"});
  LogProbOptions lp;
  lp.divergence.mode = static_cast<DivergenceMode>(7);
  expect_error(plan->log_prob(1, x.data(), lp, logp.data()), StatusCode::kInvalidArgument,
               {"unknown divergence mode 7"});
  LogProbOptions probe;
  probe.divergence.mode = DivergenceMode::kHutchinson;
  probe.divergence.probe = static_cast<siflow::ProbeKind>(5);
  expect_error(plan->log_prob(1, x.data(), probe, logp.data()), StatusCode::kInvalidArgument,
               {"unknown probe kind 5"});
  SampleOptions schedule;
  schedule.sde.epsilon = 0.1;
  schedule.sde.schedule = static_cast<siflow::EpsilonSchedule>(4);
  expect_error(plan->sample(1, schedule, y.data(), nullptr), StatusCode::kInvalidArgument,
               {"unknown epsilon schedule 4"});
  SampleOptions method;
  method.sde.epsilon = 0.1;
  method.sde.method = static_cast<siflow::SdeMethod>(3);
  expect_error(plan->sample(1, method, y.data(), nullptr), StatusCode::kInvalidArgument,
               {"unknown SDE method 3"});
  PlanOptions po;
  po.divergence = static_cast<DivergenceMode>(6);
  std::unique_ptr<Plan> p;
  expect_error(Plan::create(*model, po, nullptr, 0, &p), StatusCode::kInvalidArgument,
               {"unknown divergence mode 6"});
}

TEST_CASE("an explicit grid that is not strictly increasing is refused naming the point") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> x = points(1, 2), y(2);
  const double grid[] = {0.0, 0.3, 0.3, 1.0};
  OdeOptions ode;
  ode.grid = grid;
  ode.grid_size = 4;
  expect_error(plan->encode(1, x.data(), ode, y.data()), StatusCode::kInvalidArgument,
               {"not strictly increasing at point 2"});
  const double down[] = {0.0, 0.6, 0.4, 1.0};
  ode.grid = down;
  expect_error(plan->encode(1, x.data(), ode, y.data()), StatusCode::kInvalidArgument,
               {"not strictly increasing at point 2"});
  const double nan[] = {0.0, NAN, 1.0};
  ode.grid = nan;
  ode.grid_size = 3;
  expect_error(plan->encode(1, x.data(), ode, y.data()), StatusCode::kInvalidArgument,
               {"time grid point 1 is not finite"});
  ode.grid = grid;
  ode.grid_size = 1;
  expect_error(plan->encode(1, x.data(), ode, y.data()), StatusCode::kInvalidArgument,
               {"time grid has 1 points"});
}

TEST_CASE("an explicit grid that does not span the run's time range is refused") {
  ModelBuilder b = gaussian_builder();
  b.set_time_range(0.1, 0.9);
  auto model = load(b);
  auto plan = make_plan(*model);
  std::vector<float> x = points(1, 2), y(2);
  std::vector<double> logp(1);
  const double unit[] = {0.0, 0.5, 1.0};  // [0, 1] but the model runs on [0.1, 0.9]
  OdeOptions ode;
  ode.grid = unit;
  ode.grid_size = 3;
  expect_error(plan->decode(1, x.data(), ode, DivergenceOptions(), y.data(), nullptr),
               StatusCode::kInvalidArgument, {"time grid runs from 0 to 1", "needs 0.1 to 0.9"});
  const double model_range[] = {0.1, 0.5, 0.9};
  ode.grid = model_range;
  CHECK(plan->decode(1, x.data(), ode, DivergenceOptions(), y.data(), nullptr).ok());
  // log_prob at s = 0.5 needs a grid from time_start to s.
  LogProbOptions lp;
  lp.time = 0.5;
  lp.ode = ode;
  expect_error(plan->log_prob(1, x.data(), lp, logp.data()), StatusCode::kInvalidArgument,
               {"log_prob", "needs 0.1 to 0.5"});
}

TEST_CASE("a caller arena smaller than arena_bytes (plus alignment padding) is kArenaTooSmall") {
  auto model = gaussian_model();
  PlanOptions po;
  po.max_batch = 8;
  size_t need = 0;
  REQUIRE(siflow::arena_bytes(*model, po, &need).ok());
  REQUIRE(need > 0);
  void* block = nullptr;
  REQUIRE(posix_memalign(&block, 64, need + 128) == 0);
  uint8_t* aligned = static_cast<uint8_t*>(block);
  std::unique_ptr<Plan> plan;
  expect_error(Plan::create(*model, po, aligned, need - 1, &plan), StatusCode::kArenaTooSmall,
               {"too small", "needs"});
  CHECK_FALSE(plan);
  // Misaligned by one byte, exactly `need` bytes are not enough: 63 bytes go to padding.
  expect_error(Plan::create(*model, po, aligned + 1, need, &plan), StatusCode::kArenaTooSmall,
               {"alignment padding"});
  CHECK(Plan::create(*model, po, aligned + 1, need + 63, &plan).ok());
  plan.reset();
  REQUIRE(Plan::create(*model, po, aligned, need, &plan).ok());
  CHECK(plan->arena_bytes() == need);
  std::vector<float> x(8 * 2);
  CHECK(plan->sample(8, SampleOptions(), x.data(), nullptr).ok());
  plan.reset();
  std::free(block);
}

TEST_CASE("max_batch 0 or above the limit, and max_probes outside [1, 1024], are refused") {
  auto model = gaussian_model();
  std::unique_ptr<Plan> plan;
  PlanOptions zero;
  zero.max_batch = 0;
  expect_error(Plan::create(*model, zero, nullptr, 0, &plan), StatusCode::kInvalidArgument,
               {"max_batch is 0"});
  PlanOptions huge;
  huge.max_batch = siflow::Limits::kMaxBatch + 1;
  expect_error(Plan::create(*model, huge, nullptr, 0, &plan), StatusCode::kInvalidArgument,
               {"max_batch 1048577 exceeds the limit"});
  PlanOptions probes;
  probes.divergence = DivergenceMode::kHutchinson;
  probes.max_probes = 0;
  expect_error(Plan::create(*model, probes, nullptr, 0, &plan), StatusCode::kInvalidArgument,
               {"max_probes 0 is outside [1, 1024]"});
  probes.max_probes = 1025;
  expect_error(Plan::create(*model, probes, nullptr, 0, &plan), StatusCode::kInvalidArgument,
               {"max_probes 1025"});
  PlanOptions threads;
  threads.threads = 0;
  expect_error(Plan::create(*model, threads, nullptr, 0, &plan), StatusCode::kInvalidArgument,
               {"threads is 0"});
  threads.threads = 257;
  expect_error(Plan::create(*model, threads, nullptr, 0, &plan), StatusCode::kInvalidArgument,
               {"threads = 257 exceeds the limit 256"});
  // Two threads run where the build has a thread pool; without one they are refused by name.
  threads.threads = 2;
  const Status two = Plan::create(*model, threads, nullptr, 0, &plan);
  if (siflow_test::kHaveThreadPool) {
    REQUIRE_MESSAGE(two.ok(), two.message());
    CHECK(plan->threads() == 2);
  } else {
    expect_error(two, StatusCode::kUnsupported, {"threads = 2", "no thread pool"});
  }
  PlanOptions backend;
  backend.backend = static_cast<siflow::Backend>(9);
  expect_error(Plan::create(*model, backend, nullptr, 0, &plan), StatusCode::kInvalidArgument,
               {"unknown backend 9"});
}

TEST_CASE("more Hutchinson probes than the plan's max_probes (or zero) are refused") {
  auto model = gaussian_model();
  auto plan = make_plan(*model, 4, DivergenceMode::kHutchinson, 4);
  std::vector<float> x = points(2, 2), y(4);
  std::vector<double> logp(2);
  LogProbOptions lp;
  lp.divergence.mode = DivergenceMode::kHutchinson;
  lp.divergence.probes = 5;
  expect_error(plan->log_prob(2, x.data(), lp, logp.data()), StatusCode::kInvalidArgument,
               {"Hutchinson probes 5 outside [1, 4]", "max_probes"});
  lp.divergence.probes = 0;
  expect_error(plan->log_prob(2, x.data(), lp, logp.data()), StatusCode::kInvalidArgument,
               {"Hutchinson probes 0"});
  lp.divergence.probes = 4;
  CHECK(plan->log_prob(2, x.data(), lp, logp.data()).ok());
}

TEST_CASE("exact divergence on a plan made without tangents is refused") {
  auto model = gaussian_model();
  auto plan = make_plan(*model, 4, DivergenceMode::kNone);
  std::vector<float> x = points(2, 2), y(4);
  std::vector<double> logp(2);
  expect_error(plan->log_prob(2, x.data(), LogProbOptions(), logp.data()),
               StatusCode::kInvalidArgument,
               {"log_prob", "exact divergence needs a plan made with divergence exact",
                "0 tangent directions"});
  expect_error(plan->sample(2, SampleOptions(), y.data(), logp.data()),
               StatusCode::kInvalidArgument, {"sample", "exact divergence needs"});
  // Without log-likelihoods the same plan samples, decodes and encodes.
  CHECK(plan->sample(2, SampleOptions(), y.data(), nullptr).ok());
}

TEST_CASE("a log-likelihood with divergence mode none is refused") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> x = points(2, 2), y(4);
  std::vector<double> logp(2);
  DivergenceOptions none;
  none.mode = DivergenceMode::kNone;
  expect_error(plan->decode(2, x.data(), OdeOptions(), none, y.data(), logp.data()),
               StatusCode::kInvalidArgument, {"decode", "needs a divergence mode"});
}

TEST_CASE("SDE sampling on a uniform base is unsupported") {
  ModelBuilder b = gaussian_builder();
  b.set_uniform_base({-1.0f, -1.0f}, {1.0f, 1.0f});
  auto model = load(b);
  auto plan = make_plan(*model);
  std::vector<float> y(4);
  SampleOptions so;
  so.sde.epsilon = 0.5;
  expect_error(plan->sample(2, so, y.data(), nullptr), StatusCode::kUnsupported,
               {"SDE sampling needs a Gaussian base", "uniform"});
}

TEST_CASE("SDE sampling on an interpolant without a score is unsupported") {
  ModelBuilder b = gaussian_builder();
  b.set_interpolant(siflow::InterpolantKind::kLearnedFourier, {-1.0}, {0.0});
  auto model = load(b);
  REQUIRE_FALSE(model->info().score_available);
  auto plan = make_plan(*model);
  std::vector<float> y(4);
  SampleOptions so;
  so.sde.epsilon = 0.5;
  expect_error(plan->sample(2, so, y.data(), nullptr), StatusCode::kUnsupported,
               {"needs the score", "vanishes"});
}

TEST_CASE("SDE sampling with per-sample log-likelihoods requested is refused") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> y(4);
  std::vector<double> logp(2);
  SampleOptions so;
  so.sde.epsilon = 0.5;
  expect_error(plan->sample(2, so, y.data(), logp.data()), StatusCode::kInvalidArgument,
               {"SDE samples have no per-sample log-likelihood"});
}

TEST_CASE("a negative or non-finite SDE epsilon or stop delta is refused") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> y(4);
  for (double eps : {-0.1, double(NAN), double(INFINITY)}) {
    SampleOptions so;
    so.sde.epsilon = eps;
    expect_error(plan->sample(2, so, y.data(), nullptr), StatusCode::kInvalidArgument,
                 {"SDE epsilon", "must be > 0"});
  }
  SampleOptions delta;
  delta.sde.epsilon = 0.1;
  delta.sde.stop_delta = -0.5;
  expect_error(plan->sample(2, delta, y.data(), nullptr), StatusCode::kInvalidArgument,
               {"stop delta -0.5 must be >= 0"});
}

TEST_CASE("a constant epsilon without a stop delta is refused (eps * score unbounded at t = 1)") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> y(4);
  SampleOptions so;
  so.sde.epsilon = 0.5;
  so.sde.schedule = siflow::EpsilonSchedule::kConstant;
  expect_error(plan->sample(2, so, y.data(), nullptr), StatusCode::kInvalidArgument,
               {"constant epsilon without a stop", "unbounded at t = 1"});
  so.sde.stop_delta = 0.1;  // the documented remedy
  CHECK(plan->sample(2, so, y.data(), nullptr).ok());
}

TEST_CASE("a stop delta that leaves no ODE step or no SDE step on the grid is refused") {
  auto model = gaussian_model();
  auto plan = make_plan(*model);
  std::vector<float> y(4);
  SampleOptions so;
  so.ode.steps = 4;
  so.sde.epsilon = 0.5;
  so.sde.stop_delta = 1e-20;  // 1 - 1e-20 rounds to 1: every grid point is at or before the stop
  expect_error(plan->sample(2, so, y.data(), nullptr), StatusCode::kInvalidArgument,
               {"leaves no ODE step", "4 steps"});
  so.sde.stop_delta = 0.9;  // stop at 0.1, before the first grid point 0.25
  expect_error(plan->sample(2, so, y.data(), nullptr), StatusCode::kInvalidArgument,
               {"leaves no SDE step"});
  so.sde.stop_delta = 0.3;  // SDE on [0, 0.5], ODE on [0.5, 1]
  CHECK(plan->sample(2, so, y.data(), nullptr).ok());
}

TEST_CASE("a log_prob time outside (time_start, time_end] is refused") {
  ModelBuilder b = gaussian_builder();
  b.set_time_range(0.2, 0.8);
  auto model = load(b);
  auto plan = make_plan(*model);
  std::vector<float> x = points(1, 2);
  std::vector<double> logp(1);
  for (double time : {0.2, 0.1, 0.9, 1.0, double(INFINITY), double(NAN)}) {
    INFO("time " << time);
    LogProbOptions lp;
    lp.time = time;
    expect_error(plan->log_prob(1, x.data(), lp, logp.data()), StatusCode::kInvalidArgument,
                 {"log_prob: time", "outside the model's range (0.2, 0.8]"});
  }
  LogProbOptions inside;
  inside.time = 0.5;
  CHECK(plan->log_prob(1, x.data(), inside, logp.data()).ok());
}

TEST_CASE("velocity whose network output overflows is kNumericalError naming the row, not inf") {
  // v = 1e30 x overflows float for |x| > 3.4e8; row 3 (second chunk of max_batch 2) does.
  ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, {1e30f, 0.0f, 0.0f, 1e30f}));
  auto model = load(b);
  auto plan = make_plan(*model, 2);
  std::vector<float> y(5 * 2, 1.0f), v(5 * 2), t(5, 0.25f);
  y[3 * 2 + 1] = 1e9f;
  expect_error(plan->velocity(5, t.data(), y.data(), v.data()), StatusCode::kNumericalError,
               {"velocity", "not finite in row 3", "t = 0.25"});
  y[3 * 2 + 1] = 1.0f;
  CHECK(plan->velocity(5, t.data(), y.data(), v.data()).ok());
  CHECK(v[0] == 1e30f);
}

TEST_CASE("a normalisation that overflows float is kNumericalError naming the row, not inf") {
  // std 1e38: a flow point y with |y| > 3.4 maps past FLT_MAX in data space. A mean of -3e38
  // (second model) makes x - mean overflow for x above about 4e37 in flow coordinates.
  ModelBuilder b(1);
  b.set_output(b.fully_connected(b.x(), 1, {0.0f}));  // v = 0: samples are the base draws
  b.set_normalization({0.0f}, {1e38f});
  auto model = load(b);
  auto plan = make_plan(*model, 4);
  std::vector<float> z = {0.5f, 1.0f, 2.0f, 5.0f, 0.1f}, x(5);
  OdeOptions ode;
  ode.steps = 1;
  expect_error(plan->decode(5, z.data(), ode, DivergenceOptions(), x.data(), nullptr),
               StatusCode::kNumericalError, {"row 3 overflows float in data space"});
  z[3] = 3.0f;
  CHECK(plan->decode(5, z.data(), ode, DivergenceOptions(), x.data(), nullptr).ok());

  ModelBuilder c(1);
  c.set_output(c.fully_connected(c.x(), 1, {0.0f}));
  c.set_normalization({-3e38f}, {1.0f});
  auto shifted = load(c);
  auto plan2 = make_plan(*shifted, 4);
  std::vector<float> data = {0.0f, 1e37f, -1e38f, 0.0f, 2e38f};
  std::vector<double> logp(5);
  LogProbOptions lp;
  lp.ode.steps = 1;
  expect_error(plan2->log_prob(5, data.data(), lp, logp.data()), StatusCode::kNumericalError,
               {"log_prob", "row 4 overflows float in flow coordinates"});
  expect_error(plan2->encode(5, data.data(), ode, x.data()), StatusCode::kNumericalError,
               {"encode", "row 4 overflows float in flow coordinates"});
}

TEST_CASE("a velocity that blows up during integration is kNumericalError naming step and row") {
  // v = 1e30 x: after one Euler step of h = 1/4 a nonzero row is 2.5e29, after the second its
  // velocity overflows float. Rows 0..2 are zero and stay zero.
  ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, {1e30f, 0.0f, 0.0f, 1e30f}));
  auto model = load(b);
  auto plan = make_plan(*model, 2);  // rows 2, 3 form the second chunk: the row index is global
  std::vector<float> x(5 * 2, 0.0f), y(5 * 2);
  std::vector<double> logp(5);
  x[3 * 2] = 1.0f;
  x[4 * 2 + 1] = 1.0f;
  OdeOptions ode;
  ode.method = siflow::Method::kEuler;
  ode.steps = 4;
  expect_error(plan->decode(5, x.data(), ode, DivergenceOptions(), y.data(), logp.data()),
               StatusCode::kNumericalError, {"diverged", "row 3", "after step 2", "t = 0.5"});
  expect_error(plan->encode(5, x.data(), ode, y.data()), StatusCode::kNumericalError,
               {"row 3", "after step 2"});
  LogProbOptions lp;
  lp.ode = ode;
  expect_error(plan->log_prob(5, x.data(), lp, logp.data()), StatusCode::kNumericalError,
               {"row 3", "after step 2"});
  SampleOptions so;
  so.ode = ode;
  expect_error(plan->sample(5, so, y.data(), nullptr), StatusCode::kNumericalError,
               {"row 0", "after step 2"});  // every base draw is nonzero
}

// Regression test (this was a bug, now fixed): StepMonitor in runtime/src/api/plan.cc checks only
// the state after each step, not the log-density term l. When the Jacobian overflows while v
// stays finite, decode and log_prob return ok with log p = -inf (NaN when infinite diagonal
// entries of both signs meet). Here v = LayerNorm(1e30 x, eps = 1e-38): v = 0 at x = 0 (and at
// x1 = x2), but d v / d x ~ 1e30 / sqrt(1e-38) overflows float. A -inf from a uniform base's
// support is legitimate; an infinite divergence is a numerical failure like an infinite state.
TEST_CASE("an infinite divergence with a finite state is kNumericalError, not an infinite log p ") {
  ModelBuilder b(2);
  b.set_output(
      b.layer_norm(b.fully_connected(b.x(), 2, {1e30f, 0.0f, 0.0f, 1e30f}), {}, {}, 1e-38f));
  auto model = load(b);
  auto plan = make_plan(*model);
  std::vector<float> x = {0.0f, 0.0f, 0.5f, 0.5f}, y(4);
  std::vector<double> logp(2, 0.0);
  OdeOptions ode;
  ode.steps = 4;
  const Status decoded = plan->decode(2, x.data(), ode, DivergenceOptions(), y.data(), logp.data());
  INFO("decode: " << text(decoded) << ", log p = " << logp[0] << ", " << logp[1]);
  CHECK(std::isfinite(y[0]));  // the state itself stays finite: v = 0 along the way
  CHECK(decoded.code() == StatusCode::kNumericalError);
  LogProbOptions lp;
  lp.ode = ode;
  const Status scored = plan->log_prob(2, x.data(), lp, logp.data());
  INFO("log_prob: " << text(scored) << ", log p = " << logp[0] << ", " << logp[1]);
  CHECK(scored.code() == StatusCode::kNumericalError);
}

namespace {

struct Stopper {
  uint64_t calls = 0, last_done = 0, total = 0;
  static bool stop_after_three(void* user, uint64_t done, uint64_t total) {
    auto* s = static_cast<Stopper*>(user);
    s->last_done = done;
    s->total = total;
    return ++s->calls < 3;
  }
};

}  // namespace

TEST_CASE("a progress callback that returns false cancels the run with kCancelled") {
  auto model = gaussian_model();
  auto plan = make_plan(*model, 4);
  std::vector<float> x = points(4, 2), y(8);
  Stopper stopper;
  OdeOptions ode;
  ode.steps = 10;
  ode.progress = Stopper::stop_after_three;
  ode.progress_user = &stopper;
  expect_error(plan->encode(4, x.data(), ode, y.data()), StatusCode::kCancelled, {"cancelled"});
  CHECK(stopper.calls == 3);
  CHECK(stopper.total == 40);      // rows x steps
  CHECK(stopper.last_done == 12);  // three steps of 4 rows
}

namespace {

// The Gaussian model with 2 velocity points and 3 trajectories of `steps` RK4 steps (whose
// references are only the starts: the checks below look at the progress, not the verdict).
std::unique_ptr<Model> model_with_tests(uint32_t steps) {
  ModelBuilder b = gaussian_builder();
  b.set_velocity_tests({0.25f, 0.75f}, points(2, 2), points(2, 2), 1e-3f);
  b.set_trajectory_tests(steps, points(3, 2), points(3, 2), 1e-3f);
  return load(b);
}

struct Counter {
  uint64_t calls = 0, last_done = 0, total = 0;
  static bool count(void* user, uint64_t done, uint64_t total) {
    auto* c = static_cast<Counter*>(user);
    CHECK(done > c->last_done);
    c->last_done = done;
    c->total = total;
    ++c->calls;
    return true;
  }
  static bool stop_at_once(void* user, uint64_t done, uint64_t total) {
    count(user, done, total);
    return false;
  }
};

}  // namespace

TEST_CASE("validate_embedded reports progress after the velocity check and every RK4 step") {
  auto model = model_with_tests(5);
  siflow::ValidationReport report;
  Counter counter;
  const Status s =
      siflow::validate_embedded(*model, PlanOptions(), &report, Counter::count, &counter);
  REQUIRE_MESSAGE(s.ok(), text(s));
  CHECK(report.velocity_count == 2);
  CHECK(report.trajectory_count == 3);
  CHECK(counter.calls == 1 + 5);
  CHECK(counter.total == 2 + 4 * 3 * 5);  // points + 4 RK4 stages x trajectories x steps
  CHECK(counter.last_done == counter.total);
  // Without a callback (or with a null one) the report is the same.
  siflow::ValidationReport plain;
  REQUIRE(siflow::validate_embedded(*model, PlanOptions(), &plain, nullptr).ok());
  CHECK(plain.trajectory_max_error == report.trajectory_max_error);
  CHECK(plain.velocity_max_error == report.velocity_max_error);
}

TEST_CASE("a progress callback that returns false cancels validate_embedded with kCancelled") {
  // 3 trajectories of 2^18 steps: cancelled at the third call, after two of them.
  auto model = model_with_tests(1u << 18);
  siflow::ValidationReport report;
  Stopper stopper;
  expect_error(siflow::validate_embedded(*model, PlanOptions(), &report, Stopper::stop_after_three,
                                         &stopper),
               StatusCode::kCancelled, {"cancelled"});
  CHECK(stopper.calls == 3);
  CHECK(stopper.total == 2 + 4 * 3 * (uint64_t{1} << 18));
  CHECK(stopper.last_done == 2 + 2 * 4 * 3);  // the velocity points, then two steps
  CHECK(report.velocity_count == 0);          // no report from a cancelled validation
  CHECK(report.trajectory_count == 0);
  // Cancelled right after the velocity check: no trajectory step is run.
  Counter counter;
  expect_error(
      siflow::validate_embedded(*model, PlanOptions(), &report, Counter::stop_at_once, &counter),
      StatusCode::kCancelled, {"cancelled"});
  CHECK(counter.calls == 1);
  CHECK(counter.last_done == 2);
}

namespace {

// Runs every call on n rows with a plan of the given max_batch; returns the raw result bytes.
struct Results {
  std::vector<float> sample_exact, sample_hutch, sample_sde, decoded, encoded, vel;
  std::vector<double> logp_exact, logp_hutch, logp_decode, logp_query;
};

Results run_all(const Model& model, size_t n, size_t max_batch) {
  auto plan = make_plan(model, max_batch, DivergenceMode::kExact, 3);
  const uint32_t d = model.info().dim;
  Results r;
  r.sample_exact.resize(n * d);
  r.sample_hutch.resize(n * d);
  r.sample_sde.resize(n * d);
  r.decoded.resize(n * d);
  r.encoded.resize(n * d);
  r.vel.resize(n * d);
  r.logp_exact.resize(n);
  r.logp_hutch.resize(n);
  r.logp_decode.resize(n);
  r.logp_query.resize(n);
  SampleOptions so;
  so.seed = 1234;
  so.ode.steps = 6;
  REQUIRE(plan->sample(n, so, r.sample_exact.data(), r.logp_exact.data()).ok());
  so.divergence.mode = DivergenceMode::kHutchinson;
  so.divergence.probes = 3;
  so.divergence.probe = siflow::ProbeKind::kGaussian;
  so.divergence.seed = 77;
  REQUIRE(plan->sample(n, so, r.sample_hutch.data(), r.logp_hutch.data()).ok());
  SampleOptions sde;
  sde.seed = 99;
  sde.ode.steps = 8;
  sde.sde.epsilon = 0.3;
  REQUIRE(plan->sample(n, sde, r.sample_sde.data(), nullptr).ok());
  const std::vector<float> x0 = points(n, d);
  OdeOptions ode;
  ode.steps = 5;
  ode.method = siflow::Method::kHeun;
  REQUIRE(
      plan->decode(n, x0.data(), ode, DivergenceOptions(), r.decoded.data(), r.logp_decode.data())
          .ok());
  REQUIRE(plan->encode(n, r.decoded.data(), ode, r.encoded.data()).ok());
  LogProbOptions lp;
  lp.ode = ode;
  lp.divergence.mode = DivergenceMode::kHutchinson;
  lp.divergence.probes = 2;
  REQUIRE(plan->log_prob(n, r.decoded.data(), lp, r.logp_query.data()).ok());
  std::vector<float> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<float>(i) / n;
  REQUIRE(plan->velocity(n, t.data(), x0.data(), r.vel.data()).ok());
  return r;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace

TEST_CASE("results are bit-identical whatever max_batch chunks the request into") {
  ModelBuilder b = gaussian_builder();
  b.set_normalization({0.5f, -1.0f}, {2.0f, 0.5f});
  auto model = load(b);
  const size_t n = 10;
  const Results whole = run_all(*model, n, n);
  for (size_t max_batch : {1, 3, 7, 64}) {
    INFO("max_batch " << max_batch);
    const Results r = run_all(*model, n, max_batch);
    CHECK(same_bits(r.sample_exact, whole.sample_exact));
    CHECK(same_bits(r.logp_exact, whole.logp_exact));
    CHECK(same_bits(r.sample_hutch, whole.sample_hutch));
    CHECK(same_bits(r.logp_hutch, whole.logp_hutch));
    CHECK(same_bits(r.sample_sde, whole.sample_sde));
    CHECK(same_bits(r.decoded, whole.decoded));
    CHECK(same_bits(r.logp_decode, whole.logp_decode));
    CHECK(same_bits(r.encoded, whole.encoded));
    CHECK(same_bits(r.logp_query, whole.logp_query));
    CHECK(same_bits(r.vel, whole.vel));
  }
}

TEST_CASE("sample i is the same drawn in a batch of 10 or alone with first_index = i") {
  auto model = gaussian_model();
  auto plan = make_plan(*model, 4, DivergenceMode::kExact, 2);
  const size_t n = 10;
  for (int mode = 0; mode < 3; ++mode) {
    INFO("mode " << mode << " (0: ODE + exact log p, 1: ODE + Hutchinson log p, 2: SDE)");
    SampleOptions so;
    so.seed = 31337;
    so.ode.steps = 5;
    if (mode == 1) {
      so.divergence.mode = DivergenceMode::kHutchinson;
      so.divergence.probes = 2;
    }
    if (mode == 2) so.sde.epsilon = 0.4;
    std::vector<float> batch(n * 2);
    std::vector<double> batch_logp(n);
    double* want_logp = mode == 2 ? nullptr : batch_logp.data();
    REQUIRE(plan->sample(n, so, batch.data(), want_logp).ok());
    for (size_t i = 0; i < n; ++i) {
      SampleOptions one = so;
      one.first_index = i;
      std::vector<float> x(2);
      double logp = 0.0;
      REQUIRE(plan->sample(1, one, x.data(), mode == 2 ? nullptr : &logp).ok());
      CHECK(std::memcmp(x.data(), batch.data() + 2 * i, 2 * sizeof(float)) == 0);
      if (mode != 2) CHECK(std::memcmp(&logp, &batch_logp[i], sizeof(double)) == 0);
    }
  }
}

TEST_CASE("log_prob of row i is the same in a batch or alone with first_index = i (Hutchinson)") {
  auto model = gaussian_model();
  auto plan = make_plan(*model, 3, DivergenceMode::kHutchinson, 2);
  const size_t n = 7;
  const std::vector<float> x = points(n, 2);
  LogProbOptions lp;
  lp.ode.steps = 4;
  lp.divergence.mode = DivergenceMode::kHutchinson;
  lp.divergence.probes = 2;
  lp.divergence.seed = 5;
  std::vector<double> batch(n);
  REQUIRE(plan->log_prob(n, x.data(), lp, batch.data()).ok());
  for (size_t i = 0; i < n; ++i) {
    LogProbOptions one = lp;
    one.first_index = i;
    double logp = 0.0;
    REQUIRE(plan->log_prob(1, x.data() + 2 * i, one, &logp).ok());
    CHECK(std::memcmp(&logp, &batch[i], sizeof(double)) == 0);
  }
}

TEST_CASE(
    "decode's Hutchinson log p of row i is the same in a batch or alone with first_index = i") {
  auto model = gaussian_model();
  auto plan = make_plan(*model, 3, DivergenceMode::kHutchinson, 2);
  const size_t n = 7;
  const std::vector<float> x0 = points(n, 2);
  OdeOptions ode;
  ode.steps = 4;
  DivergenceOptions div;
  div.mode = DivergenceMode::kHutchinson;
  div.probes = 2;
  div.seed = 5;
  std::vector<float> x1(2 * n), one_x(2);
  std::vector<double> batch(n);
  REQUIRE(plan->decode(n, x0.data(), ode, div, x1.data(), batch.data()).ok());
  for (size_t i = 0; i < n; ++i) {
    double logp = 0.0;
    REQUIRE(plan->decode(1, x0.data() + 2 * i, ode, div, one_x.data(), &logp, i).ok());
    CHECK(std::memcmp(&logp, &batch[i], sizeof(double)) == 0);
  }
}
