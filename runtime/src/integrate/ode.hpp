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

// A time grid of `total` steps: uniform between two times, or the caller's explicit increasing
// points, optionally walked backwards. An integrator walks the piece of `steps` steps that
// starts at point `first`, so a run can be split (SDE then ODE) without moving any point.
struct TimeGrid {
  double start = 0.0, end = 1.0;
  size_t total = 0;
  const double* points = nullptr;  // total + 1 increasing points, or nullptr for uniform
  bool backward = false;           // walk from time `end` (the last point) to `start`
  size_t first = 0;
  size_t steps = 0;

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
    return start + (end - start) * (static_cast<double>(k) / static_cast<double>(total));
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
};

// Called after each step with the step index; returns a non-ok status to stop.
// Field: Status eval(double t, const T* x, size_t rows, T* v, double* div) with div nullable.
template <typename T, typename Field, typename AfterStep>
Status integrate_ode(Field& field, const Tableau& tab, const TimeGrid& grid, size_t rows,
                     uint32_t dim, T* x, double* ell, const OdeWorkspace<T>& ws,
                     AfterStep&& after_step) {
  const size_t n = rows * dim;
  for (size_t step = 0; step < grid.steps; ++step) {
    const double t0 = grid.at(step);
    const double h = grid.at(step + 1) - t0;
    for (int s = 0; s < tab.stages; ++s) {
      const T* input = x;
      if (s > 0) {
        for (size_t i = 0; i < n; ++i) {
          T acc = x[i];
          for (int j = 0; j < s; ++j)
            if (tab.a[s][j] != 0.0) acc += static_cast<T>(h * tab.a[s][j]) * ws.stage[j][i];
          ws.state[i] = acc;
        }
        input = ws.state;
      }
      Status st =
          field.eval(t0 + tab.c[s] * h, input, rows, ws.stage[s], ell ? ws.stage_div[s] : nullptr);
      if (!st.ok()) return st;
    }
    for (size_t i = 0; i < n; ++i) {
      T acc = 0;
      for (int s = 0; s < tab.stages; ++s) acc += static_cast<T>(tab.b[s]) * ws.stage[s][i];
      x[i] += static_cast<T>(h) * acc;
    }
    if (ell) {
      for (size_t r = 0; r < rows; ++r) {
        double acc = 0.0;
        for (int s = 0; s < tab.stages; ++s) acc += tab.b[s] * ws.stage_div[s][r];
        ell[r] += h * acc;
      }
    }
    Status st = after_step(step);
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
