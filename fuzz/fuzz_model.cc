// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: model bytes -> load (in place and through the copy path) -> plan -> a short
// run of every Plan call -> validate. Any crash, sanitizer report or a successful call that
// returns non-finite numbers is a finding. Memory-hungry (but valid) models are skipped before
// planning: the runtime would serve them, the fuzzer's memory limit would not.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "format/model_data.hpp"
#include "fuzz_common.hpp"
#include "siflow/siflow.hpp"

namespace {

using namespace siflow;

void run_plan(const Model& model) {
  PlanOptions po;
  po.max_batch = 3;
  po.divergence = DivergenceMode::kExact;
  po.max_probes = 2;
  size_t bytes = 0;
  if (!arena_bytes(model, po, &bytes).ok() || bytes > fuzz::kMaxArenaBytes) return;
  std::unique_ptr<Plan> plan;
  if (!Plan::create(model, po, nullptr, 0, &plan).ok()) return;
  const uint32_t dim = model.info().dim;
  const size_t n = 4;  // two chunks of max_batch 3
  std::vector<float> x(n * dim), y(n * dim), t(n);
  std::vector<double> logp(n);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * static_cast<float>(i % 7) - 1.5f;
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<float>(i) / 3.0f;

  fuzz::expect_finite(plan->velocity(n, t.data(), x.data(), y.data()), y.data(), y.size());
  SampleOptions so;
  so.ode.steps = 2;
  so.ode.method = Method::kHeun;
  fuzz::expect_finite(plan->sample(n, so, y.data(), logp.data()), y.data(), y.size(), logp.data(),
                      n);
  OdeOptions ode;
  ode.steps = 2;
  ode.method = Method::kEuler;
  fuzz::expect_finite(plan->encode(n, x.data(), ode, y.data()), y.data(), y.size());
  LogProbOptions lp;
  lp.ode = ode;
  lp.divergence.mode = DivergenceMode::kHutchinson;
  lp.divergence.probes = 2;
  fuzz::expect_finite_or_minus_inf(plan->log_prob(n, x.data(), lp, logp.data()), logp.data(), n);
  if (model.info().score_available) {
    SampleOptions sde;
    sde.ode.steps = 3;
    sde.sde.epsilon = 0.3;
    fuzz::expect_finite(plan->sample(n, sde, y.data(), nullptr), y.data(), y.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // In place: 64-byte aligned copy of the input, loaded without a copy.
  void* aligned = std::aligned_alloc(64, (size + 63) / 64 * 64 + 64);
  if (!aligned) return 0;
  if (size) std::memcpy(aligned, data, size);
  LoadOptions in_place;
  in_place.allow_copy = false;
  std::unique_ptr<Model> model;
  const Status s = Model::load(aligned, size, in_place, &model);
  fuzz::expect_message(s);
  if (s.ok()) {
    run_plan(*model);
    const ModelInfo& info = model->info();
    if (info.test_vector_count + info.test_trajectory_count <= 64 && info.dim <= 64 &&
        model->data().trajectory_steps <= 64) {
      ValidationReport report;
      fuzz::expect_message(validate_embedded(*model, &report));
    }
  }
  model.reset();
  std::free(aligned);
  // The copy path from the fuzzer's own (unaligned in general) buffer.
  std::unique_ptr<Model> copied;
  fuzz::expect_message(Model::load(data, size, LoadOptions(), &copied));
  return 0;
}
