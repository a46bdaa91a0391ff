// SPDX-License-Identifier: Apache-2.0
// The learned interpolant's gradients (see path.hpp).
#include "train/path.hpp"

#include "math/elementary.hpp"
#include "math/interpolant.hpp"

namespace siflow::train {

template <typename T>
void path_gradient(size_t rows, uint32_t dim, uint32_t terms, const double* t, const T* x0,
                   const T* x1, const T* v, const T* d_x, double* grad) {
  for (uint32_t m = 0; m < 2 * terms; ++m) grad[m] = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    double gx0 = 0.0, gx1 = 0.0, vx0 = 0.0, vx1 = 0.0;
    for (uint32_t k = 0; k < dim; ++k) {
      const size_t i = r * dim + k;
      gx0 += static_cast<double>(d_x[i]) * x0[i];
      gx1 += static_cast<double>(d_x[i]) * x1[i];
      vx0 += static_cast<double>(v[i]) * x0[i];
      vx1 += static_cast<double>(v[i]) * x1[i];
    }
    for (uint32_t m = 0; m < terms; ++m) {
      const double w = (m + 1) * math::kPi;
      const double sm = math::sin(w * t[r]), cm = math::cos(w * t[r]);
      grad[m] += gx0 * sm - 2.0 * vx0 * w * cm / rows;
      grad[terms + m] += gx1 * sm - 2.0 * vx1 * w * cm / rows;
    }
  }
}

template void path_gradient<float>(size_t, uint32_t, uint32_t, const double*, const float*,
                                   const float*, const float*, const float*, double*);
template void path_gradient<double>(size_t, uint32_t, uint32_t, const double*, const double*,
                                    const double*, const double*, const double*, double*);

double path_penalty(const detail::InterpolantData& path, double weight, double* grad) {
  const uint32_t terms = path.terms;
  double penalty = 0.0;
  for (uint32_t j = 0; j < kPenaltyGrid; ++j) {
    const double t = (j + 0.5) / kPenaltyGrid;
    const InterpolantValues iv = evaluate_interpolant(path, t);
    const double gap = kPathFloor - (iv.a * iv.a + iv.b * iv.b);
    if (gap <= 0.0) continue;
    penalty += weight * gap * gap / kPenaltyGrid;
    for (uint32_t m = 0; m < terms; ++m) {
      // d(gap^2)/d alpha_m = 2 gap * (-2 a sin(m pi t)); grad gets -dP.
      const double sm = math::sin((m + 1) * math::kPi * t);
      grad[m] += weight * 4.0 * gap * iv.a * sm / kPenaltyGrid;
      grad[terms + m] += weight * 4.0 * gap * iv.b * sm / kPenaltyGrid;
    }
  }
  return penalty;
}

}  // namespace siflow::train
