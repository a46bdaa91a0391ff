// SPDX-License-Identifier: Apache-2.0
// "After create(), nothing allocates": with the heap wrappers of support/alloc_hooks.cc linked in
// (they see the whole malloc family and every global operator new/delete), runs every Plan call
// (ODE with log p, Hutchinson, SDE, decode, encode, log_prob, velocity, errors; an image model)
// and counts.
#include <doctest/doctest.h>
#include <malloc.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.h"
#include "siflow/siflow.hpp"
#include "support/alloc_hooks.hpp"
#include "support/env_guard.hpp"
#include "support/parallel.hpp"
#include "support/requirements.hpp"
#include "support/split_layers_model.hpp"

namespace {

using siflow::Model;
using siflow::ModelBuilder;
using siflow::Plan;
using siflow::Status;

// Heap calls made while `f` runs. No doctest macro may run inside `f` (they allocate).
template <typename F>
unsigned long heap_calls_during(F&& f) {
  siflow_test::heap_watch_begin();
  f();
  return siflow_test::heap_watch_end().calls;
}

// Escapes a pointer so the compiler cannot drop a malloc/free pair.
void* volatile g_sink = nullptr;

// A model with every op kind, a Gaussian base (so SDE works) and a normalisation.
struct Fixture {
  explicit Fixture(uint32_t threads = 1) {
    ModelBuilder b(3);
    const uint32_t f = b.mul_constant(b.t(), {1.0f, 2.0f, 4.0f});
    const uint32_t feats =
        b.concat({b.x(), b.unary(f, siflow::UnaryKind::kSin), b.unary(f, siflow::UnaryKind::kCos)});
    std::vector<float> w1(16 * 9), w2(16 * 16), w3(3 * 16);
    for (size_t i = 0; i < w1.size(); ++i) w1[i] = 0.3f * std::sin(0.7f * i);
    for (size_t i = 0; i < w2.size(); ++i) w2[i] = 0.2f * std::cos(1.3f * i);
    for (size_t i = 0; i < w3.size(); ++i) w3[i] = 0.25f * std::sin(2.1f * i + 1.0f);
    const uint32_t h =
        b.unary(b.layer_norm(b.fully_connected(feats, 16, w1)), siflow::UnaryKind::kGeluTanh);
    const uint32_t r = b.add(h, b.unary(b.fully_connected(h, 16, w2), siflow::UnaryKind::kSilu));
    const uint32_t g = b.mul(r, b.add_constant(b.t(), {0.5f}));
    b.set_output(b.fully_connected(b.add_constant(g, std::vector<float>(16, 0.1f)), 3, w3));
    b.set_normalization({0.5f, -0.5f, 1.0f}, {2.0f, 1.0f, 0.5f});
    bytes = b.finish();
    REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
    siflow::PlanOptions po;
    po.max_batch = 4;  // the 10-row requests below run in 3 chunks
    po.divergence = siflow::DivergenceMode::kExact;
    po.max_probes = 4;
    po.threads = threads;
    created = Plan::create(*model, po, nullptr, 0, &plan);
    x.assign(n * 3, 0.0f);
    y.assign(n * 3, 0.0f);
    t.assign(n, 0.3f);
    logp.assign(n, 0.0);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  }
  const size_t n = 10;
  Status created;
  std::vector<uint8_t> bytes;
  std::unique_ptr<Model> model;
  std::unique_ptr<Plan> plan;
  std::vector<float> x, y, t;
  std::vector<double> logp;
};

}  // namespace

TEST_CASE("the counting wrappers see every allocation function (the test can fail)") {
  const unsigned long calls = heap_calls_during([] {
    g_sink = std::malloc(16);
    std::free(g_sink);
    g_sink = std::calloc(2, 8);
    g_sink = std::realloc(g_sink, 64);
    std::free(g_sink);
    void* p = nullptr;
    if (posix_memalign(&p, 64, 32) == 0) g_sink = p;
    std::free(g_sink);
    g_sink = aligned_alloc(64, 64);
    std::free(g_sink);
    g_sink = memalign(64, 64);
    std::free(g_sink);
    g_sink = new int(3);
    delete static_cast<int*>(g_sink);
    g_sink = new double[4];
    delete[] static_cast<double*>(g_sink);
    g_sink = new (std::nothrow) char[8];
    delete[] static_cast<char*>(g_sink);
    struct alignas(128) Big {
      char c[128];
    };
    g_sink = new Big;
    delete static_cast<Big*>(g_sink);
  });
  // 11 malloc-family calls (malloc + free, calloc + realloc + free, and posix_memalign,
  // aligned_alloc, memalign each with its free) and 8 new/delete calls (plain, array, nothrow
  // array and over-aligned, each with its delete).
  CHECK(calls == 19);
}

