// SPDX-License-Identifier: Apache-2.0
// validate_embedded: re-runs a model's embedded test vectors on this device and measures the
// agreement. Allocates its own plan; it is a check, not part of the allocation-free run path.
#include <cstdlib>

#include "format/model_data.hpp"
#include "format/normalization.hpp"
#include "siflow/siflow.hpp"

namespace siflow {

double max_relative_error(const float* a, const float* b, size_t n) {
  double diff = 0.0, scale = 1.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
    const double m = b[i] < 0 ? -b[i] : b[i];
    if (!(d <= diff)) diff = d;  // NaN propagates as a failure
    if (m > scale) scale = m;
  }
  return diff / scale;
}

namespace {

// Forwards the trajectory run's progress (row-steps) to the caller's callback as network
// evaluations: the velocity points already done plus 4 RK4 stages per row-step.
struct Forward {
  ProgressFn progress;
  void* user;
  uint64_t offset;
  uint64_t total;
  static bool call(void* self, uint64_t done, uint64_t) {
    const Forward& f = *static_cast<const Forward*>(self);
    return f.progress(f.user, f.offset + 4 * done, f.total);
  }
};

}  // namespace

Status validate_embedded(const Model& model, ValidationReport* report) {
  return validate_embedded(model, PlanOptions(), report);
}

Status validate_embedded(const Model& model, const PlanOptions& execution,
                         ValidationReport* report) {
  return validate_embedded(model, execution, report, nullptr, nullptr);
}

Status validate_embedded(const Model& model, const PlanOptions& execution, ValidationReport* report,
                         ProgressFn progress, void* progress_user) {
  if (!report) return Status::error(StatusCode::kInvalidArgument, "validate: report is null");
  *report = ValidationReport();
  const detail::ModelData& md = model.data();
  const uint32_t count = md.info.test_vector_count, traj = md.info.test_trajectory_count;
  if (count == 0 && traj == 0)
    return Status::error(StatusCode::kInvalidArgument, "validate: the model has no test vectors");
  const uint32_t dim = md.dim;
  // Bounded by the loader: at most Limits::kMaxValidationEvaluations.
  const uint64_t total = uint64_t{count} + 4ull * traj * md.trajectory_steps;
  PlanOptions po;
  po.backend = execution.backend;
  po.threads = execution.threads;
  po.tune = execution.tune;
  po.max_batch = 64;
  po.divergence = DivergenceMode::kNone;
  po.guidance = md.test_guidance;  // the weight the references were computed with
  std::unique_ptr<Plan> plan;
  Status s = Plan::create(model, po, nullptr, 0, &plan);
  if (!s.ok()) return s;
  const size_t rows = count > traj ? count : traj;
  float* out = static_cast<float*>(std::malloc(rows * dim * sizeof(float)));
  if (!out) return Status::error(StatusCode::kOutOfMemory, "validate: no memory for outputs");
  if (count > 0) {
    Conditioning c;
    c.labels = md.test_labels;
    c.cond = md.test_cond;
    s = plan->velocity(count, md.test_t, md.test_y, c, out);
    if (!s.ok()) {
      std::free(out);
      return s;
    }
    report->velocity_count = count;
    report->velocity_tolerance = md.test_tolerance;
    report->velocity_max_error = max_relative_error(out, md.test_v, size_t{count} * dim);
    report->velocity_ok = report->velocity_max_error <= md.test_tolerance;
    if (progress && !progress(progress_user, count, total)) {
      std::free(out);
      *report = ValidationReport();
      return Status::error(StatusCode::kCancelled, "validate: cancelled by the progress callback");
    }
  }
  if (traj > 0) {
    OdeOptions ode;
    ode.method = Method::kRK4;
    ode.steps = md.trajectory_steps;
    Forward forward = {progress, progress_user, count, total};
    if (progress) {
      ode.progress = &Forward::call;
      ode.progress_user = &forward;
    }
    Conditioning c;
    c.labels = md.trajectory_labels;
    c.cond = md.trajectory_cond;
    s = plan->decode(traj, md.trajectory_start, ode, DivergenceOptions(), c, out, nullptr);
    if (!s.ok()) {
      std::free(out);
      *report = ValidationReport();
      return s;
    }
    // decode answers in data space; the references are flow coordinates.
    detail::normalize(md, out, traj);
    report->trajectory_count = traj;
    report->trajectory_steps = md.trajectory_steps;
    report->trajectory_tolerance = md.trajectory_tolerance;
    report->trajectory_max_error = max_relative_error(out, md.trajectory_end, size_t{traj} * dim);
    report->trajectory_ok = report->trajectory_max_error <= md.trajectory_tolerance;
  }
  std::free(out);
  return Status();
}

}  // namespace siflow
