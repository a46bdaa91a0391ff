// SPDX-License-Identifier: Apache-2.0
// The adaptive Dormand-Prince 5(4) pair with FSAL and the standard step-size control
// (docs/math.md, "Dormand-Prince"): the reference the fixed-grid methods and tuned solvers are
// measured against. It keeps only the current seven stages, in the caller's workspace.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "integrate/ode.hpp"

namespace siflow {

struct AdaptiveOptions {
  double rtol = 1e-6;
  double atol = 1e-6;
  uint32_t max_steps = 100000;  // attempted steps (accepted and rejected)
};

namespace detail {
struct Dopri5Tableau {
  double c[7];
  double a[7][6];
  double b[7];  // fifth order (the solution carried; the FSAL stage 7 is evaluated there)
  double e[7];  // b - b_hat (the embedded fourth-order solution): the error estimate
};
inline const Dopri5Tableau& dopri5_tableau() {
  static const Dopri5Tableau t{
      {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0},
      {{0},
       {1.0 / 5},
       {3.0 / 40, 9.0 / 40},
       {44.0 / 45, -56.0 / 15, 32.0 / 9},
       {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
       {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
       {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}},
      {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0.0},
      {71.0 / 57600, 0.0, -71.0 / 16695, 71.0 / 1920, -17253.0 / 339200, 22.0 / 525, -1.0 / 40}};
  return t;
}
}  // namespace detail

// Integrates from grid.at(0) to grid.at(grid.steps) (either direction) with steps chosen so the
// scaled error of every row, RMS over its dim components (and l when carried) of
// err / (atol + rtol max(|x|, |x_new|)), stays <= 1. after_step(step, t) runs after each
// accepted step. Fails naming max_steps when more steps than that are attempted.
template <typename T, typename Field, typename AfterStep>
Status integrate_dopri5(Field& field, const AdaptiveOptions& opt, const TimeGrid& grid, size_t rows,
                        uint32_t dim, T* x, double* ell, const OdeWorkspace<T>& ws,
                        AfterStep&& after_step) {
  const detail::Dopri5Tableau& tab = detail::dopri5_tableau();
  const size_t n = rows * dim;
  T* k[7] = {ws.stage[0],   ws.stage[1],   ws.stage[2],  ws.stage[3],
             ws.history[0], ws.history[1], ws.history[2]};
  double* kd[7] = {ws.stage_div[0],   ws.stage_div[1],   ws.stage_div[2],  ws.stage_div[3],
                   ws.history_div[0], ws.history_div[1], ws.history_div[2]};
  T* x_new = ws.history[3];
  const double t_start = grid.at(0), t_end = grid.at(grid.steps);
  const double span = t_end - t_start;
  const double direction = span < 0 ? -1.0 : 1.0;
  if (span == 0.0) return Status();
  double t = t_start;
  Status st = field.eval(t, x, rows, k[0], ell ? kd[0] : nullptr);
  if (!st.ok()) return st;
  // Initial step (Hairer, Norsett and Wanner's first guess): 0.01 ||x|| / ||v|| in the scaled
  // norm, at most the span.
  double d0 = 0.0, d1 = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double xi = static_cast<double>(x[i]);
    const double sc = opt.atol + opt.rtol * (xi < 0 ? -xi : xi);
    d0 += (xi / sc) * (xi / sc);
    const double vi = static_cast<double>(k[0][i]) / sc;
    d1 += vi * vi;
  }
  d0 = n ? math::sqrt(d0 / n) : 0.0;
  d1 = n ? math::sqrt(d1 / n) : 0.0;
  double h = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  const double abs_span = span * direction;
  if (!(h < abs_span)) h = abs_span;
  h *= direction;
  uint32_t attempts = 0;
  size_t accepted = 0;
  bool rejected_last = false;
  while ((t_end - t) * direction > 0.0) {
    if (attempts >= opt.max_steps)
      return Status::error(StatusCode::kNumericalError,
                           "dopri5 needed more than max_steps = %u steps (at t = %.9g of %.9g to "
                           "%.9g); raise the step limit or loosen rtol/atol",
                           opt.max_steps, t, t_start, t_end);
    ++attempts;
    bool last = false;
    if ((t + h - t_end) * direction >= 0.0) {
      h = t_end - t;
      last = true;
    }
    for (int s = 1; s < 7; ++s) {
      T* input = s == 6 ? x_new : ws.state;
      for (size_t i = 0; i < n; ++i) {
        double acc = 0.0;
        for (int j = 0; j < s; ++j)
          if (tab.a[s][j] != 0.0) acc += tab.a[s][j] * static_cast<double>(k[j][i]);
        input[i] = static_cast<T>(static_cast<double>(x[i]) + h * acc);
      }
      st = field.eval(last && s >= 5 ? t_end : t + tab.c[s] * h, input, rows, k[s],
                      ell ? kd[s] : nullptr);
      if (!st.ok()) return st;
    }
    // Scaled error: the largest row RMS.
    double err = 0.0;
    for (size_t r = 0; r < rows; ++r) {
      double sum = 0.0;
      for (uint32_t c = 0; c < dim; ++c) {
        const size_t i = r * dim + c;
        double e = 0.0;
        for (int j = 0; j < 7; ++j)
          if (tab.e[j] != 0.0) e += tab.e[j] * static_cast<double>(k[j][i]);
        e *= h;
        const double a = static_cast<double>(x[i]), b = static_cast<double>(x_new[i]);
        const double big =
            (a < 0 ? -a : a) > (b < 0 ? -b : b) ? (a < 0 ? -a : a) : (b < 0 ? -b : b);
        const double sc = opt.atol + opt.rtol * big;
        sum += (e / sc) * (e / sc);
      }
      size_t count = dim;
      if (ell) {
        double e = 0.0, inc = 0.0;
        for (int j = 0; j < 7; ++j) {
          e += tab.e[j] * kd[j][r];
          inc += tab.b[j] * kd[j][r];
        }
        e *= h;
        const double a = ell[r] < 0 ? -ell[r] : ell[r];
        const double b0 = ell[r] + h * inc;
        const double b = b0 < 0 ? -b0 : b0;
        const double sc = opt.atol + opt.rtol * (a > b ? a : b);
        sum += (e / sc) * (e / sc);
        ++count;
      }
      const double row = math::sqrt(sum / static_cast<double>(count));
      if (!(row <= err)) err = row;  // a NaN row makes err NaN
    }
    if (!math::is_finite(err))
      return Status::error(StatusCode::kNumericalError,
                           "dopri5: the velocity or state is not finite near t = %.9g", t);
    // Step-size factor 0.9 err^(-1/5), within [0.2, 10] (at most 1 right after a rejection).
    double factor = err == 0.0 ? 10.0 : 0.9 * math::exp(-0.2 * math::log(err));
    if (factor < 0.2) factor = 0.2;
    if (factor > 10.0) factor = 10.0;
    if (err <= 1.0) {
      if (ell)
        for (size_t r = 0; r < rows; ++r) {
          double inc = 0.0;
          for (int j = 0; j < 7; ++j) inc += tab.b[j] * kd[j][r];
          ell[r] += h * inc;
        }
      std::memcpy(x, x_new, n * sizeof(T));
      t = last ? t_end : t + h;
      // FSAL: stage 7 was evaluated at the new point and is the next step's stage 1.
      T* first = k[0];
      k[0] = k[6];
      k[6] = first;
      double* first_div = kd[0];
      kd[0] = kd[6];
      kd[6] = first_div;
      st = after_step(accepted++, t);
      if (!st.ok()) return st;
      if (rejected_last && factor > 1.0) factor = 1.0;
      rejected_last = false;
    } else {
      rejected_last = true;
    }
    h *= factor;
    const double tiny = 1e-14 * ((t < 0 ? -t : t) + abs_span);
    if ((t_end - t) * direction > 0.0 && (h < 0 ? -h : h) < tiny)
      return Status::error(StatusCode::kNumericalError,
                           "dopri5: the step size fell below %.3g at t = %.9g (a stiff or "
                           "non-smooth velocity); loosen rtol/atol",
                           tiny, t);
  }
  return Status();
}

}  // namespace siflow
