// SPDX-License-Identifier: Apache-2.0
// The scalar definitions of the reduced-precision number formats (docs/math.md, "Reduced
// precision"): float -> bfloat16 rounding, one step of a bf16 dot product exactly as AVX-512
// BF16's vdpbf16ps performs it, and symmetric per-channel int8 quantization. The reference
// kernels use them directly and every simd variant is tested against them bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

namespace siflow::detail {

inline uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}
inline float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// bfloat16 of f: round to nearest, ties to even (by bit operations: GCC 12 has no __bf16);
// +-inf beyond the range; NaN stays a quiet NaN; a result below the smallest normal (a bf16
// subnormal, which vdpbf16ps would read as zero) becomes a zero of the same sign.
inline uint16_t float_to_bf16(float f) {
  uint32_t b = float_bits(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);
  b += 0x7fffu + ((b >> 16) & 1u);
  uint16_t h = static_cast<uint16_t>(b >> 16);
  if ((h & 0x7f80u) == 0) h &= 0x8000u;
  return h;
}
inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// A float with its subnormals read as zero (vdpbf16ps's accumulator input; the bias).
inline float flush_subnormal(float f) {
  const uint32_t b = float_bits(f);
  return (b & 0x7f800000u) == 0 ? bits_float(b & 0x80000000u) : f;
}

// One step of vdpbf16ps: acc + x * w (x, w bfloat16 values without subnormals, acc without
// subnormals) as one fused multiply-add rounded to nearest even, with a tiny result (below
// 2^-126 after rounding to 24 bits with an unbounded exponent) flushed to a zero of its sign.
// The product is exact in double and Figueroa's bound (53 >= 2 * 24 + 2) makes the double sum
// followed by the float rounding a single correct rounding; the flush threshold is the
// midpoint 2^-126 - 2^-151 below which the unbounded rounding falls under 2^-126 (the
// midpoint itself rounds up, to even). Measured on AMD Zen 5 against the instruction.
inline float bf16_dot_step(float acc, float x, float w) {
  const double d = static_cast<double>(acc) + static_cast<double>(x) * static_cast<double>(w);
  const double magnitude = d < 0 ? -d : d;
  constexpr double kFlushBelow = 0x1.ffffffp-127;  // 2^-126 - 2^-151
  if (magnitude < kFlushBelow) {
    uint64_t b;
    std::memcpy(&b, &d, sizeof b);
    return b >> 63 ? -0.0f : 0.0f;
  }
  return static_cast<float>(d);
}

// bf16_dot_step's result by float arithmetic where that gives the same bits: the product of two
// bfloat16 values (8-bit significands) is exact in float when it is normal or zero, and then the
// float sum is the correctly rounded sum, which is bf16_dot_step's result when it is normal or
// zero (the flush only touches results below 2^-126). Anything else (tiny or infinite products
// or sums, NaN) takes bf16_dot_step. Contraction into an FMA cannot change an exact product.
inline float bf16_dot_step_fast(float acc, float x, float w) {
  const float p = x * w, s = acc + p;
  const uint32_t pb = float_bits(p) & 0x7fffffffu, sb = float_bits(s) & 0x7fffffffu;
  const bool p_ok = pb == 0 || (pb >= 0x00800000u && pb < 0x7f800000u);
  const bool s_ok = sb == 0 || (sb >= 0x00800000u && sb < 0x7f800000u);
  return p_ok && s_ok ? s : bf16_dot_step(acc, x, w);
}

// One pair of a bf16 dot product as vdpbf16ps adds it: the odd element's product first.
inline float bf16_dot_pair(float acc, uint16_t x_even, uint16_t x_odd, uint16_t w_even,
                           uint16_t w_odd) {
  acc = bf16_dot_step(acc, bf16_to_float(x_odd), bf16_to_float(w_odd));
  return bf16_dot_step(acc, bf16_to_float(x_even), bf16_to_float(w_even));
}

// Symmetric int8 quantization of one output channel of n weights (all finite): scale =
// max|w| / 127 (0 for an all-zero row, whose q are then 0), q = w / scale rounded to nearest
// even (|q| <= 127). The dequantized weight is the float product scale * q.
inline float int8_scale(const float* w, uint32_t n) {
  float m = 0.0f;
  for (uint32_t i = 0; i < n; ++i) {
    const float a = w[i] < 0 ? -w[i] : w[i];
    m = a > m ? a : m;
  }
  return m / 127.0f;
}
inline int8_t int8_quantize(float w, float scale) {
  if (scale == 0.0f) return 0;
  float q = w / scale;
  q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
  // Round to nearest even by the 1.5 * 2^23 addition (|q| <= 127).
  const float magic = 12582912.0f;
  const float r = (q + magic) - magic;
  return static_cast<int8_t>(r);
}

}  // namespace siflow::detail
