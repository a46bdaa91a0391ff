// SPDX-License-Identifier: Apache-2.0
// ConvTranspose2d cases of the transposed-conv tests (test_deconv_xnnpack, test_deconv_simd) and
// their output by the transposed formula in double, with the bound's sum of |terms|: odd shapes,
// stride 2 with and without output padding, asymmetric pads, dilation, groups, 1x1, 70 channels.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace test_support {

// One ConvTranspose2d: input [cin][h][w] (the small side), cout outputs, kernel, strides,
// dilations, pads (top, left, bottom, right) and output padding (height, width).
struct Deconv {
  const char* what;
  uint32_t cin, h, w, cout, groups, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, oph, opw;
  uint32_t oh() const { return (h - 1) * sh + dh * (kh - 1) + 1 + oph - pt - pb; }
  uint32_t ow() const { return (w - 1) * sw + dw * (kw - 1) + 1 + opw - pl - pr; }
};

inline const Deconv kDeconvCases[] = {
    {"3x3 stride 2, output padding 1", 5, 7, 5, 9, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1},
    {"4x4 stride 2 pad 1 (upsampling)", 17, 5, 7, 3, 1, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0},
    {"asymmetric pads, 3x2 kernel", 3, 9, 7, 10, 1, 3, 2, 1, 1, 1, 1, 0, 1, 2, 0, 0, 0},
    {"dilation 2, stride 1", 6, 6, 5, 7, 1, 3, 3, 1, 1, 2, 2, 2, 1, 2, 1, 0, 0},
    {"groups 3, stride 2", 6, 5, 5, 9, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0},
    {"1x1 stride 2", 33, 5, 3, 17, 1, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, 1},
    {"70 channels, 2x2 stride 2", 70, 7, 7, 37, 1, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0},
    // Output padding below the dilation but not the stride: valid, but XNNPACK refuses it.
    {"output padding 1, stride 1, dilation 2", 4, 5, 6, 3, 1, 3, 3, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1},
};

// y[o][ly][lx] = b[o] + sum of w[i][o'][ky][kx] x[i][sy][sx] over the (i, sy, sx, ky, kx) with
// ly = sy sh - pt + ky dh (and alike for x), o' = o's index in its group; in double, and with
// abs the sum of |terms|.
inline std::vector<double> textbook(const Deconv& c, const float* x, const std::vector<float>& w,
                                    const float* b, bool abs) {
  const uint32_t cig = c.cin / c.groups, cog = c.cout / c.groups;
  const uint32_t oh = c.oh(), ow = c.ow();
  std::vector<double> y(size_t{c.cout} * oh * ow, 0.0);
  for (uint32_t o = 0; o < c.cout; ++o)
    for (size_t p = 0; p < size_t{oh} * ow; ++p)
      y[o * size_t{oh} * ow + p] = b ? (abs ? std::fabs(b[o]) : b[o]) : 0.0;
  for (uint32_t i = 0; i < c.cin; ++i) {
    const uint32_t g = i / cig;
    for (uint32_t oo = 0; oo < cog; ++oo) {
      const uint32_t o = g * cog + oo;
      for (uint32_t sy = 0; sy < c.h; ++sy)
        for (uint32_t sx = 0; sx < c.w; ++sx)
          for (uint32_t ky = 0; ky < c.kh; ++ky)
            for (uint32_t kx = 0; kx < c.kw; ++kx) {
              const int64_t ly = int64_t{sy} * c.sh - c.pt + int64_t{ky} * c.dh;
              const int64_t lx = int64_t{sx} * c.sw - c.pl + int64_t{kx} * c.dw;
              if (ly < 0 || ly >= oh || lx < 0 || lx >= ow) continue;
              const double t = double{w[((size_t{i} * cog + oo) * c.kh + ky) * c.kw + kx]} *
                               x[(size_t{i} * c.h + sy) * c.w + sx];
              y[(size_t{o} * oh + ly) * ow + lx] += abs ? std::fabs(t) : t;
            }
    }
  }
  return y;
}

}  // namespace test_support