TEST_CASE("sample with an exact log-likelihood makes no heap call") {
  Fixture f;
  REQUIRE(f.created.ok());
  Status s;
  siflow::SampleOptions so;
  so.seed = 3;
  so.ode.steps = 5;
  const unsigned long calls =
      heap_calls_during([&] { s = f.plan->sample(f.n, so, f.y.data(), f.logp.data()); });
  CHECK(s.ok());
  CHECK(calls == 0);
}

TEST_CASE("sample with a Hutchinson log-likelihood makes no heap call") {
  Fixture f;
  REQUIRE(f.created.ok());
  Status s;
  siflow::SampleOptions so;
  so.ode.steps = 5;
  so.ode.method = siflow::Method::kRK4_38;
  so.divergence.mode = siflow::DivergenceMode::kHutchinson;
  so.divergence.probes = 4;
  so.divergence.probe = siflow::ProbeKind::kGaussian;
  const unsigned long calls =
      heap_calls_during([&] { s = f.plan->sample(f.n, so, f.y.data(), f.logp.data()); });
  CHECK(s.ok());
  CHECK(calls == 0);
}

TEST_CASE("SDE sampling (both methods, both guards) makes no heap call") {
  Fixture f;
  REQUIRE(f.created.ok());
  Status s1, s2;
  siflow::SampleOptions a;
  a.ode.steps = 8;
  a.sde.epsilon = 0.5;
  a.sde.method = siflow::SdeMethod::kHeun;
  siflow::SampleOptions b = a;
  b.sde.method = siflow::SdeMethod::kEulerMaruyama;
  b.sde.schedule = siflow::EpsilonSchedule::kConstant;
  b.sde.stop_delta = 0.2;
  const unsigned long calls = heap_calls_during([&] {
    s1 = f.plan->sample(f.n, a, f.y.data(), nullptr);
    s2 = f.plan->sample(f.n, b, f.y.data(), nullptr);
  });
  CHECK(s1.ok());
  CHECK(s2.ok());
  CHECK(calls == 0);
}

TEST_CASE("decode, encode, log_prob and velocity over several chunks make no heap call") {
  Fixture f;
  REQUIRE(f.created.ok());
  Status decoded, encoded, scored, hutch, vel;
  siflow::OdeOptions ode;
  ode.steps = 4;
  ode.method = siflow::Method::kMidpoint;
  const double grid[] = {0.0, 0.1, 0.5, 0.7, 1.0};
  siflow::OdeOptions explicit_grid;
  explicit_grid.grid = grid;
  explicit_grid.grid_size = 5;
  siflow::LogProbOptions lp;
  lp.ode = ode;
  lp.time = 0.8;
  siflow::LogProbOptions lh;
  lh.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lh.divergence.probes = 3;
  std::vector<float> z(f.x.size());
  const unsigned long calls = heap_calls_during([&] {
    decoded = f.plan->decode(f.n, f.x.data(), ode, siflow::DivergenceOptions(), f.y.data(),
                             f.logp.data());
    encoded = f.plan->encode(f.n, f.y.data(), explicit_grid, z.data());
    scored = f.plan->log_prob(f.n, f.y.data(), lp, f.logp.data());
    hutch = f.plan->log_prob(f.n, f.y.data(), lh, f.logp.data());
    vel = f.plan->velocity(f.n, f.t.data(), f.x.data(), f.y.data());
  });
  CHECK(decoded.ok());
  CHECK(encoded.ok());
  CHECK(scored.ok());
  CHECK(hutch.ok());
  CHECK(vel.ok());
  CHECK(calls == 0);
}

TEST_CASE("Adams-Bashforth and dopri5 runs (all four calls) make no heap call") {
  Fixture f;
  REQUIRE(f.created.ok());
  Status runs[8];
  siflow::OdeOptions ab;
  ab.method = siflow::Method::kAB4;
  ab.steps = 7;
  ab.grid_kind = siflow::GridKind::kPower;
  ab.grid_param = 2.0;
  siflow::OdeOptions adaptive;
  adaptive.method = siflow::Method::kDopri5;
  siflow::SampleOptions so;
  so.ode = ab;
  siflow::LogProbOptions lp;
  lp.ode = adaptive;
  siflow::LogProbOptions lh;
  lh.ode = ab;
  lh.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lh.divergence.probes = 3;
  std::vector<float> z(f.x.size());
  const unsigned long calls = heap_calls_during([&] {
    runs[0] = f.plan->sample(f.n, so, f.y.data(), f.logp.data());
    runs[1] = f.plan->decode(f.n, f.x.data(), adaptive, siflow::DivergenceOptions(), f.y.data(),
                             f.logp.data());
    runs[2] = f.plan->encode(f.n, f.y.data(), ab, z.data());
    runs[3] = f.plan->encode(f.n, f.y.data(), adaptive, z.data());
    runs[4] = f.plan->log_prob(f.n, f.y.data(), lp, f.logp.data());
    runs[5] = f.plan->log_prob(f.n, f.y.data(), lh, f.logp.data());
  });
  for (int i = 0; i < 6; ++i) CHECK(runs[i].ok());
  CHECK(calls == 0);
}

