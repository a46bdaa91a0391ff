// SPDX-License-Identifier: Apache-2.0
// Path-length optimisation (docs/training.md): the gradient of the interpolant loss G with
// respect to the learned Fourier coefficients, and the penalty that keeps a(t) and b(t) from
// vanishing together. The trainer ascends G - penalty over the coefficients while the net
// descends G (max over the interpolant of min over v).
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/model_data.hpp"

namespace siflow::train {

// a(t)^2 + b(t)^2 must stay above this on the penalty's grid.
constexpr double kPathFloor = 0.25;
constexpr uint32_t kPenaltyGrid = 64;

// With x_t = a x0 + b x1, u = a_dot x0 + b_dot x1 and G = mean_r |v_r|^2 - 2 u_r . v_r, at fixed
// net parameters:
//   dG/d alpha_m = sum_r d_x_r . x0_r sin(m pi t_r) - (2/rows) sum_r v_r . x0_r m pi cos(m pi t_r)
// (beta_m likewise with x1), where d_x = dG/dx_t (already including the 1/rows). Writes
// grad[0..terms) for alpha and grad[terms..2 terms) for beta.
template <typename T>
void path_gradient(size_t rows, uint32_t dim, uint32_t terms, const double* t, const T* x0,
                   const T* x1, const T* v, const T* d_x, double* grad);

// P = weight * mean_j max(0, floor - a(t_j)^2 - b(t_j)^2)^2 over t_j = (j + 1/2) / grid; adds
// -dP/d(alpha, beta) to grad (same layout), so that grad becomes the gradient of G - P, and
// returns P.
double path_penalty(const detail::InterpolantData& path, double weight, double* grad);

}  // namespace siflow::train
