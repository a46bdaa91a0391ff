// SPDX-License-Identifier: Apache-2.0
// Fixed-step explicit Runge-Kutta integrators (Euler, Heun, midpoint, RK4, RK4 3/8) as
// templates over the scalar type, for networks (float) and the analytic oracle (double).
// They see the velocity through a Field and carry the log-density term l with the same stage
// weights (docs/math.md, "Log-likelihood"). Never allocate: the caller passes the workspace.
#pragma once

#include <cstddef>
#include <cstdint>

#include "math/elementary.hpp"
#include "siflow/siflow.hpp"

namespace siflow {

struct Tableau {
  int stages;
  double a[4][4];  // stage coefficients, a[i][j] for j < i
  double b[4];     // weights
  double c[4];     // nodes
};

const Tableau& tableau(Method method);
constexpr int kMaxStages = 4;

constexpr int kMaxHistory = 4;  // velocities an Adams-Bashforth step keeps (order 4)

// Point s in [0, 1] of a grid family mapped to u in [0, 1] (docs/math.md, "Time grids"); u is
// increasing in s with u(0) = 0 and u(1) = 1.
inline double grid_family(GridKind kind, double param, double s) {
  switch (kind) {
    case GridKind::kShift:
      return param * s / (1.0 + (param - 1.0) * s);
    case GridKind::kPower:
      return s >= 1.0 ? 1.0 : 1.0 - math::exp(param * math::log(1.0 - s));
    case GridKind::kCosine:
      return 0.5 * (1.0 - math::cos(3.14159265358979323846 * s));
    case GridKind::kUniform:
      break;
  }
  return s;
}

// A time grid of `total` steps: a family (uniform by default) between two times, or the
// caller's explicit increasing points, optionally walked backwards. An integrator walks the
// piece of `steps` steps that starts at point `first`, so a run can be split (SDE then ODE)
// without moving any point.
struct TimeGrid {
  double start = 0.0, end = 1.0;
  size_t total = 0;
  const double* points = nullptr;  // total + 1 increasing points, or nullptr for a family
  GridKind kind = GridKind::kUniform;
  double param = 0.0;     // A of kShift, R of kPower
  bool backward = false;  // walk from time `end` (the last point) to `start`
  size_t first = 0;
  size_t steps = 0;
  // Per-step coefficients of an Adams-Bashforth method over the whole grid (rows of k from step
  // k - 1 on; docs/math.md, "Per-step coefficients"), or nullptr for its own weights. Forward
  // walks only: a backward walk takes the Adams-Bashforth weights.
  const double* coefficients = nullptr;

  static TimeGrid uniform(double from, double to, size_t count) {
    TimeGrid g;
    g.start = from;
    g.end = to;
    g.total = g.steps = count;
    return g;
  }
  // Point j of the whole walk (0 is where it begins).
  double point(size_t j) const {
    const size_t k = backward ? total - j : j;
    if (points) return points[k];
    if (k == total) return end;
    if (k == 0) return start;
    const double s = static_cast<double>(k) / static_cast<double>(total);
    return start + (end - start) * (kind == GridKind::kUniform ? s : grid_family(kind, param, s));
  }
  double at(size_t i) const { return point(first + i); }
  TimeGrid piece(size_t from, size_t count) const {
    TimeGrid g = *this;
    g.first = first + from;
    g.steps = count;
    return g;
  }
};

template <typename T>
struct OdeWorkspace {
  T* stage[kMaxStages];           // [rows * dim] each
  T* state;                       // [rows * dim], the stage input
  double* stage_div[kMaxStages];  // [rows] each, used when l is carried
  // Earlier velocities of a multistep method (and the extra stages of dopri5): [rows * dim] and
  // [rows] each.
  T* history[kMaxHistory];
  double* history_div[kMaxHistory];
};

// One step of an explicit Runge-Kutta method from (t0, x) of length h, whose first stage
// v(t0, x) (and its divergence, when l is carried) the caller has evaluated into k0 / k0_div;
// the other stages go to ws.stage[1..].
template <typename T, typename Field>
Status rk_step(Field& field, const Tableau& tab, double t0, double h, size_t rows, uint32_t dim,
               T* x, double* ell, const OdeWorkspace<T>& ws, T* k0, double* k0_div) {
  const size_t n = rows * dim;
  T* stage[kMaxStages] = {k0, ws.stage[1], ws.stage[2], ws.stage[3]};
  double* stage_div[kMaxStages] = {k0_div, ws.stage_div[1], ws.stage_div[2], ws.stage_div[3]};
  for (int s = 1; s < tab.stages; ++s) {
    for (size_t i = 0; i < n; ++i) {
      T acc = x[i];
      for (int j = 0; j < s; ++j)
        if (tab.a[s][j] != 0.0) acc += static_cast<T>(h * tab.a[s][j]) * stage[j][i];
      ws.state[i] = acc;
    }
    Status st =
        field.eval(t0 + tab.c[s] * h, ws.state, rows, stage[s], ell ? stage_div[s] : nullptr);
    if (!st.ok()) return st;
  }
  for (size_t i = 0; i < n; ++i) {
    T acc = 0;
    for (int s = 0; s < tab.stages; ++s) acc += static_cast<T>(tab.b[s]) * stage[s][i];
    x[i] += static_cast<T>(h) * acc;
  }
  if (ell) {
    for (size_t r = 0; r < rows; ++r) {
      double acc = 0.0;
      for (int s = 0; s < tab.stages; ++s) acc += tab.b[s] * stage_div[s][r];
      ell[r] += h * acc;
    }
  }
  return Status();
}

// Called after each step with the step index; returns a non-ok status to stop.
// Field: Status eval(double t, const T* x, size_t rows, T* v, double* div) with div nullable.
template <typename T, typename Field, typename AfterStep>
Status integrate_ode(Field& field, const Tableau& tab, const TimeGrid& grid, size_t rows,
                     uint32_t dim, T* x, double* ell, const OdeWorkspace<T>& ws,
                     AfterStep&& after_step) {
  for (size_t step = 0; step < grid.steps; ++step) {
    const double t0 = grid.at(step);
    const double h = grid.at(step + 1) - t0;
    Status st = field.eval(t0, x, rows, ws.stage[0], ell ? ws.stage_div[0] : nullptr);
    if (!st.ok()) return st;
    st = rk_step(field, tab, t0, h, rows, dim, x, ell, ws, ws.stage[0], ws.stage_div[0]);
    if (!st.ok()) return st;
    st = after_step(step);
    if (!st.ok()) return st;
  }
  return Status();
}

// Index of the first row of x (rows x dim) holding a non-finite value, or rows if none.
template <typename T>
size_t first_nonfinite_row(const T* x, size_t rows, uint32_t dim) {
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t k = 0; k < dim; ++k)
      if (!math::is_finite(x[r * dim + k])) return r;
  return rows;
}

}  // namespace siflow