namespace {

bool keep_going(void* user, uint64_t, uint64_t) {
  ++*static_cast<uint64_t*>(user);
  return true;
}

}  // namespace

TEST_CASE("a run with a progress callback makes no heap call") {
  Fixture f;
  REQUIRE(f.created.ok());
  Status s;
  uint64_t progress_calls = 0;
  siflow::OdeOptions ode;
  ode.steps = 3;
  ode.progress = keep_going;
  ode.progress_user = &progress_calls;
  const unsigned long calls =
      heap_calls_during([&] { s = f.plan->encode(f.n, f.x.data(), ode, f.y.data()); });
  CHECK(s.ok());
  CHECK(progress_calls == 9);  // 3 chunks x 3 steps
  CHECK(calls == 0);
}

namespace {

int count_progress(void* user, uint64_t, uint64_t) {
  ++*static_cast<uint64_t*>(user);
  return 1;
}

}  // namespace

// The C API's ProgressBridge (what the Python module's Ctrl-C and a web page's progress bar
// use) lives on the stack: every run through it stays heap-free, and the callback comes after
// every step of every chunk.
TEST_CASE("C API runs with a progress callback make no heap call and report every step") {
  Fixture f;
  REQUIRE(f.created.ok());
  siflow_model* model = nullptr;
  siflow_plan* plan = nullptr;
  REQUIRE(siflow_model_load(f.bytes.data(), f.bytes.size(), 1, &model, nullptr) == SIFLOW_OK);
  siflow_plan_options po;
  siflow_plan_options_init(&po);
  po.max_batch = 4;  // 10 rows: 3 chunks
  po.max_probes = 4;
  REQUIRE(siflow_plan_create(model, &po, nullptr, 0, &plan, nullptr) == SIFLOW_OK);
  uint64_t calls[6] = {};
  siflow_status status[6] = {};
  siflow_run_options ro;
  siflow_run_options_init(&ro);
  ro.steps = 5;
  ro.progress = count_progress;
  siflow_error error;
  const unsigned long heap = heap_calls_during([&] {
    ro.progress_user = &calls[0];
    status[0] = siflow_sample(plan, f.n, &ro, f.y.data(), f.logp.data(), &error);
    ro.progress_user = &calls[1];
    status[1] = siflow_decode(plan, f.n, f.x.data(), &ro, f.y.data(), f.logp.data(), &error);
    ro.progress_user = &calls[2];
    status[2] = siflow_encode(plan, f.n, f.x.data(), &ro, f.y.data(), &error);
    ro.progress_user = &calls[3];
    status[3] = siflow_log_prob(plan, f.n, f.y.data(), &ro, f.logp.data(), &error);
    ro.progress_user = &calls[4];
    ro.divergence = SIFLOW_DIVERGENCE_HUTCHINSON;
    ro.probes = 4;
    status[4] = siflow_log_prob(plan, f.n, f.y.data(), &ro, f.logp.data(), &error);
    ro.progress_user = &calls[5];
    ro.sde_epsilon = 0.5;
    status[5] = siflow_sample(plan, f.n, &ro, f.y.data(), nullptr, &error);
  });
  for (int i = 0; i < 6; ++i) {
    CHECK(status[i] == SIFLOW_OK);
    CHECK(calls[i] == 3 * 5);  // 3 chunks x 5 steps
  }
  CHECK(heap == 0);
  siflow_plan_free(plan);
  siflow_model_free(model);
}

TEST_CASE("refused calls and numerical failures make no heap call while formatting the error") {
  Fixture f;
  REQUIRE(f.created.ok());
  Status nan_input, bad_grid, numeric;
  f.x[5] = NAN;
  siflow::OdeOptions ode;
  const double grid[] = {0.0, 0.5, 0.5, 1.0};
  siflow::OdeOptions bad;
  bad.grid = grid;
  bad.grid_size = 4;
  // A velocity that overflows: the plan's model is fine, so use a second, exploding one.
  ModelBuilder b(3);
  b.set_output(b.fully_connected(b.x(), 3, {1e30f, 0, 0, 0, 1e30f, 0, 0, 0, 1e30f}));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  siflow::SampleOptions so;
  so.ode.steps = 4;
  so.ode.method = siflow::Method::kEuler;
  const unsigned long calls = heap_calls_during([&] {
    nan_input = f.plan->encode(f.n, f.x.data(), ode, f.y.data());
    bad_grid = f.plan->encode(f.n, f.y.data(), bad, f.y.data());
    numeric = plan->sample(f.n, so, f.y.data(), nullptr);
  });
  CHECK(nan_input.code() == siflow::StatusCode::kInvalidArgument);
  CHECK(bad_grid.code() == siflow::StatusCode::kInvalidArgument);
  CHECK(numeric.code() == siflow::StatusCode::kNumericalError);
  CHECK(calls == 0);
}

