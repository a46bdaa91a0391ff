// SPDX-License-Identifier: Apache-2.0
// A convolution case of the conv tests (test_conv_simd, test_conv_xnnpack) and its output by the
// textbook formula in double, the bound's sum of |terms| too: the reference both kernels are
// checked against.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "support/random_vectors.hpp"

namespace test_support {

// One Conv2d: input [cin][h][w], cout outputs, kernel kh x kw, strides, dilations and pads
// (top, left, bottom, right).
struct Case {
  const char* what;
  uint32_t cin, h, w, cout, groups, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
};

inline uint32_t outputs(uint32_t n, uint32_t pa, uint32_t pb, uint32_t k, uint32_t s, uint32_t d) {
  return (n + pa + pb - d * (k - 1) - 1) / s + 1;
}

// y[o][oy][ox] = b[o] + sum over (i, ky, kx) of w x, in double; with abs, of |w x| (+ |b|).
inline std::vector<double> textbook(const Case& c, uint32_t oh, uint32_t ow, const float* x,
                                    const std::vector<float>& w, const float* b, bool abs) {
  const uint32_t cig = c.cin / c.groups, cog = c.cout / c.groups;
  std::vector<double> y(size_t{c.cout} * oh * ow);
  for (uint32_t o = 0; o < c.cout; ++o)
    for (uint32_t oy = 0; oy < oh; ++oy)
      for (uint32_t ox = 0; ox < ow; ++ox) {
        double acc = b ? (abs ? std::fabs(b[o]) : b[o]) : 0.0;
        for (uint32_t i = 0; i < cig; ++i)
          for (uint32_t ky = 0; ky < c.kh; ++ky)
            for (uint32_t kx = 0; kx < c.kw; ++kx) {
              const int iy = static_cast<int>(oy * c.sh + ky * c.dh) - static_cast<int>(c.pt);
              const int ix = static_cast<int>(ox * c.sw + kx * c.dw) - static_cast<int>(c.pl);
              if (iy < 0 || ix < 0 || iy >= static_cast<int>(c.h) || ix >= static_cast<int>(c.w))
                continue;
              const uint32_t ch = (o / cog) * cig + i;
              const double t = double{w[((size_t{o} * cig + i) * c.kh + ky) * c.kw + kx]} *
                               x[(size_t{ch} * c.h + iy) * c.w + ix];
              acc += abs ? std::fabs(t) : t;
            }
        y[(size_t{o} * oh + oy) * ow + ox] = acc;
      }
  return y;
}

// n floats uniform in [-scale, scale).
inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale) {
  return random_floats(n, rng, -scale, scale);
}

}  // namespace test_support
