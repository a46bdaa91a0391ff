// SPDX-License-Identifier: Apache-2.0
// The runtime's own elementary functions (exp, log, log1p, expm1, sin, cos, tan, tanh, erf).
// They replace libm everywhere in the reference path so results are bit-identical across
// platforms; this file must never call libm (only sqrt, which IEEE 754 rounds exactly).
#pragma once

namespace siflow::math {

// Double precision; measured against libm by tests/unit/test_elementary.cc: exp, expm1, log,
// log1p, tanh within 5 ulp; sin, cos within 3 ulp and tan within 5 ulp for |x| <= 1e6 (beyond
// 2^50 they stay bounded but are not accurate); erf within 9 ulp for |x| < 1 and 56 ulp below 6.
// Float callers convert in and out.
double exp(double x);
double expm1(double x);
double log(double x);
double log1p(double x);
double sin(double x);
double cos(double x);
double tan(double x);
double tanh(double x);
double erf(double x);
double sqrt(double x);

constexpr double kPi = 3.141592653589793238462643383279502884;
constexpr double kLn2 = 0.693147180559945309417232121458176568;

inline bool is_finite(double x) { return x - x == 0.0; }
inline bool is_finite(float x) { return x - x == 0.0f; }

}  // namespace siflow::math