namespace {

// A plan with two worker threads on `backend`: sampling and scoring make no heap call.
void check_worker_threads_allocate_nothing(siflow::Backend backend) {
  INFO(siflow::backend_name(backend));
  Fixture f(2);
  REQUIRE_MESSAGE(f.created.ok(), f.created.message());
  siflow::PlanOptions po;
  po.max_batch = 64;
  po.threads = 2;
  po.backend = backend;
  const Status made = Plan::create(*f.model, po, nullptr, 0, &f.plan);
  REQUIRE_MESSAGE(made.ok(), made.message());
  std::vector<float> y(200 * 3), x(200 * 3);
  std::vector<double> logp(200);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  Status s1, s2;
  siflow::SampleOptions so;
  so.ode.steps = 4;
  siflow::LogProbOptions lp;
  lp.ode.steps = 4;
  const unsigned long calls = heap_calls_during([&] {
    s1 = f.plan->sample(200, so, y.data(), logp.data());
    s2 = f.plan->log_prob(200, x.data(), lp, logp.data());
  });
  CHECK(s1.ok());
  CHECK(s2.ok());
  CHECK(calls == 0);
}

}  // namespace

TEST_CASE("a plan with worker threads makes no heap call while running (reference, simd)" *
          SIFLOW_NEEDS_POOL) {
  for (siflow::Backend backend : {siflow::Backend::kReference, siflow::Backend::kSimd})
    check_worker_threads_allocate_nothing(backend);
}

TEST_CASE("a plan with worker threads makes no heap call while running (xnnpack)" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  check_worker_threads_allocate_nothing(siflow::Backend::kXnnpack);
}

TEST_CASE("a plan made in the caller's memory, and destroying it, make no heap call") {
  Fixture f;
  REQUIRE(f.created.ok());
  for (siflow::Backend backend : {siflow::Backend::kReference, siflow::Backend::kAuto}) {
    siflow::PlanOptions po;
    po.max_batch = 8;
    po.backend = backend;
    size_t need = 0;
    REQUIRE(siflow::arena_bytes(*f.model, po, &need).ok());
    std::vector<uint8_t> memory(need + 63);
    std::unique_ptr<Plan> plan;
    Status made, ran;
    siflow::SampleOptions so;
    so.ode.steps = 3;
    const unsigned long calls = heap_calls_during([&] {
      made = Plan::create(*f.model, po, memory.data(), memory.size(), &plan);
      if (made.ok()) ran = plan->sample(f.n, so, f.y.data(), f.logp.data());
      plan.reset();
    });
    INFO(siflow::backend_name(backend));
    CHECK(made.ok());
    CHECK(ran.ok());
    CHECK(calls == 0);
  }
}

TEST_CASE("loading into caller memory, planning in it, running and destroying make no heap call") {
  Fixture f;  // for its model bytes
  REQUIRE(f.created.ok());
  // Unaligned bytes are copied into the caller's memory too.
  std::vector<uint8_t> shifted(f.bytes.size() + 64);
  uint8_t* at = shifted.data();
  while (reinterpret_cast<uintptr_t>(at) % 64 != 1) ++at;
  std::memcpy(at, f.bytes.data(), f.bytes.size());
  size_t shifted_need = 0;
  REQUIRE(Model::memory_bytes(at, f.bytes.size(), siflow::LoadOptions(), &shifted_need).ok());
  CHECK(shifted_need > f.bytes.size());
  std::vector<uint8_t> model_memory(shifted_need + 63), plan_memory(1 << 20);
  Status loaded, made, ran;
  std::vector<float> y(f.n * 3);
  std::vector<double> logp(f.n);
  const unsigned long calls = heap_calls_during([&] {
    siflow::LoadOptions lo;
    lo.memory = model_memory.data();
    lo.memory_size = model_memory.size();
    std::unique_ptr<Model> model;
    loaded = Model::load(at, f.bytes.size(), lo, &model);
    if (!loaded.ok()) return;
    siflow::PlanOptions po;
    po.max_batch = 4;
    std::unique_ptr<Plan> plan;
    made = Plan::create(*model, po, plan_memory.data(), plan_memory.size(), &plan);
    if (!made.ok()) return;
    siflow::SampleOptions so;
    so.ode.steps = 3;
    ran = plan->sample(f.n, so, y.data(), logp.data());
  });
  CHECK(loaded.ok());
  CHECK(made.ok());
  CHECK(ran.ok());
  CHECK(calls == 0);
}

