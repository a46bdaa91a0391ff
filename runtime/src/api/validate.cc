// SPDX-License-Identifier: Apache-2.0
// validate_embedded: re-runs a model's embedded test vectors on this device and measures the
// agreement. Allocates its own plan; it is a check, not part of the allocation-free run path.
#include <cstdlib>

#include "format/model_data.hpp"
#include "format/normalization.hpp"
#include "plan/plan_layout.hpp"
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

// The tolerance of a check in `precision`: the file's (set for f32) or, when larger, a multiple of
// the format's relative rounding error: the unit roundoff of bf16 (2^-8) and fp16 (2^-11), half a
// quantization step of int8 against the row's largest weight (1/254). The multiple, 16, leaves
// about 5x headroom over the errors measured on the bundled models (docs/math.md: at most 3.3 of
// these units, int8 on eight_gaussians' velocities).
double reduced_tolerance(double file_tolerance, Precision precision) {
  double unit = 0.0;
  switch (precision) {
    case Precision::kFp32:
      return file_tolerance;
    case Precision::kBf16:
      unit = 0x1p-8;
      break;
    case Precision::kFp16:
      unit = 0x1p-11;
      break;
    case Precision::kInt8:
      unit = 1.0 / 254.0;
      break;
  }
  const double derived = 16.0 * unit;
  return derived > file_tolerance ? derived : file_tolerance;
}

// Forwards a decode's progress (row-steps) to the caller's callback as network evaluations:
// those already done plus `per_step` (4 RK4 stages; a stored solver's NFE / steps) per row-step.
struct Forward {
  ProgressFn progress;
  void* user;
  uint64_t offset;
  uint64_t total;
  double per_step = 4.0;
  static bool call(void* self, uint64_t done, uint64_t) {
    const Forward& f = *static_cast<const Forward*>(self);
    return f.progress(f.user, f.offset + static_cast<uint64_t>(f.per_step * done), f.total);
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
  uint64_t solver_evaluations = 0;
  uint32_t solver_rows = 0;
  for (uint32_t i = 0; i < md.solver_count; ++i) {
    solver_evaluations += uint64_t{md.solvers[i].test_count} * md.solvers[i].nfe;
    if (md.solvers[i].test_count > solver_rows) solver_rows = md.solvers[i].test_count;
  }
  if (count == 0 && traj == 0 && solver_evaluations == 0)
    return Status::error(StatusCode::kInvalidArgument, "validate: the model has no test vectors");
  const uint32_t dim = md.dim;
  // Bounded by the loader: at most Limits::kMaxValidationEvaluations.
  const uint64_t total = uint64_t{count} + 4ull * traj * md.trajectory_steps + solver_evaluations;
  PlanOptions po;
  po.backend = execution.backend;
  po.threads = execution.threads;
  po.tune = execution.tune;
  po.precision = plan_precision(execution);
  po.max_batch = 64;
  po.divergence = DivergenceMode::kNone;
  po.guidance = md.test_guidance;  // the weight the references were computed with
  std::unique_ptr<Plan> plan;
  Status s = Plan::create(model, po, nullptr, 0, &plan);
  if (!s.ok()) return s;
  size_t rows = count > traj ? count : traj;
  if (solver_rows > rows) rows = solver_rows;
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
    report->velocity_tolerance = reduced_tolerance(md.test_tolerance, po.precision);
    report->velocity_max_error = max_relative_error(out, md.test_v, size_t{count} * dim);
    report->velocity_ok = report->velocity_max_error <= report->velocity_tolerance;
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
    report->trajectory_tolerance = reduced_tolerance(md.trajectory_tolerance, po.precision);
    report->trajectory_max_error = max_relative_error(out, md.trajectory_end, size_t{traj} * dim);
    report->trajectory_ok = report->trajectory_max_error <= report->trajectory_tolerance;
  }
  // Each stored solver's test vector: base points decoded with the solver, compared in data
  // space. The report keeps the solver whose error is largest relative to its tolerance.
  uint64_t done = uint64_t{count} + 4ull * traj * md.trajectory_steps;
  double worst_ratio = -1.0;
  for (uint32_t i = 0; i < md.solver_count; ++i) {
    const detail::SolverData& sd = md.solvers[i];
    if (sd.test_count == 0) continue;
    OdeOptions ode;
    ode.solver = sd.name;
    Forward forward = {progress, progress_user, done, total,
                       static_cast<double>(sd.nfe) / static_cast<double>(sd.steps)};
    if (progress) {
      ode.progress = &Forward::call;
      ode.progress_user = &forward;
    }
    // With the label and guidance weight the solver was tuned for (its own plan when that weight
    // differs from the test vectors').
    Conditioning c;
    c.label = sd.label;
    Plan* run = plan.get();
    std::unique_ptr<Plan> guided;
    if (sd.guidance != po.guidance) {
      PlanOptions gpo = po;
      gpo.guidance = sd.guidance;
      s = Plan::create(model, gpo, nullptr, 0, &guided);
      if (!s.ok()) {
        std::free(out);
        *report = ValidationReport();
        return s.prefix("validate: solver '%s'", sd.name);
      }
      run = guided.get();
    }
    s = run->decode(sd.test_count, sd.test_start, ode, DivergenceOptions(), c, out, nullptr);
    if (!s.ok()) {
      std::free(out);
      *report = ValidationReport();
      return s.prefix("validate: solver '%s'", sd.name);
    }
    done += uint64_t{sd.test_count} * sd.nfe;
    const double error = max_relative_error(out, sd.test_end, size_t{sd.test_count} * dim);
    const double tolerance = reduced_tolerance(sd.test_tolerance, po.precision);
    const bool ok = error <= tolerance;
    ++report->solver_count;
    report->solver_ok = report->solver_ok && ok;
    const double ratio = !ok ? __builtin_inf() : tolerance > 0 ? error / tolerance : 0.0;
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      report->solver_max_error = error;
      report->solver_tolerance = tolerance;
      report->solver_worst = sd.name;
    }
  }
  std::free(out);
  return Status();
}

}  // namespace siflow
