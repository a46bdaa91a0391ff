// SPDX-License-Identifier: Apache-2.0
// Interpolant coefficients with the runtime's own sin/cos, so they match across platforms.
#include "integrate/interpolant.hpp"

#include "kernels/reference/elementary.hpp"

namespace siflow {

InterpolantValues evaluate_interpolant(const detail::InterpolantData& interpolant, double t) {
  using math::kPi;
  if (interpolant.kind == InterpolantKind::kLinear) return {1.0 - t, t, -1.0, 1.0};
  const double half = 0.5 * kPi;
  const double s = math::sin(half * t);
  const double c = math::cos(half * t);
  // Trig: a = cos(pi t/2), b = sin(pi t/2).
  InterpolantValues v{c, s, -half * s, half * c};
  for (uint32_t m = 1; m <= interpolant.terms; ++m) {
    // Learned Fourier terms alpha_m sin(m pi t), beta_m sin(m pi t) keep a(0)=1, a(1)=0, ...
    const double w = m * kPi;
    const double sm = math::sin(w * t);
    const double cm = math::cos(w * t);
    v.a += interpolant.alpha[m - 1] * sm;
    v.b += interpolant.beta[m - 1] * sm;
    v.a_dot += interpolant.alpha[m - 1] * w * cm;
    v.b_dot += interpolant.beta[m - 1] * w * cm;
  }
  return v;
}

}  // namespace siflow
