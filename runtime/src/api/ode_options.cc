// SPDX-License-Identifier: Apache-2.0
// OdeOptions checks for plan.cc (api/ode_options.hpp): methods, grids and grid kinds, dopri5
// tolerances, stored solvers. Nothing here allocates.
#include "api/ode_options.hpp"

#include <cstddef>

#include "math/elementary.hpp"

namespace siflow {

// The options as this runtime reads them: fields past the caller's struct_size keep their
// defaults (fields are only ever appended).
OdeOptions effective_ode_options(const OdeOptions& o) {
  OdeOptions e = o;
  const OdeOptions defaults;
  auto covered = [&](size_t offset, size_t size) { return o.struct_size >= offset + size; };
  if (!covered(offsetof(OdeOptions, grid_kind), sizeof e.grid_kind))
    e.grid_kind = defaults.grid_kind;
  if (!covered(offsetof(OdeOptions, grid_param), sizeof e.grid_param))
    e.grid_param = defaults.grid_param;
  if (!covered(offsetof(OdeOptions, rtol), sizeof e.rtol)) e.rtol = defaults.rtol;
  if (!covered(offsetof(OdeOptions, atol), sizeof e.atol)) e.atol = defaults.atol;
  if (!covered(offsetof(OdeOptions, max_steps), sizeof e.max_steps))
    e.max_steps = defaults.max_steps;
  if (!covered(offsetof(OdeOptions, solver), sizeof e.solver)) e.solver = defaults.solver;
  if (!covered(offsetof(OdeOptions, coefficients), sizeof e.coefficients))
    e.coefficients = defaults.coefficients;
  if (!covered(offsetof(OdeOptions, coefficient_count), sizeof e.coefficient_count))
    e.coefficient_count = defaults.coefficient_count;
  return e;
}

Status check_ode_options(const detail::ModelData& md, const OdeOptions& options, double start,
                         double end, OdeOptions* effective, TimeGrid* grid) {
  if (options.struct_size < sizeof(uint32_t) || options.struct_size > sizeof(OdeOptions))
    return Status::error(StatusCode::kInvalidArgument,
                         "OdeOptions.struct_size %u is not one this runtime knows",
                         options.struct_size);
  OdeOptions o = effective_ode_options(options);
  if (o.solver) {
    const detail::SolverData* sd = detail::find_solver(md, o.solver);
    if (!sd)
      return Status::error(StatusCode::kInvalidArgument,
                           "the model has no solver named '%.64s' (it stores %u)", o.solver,
                           md.solver_count);
    if (o.grid || o.grid_kind != GridKind::kUniform)
      return Status::error(StatusCode::kInvalidArgument,
                           "solver '%s' brings its own time grid; a grid or grid kind excludes it",
                           sd->name);
    if (o.coefficients || o.coefficient_count)
      return Status::error(StatusCode::kInvalidArgument,
                           "solver '%s' brings its own per-step coefficients; coefficients "
                           "exclude it",
                           sd->name);
    if (start != md.info.time_start || end != md.info.time_end)
      return Status::error(StatusCode::kInvalidArgument,
                           "solver '%s' runs over the model's time range [%g, %g], not [%g, %g]",
                           sd->name, md.info.time_start, md.info.time_end, start, end);
    o.method = sd->method;
    o.steps = sd->steps;
    o.grid = sd->grid;
    o.grid_size = size_t{sd->steps} + 1;
    o.coefficients = sd->coefficients;
    o.coefficient_count = sd->coefficient_count;
  }
  *effective = o;
  if (static_cast<unsigned>(o.method) > static_cast<unsigned>(Method::kDopri5))
    return Status::error(StatusCode::kInvalidArgument, "unknown integration method %d",
                         static_cast<int>(o.method));
  if (static_cast<unsigned>(o.grid_kind) > static_cast<unsigned>(GridKind::kCosine))
    return Status::error(StatusCode::kInvalidArgument, "unknown grid kind %d",
                         static_cast<int>(o.grid_kind));
  if (o.grid && o.grid_kind != GridKind::kUniform)
    return Status::error(StatusCode::kInvalidArgument,
                         "an explicit time grid and grid kind %s exclude each other",
                         grid_kind_name(o.grid_kind));
  if (o.method == Method::kDopri5) {
    if (o.grid || o.grid_kind != GridKind::kUniform)
      return Status::error(StatusCode::kInvalidArgument,
                           "dopri5 chooses its own steps; it takes no time grid or grid kind");
    if (!(o.rtol >= 1e-13 && o.rtol <= 1.0))
      return Status::error(StatusCode::kInvalidArgument, "dopri5: rtol %g is outside [1e-13, 1]",
                           o.rtol);
    if (!(o.atol >= 0.0 && o.atol <= 1.0))
      return Status::error(StatusCode::kInvalidArgument, "dopri5: atol %g is outside [0, 1]",
                           o.atol);
    if (o.max_steps == 0 || o.max_steps > Limits::kMaxSteps)
      return Status::error(StatusCode::kInvalidArgument, "dopri5: max_steps %u is outside [1, %u]",
                           o.max_steps, Limits::kMaxSteps);
    if (o.coefficients || o.coefficient_count)
      return Status::error(StatusCode::kInvalidArgument,
                           "dopri5 takes no per-step coefficients (only ab2, ab3, ab4 do)");
    *grid = TimeGrid::uniform(start, end, 1);
    return Status();
  }
  *grid = TimeGrid::uniform(start, end, o.steps);
  if (o.grid) {
    if (o.grid_size < 2 || o.grid_size > size_t{Limits::kMaxSteps} + 1)
      return Status::error(StatusCode::kInvalidArgument, "time grid has %zu points, expected 2..%u",
                           o.grid_size, Limits::kMaxSteps + 1);
    for (size_t i = 0; i < o.grid_size; ++i) {
      if (!math::is_finite(o.grid[i]))
        return Status::error(StatusCode::kInvalidArgument, "time grid point %zu is not finite", i);
      if (i > 0 && !(o.grid[i] > o.grid[i - 1]))
        return Status::error(StatusCode::kInvalidArgument,
                             "time grid is not strictly increasing at point %zu (%g after %g)", i,
                             o.grid[i], o.grid[i - 1]);
    }
    if (o.grid[0] != start || o.grid[o.grid_size - 1] != end)
      return Status::error(StatusCode::kInvalidArgument,
                           "time grid runs from %g to %g, but this run needs %g to %g", o.grid[0],
                           o.grid[o.grid_size - 1], start, end);
    grid->points = o.grid;
    grid->total = grid->steps = o.grid_size - 1;
  } else if (o.steps == 0 || o.steps > Limits::kMaxSteps) {
    return Status::error(StatusCode::kInvalidArgument, "steps %u is outside [1, %u]", o.steps,
                         Limits::kMaxSteps);
  } else if (o.grid_kind != GridKind::kUniform) {
    if ((o.grid_kind == GridKind::kShift || o.grid_kind == GridKind::kPower) &&
        !(o.grid_param >= 1e-3 && o.grid_param <= 1e3))
      return Status::error(StatusCode::kInvalidArgument,
                           "grid kind %s: parameter %g is outside [0.001, 1000]",
                           grid_kind_name(o.grid_kind), o.grid_param);
    grid->kind = o.grid_kind;
    grid->param = o.grid_param;
    // The family is increasing in exact arithmetic; check the rounded points are too.
    for (size_t i = 1; i <= grid->total; ++i)
      if (!(grid->point(i) > grid->point(i - 1)))
        return Status::error(StatusCode::kInvalidArgument,
                             "grid %s:%g of %u steps is not strictly increasing at point %zu "
                             "(%.17g after %.17g)",
                             grid_kind_name(o.grid_kind), o.grid_param, o.steps, i, grid->point(i),
                             grid->point(i - 1));
  }
  if (o.coefficients || o.coefficient_count) {
    Status s =
        check_solver_coefficients(o.method, grid->total, o.coefficients, o.coefficient_count);
    if (!s.ok()) return s.prefix("OdeOptions.coefficients");
    grid->coefficients = o.coefficients;
  }
  return Status();
}

}  // namespace siflow