TEST_CASE(
    "an image model (conv, transposed conv, pooling, resize, group norm) makes no heap call") {
  // x [2, 4, 4] -> conv 3x3 stride 2 (groups 2) -> group norm -> max pool -> bilinear resize ->
  // average pool -> transposed conv back to [2, 4, 4].
  ModelBuilder b(32);
  b.set_x_shape({2, 4, 4});
  std::vector<float> w1(4 * 1 * 9), w2(4 * 1 * 16);
  for (size_t i = 0; i < w1.size(); ++i) w1[i] = 0.3f * std::sin(0.7f * i);
  for (size_t i = 0; i < w2.size(); ++i) w2[i] = 0.2f * std::cos(1.3f * i);
  siflow::ImageWindow down;
  down.strides = {2, 2};
  down.pads = {1, 1, 1, 1};
  down.groups = 2;
  uint32_t h = b.conv2d(b.x(), 4, {3, 3}, w1, {0.1f, -0.2f, 0.3f, 0.0f}, down);
  h = b.mul(b.group_norm(h, 2, {1.0f, 2.0f, 0.5f, 1.5f}, {0.0f, 0.1f, 0.2f, 0.3f}), b.t());
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  h = b.pool2d(h, ModelBuilder::Pool::kMax, {3, 3}, same);
  h = b.resize(h, ModelBuilder::Resize::kBilinear, 4, 4);
  siflow::ImageWindow halve;
  halve.strides = {2, 2};
  h = b.pool2d(h, ModelBuilder::Pool::kAverage, {2, 2}, halve);
  siflow::ImageWindow up;
  up.strides = {2, 2};
  up.pads = {1, 1, 1, 1};
  up.groups = 2;
  b.set_output(b.add(b.conv_transpose2d(h, 2, {4, 4}, w2, {}, up), b.x()));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<Model> model;
  const Status loaded = Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  REQUIRE_MESSAGE(loaded.ok(), std::string(loaded.message()));
  for (uint32_t threads : {1u, 2u}) {
    if (threads > 1 && !siflow::RowPool::available()) {
      MESSAGE("SKIPPED: the 2-thread run (this build has no thread pool)");
      continue;
    }
    siflow::PlanOptions po;
    po.max_batch = 4;
    po.divergence = siflow::DivergenceMode::kExact;
    po.max_probes = 2;
    po.threads = threads;
    std::unique_ptr<Plan> plan;
    REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
    const size_t n = 6;
    std::vector<float> x(n * 32), y(n * 32), t(n, 0.4f);
    std::vector<double> logp(n);
    siflow::SampleOptions so;
    so.seed = 5;
    so.ode.steps = 2;
    siflow::LogProbOptions lh;
    lh.ode.steps = 2;
    lh.divergence.mode = siflow::DivergenceMode::kHutchinson;
    lh.divergence.probes = 2;
    Status sampled, scored, vel;
    const unsigned long calls = heap_calls_during([&] {
      sampled = plan->sample(n, so, x.data(), logp.data());
      scored = plan->log_prob(n, x.data(), lh, logp.data());
      vel = plan->velocity(n, t.data(), x.data(), y.data());
    });
    INFO("threads " << threads);
    CHECK(sampled.ok());
    CHECK(scored.ok());
    CHECK(vel.ok());
    CHECK(calls == 0);
  }
}

