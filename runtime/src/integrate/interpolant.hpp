// SPDX-License-Identifier: Apache-2.0
// The interpolant x_t = a(t) x0 + b(t) x1 and its time derivatives (docs/math.md,
// "Interpolant"): linear, trig, learned Fourier. Pure functions of t; never allocates.
#pragma once

#include "format/model_data.hpp"

namespace siflow {

struct InterpolantValues {
  double a, b, a_dot, b_dot;
  // a*b_dot - a_dot*b: the factor that turns the velocity into the score.
  double wronskian() const { return a * b_dot - a_dot * b; }
};

InterpolantValues evaluate_interpolant(const detail::InterpolantData& interpolant, double t);

}  // namespace siflow
