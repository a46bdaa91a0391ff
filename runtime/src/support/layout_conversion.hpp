// SPDX-License-Identifier: Apache-2.0
// NCHW <-> NHWC conversions of whole samples around an NHWC convolution (XNNPACK's, the simd
// kernels' implicit GEMM), in units of (sample, block of kConvertPixels pixels), so one sample's
// conversion also splits between threads (batch 1). Pure data movement: the bits do not depend
// on the split.
#pragma once

#include <cstddef>

namespace siflow {

// Pixels per unit of work of a layout conversion.
constexpr size_t kConvertPixels = 256;

// NCHW -> NHWC: sample k of x (stride ldx, channels rows of `plane` pixels) into
// dst + k * channels * plane as plane rows of `channels`; sample k's pixels [p0, p1) are a
// channels x (p1 - p0) block. tr(src, lds, rows, cols, dst, ldd) transposes a block;
// split(count, fn) calls fn(a, b) over ranges of [0, count) units.
template <typename Transpose, typename Split>
void nchw_to_nhwc(Transpose tr, const float* x, size_t ldx, size_t samples, size_t channels,
                  size_t plane, float* dst, Split&& split) {
  const size_t blocks = (plane + kConvertPixels - 1) / kConvertPixels;
  split(samples * blocks, [&](size_t a, size_t b) {
    for (size_t u = a; u < b; ++u) {
      const size_t k = u / blocks, p0 = u % blocks * kConvertPixels;
      const size_t p1 = plane - p0 < kConvertPixels ? plane : p0 + kConvertPixels;
      tr(x + k * ldx + p0, plane, channels, p1 - p0, dst + k * channels * plane + p0 * channels,
         channels);
    }
  });
}

// NHWC -> NCHW: sample k of src (at src + k * channels * plane, plane rows of `channels`) into
// y + k * ldy as channels rows of `plane` pixels.
template <typename Transpose, typename Split>
void nhwc_to_nchw(Transpose tr, const float* src, size_t samples, size_t channels, size_t plane,
                  float* y, size_t ldy, Split&& split) {
  const size_t blocks = (plane + kConvertPixels - 1) / kConvertPixels;
  split(samples * blocks, [&](size_t a, size_t b) {
    for (size_t u = a; u < b; ++u) {
      const size_t k = u / blocks, p0 = u % blocks * kConvertPixels;
      const size_t p1 = plane - p0 < kConvertPixels ? plane : p0 + kConvertPixels;
      tr(src + k * channels * plane + p0 * channels, channels, p1 - p0, channels, y + k * ldy + p0,
         plane);
    }
  });
}

}  // namespace siflow
