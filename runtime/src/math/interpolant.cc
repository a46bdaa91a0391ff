// SPDX-License-Identifier: Apache-2.0
// Interpolant coefficients with the runtime's own sin/cos, so they match across platforms.
#include "math/interpolant.hpp"

#include "math/elementary.hpp"

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

namespace {

constexpr double kVanishingTolerance = 1e-6;

// Bounds on |a'|, |b'| (for max(|a|, |b|)) and on |W'| (W = a b' - a' b), from the
// coefficients: |a| <= 1 + sum |alpha_m|, |a'| <= pi/2 + sum |alpha_m| m pi, |a''| <= (pi/2)^2 +
// sum |alpha_m| (m pi)^2, likewise for b; W' = a b'' - a'' b.
struct InterpolantBounds {
  double ab_lipschitz;
  double w_lipschitz;
};

InterpolantBounds interpolant_bounds(const detail::InterpolantData& interp) {
  if (interp.kind == InterpolantKind::kLinear) return {1.0, 0.0};
  const double half = 0.5 * math::kPi;
  double a0 = 1, a1 = half, a2 = half * half, b0 = 1, b1 = half, b2 = half * half;
  for (uint32_t m = 1; m <= interp.terms; ++m) {
    const double w = m * math::kPi;
    const double al = interp.alpha[m - 1] < 0 ? -interp.alpha[m - 1] : interp.alpha[m - 1];
    const double be = interp.beta[m - 1] < 0 ? -interp.beta[m - 1] : interp.beta[m - 1];
    a0 += al;
    a1 += al * w;
    a2 += al * w * w;
    b0 += be;
    b1 += be * w;
    b2 += be * w * w;
  }
  return {a1 > b1 ? a1 : b1, a0 * b2 + a2 * b0};
}

// Proves that f (non-negative, with |f'| <= lipschitz) stays above kVanishingTolerance on
// [t0, t1]: at the midpoint with the Lipschitz bound, bisecting down to 1e-10 wide intervals.
// Every evaluation of f spends `cost` from *budget; an empty budget fails the proof. On failure
// *where receives the point that could not be cleared.
template <typename F>
bool stays_positive(F&& f, double lipschitz, double t0, double t1, uint64_t cost, uint64_t* budget,
                    double* where, int depth = 0) {
  const double mid = 0.5 * (t0 + t1);
  if (*budget < cost) {
    *budget = 0;
    *where = mid;
    return false;
  }
  *budget -= cost;
  const double value = f(mid);
  if (value - lipschitz * 0.5 * (t1 - t0) > kVanishingTolerance) return true;
  if (value < kVanishingTolerance || t1 - t0 < 1e-10 || depth > 40) {
    *where = mid;
    return false;
  }
  return stays_positive(f, lipschitz, t0, mid, cost, budget, where, depth + 1) &&
         stays_positive(f, lipschitz, mid, t1, cost, budget, where, depth + 1);
}

}  // namespace

InterpolantProof prove_interpolant(const detail::InterpolantData& interp) {
  // Checking grid points alone would miss a zero between them, so each grid interval is proved
  // clear with a Lipschitz bound (bisecting where needed) or reported.
  const InterpolantBounds bounds = interpolant_bounds(interp);
  auto both = [&](double t) {
    const InterpolantValues v = evaluate_interpolant(interp, t);
    const double abs_a = v.a < 0 ? -v.a : v.a, abs_b = v.b < 0 ? -v.b : v.b;
    return abs_a > abs_b ? abs_a : abs_b;
  };
  auto wronskian = [&](double t) {
    const double w = evaluate_interpolant(interp, t).wronskian();
    return w < 0 ? -w : w;
  };
  const uint64_t cost = uint64_t{interp.terms} + 1;  // one evaluation: the trig part and each term
  uint64_t budget = kProofBudget;
  InterpolantProof proof{true, false, 0.0, true, 0};
  for (uint32_t i = 0; i < kProofIntervals; ++i) {
    const double t0 = static_cast<double>(i) / kProofIntervals;
    const double t1 = static_cast<double>(i + 1) / kProofIntervals;
    double where = 0.0;
    if (!stays_positive(both, bounds.ab_lipschitz, t0, t1, cost, &budget, &where)) {
      proof.apart = false;
      proof.exhausted = budget == 0;
      proof.where = where;
      proof.score_ok = false;
      proof.spent = kProofBudget - budget;
      return proof;
    }
    // The score is only used on [0, 1): the last interval may touch W = 0 at t = 1.
    if (proof.score_ok &&
        !stays_positive(wronskian, bounds.w_lipschitz, t0,
                        i + 1 == kProofIntervals ? t1 - 1e-6 : t1, cost, &budget, &where))
      proof.score_ok = false;
  }
  proof.spent = kProofBudget - budget;
  return proof;
}

}  // namespace siflow