TEST_CASE(
    "exact divergence through a conv output (its diagonal alone), attention and 2x up-sampling "
    "makes no heap call, on every backend and 1 or 2 threads") {
  // x [3, 4, 4] -> conv to 6 channels, SiLU, nearest 2x up-sampling, stride-2 conv to [6, 4, 4],
  // attention over the 16 positions (a transposed MatMul), conv back to [3, 4, 4] as the output.
  ModelBuilder b(48);
  b.set_x_shape({3, 4, 4});
  auto weights = [](size_t n, float scale) {
    std::vector<float> w(n);
    for (size_t i = 0; i < n; ++i) w[i] = scale * std::sin(0.37f * static_cast<float>(i) + 0.2f);
    return w;
  };
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.unary(b.conv2d(b.x(), 6, {3, 3}, weights(6 * 3 * 9, 0.3f), {}, same),
                       siflow::UnaryKind::kSilu);
  h = b.resize(h, ModelBuilder::Resize::kNearest, 8, 8);
  siflow::ImageWindow down = same;
  down.strides = {2, 2};
  h = b.conv2d(h, 6, {3, 3}, weights(6 * 6 * 9, 0.2f), weights(6, 0.1f), down);
  const uint32_t flat = b.reshape(h, {6, 16});
  const uint32_t attn = b.softmax(b.matmul(b.transpose(flat, {6, 16}, {1, 0}), flat, false, 0.4f));
  h = b.reshape(b.matmul(flat, attn, true), {6, 4, 4});
  b.set_output(b.conv2d(h, 3, {3, 3}, weights(3 * 6 * 9, 0.2f), weights(3, 0.1f), same));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<Model> model;
  const Status loaded = Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  REQUIRE_MESSAGE(loaded.ok(), std::string(loaded.message()));
  // kAuto three times: its convolutions on the simd NCHW kernel, then (SIFLOW_CONV=nhwc) on the
  // simd NHWC kernel with NHWC tensors between them, then (SIFLOW_CONV=wino) the 3x3 stride-1 ones
  // on the Winograd kernel.
  const siflow::Backend backends[] = {siflow::Backend::kReference, siflow::Backend::kAuto,
                                      siflow::Backend::kAuto, siflow::Backend::kAuto};
  for (int b = 0; b < 4; ++b)
    for (uint32_t block : {0u, 5u})
      for (uint32_t threads : {1u, 2u}) {
        if (threads > 1 && !siflow::RowPool::available()) {
          MESSAGE("SKIPPED: the 2-thread run (this build has no thread pool)");
          continue;
        }
        const siflow::Backend backend = backends[b];
        const test_support::EnvGuard conv("SIFLOW_CONV");
        conv.set(b == 2 ? "nhwc" : b == 3 ? "wino" : nullptr);
        siflow::PlanOptions po;
        po.max_batch = 4;
        po.backend = backend;
        po.tangent_block = block;
        po.threads = threads;
        std::unique_ptr<Plan> plan;
        REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
        const size_t n = 6;
        std::vector<float> x(n * 48, 0.3f);
        std::vector<double> logp(n);
        siflow::LogProbOptions lo;
        lo.ode.steps = 2;
        Status scored;
        const unsigned long calls =
            heap_calls_during([&] { scored = plan->log_prob(n, x.data(), lo, logp.data()); });
        INFO("backend " << static_cast<int>(backend)
                        << (b == 2   ? " (NHWC convolutions)"
                            : b == 3 ? " (Winograd convolutions)"
                                     : "")
                        << " block " << block << " threads " << threads);
        const std::string first = plan->node_kernel(0);  // "reference" in builds without simd
        if (b == 2 && first != "reference") CHECK(first.find(" nhwc ") != std::string::npos);
        if (b == 3 && first != "reference") CHECK(first.find(" wino ") != std::string::npos);
        CHECK(scored.ok());
        CHECK(calls == 0);
      }
}

TEST_CASE("reduced-precision convolutions (bf16, fp16, int8) make no heap call") {
  // x [4, 3, 3] -> conv 4 -> 20 -> transposed conv 20 -> 18 (both converted: reduction length
  // and output channels above 16) -> conv 18 -> 4 (the last weight layer, f32) + a dense layer
  // on t (the first, f32). 3x3 planes keep the exact divergence's 36 directions quick, under
  // qemu too: the reduced transposed convolution runs the reference loops.
  ModelBuilder b(36);
  b.set_x_shape({4, 3, 3});
  auto weights = [](size_t n, float scale) {
    std::vector<float> w(n);
    for (size_t i = 0; i < n; ++i) w[i] = scale * std::sin(0.37f * static_cast<float>(i));
    return w;
  };
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  const uint32_t time = b.fully_connected(b.t(), 1, {0.5f}, {0.0f});
  uint32_t h = b.conv2d(b.x(), 20, {3, 3}, weights(20 * 4 * 9, 0.3f), weights(20, 0.1f), same);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.conv_transpose2d(h, 18, {3, 3}, weights(20 * 18 * 9, 0.1f), weights(18, 0.1f), same);
  h = b.conv2d(h, 4, {3, 3}, weights(4 * 18 * 9, 0.1f), {}, same);
  b.set_output(b.add(h, time));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<Model> model;
  const Status loaded = Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  REQUIRE_MESSAGE(loaded.ok(), std::string(loaded.message()));
  for (siflow::Precision precision :
       {siflow::Precision::kBf16, siflow::Precision::kFp16, siflow::Precision::kInt8}) {
    siflow::PlanOptions po;
    po.max_batch = 4;
    po.divergence = siflow::DivergenceMode::kExact;
    po.precision = precision;
    std::unique_ptr<Plan> plan;
    REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
    CHECK(std::string(plan->node_kernel(3)).find(siflow::precision_name(precision)) !=
          std::string::npos);
    const size_t n = 6;
    std::vector<float> x(n * 36);
    std::vector<double> logp(n);
    siflow::SampleOptions so;
    so.seed = 5;
    so.ode.steps = 2;
    siflow::LogProbOptions lh;
    lh.ode.steps = 2;
    Status sampled, scored;
    const unsigned long calls = heap_calls_during([&] {
      sampled = plan->sample(n, so, x.data(), logp.data());
      scored = plan->log_prob(n, x.data(), lh, logp.data());
    });
    INFO("precision " << siflow::precision_name(precision));
    CHECK(sampled.ok());
    CHECK(scored.ok());
    CHECK(calls == 0);
  }
}

