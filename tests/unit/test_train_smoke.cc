// SPDX-License-Identifier: Apache-2.0
// A 10-step training run on every architecture (it is in the qemu subset): the step, the
// checkpoint round trip and the held-out evaluation run with this platform's kernels, and the
// model they write loads. Quality is measured on the host (test_trainer, bench/).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "siflow/train.hpp"
#include "support/requirements.hpp"

namespace {

using namespace siflow;

TEST_CASE("ten training steps run, checkpoint, resume and write a loadable model") {
  TrainOptions o;
  o.hidden = {32, 32};
  o.batch = 128;
  o.steps = 10;
  o.warmup = 2;
  o.eval_every = 0;
  o.holdout_points = 64;
  TrainData data;
  data.toy_kind = ToyData::kCheckerboard;
  data.name = "checkerboard";
  // Two threads where the build has a pool (the ThreadSanitizer run), else one (cross builds).
  o.threads = siflow_test::kHaveThreadPool ? 2 : 1;
  MESSAGE("training with " << o.threads << " thread(s)");
  std::unique_ptr<Trainer> t;
  const Status created = Trainer::create(o, data, &t);
  REQUIRE_MESSAGE(created.ok(), created.message());
  REQUIRE(t);
  TrainStepReport r;
  while (t->steps_done() < 5) {
    REQUIRE(t->step(&r).ok());
    CHECK(std::isfinite(r.loss));
    CHECK(std::isfinite(r.grad_norm));
  }
  const std::string path =
      std::string(P_tmpdir) + "/siflow_train_smoke_" + std::to_string(getpid()) + ".sifckpt";
  REQUIRE(t->save_checkpoint(path.c_str()).ok());
  std::unique_ptr<Trainer> resumed;
  REQUIRE(Trainer::resume(path.c_str(), data, o.threads, &resumed).ok());
  std::remove(path.c_str());
  while (t->steps_done() < o.steps) REQUIRE(t->step(&r).ok());
  while (resumed->steps_done() < o.steps) REQUIRE(resumed->step(nullptr).ok());
  std::vector<uint8_t> a, b;
  REQUIRE(t->model_bytes(&a).ok());
  REQUIRE(resumed->model_bytes(&b).ok());
  CHECK(a == b);
  double nll = 0.0;
  REQUIRE(t->evaluate(0, 4, &nll).ok());
  CHECK(std::isfinite(nll));
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(a.data(), a.size(), LoadOptions(), &model).ok());
  CHECK(model->info().dim == 2);
  CHECK(model->info().normalized);
}

}  // namespace
