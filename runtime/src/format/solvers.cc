// SPDX-License-Identifier: Apache-2.0
// The loader's checks of stored solvers (format/solvers.hpp): names, methods, grids inside the
// time range, NFE consistent with method and grid, test vectors and the validation work bound.
#include "format/solvers.hpp"

#include <cstring>

#include "math/elementary.hpp"

namespace siflow::detail {
namespace {

// Byte-wise equality of two NUL-terminated names (verified to be at most kMaxSolverName long);
// GCC 12's -Wstringop-overread misjudges strcmp on the solver table here.
bool same_name(const char* a, const char* b) {
  for (; *a && *a == *b; ++a, ++b) {
  }
  return *a == *b;
}

// A float vector of exactly `expected` finite values (nullptr when absent or empty).
Status finite_floats(const char* what, const flatbuffers::Vector<float>* v, size_t expected,
                     const float** out) {
  *out = nullptr;
  if (!v || v->size() == 0) return Status();
  if (v->size() != expected)
    return Status::error(StatusCode::kInvalidModel, "%s has %u values, expected %zu", what,
                         v->size(), expected);
  for (uint32_t i = 0; i < v->size(); ++i)
    if (!math::is_finite(v->Get(i)))
      return Status::error(StatusCode::kInvalidModel, "%s[%u] is not finite", what, i);
  *out = v->data();
  return Status();
}

}  // namespace

// Stored solvers: counted first (the table block holds their descriptors and grids), then
// verified one by one (docs/format.md, "Solvers").
Status count_solvers(const fb::Model& model, uint32_t* count, size_t* points_out) {
  const auto* solvers = model.solvers();
  *count = solvers ? solvers->size() : 0;
  *points_out = 0;
  if (*count > Limits::kMaxSolvers)
    return Status::error(StatusCode::kInvalidModel, "model has %u solvers, the limit is %u", *count,
                         Limits::kMaxSolvers);
  if (*count > 0 && model.format_minor() < 2)
    return Status::error(StatusCode::kInvalidModel,
                         "model format %u.%u holds solvers, which need format 1.2",
                         model.format_major(), model.format_minor());
  for (uint32_t i = 0; i < *count; ++i) {
    const auto* grid = solvers->Get(i)->grid();
    const size_t points = grid ? grid->size() : 0;
    if (points < 2 || points > size_t{Limits::kMaxSteps} + 1)
      return Status::error(StatusCode::kInvalidModel,
                           "solver %u: time grid has %zu points, expected 2..%u", i, points,
                           Limits::kMaxSteps + 1);
    // Per-step coefficients share the grids' block; at most kMaxHistory per step (checked
    // against the method in check_solvers).
    const auto* coefficients = solvers->Get(i)->coefficients();
    const size_t values = coefficients ? coefficients->size() : 0;
    if (values > (points - 1) * 4)
      return Status::error(StatusCode::kInvalidModel,
                           "solver %u: %zu per-step coefficients for %zu steps (at most 4 a step)",
                           i, values, points - 1);
    *points_out += points + values;
  }
  return Status();
}

Status check_solvers(const fb::Model& model, uint32_t dim, ModelData* data, double* grids) {
  const auto* solvers = model.solvers();
  const uint32_t count = solvers ? solvers->size() : 0;
  data->solver_count = count;
  if (count == 0) return Status();
  const double t0 = model.time_start(), t1 = model.time_end();
  const uint64_t test_evaluations =
      uint64_t{data->info.test_vector_count} +
      4ull * data->info.test_trajectory_count * data->trajectory_steps;
  uint64_t evaluations = test_evaluations;
  for (uint32_t i = 0; i < count; ++i) {
    const fb::Solver* fs = solvers->Get(i);
    SolverData& sd = data->solvers[i];
    const auto* name = fs->name();
    if (!name || name->size() == 0 || name->size() > Limits::kMaxSolverName)
      return Status::error(StatusCode::kInvalidModel,
                           "solver %u: name must have 1 to %u characters", i,
                           Limits::kMaxSolverName);
    for (uint32_t c = 0; c < name->size(); ++c) {
      const char ch = name->c_str()[c];
      const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '+';
      if (!ok)
        return Status::error(StatusCode::kInvalidModel,
                             "solver %u: name holds byte 0x%02x at %u (letters, digits and "
                             "- _ . + only)",
                             i, static_cast<unsigned>(static_cast<unsigned char>(ch)), c);
    }
    sd.name = name->c_str();
    for (uint32_t j = 0; j < i; ++j)
      if (same_name(data->solvers[j].name, sd.name))
        return Status::error(StatusCode::kInvalidModel, "solvers %u and %u are both named '%s'", j,
                             i, sd.name);
    const char* method = fs->method() ? fs->method()->c_str() : "";
    if (!parse_method(method, &sd.method) || sd.method == Method::kDopri5)
      return Status::error(StatusCode::kInvalidModel,
                           "solver '%s': method '%.32s' is not a fixed-grid method (euler, heun, "
                           "midpoint, rk4, rk4-38, ab2, ab3, ab4)",
                           sd.name, method);
    const auto* grid = fs->grid();
    const uint32_t points = grid->size();
    sd.steps = points - 1;
    const uint8_t* raw = grid->Data();
    for (uint32_t k = 0; k < points; ++k) {
      std::memcpy(&grids[k], raw + size_t{k} * sizeof(double), sizeof(double));
      if (!math::is_finite(grids[k]))
        return Status::error(StatusCode::kInvalidModel, "solver '%s': grid point %u is not finite",
                             sd.name, k);
      if (k > 0 && !(grids[k] > grids[k - 1]))
        return Status::error(StatusCode::kInvalidModel,
                             "solver '%s': grid is not strictly increasing at point %u", sd.name,
                             k);
    }
    if (grids[0] != t0 || grids[points - 1] != t1)
      return Status::error(StatusCode::kInvalidModel,
                           "solver '%s': grid runs from %.17g to %.17g, not over the model's time "
                           "range [%.17g, %.17g]",
                           sd.name, grids[0], grids[points - 1], t0, t1);
    sd.grid = grids;
    grids += points;
    // Per-step coefficients (docs/format.md, "Solvers"): exactly the count the method takes on
    // this grid, finite, bounded, each step's summing to 1. Copied (the vector may be unaligned).
    const auto* fc = fs->coefficients();
    sd.coefficient_count = fc ? fc->size() : 0;
    sd.coefficients = nullptr;
    if (sd.coefficient_count > 0) {
      std::memcpy(grids, fc->Data(), size_t{sd.coefficient_count} * sizeof(double));
      Status s = check_solver_coefficients(sd.method, sd.steps, grids, sd.coefficient_count);
      if (!s.ok())
        return Status::error(StatusCode::kInvalidModel, "solver '%s': %s", sd.name, s.message());
      sd.coefficients = grids;
      grids += sd.coefficient_count;
    }
    sd.nfe = fs->nfe();
    const uint64_t expected = fixed_grid_evaluations(sd.method, sd.steps);
    if (sd.nfe != expected)
      return Status::error(StatusCode::kInvalidModel,
                           "solver '%s': nfe %u, but %s on %u steps takes %llu evaluations",
                           sd.name, sd.nfe, method, sd.steps,
                           static_cast<unsigned long long>(expected));
    sd.sample_error = fs->sample_error();
    if (!(sd.sample_error >= 0.0) || !math::is_finite(sd.sample_error))
      return Status::error(StatusCode::kInvalidModel, "solver '%s': sample error %g is not >= 0",
                           sd.name, sd.sample_error);
    sd.label = fs->label();
    sd.guidance = fs->guidance();
    if (sd.label < -1 || !math::is_finite(sd.guidance))
      return Status::error(StatusCode::kInvalidModel,
                           "solver '%s': label %d or guidance %g is invalid", sd.name, sd.label,
                           sd.guidance);
    // The label and guidance it was tuned for must be ones the model takes (validate re-runs
    // the test vector with them).
    const ModelInfo& info = data->info;
    if (sd.label >= 0 && !info.takes_labels)
      return Status::error(StatusCode::kInvalidModel,
                           "solver '%s': tuned for label %d, but the model takes no class label",
                           sd.name, sd.label);
    if (sd.label >= 0 && static_cast<uint32_t>(sd.label) >= info.label_classes)
      return Status::error(StatusCode::kInvalidModel,
                           "solver '%s': label %d is outside the model's classes [0, %u)", sd.name,
                           sd.label, info.label_classes);
    if (sd.guidance != 1.0 &&
        !((info.takes_labels && info.null_label >= 0) || (info.cond_width && info.has_null_cond)))
      return Status::error(StatusCode::kInvalidModel,
                           "solver '%s': guidance %g, but the model has no null label or null "
                           "condition",
                           sd.name, sd.guidance);
    sd.test_count = fs->test_count();
    if (sd.test_count > Limits::kMaxTestVectors)
      return Status::error(StatusCode::kInvalidModel,
                           "solver '%s': %u test points exceed the limit %u", sd.name,
                           sd.test_count, Limits::kMaxTestVectors);
    sd.test_start = sd.test_end = nullptr;
    sd.test_tolerance = fs->test_tolerance();
    if (sd.test_count > 0) {
      Status s;
      const size_t n = size_t{sd.test_count} * dim;
      if (!(s = finite_floats("test start", fs->test_start(), n, &sd.test_start)).ok() ||
          !(s = finite_floats("test end", fs->test_end(), n, &sd.test_end)).ok())
        return s.prefix("solver '%s'", sd.name);
      if (!sd.test_start || !sd.test_end)
        return Status::error(StatusCode::kInvalidModel,
                             "solver '%s': %u test points but start or end missing", sd.name,
                             sd.test_count);
      if (!(sd.test_tolerance >= 0.0f) || !math::is_finite(sd.test_tolerance))
        return Status::error(StatusCode::kInvalidModel, "solver '%s': bad test tolerance", sd.name);
    }
    evaluations += uint64_t{sd.test_count} * sd.nfe;
    if (evaluations > Limits::kMaxValidationEvaluations)
      return Status::error(StatusCode::kInvalidModel,
                           "test vectors and solver tests ask for more than %llu network "
                           "evaluations (solver '%s': %u points x NFE %u)",
                           static_cast<unsigned long long>(Limits::kMaxValidationEvaluations),
                           sd.name, sd.test_count, sd.nfe);
  }
  return Status();
}

}  // namespace siflow::detail
