// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: model bytes -> load (in place and through the copy path) -> plan -> a short
// run of every Plan call (conditional models with labels / conditions, guided) -> validate. Any
// crash, sanitizer report or a successful call that returns non-finite numbers is a finding.
// Memory-hungry (but valid) models are skipped before planning: the runtime would serve them,
// the fuzzer's memory limit would not.
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
  const ModelInfo& info = model.info();
  PlanOptions po;
  po.max_batch = 3;
  po.divergence = DivergenceMode::kExact;
  po.max_probes = 2;
  // A conditional model runs with a label per row / condition vectors, guided (w = 2, the
  // batched conditional + null pass) when it has a null label or vector.
  const bool can_guide =
      (info.takes_labels && info.null_label >= 0) || (info.cond_width > 0 && info.has_null_cond);
  po.guidance = can_guide ? 2.0 : 1.0;
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
  std::vector<int32_t> labels(n, 0);
  std::vector<float> cond(n * info.cond_width);
  Conditioning c;
  if (info.takes_labels) {
    for (size_t i = 0; i < n; ++i) labels[i] = static_cast<int32_t>(i % info.label_classes);
    c.labels = labels.data();
  }
  if (info.cond_width > 0) {
    for (size_t i = 0; i < cond.size(); ++i) cond[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
    c.cond = cond.data();
  }

  fuzz::expect_finite(plan->velocity(n, t.data(), x.data(), c, y.data()), y.data(), y.size());
  SampleOptions so;
  so.ode.steps = 2;
  so.ode.method = Method::kHeun;
  fuzz::expect_finite(plan->sample(n, so, c, y.data(), logp.data()), y.data(), y.size(),
                      logp.data(), n);
  OdeOptions ode;
  ode.steps = 2;
  ode.method = Method::kEuler;
  fuzz::expect_finite(plan->encode(n, x.data(), ode, c, y.data()), y.data(), y.size());
  LogProbOptions lp;
  lp.ode = ode;
  lp.divergence.mode = DivergenceMode::kHutchinson;
  lp.divergence.probes = 2;
  fuzz::expect_finite_or_minus_inf(plan->log_prob(n, x.data(), lp, c, logp.data()), logp.data(), n);
  if (info.score_available && po.guidance == 1.0) {  // the SDE refuses other weights
    SampleOptions sde;
    sde.ode.steps = 3;
    sde.sde.epsilon = 0.3;
    fuzz::expect_finite(plan->sample(n, sde, c, y.data(), nullptr), y.data(), y.size());
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
