// SPDX-License-Identifier: Apache-2.0
// SDE sampling dX = [v + eps(t) s] dt + sqrt(2 eps(t)) dW for a diagonal-normal base
// (docs/math.md, "Gaussian base: score and SDE"), with Euler-Maruyama or a Heun-type step
// (noise first, then a trapezoid on the drift). Never allocates; noise comes from the caller.
#pragma once

#include <cstddef>
#include <cstdint>

#include "integrate/ode.hpp"
#include "integrate/score.hpp"
#include "math/interpolant.hpp"

namespace siflow {

struct SdeCoefficients {
  const detail::InterpolantData* interpolant;
  const double* mean;  // base mean [dim]
  const double* std;   // base std [dim]
  double epsilon;
  EpsilonSchedule schedule;

  // eps(t), never negative (a(t) may round a hair below 0 at t = 1).
  double eps(const InterpolantValues& iv) const {
    const double e = schedule == EpsilonSchedule::kConstant ? epsilon : epsilon * iv.a;
    return e > 0.0 ? e : 0.0;
  }
  // eps(t) / a(t): the schedule proportional to a cancels the score's 1/a exactly.
  double eps_over_a(const InterpolantValues& iv) const {
    return schedule == EpsilonSchedule::kConstant ? epsilon / iv.a : epsilon;
  }
};

// out = v(t, x) + eps(t) s(t, x).
template <typename T, typename Field>
Status sde_drift(Field& field, const SdeCoefficients& c, double t, const T* x, size_t rows,
                 uint32_t dim, T* out) {
  Status st = field.eval(t, x, rows, out, nullptr);
  if (!st.ok()) return st;
  const InterpolantValues iv = evaluate_interpolant(*c.interpolant, t);
  add_scaled_score(iv, c.eps_over_a(iv), c.mean, c.std, x, rows, dim, out);
  return Status();
}

// Noise: fill_noise(step, T* xi) writes rows*dim standard normals for global step `step`.
// Workspace: stage[0..2] and state, each rows*dim.
template <typename T, typename Field, typename Noise, typename AfterStep>
Status integrate_sde(Field& field, const SdeCoefficients& c, SdeMethod method, const TimeGrid& grid,
                     size_t rows, uint32_t dim, T* x, const OdeWorkspace<T>& ws, Noise&& fill_noise,
                     AfterStep&& after_step) {
  const size_t n = rows * dim;
  T* d1 = ws.stage[0];
  T* d2 = ws.stage[1];
  T* xi = ws.stage[2];
  T* tmp = ws.state;
  for (size_t step = 0; step < grid.steps; ++step) {
    const double t0 = grid.at(step), t1 = grid.at(step + 1);
    const double h = t1 - t0;
    fill_noise(step, xi);
    const T scale =
        static_cast<T>(math::sqrt(2.0 * c.eps(evaluate_interpolant(*c.interpolant, t0)) * h));
    Status st;
    if (method == SdeMethod::kEulerMaruyama) {
      if (!(st = sde_drift(field, c, t0, x, rows, dim, d1)).ok()) return st;
      for (size_t i = 0; i < n; ++i) x[i] += static_cast<T>(h) * d1[i] + scale * xi[i];
    } else {
      for (size_t i = 0; i < n; ++i) x[i] += scale * xi[i];
      if (!(st = sde_drift(field, c, t0, x, rows, dim, d1)).ok()) return st;
      for (size_t i = 0; i < n; ++i) tmp[i] = x[i] + static_cast<T>(h) * d1[i];
      if (!(st = sde_drift(field, c, t1, tmp, rows, dim, d2)).ok()) return st;
      for (size_t i = 0; i < n; ++i) x[i] += static_cast<T>(0.5 * h) * (d1[i] + d2[i]);
    }
    if (!(st = after_step(step)).ok()) return st;
  }
  return Status();
}

}  // namespace siflow
