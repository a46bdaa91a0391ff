// SPDX-License-Identifier: Apache-2.0
// The interpolant x_t = a(t) x0 + b(t) x1 and its time derivatives (docs/math.md,
// "Interpolant"): linear, trig, learned Fourier. Pure functions of t; never allocates.
#pragma once

#include <cstdint>

#include "siflow/siflow.hpp"

namespace siflow {
namespace detail {

// An interpolant's family and, for the learned Fourier family, its coefficients alpha_m, beta_m
// (m = 1..terms), 8-byte aligned doubles (the loader copies them out of the file).
struct InterpolantData {
  InterpolantKind kind;
  uint32_t terms;
  const double* alpha;  // [terms]
  const double* beta;
};

}  // namespace detail

struct InterpolantValues {
  double a, b, a_dot, b_dot;
  // a*b_dot - a_dot*b: the factor that turns the velocity into the score.
  double wronskian() const { return a * b_dot - a_dot * b; }
};

InterpolantValues evaluate_interpolant(const detail::InterpolantData& interpolant, double t);

// What the loader must know before using an interpolant (docs/math.md, "Interpolant"): that a(t)
// and b(t) never vanish together on [0, 1], and whether W = a*b_dot - a_dot*b stays away from 0
// on [0, 1) (the score needs it). Each of kProofIntervals grid intervals is cleared with a
// Lipschitz bound from the coefficients, bisecting where the bound is too weak. The work is
// bounded by kProofBudget evaluations of one Fourier term, whatever the coefficients' values:
// a proof that runs out of budget counts as failed (apart = false with exhausted = true; or
// score_ok = false), so a hostile file costs at most the budget (about 0.4 s on one desktop
// core, measured with 64 terms).
constexpr uint32_t kProofIntervals = 2000;
constexpr uint64_t kProofBudget = uint64_t{1} << 24;
struct InterpolantProof {
  bool apart;      // a and b never both below 1e-6 in absolute value on [0, 1]
  bool exhausted;  // the budget ran out before `apart` was proved
  double where;    // when !apart: the t that could not be cleared
  bool score_ok;   // |W| > 1e-6 on [0, 1 - 1e-6] (proved within the budget)
  uint64_t spent;  // budget used, <= kProofBudget
};
InterpolantProof prove_interpolant(const detail::InterpolantData& interpolant);

}  // namespace siflow
