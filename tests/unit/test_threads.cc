// SPDX-License-Identifier: Apache-2.0
// The thread-safety contract: a loaded Model is immutable and shared by threads; each thread
// runs its own Plan. Several threads sample, score and validate from one model at once and must
// get exactly the single-threaded bits. Run under ThreadSanitizer by tests/run.sh, which makes
// any data race in the shared model (or in lazily initialised state) a failure. A plan with
// worker threads must give the bits of one thread, also with data-parallel blocks.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <thread>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/requirements.hpp"

namespace {

using siflow::Model;
using siflow::Plan;

std::vector<uint8_t> shared_model_bytes() {
  siflow::ModelBuilder b(3);
  const uint32_t f = b.mul_constant(b.t(), {1.0f, 2.0f});
  const uint32_t in = b.concat({b.x(), b.unary(f, siflow::UnaryKind::kSin)});
  std::vector<float> w1(16 * 5), w2(3 * 16);
  for (size_t i = 0; i < w1.size(); ++i) w1[i] = 0.3f * std::sin(0.7f * static_cast<float>(i));
  for (size_t i = 0; i < w2.size(); ++i) w2[i] = 0.2f * std::cos(1.1f * static_cast<float>(i));
  const uint32_t h = b.unary(b.fully_connected(in, 16, w1), siflow::UnaryKind::kSilu);
  b.set_output(b.fully_connected(h, 3, w2));
  b.set_velocity_tests({0.5f}, {0.1f, 0.2f, 0.3f}, {0.0f, 0.0f, 0.0f}, 1e6f);
  return b.finish();
}

struct Result {
  std::vector<float> samples;
  std::vector<double> logp, scored;
  bool ok = false;
};

// One thread's work on the shared model: its own plan, a sample with log-likelihoods, a
// log_prob of those samples and an embedded-vector validation.
Result work(const Model& model, uint64_t seed) {
  Result r;
  std::unique_ptr<Plan> plan;
  siflow::PlanOptions po;
  po.max_batch = 8;
  if (!Plan::create(model, po, nullptr, 0, &plan).ok()) return r;
  const size_t n = 20;
  r.samples.resize(n * 3);
  r.logp.resize(n);
  r.scored.resize(n);
  siflow::SampleOptions so;
  so.seed = seed;
  so.ode.steps = 6;
  siflow::LogProbOptions lp;
  lp.ode.steps = 6;
  siflow::ValidationReport report;
  r.ok = plan->sample(n, so, r.samples.data(), r.logp.data()).ok() &&
         plan->log_prob(n, r.samples.data(), lp, r.scored.data()).ok() &&
         siflow::validate_embedded(model, &report).ok();
  return r;
}

}  // namespace

TEST_CASE("threads sharing one model, each with its own plan, get the single-threaded bits") {
  const std::vector<uint8_t> bytes = shared_model_bytes();
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  constexpr int kThreads = 4;
  std::vector<Result> alone(kThreads), together(kThreads);
  for (int i = 0; i < kThreads; ++i) alone[i] = work(*model, 100 + i);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] { together[i] = work(*model, 100 + i); });
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    INFO("thread " << i);
    REQUIRE(alone[i].ok);
    REQUIRE(together[i].ok);
    CHECK(together[i].samples == alone[i].samples);
    CHECK(together[i].logp == alone[i].logp);
    CHECK(together[i].scored == alone[i].scored);
  }
  CHECK(alone[0].samples != alone[1].samples);  // different seeds: the comparison can fail
}

TEST_CASE("a plan's own worker threads give the bits of one thread" * SIFLOW_NEEDS_POOL) {
  const std::vector<uint8_t> bytes = shared_model_bytes();
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  // Blocks of 7 rows: the runs of 96 rows have 14 blocks, which worker threads run data-parallel
  // (each thread whole blocks on its own buffers; net/executor.hpp NetBlocking::threads).
  for (siflow::Backend backend : {siflow::Backend::kReference, siflow::Backend::kSimd})
    for (size_t block : {size_t{0}, size_t{7}}) {
      std::vector<float> samples[3];
      std::vector<double> logp[3];
      for (uint32_t threads : {1u, 2u, 3u}) {
        siflow::PlanOptions po;
        po.max_batch = 96;
        po.threads = threads;
        po.backend = backend;
        po.block_rows = block;
        std::unique_ptr<Plan> plan;
        const siflow::Status s = Plan::create(*model, po, nullptr, 0, &plan);
        REQUIRE_MESSAGE(s.ok(), s.message());
        const size_t n = 200;
        samples[threads - 1].resize(n * 3);
        logp[threads - 1].resize(n);
        siflow::SampleOptions so;
        so.seed = 9;
        so.ode.steps = 4;
        REQUIRE(plan->sample(n, so, samples[threads - 1].data(), logp[threads - 1].data()).ok());
      }
      INFO(siflow::backend_name(backend) << ", block_rows " << block);
      CHECK(samples[0] == samples[1]);
      CHECK(logp[0] == logp[1]);
      CHECK(samples[0] == samples[2]);
      CHECK(logp[0] == logp[2]);
    }
}
