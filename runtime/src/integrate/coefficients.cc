// SPDX-License-Identifier: Apache-2.0
// Per-step coefficients of a learned multistep combination (docs/math.md, "Per-step
// coefficients"): how many ab<k> takes, their checks (shared by the loader and OdeOptions), and
// the Adams-Bashforth weights as coefficients. Nothing here allocates.
#include "integrate/multistep.hpp"
#include "math/elementary.hpp"
#include "siflow/siflow.hpp"

namespace siflow {

uint64_t solver_coefficient_count(Method method, uint64_t steps) {
  if (!is_multistep(method)) return 0;
  const uint64_t k = static_cast<uint64_t>(multistep_order(method));
  return steps >= k ? (steps - k + 1) * k : 0;
}

Status check_solver_coefficients(Method method, uint64_t steps, const double* c, size_t count) {
  const uint64_t expected = solver_coefficient_count(method, steps);
  if (count != expected) {
    if (!is_multistep(method))
      return Status::error(StatusCode::kInvalidArgument,
                           "%zu per-step coefficients, but method %s takes none (only ab2, ab3, "
                           "ab4 do)",
                           count, method_name(method));
    return Status::error(StatusCode::kInvalidArgument,
                         "%zu per-step coefficients, but %s on %llu steps takes %llu (%d for each "
                         "step from step %d on)",
                         count, method_name(method), static_cast<unsigned long long>(steps),
                         static_cast<unsigned long long>(expected), multistep_order(method),
                         multistep_order(method) - 1);
  }
  if (count == 0) return Status();
  if (!c)
    return Status::error(StatusCode::kInvalidArgument, "%zu per-step coefficients but no values",
                         count);
  const int k = multistep_order(method);
  for (size_t row = 0; row * k < count; ++row) {
    double sum = 0.0;
    for (int j = 0; j < k; ++j) {
      const double v = c[row * k + j];
      if (!math::is_finite(v))
        return Status::error(StatusCode::kInvalidArgument,
                             "coefficient %d of step %zu is not finite", j, row + k - 1);
      if (!(v >= -Limits::kMaxSolverCoefficient && v <= Limits::kMaxSolverCoefficient))
        return Status::error(StatusCode::kInvalidArgument,
                             "coefficient %d of step %zu is %g, outside [-%g, %g]", j, row + k - 1,
                             v, Limits::kMaxSolverCoefficient, Limits::kMaxSolverCoefficient);
      sum += v;
    }
    // Consistency: the step moves x by h times a weighted mean of velocities.
    if (!(sum - 1.0 <= 1e-9 && 1.0 - sum <= 1e-9))
      return Status::error(StatusCode::kInvalidArgument,
                           "the coefficients of step %zu sum to %.17g, not 1", row + k - 1, sum);
  }
  return Status();
}

Status adams_bashforth_coefficients(Method method, const double* grid, size_t grid_size,
                                    double* out) {
  if (!is_multistep(method))
    return Status::error(StatusCode::kInvalidArgument,
                         "adams_bashforth_coefficients: method %s is not ab2, ab3 or ab4",
                         method_name(method));
  if (!grid || grid_size < 2 || grid_size > size_t{Limits::kMaxSteps} + 1)
    return Status::error(StatusCode::kInvalidArgument,
                         "adams_bashforth_coefficients: the grid needs 2..%u points",
                         Limits::kMaxSteps + 1);
  for (size_t i = 1; i < grid_size; ++i)
    if (!(grid[i] > grid[i - 1]) || !math::is_finite(grid[i]))
      return Status::error(StatusCode::kInvalidArgument,
                           "adams_bashforth_coefficients: grid is not finite and strictly "
                           "increasing at point %zu",
                           i);
  if (!out && solver_coefficient_count(method, grid_size - 1) > 0)
    return Status::error(StatusCode::kInvalidArgument, "adams_bashforth_coefficients: out is null");
  const int k = multistep_order(method);
  // The same nodes and order rule as integrate_multistep: nodes[0] is the step's start.
  for (size_t step = static_cast<size_t>(k - 1); step + 1 < grid_size; ++step) {
    double nodes[kMaxHistory] = {};
    const int available = step + 1 < kMaxHistory ? static_cast<int>(step + 1) : kMaxHistory;
    for (int j = 0; j < available; ++j) nodes[j] = grid[step - j];
    const double h = grid[step + 1] - grid[step];
    const int q = adams_bashforth_order(nodes, available, k, h);
    double w[kMaxHistory];
    adams_bashforth_weights(nodes, q, h, w);
    double* row = out + (step - (k - 1)) * k;
    for (int j = 0; j < k; ++j) row[j] = j < q ? w[j] / h : 0.0;
  }
  return Status();
}

}  // namespace siflow
