// SPDX-License-Identifier: Apache-2.0
// Explicit Adams-Bashforth methods of order 2..4 on any grid: the weights integrate the
// Lagrange interpolant of the last k velocities over the step (docs/math.md, "Adams-Bashforth"),
// a one-step bootstrap fills the history, and a step much longer than its neighbour drops to a
// lower order. The history lives in the caller's workspace; nothing here allocates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "integrate/ode.hpp"

namespace siflow {

inline int multistep_order(Method m) {
  return m == Method::kAB2 ? 2 : m == Method::kAB3 ? 3 : m == Method::kAB4 ? 4 : 1;
}

// The largest neighbouring step ratio a step of order q > 1 accepts; a larger one drops it.
constexpr double kMaxStepRatio = 2.0;

// The order of the step of length h from nodes[0] given `available` earlier nodes (nodes[0]
// newest): the largest q <= min(k, available) such that each neighbouring step ratio among the
// q - 1 steps it spans stays within kMaxStepRatio (|h_n| <= 2 |h_{n-1}|, ...).
inline int adams_bashforth_order(const double* nodes, int available, int k, double h) {
  const int most = available < k ? available : k;
  int q = 1;
  double later = h;  // the step after the gap being checked
  while (q < most) {
    // A relative slack of 1e-9 keeps a ratio of exactly 2 on a rounded grid.
    const double gap = nodes[q - 1] - nodes[q];
    const double limit = gap * (kMaxStepRatio * (1.0 + 1e-9));
    if (!(later < 0 ? -later <= -limit : later <= limit)) break;
    later = gap;
    ++q;
  }
  return q;
}

// Weights w[j] of v(nodes[j]) (j = 0 the newest, q nodes) for the step [nodes[0], nodes[0] + h]:
// w_j = integral over the step of the Lagrange basis polynomial of node j. They sum to h.
inline void adams_bashforth_weights(const double* nodes, int q, double h, double* w) {
  double u[kMaxHistory];  // nodes in units of h from nodes[0]: u_0 = 0, then <= -1 ... (forward)
  for (int j = 0; j < q; ++j) u[j] = (nodes[j] - nodes[0]) / h;
  for (int j = 0; j < q; ++j) {
    // Coefficients of prod_{m != j} (x - u_m), lowest degree first, and the denominator.
    double c[kMaxHistory] = {1.0, 0.0, 0.0, 0.0};
    int degree = 0;
    double denominator = 1.0;
    for (int m = 0; m < q; ++m) {
      if (m == j) continue;
      for (int p = degree + 1; p > 0; --p) c[p] = c[p - 1] - u[m] * c[p];
      c[0] = -u[m] * c[0];
      ++degree;
      denominator *= u[j] - u[m];
    }
    double integral = 0.0;  // over x in [0, 1]
    for (int p = 0; p <= degree; ++p) integral += c[p] / (p + 1);
    w[j] = h * integral / denominator;
  }
}

// Adams-Bashforth of order k (2..4) over the grid: steps 0..k-2 take the bootstrap one-step
// method tableau(method) (Euler, Heun, RK4), whose first stage is kept as history; every later
// step evaluates v once at its start and combines the last q <= k velocities, or all k with
// the grid's per-step coefficients c (weights h c) when it carries them. The divergence
// term l, when carried, is integrated with the same weights. Network evaluations:
// (k - 1) s + (N - k + 1) for N >= k - 1 steps and s bootstrap stages.
template <typename T, typename Field, typename AfterStep>
Status integrate_multistep(Field& field, Method method, const TimeGrid& grid, size_t rows,
                           uint32_t dim, T* x, double* ell, const OdeWorkspace<T>& ws,
                           AfterStep&& after_step) {
  const int k = multistep_order(method);
  const Tableau& boot = tableau(method);
  const size_t n = rows * dim;
  T* hist[kMaxHistory];
  double* hist_div[kMaxHistory];
  double nodes[kMaxHistory] = {};
  for (int j = 0; j < kMaxHistory; ++j) {
    hist[j] = ws.history[j];
    hist_div[j] = ws.history_div[j];
  }
  int available = 0;
  for (size_t step = 0; step < grid.steps; ++step) {
    const double t0 = grid.at(step);
    const double h = grid.at(step + 1) - t0;
    // The oldest slot becomes the newest.
    T* v = hist[kMaxHistory - 1];
    double* v_div = hist_div[kMaxHistory - 1];
    for (int j = kMaxHistory - 1; j > 0; --j) {
      hist[j] = hist[j - 1];
      hist_div[j] = hist_div[j - 1];
      nodes[j] = nodes[j - 1];
    }
    hist[0] = v;
    hist_div[0] = v_div;
    nodes[0] = t0;
    if (available < kMaxHistory) ++available;
    Status st = field.eval(t0, x, rows, v, ell ? v_div : nullptr);
    if (!st.ok()) return st;
    if (step + 1 < static_cast<size_t>(k)) {
      st = rk_step(field, boot, t0, h, rows, dim, x, ell, ws, v, v_div);
      if (!st.ok()) return st;
    } else {
      int q;
      double w[kMaxHistory];
      if (grid.coefficients && !grid.backward) {
        // A learned combination: all k velocities with the stored weights times h.
        const double* row = grid.coefficients + (grid.first + step - (k - 1)) * k;
        q = k;
        for (int j = 0; j < k; ++j) w[j] = h * row[j];
      } else {
        q = adams_bashforth_order(nodes, available, k, h);
        adams_bashforth_weights(nodes, q, h, w);
      }
      for (size_t i = 0; i < n; ++i) {
        T acc = 0;
        for (int j = 0; j < q; ++j) acc += static_cast<T>(w[j]) * hist[j][i];
        x[i] += acc;
      }
      if (ell) {
        for (size_t r = 0; r < rows; ++r) {
          double acc = 0.0;
          for (int j = 0; j < q; ++j) acc += w[j] * hist_div[j][r];
          ell[r] += acc;
        }
      }
    }
    st = after_step(step);
    if (!st.ok()) return st;
  }
  return Status();
}

}  // namespace siflow
