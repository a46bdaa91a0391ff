// SPDX-License-Identifier: Apache-2.0
// Score from velocity for a diagonal-normal base (docs/math.md, "Gaussian base: score and SDE"):
// s = (b v - b_dot x + W mu) / (a W sigma^2), W = a b_dot - a_dot b. Never allocates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "math/interpolant.hpp"

namespace siflow {

// s[r][k] for rows of x and v (flow coordinates); mean/std are the base's, [dim].
template <typename T>
void score_from_velocity(const InterpolantValues& iv, const double* mean, const double* std,
                         const T* x, const T* v, size_t rows, uint32_t dim, T* s) {
  const double w = iv.wronskian();
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t k = 0; k < dim; ++k) {
      const size_t i = r * dim + k;
      s[i] = static_cast<T>((iv.b * v[i] - iv.b_dot * x[i] + w * mean[k]) /
                            (iv.a * w * std[k] * std[k]));
    }
}

// eps(t) * s without the 1/a singularity: `eps_over_a` = eps(t)/a(t) (finite by the guard).
template <typename T>
void add_scaled_score(const InterpolantValues& iv, double eps_over_a, const double* mean,
                      const double* std, const T* x, size_t rows, uint32_t dim, T* v) {
  const double w = iv.wronskian();
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t k = 0; k < dim; ++k) {
      const size_t i = r * dim + k;
      const double numerator = iv.b * v[i] - iv.b_dot * x[i] + w * mean[k];
      v[i] = static_cast<T>(v[i] + eps_over_a * numerator / (w * std[k] * std[k]));
    }
}

}  // namespace siflow
