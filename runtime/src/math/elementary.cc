// SPDX-License-Identifier: Apache-2.0
// Portable double-precision elementary functions: range reduction plus polynomial or series
// evaluation in plain IEEE arithmetic (built with -ffp-contract=off), so every platform rounds
// identically. Never calls libm.
#include "math/elementary.hpp"

#include <cstdint>
#include <cstring>

namespace siflow::math {
namespace {

constexpr double kInf = __builtin_inf();
constexpr double kNan = __builtin_nan("");
// ln 2 split so that k * kLn2Hi is exact for |k| < 2^20.
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kInvLn2 = 1.44269504088896338700e+00;
// pi/2 split in three parts (Cody-Waite) so that k * part is exact for |k| < 2^20.
constexpr double kPio2Part1 = 1.57079632673412561417e+00;
constexpr double kPio2Part2 = 6.07710050630396597660e-11;
constexpr double kPio2Part3 = 2.02226624879595063154e-21;
constexpr double kTwoOverPi = 6.36619772367581382433e-01;
constexpr double kSqrt2 = 1.41421356237309504880;

uint64_t bits_of(double x) {
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
double from_bits(uint64_t b) {
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

// 2^k for -1022 <= k <= 1023.
double pow2(int k) { return from_bits(static_cast<uint64_t>(k + 1023) << 52); }

// x * 2^k for any k, stepping through the normal range.
double scale(double x, int k) {
  while (k > 1023) {
    x *= pow2(1023);
    k -= 1023;
  }
  while (k < -1022) {
    x *= pow2(-1022);
    k += 1022;
  }
  return x * pow2(k);
}

// Round to the nearest integer (ties to even) for |v| < 2^51, by the add-and-subtract trick.
double round_nearest(double v) {
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
  if (v >= 0) return (v + kShift) - kShift;
  return (v - kShift) + kShift;
}

struct InvFactorials {
  double v[19];
  constexpr InvFactorials() : v() {
    double f = 1.0;
    for (int n = 0; n < 19; ++n) {
      if (n > 0) f *= n;
      v[n] = 1.0 / f;
    }
  }
};
constexpr InvFactorials kInvFactorials;
constexpr const double* kInvFactorialTable = kInvFactorials.v;

// exp(r) for |r| <= ln2/2 by its Taylor series (truncation error < 1e-18).
double exp_reduced(double r) {
  double p = 1.0 / 6227020800.0;  // 1/13!
  static constexpr double kInvFactorial[] = {1.0 / 479001600.0,
                                             1.0 / 39916800.0,
                                             1.0 / 3628800.0,
                                             1.0 / 362880.0,
                                             1.0 / 40320.0,
                                             1.0 / 5040.0,
                                             1.0 / 720.0,
                                             1.0 / 120.0,
                                             1.0 / 24.0,
                                             1.0 / 6.0,
                                             1.0 / 2.0,
                                             1.0,
                                             1.0};
  for (double c : kInvFactorial) p = p * r + c;
  return p;
}

// sin(r) and cos(r) for |r| <= pi/4 by Taylor series (truncation error < 1e-20).
double sin_reduced(double r) {
  const double r2 = r * r;
  double p = -1.0 / 121645100408832000.0;  // -1/19!
  static constexpr double kCoeff[] = {
      1.0 / 355687428096000.0, -1.0 / 1307674368000.0, 1.0 / 6227020800.0, -1.0 / 39916800.0,
      1.0 / 362880.0,          -1.0 / 5040.0,          1.0 / 120.0,        -1.0 / 6.0};
  for (double c : kCoeff) p = p * r2 + c;
  return r + r * r2 * p;
}
double cos_reduced(double r) {
  const double r2 = r * r;
  double p = 1.0 / 2432902008176640000.0;  // 1/20!
  static constexpr double kCoeff[] = {
      -1.0 / 6402373705728000.0, 1.0 / 20922789888000.0, -1.0 / 87178291200.0, 1.0 / 479001600.0,
      -1.0 / 3628800.0,          1.0 / 40320.0,          -1.0 / 720.0,         1.0 / 24.0};
  for (double c : kCoeff) p = p * r2 + c;
  // 1 - r^2/2 + r^4 p, summed small-to-large.
  return 1.0 + (r2 * r2 * p - 0.5 * r2);
}

// For |x| >= 2^50 the quadrant count no longer fits the rounding trick: reduce x exactly modulo
// P = 4 * kPio2Part1 (2 pi rounded to 33 bits) by subtracting P * 2^j, each step exact by
// Sterbenz's lemma. The result is bounded and platform-independent but, since P is not 2 pi,
// not an accurate sin/cos of such x (float inputs that large carry no phase information).
double reduce_huge(double x) {
  constexpr double kLimit = 1125899906842624.0;  // 2^50
  const double period = 4.0 * kPio2Part1;
  const int period_exponent = static_cast<int>((bits_of(period) >> 52) & 0x7ff);
  double r = x < 0 ? -x : x;
  while (r >= kLimit) {
    const int exponent = static_cast<int>((bits_of(r) >> 52) & 0x7ff);
    double m = scale(period, exponent - period_exponent);
    if (m > r) m *= 0.5;
    r -= m;
  }
  return x < 0 ? -r : r;
}

// Reduces x to r in [-pi/4, pi/4] and the quadrant q in {0, 1, 2, 3}.
void reduce_quadrant(double x, double* r, int* q) {
  if (x >= 1125899906842624.0 || x <= -1125899906842624.0) x = reduce_huge(x);
  const double k = round_nearest(x * kTwoOverPi);
  *r = ((x - k * kPio2Part1) - k * kPio2Part2) - k * kPio2Part3;
  const double k4 = k - 4.0 * round_nearest((k - 1.5) * 0.25);  // k mod 4, in [0, 4)
  *q = static_cast<int>(k4) & 3;
}

}  // namespace

double sqrt(double x) { return __builtin_sqrt(x); }

double exp(double x) {
  if (x != x) return x;
  if (x > 709.782712893384) return kInf;
  if (x < -745.2) return 0.0;
  const double k = round_nearest(x * kInvLn2);
  const double r = (x - k * kLn2Hi) - k * kLn2Lo;
  return scale(exp_reduced(r), static_cast<int>(k));
}

double expm1(double x) {
  if (x != x) return x;
  if (x > -0.5 && x < 0.5) {
    // Taylor series to x^18/18!; the truncation is below 1e-22 relative for |x| < 0.5.
    double p = kInvFactorialTable[18];
    for (int n = 17; n >= 2; --n) p = p * x + kInvFactorialTable[n];
    return x + x * x * p;
  }
  return exp(x) - 1.0;
}

double log(double x) {
  if (x != x) return x;
  if (x < 0) return kNan;
  if (x == 0) return -kInf;
  if (x == kInf) return x;
  int e = 0;
  if (x < 2.2250738585072014e-308) {  // subnormal: scale into the normal range
    x *= 18014398509481984.0;         // 2^54
    e -= 54;
  }
  const uint64_t b = bits_of(x);
  e += static_cast<int>((b >> 52) & 0x7ff) - 1023;
  double m = from_bits((b & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);  // in [1, 2)
  if (m > kSqrt2) {
    m *= 0.5;
    ++e;
  }
  // log m = 2 atanh(f), f = (m - 1)/(m + 1), |f| <= 0.172; the series is cut below 1e-19.
  const double f = (m - 1.0) / (m + 1.0);
  const double s = f * f;
  double p = 1.0 / 25.0;
  for (int n = 11; n >= 0; --n) p = p * s + 1.0 / (2 * n + 1);
  const double log_m = 2.0 * f * p;
  return e * kLn2Hi + (log_m + e * kLn2Lo);
}

double log1p(double x) {
  if (x != x) return x;
  if (x < -1.0) return kNan;
  const double u = 1.0 + x;
  if (u == 1.0) return x;
  if (u == kInf) return u;
  // u - 1 is exact; the ratio corrects for the rounding of 1 + x.
  return log(u) * (x / (u - 1.0));
}

double sin(double x) {
  if (!is_finite(x)) return kNan;
  double r;
  int q;
  reduce_quadrant(x, &r, &q);
  switch (q) {
    case 0:
      return sin_reduced(r);
    case 1:
      return cos_reduced(r);
    case 2:
      return -sin_reduced(r);
    default:
      return -cos_reduced(r);
  }
}

double cos(double x) {
  if (!is_finite(x)) return kNan;
  double r;
  int q;
  reduce_quadrant(x, &r, &q);
  switch (q) {
    case 0:
      return cos_reduced(r);
    case 1:
      return -sin_reduced(r);
    case 2:
      return -cos_reduced(r);
    default:
      return sin_reduced(r);
  }
}

double tan(double x) {
  if (!is_finite(x)) return kNan;
  double r;
  int q;
  reduce_quadrant(x, &r, &q);
  const double s = sin_reduced(r);
  const double c = cos_reduced(r);
  return (q & 1) ? -c / s : s / c;
}

double tanh(double x) {
  if (x != x) return x;
  const double ax = x < 0 ? -x : x;
  if (ax > 22.0) return x < 0 ? -1.0 : 1.0;
  const double e = expm1(2.0 * ax);
  const double t = e / (e + 2.0);
  return x < 0 ? -t : t;
}

double erf(double x) {
  if (x != x) return x;
  const double ax = x < 0 ? -x : x;
  if (ax >= 6.0) return x < 0 ? -1.0 : 1.0;
  // erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)): all terms positive,
  // so no cancellation; at most ~120 terms for |x| < 6.
  const double x2 = ax * ax;
  double term = ax;
  double sum = ax;
  for (int n = 1; n < 400 && term > sum * 1e-18; ++n) {
    term *= 2.0 * x2 / (2 * n + 1);
    sum += term;
  }
  // exp(-x^2) with x^2 split exactly (Dekker) so its rounding does not reach the result.
  constexpr double kSplit = 134217729.0;  // 2^27 + 1
  const double c = kSplit * ax;
  const double hi = c - (c - ax);
  const double lo = ax - hi;
  const double x2_err = ((hi * hi - x2) + 2.0 * hi * lo) + lo * lo;
  const double damp = exp(-x2) * (1.0 - x2_err);
  constexpr double kTwoOverSqrtPi = 1.12837916709551257390;
  const double r = kTwoOverSqrtPi * damp * sum;
  const double clipped = r > 1.0 ? 1.0 : r;
  return x < 0 ? -clipped : clipped;
}

}  // namespace siflow::math