TEST_CASE(
    "a model with format 1.4's elementwise, reduce, softmax and matmul ops makes no heap call") {
  // x [2, 3]: RMS-normalised rows, their softmax, attention-like products with x, then Pow,
  // Clip and the new unary kinds.
  using siflow::ReduceKind;
  using siflow::UnaryKind;
  ModelBuilder b(6);
  b.set_x_shape({2, 3});
  const uint32_t norm = b.add_constant(b.reduce(b.x(), ReduceKind::kL2), {1.0f, 1.0f});
  const uint32_t s = b.softmax(b.div(b.x(), norm));
  const uint32_t m = b.matmul(b.matmul(s, b.x(), true, 0.5f), b.x());  // [2,2] x [2,3]
  const uint32_t p =
      b.pow(b.add_constant(b.unary(m, UnaryKind::kAbs), std::vector<float>(6, 1.0f)), 1.5f);
  const uint32_t c = b.clip(b.unary(p, UnaryKind::kMish), -1.0f, 2.0f);
  const uint32_t l = b.unary(b.unary(c, UnaryKind::kHardSwish), UnaryKind::kSqrt);
  b.set_output(b.add(b.mul(b.x(), b.t()),
                     b.unary(b.add_constant(l, std::vector<float>(6, 1.0f)), UnaryKind::kLog)));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  siflow::PlanOptions po;
  po.max_batch = 4;
  po.divergence = siflow::DivergenceMode::kExact;
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
  const size_t n = 10;
  std::vector<float> y(n * 6), v(n * 6), t(n, 0.4f);
  std::vector<double> logp(n);
  siflow::SampleOptions so;
  so.seed = 3;
  so.ode.steps = 4;
  Status sampled, vel;
  const unsigned long calls = heap_calls_during([&] {
    sampled = plan->sample(n, so, y.data(), logp.data());
    vel = plan->velocity(n, t.data(), y.data(), v.data());
  });
  CHECK(sampled.ok());
  CHECK(vel.ok());
  CHECK(calls == 0);
}

TEST_CASE("a class- and condition-conditioned model under guidance makes no heap call") {
  // v = FC([x, t]) + Embedding(y) * FC(c): labels, a condition vector and a guided pass of 2B
  // rows (tangents x 2) on every call.
  ModelBuilder b(3);
  std::vector<float> w(3 * 4), u(3 * 2), table(4 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.3f * std::sin(0.7f * i);
  for (size_t i = 0; i < u.size(); ++i) u[i] = 0.2f * std::cos(1.1f * i);
  for (size_t i = 0; i < table.size(); ++i) table[i] = 0.5f * std::cos(0.9f * i);
  const uint32_t v = b.fully_connected(b.concat({b.x(), b.t()}), 3, w);
  const uint32_t e = b.embedding(b.label_input(4, 3), 4, table);
  const uint32_t c = b.fully_connected(b.cond_input({2}, {0.0f, 0.0f}), 3, u);
  b.set_output(b.add(v, b.mul(b.unary(e, siflow::UnaryKind::kTanh), c)));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  siflow::PlanOptions po;
  po.max_batch = 4;
  po.max_probes = 3;
  po.guidance = 2.5;
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
  const size_t n = 10;
  std::vector<float> x(3 * n), y(3 * n), t(n, 0.4f), cond(2 * n);
  std::vector<int32_t> labels(n);
  std::vector<double> logp(n);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  for (size_t i = 0; i < cond.size(); ++i) cond[i] = std::cos(0.21f * i);
  for (size_t i = 0; i < n; ++i) labels[i] = static_cast<int32_t>(i % 4);
  siflow::Conditioning cd;
  cd.labels = labels.data();
  cd.cond = cond.data();
  siflow::SampleOptions so;
  so.ode.steps = 3;
  so.temperature = 0.8;
  siflow::LogProbOptions lh;
  lh.ode.steps = 3;
  lh.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lh.divergence.probes = 3;
  Status sampled, decoded, encoded, scored, vel, refused;
  siflow::Conditioning bad = cd;
  bad.label = 9;
  bad.labels = nullptr;
  const unsigned long calls = heap_calls_during([&] {
    sampled = plan->sample(n, so, cd, y.data(), logp.data());
    decoded =
        plan->decode(n, x.data(), so.ode, siflow::DivergenceOptions(), cd, y.data(), logp.data());
    encoded = plan->encode(n, y.data(), so.ode, cd, x.data());
    scored = plan->log_prob(n, y.data(), lh, cd, logp.data());
    vel = plan->velocity(n, t.data(), x.data(), cd, y.data());
    refused = plan->velocity(n, t.data(), x.data(), bad, y.data());
  });
  CHECK(sampled.ok());
  CHECK(decoded.ok());
  CHECK(encoded.ok());
  CHECK(scored.ok());
  CHECK(vel.ok());
  CHECK_FALSE(refused.ok());
  CHECK(calls == 0);
}
TEST_CASE("an image model with layout ops makes no heap call, exact divergence in blocks too") {
  // x [2, 3, 3] (d = 18): transpose, a channel slice, reshapes, a dense layer, tanh.
  ModelBuilder b(18);
  b.set_x_shape({2, 3, 3});
  const uint32_t tr = b.transpose(ModelBuilder::x(), {2, 3, 3}, {0, 2, 1});
  const uint32_t s = b.slice(tr, {2, 3, 3}, 0, 1, 2);  // [1, 3, 3]
  const uint32_t h = b.concat({b.reshape(s, {9}), b.reshape(ModelBuilder::x(), {18})});
  std::vector<float> w(18 * 27);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.05f * std::sin(0.7f * static_cast<float>(i));
  b.set_output(
      b.reshape(b.unary(b.fully_connected(h, 18, w), siflow::UnaryKind::kTanh), {2, 3, 3}));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<siflow::Model> model;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  for (uint32_t block : {0u, 5u}) {
    CAPTURE(block);
    siflow::PlanOptions po;
    po.max_batch = 4;
    po.tangent_block = block;
    std::unique_ptr<siflow::Plan> plan;
    REQUIRE(siflow::Plan::create(*model, po, nullptr, 0, &plan).ok());
    std::vector<float> x(7 * 18);
    std::vector<double> logp(7);
    siflow::SampleOptions so;
    so.seed = 11;
    so.ode.steps = 3;
    Status st;
    const unsigned long calls =
        heap_calls_during([&] { st = plan->sample(7, so, x.data(), logp.data()); });
    CHECK(st.ok());
    CHECK(calls == 0);
  }
}

TEST_CASE(
    "image layers split within a sample on two threads make no heap call, nor with velocities "
    "kept on the caller's thread" *
    SIFLOW_NEEDS_POOL) {
  // The nets of test_layer_threads: every layer of one splits a batch-1 sample; the other has
  // convolutions (on XNNPACK where tuning keeps them, run whole as part 0 on the caller's thread).
  for (int which = 0; which < 2; ++which)
    for (bool caller : {false, true}) {
      INFO((which ? "nhwc_split_model" : "split_layers_model") << (caller ? ", on caller" : ""));
      const std::vector<uint8_t> bytes =
          which ? test_support::nhwc_split_model() : test_support::split_layers_model();
      std::unique_ptr<Model> model;
      const Status loaded = Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
      REQUIRE_MESSAGE(loaded.ok(), std::string(loaded.message()));
      siflow::PlanOptions po;
      po.max_batch = 1;
      po.backend = caller ? siflow::Backend::kAuto : siflow::Backend::kSimd;
      po.tune = caller;  // SIFLOW_VELOCITY_ON_CALLER=1 makes the tuned plan's choice
      po.divergence = siflow::DivergenceMode::kHutchinson;
      po.threads = 2;
      std::unique_ptr<Plan> plan;
      Status made;
      {
        const test_support::EnvGuard forced("SIFLOW_VELOCITY_ON_CALLER");
        forced.set("1");
        made = Plan::create(*model, po, nullptr, 0, &plan);
      }
      REQUIRE_MESSAGE(made.ok(), std::string(made.message()));
      CHECK(plan->velocity_threads() == (caller ? 1u : 2u));
      const size_t d = model->info().dim;
      std::vector<float> x(d, 0.3f), y(d);
      float t = 0.4f;
      double logp = 0;
      siflow::LogProbOptions lh;
      lh.ode.steps = 1;
      lh.divergence.mode = siflow::DivergenceMode::kHutchinson;
      siflow::SampleOptions so;
      so.ode.steps = 2;
      Status vel, scored, sampled;
      const unsigned long calls = heap_calls_during([&] {
        vel = plan->velocity(1, &t, x.data(), y.data());
        scored = plan->log_prob(1, x.data(), lh, &logp);
        sampled = plan->sample(1, so, y.data(), nullptr);
      });
      CHECK(vel.ok());
      CHECK(scored.ok());
      CHECK(sampled.ok());
      CHECK(calls == 0);
    }
}
