// SPDX-License-Identifier: Apache-2.0
// The reference dense kernel (y = x W^T + b): plain float sums in input order, the definition of
// correct that the simd and XNNPACK paths are tested against. Never allocates, never calls libm.
#include "kernels/reference/dense.hpp"

#include "math/half.hpp"
#include "math/reduced.hpp"

namespace siflow::reference {

// y[r][o] = sum_i x[r][i] w[o][i] (+ bias[o]): every output is summed in float over i in order
// starting from 0, with the bias added last, whatever the blocking below. Rows are taken
// kRowBlock at a time with their inputs transposed into a small stack buffer, kInputChunk inputs
// at a time, so the kRowBlock independent sums of one output advance together as a few short
// vectors; between chunks the running float sums live in y. Each lane performs exactly the
// scalar loop's multiply and add (no contraction: -ffp-contract=off), so the result is
// bit-identical to `for i: acc += x[i] * w[i]` on every platform. Vector types are used where
// vector float arithmetic is IEEE (x86-64 SSE, AArch64 NEON); elsewhere (ARMv7 NEON flushes
// denormals) the lanes are plain arrays.
namespace {
constexpr size_t kLanes = 4;
constexpr size_t kVectors = 4;
constexpr size_t kRowBlock = kLanes * kVectors;  // 16 rows
constexpr uint32_t kInputChunk = 64;             // 4 KiB of stack for the transposed block
#if defined(__x86_64__) || defined(__aarch64__)
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
inline Lanes load_lanes(const float* p) {
  Lanes v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store_lanes(float* p, Lanes v) { __builtin_memcpy(p, &v, sizeof v); }
#else
struct Lanes {
  float lane[kLanes];
};
inline Lanes load_lanes(const float* p) {
  Lanes v;
  for (size_t b = 0; b < kLanes; ++b) v.lane[b] = p[b];
  return v;
}
inline void store_lanes(float* p, Lanes v) {
  for (size_t b = 0; b < kLanes; ++b) p[b] = v.lane[b];
}
inline Lanes operator*(Lanes a, float s) {
  for (size_t b = 0; b < kLanes; ++b) a.lane[b] *= s;
  return a;
}
inline Lanes& operator+=(Lanes& a, Lanes c) {
  for (size_t b = 0; b < kLanes; ++b) a.lane[b] += c.lane[b];
  return a;
}
#endif

// fully_connected's loops; kHalf rounds every input to the nearest half as it is read.
template <bool kHalf>
void dense_rows(const float* x, size_t rows, uint32_t in, const float* w, const float* bias,
                uint32_t out, float* y) {
  auto input = [](float v) { return kHalf ? detail::round_to_half(v) : v; };
  size_t r0 = 0;
  for (; r0 + kRowBlock <= rows; r0 += kRowBlock) {
    float xt[kInputChunk * kRowBlock];
    float sums[kRowBlock];
    float* yb = y + r0 * out;
    for (uint32_t i0 = 0; i0 < in; i0 += kInputChunk) {
      const uint32_t n = in - i0 < kInputChunk ? in - i0 : kInputChunk;
      for (uint32_t i = 0; i < n; ++i)
        for (size_t b = 0; b < kRowBlock; ++b)
          xt[i * kRowBlock + b] = input(x[(r0 + b) * in + i0 + i]);
      for (uint32_t o = 0; o < out; ++o) {
        const float* wo = w + static_cast<size_t>(o) * in + i0;
        for (size_t b = 0; b < kRowBlock; ++b) sums[b] = i0 == 0 ? 0.0f : yb[b * out + o];
        Lanes a0 = load_lanes(sums), a1 = load_lanes(sums + kLanes);
        Lanes a2 = load_lanes(sums + 2 * kLanes), a3 = load_lanes(sums + 3 * kLanes);
        for (uint32_t i = 0; i < n; ++i) {
          const float wi = wo[i];
          const float* xi = xt + i * kRowBlock;
          a0 += load_lanes(xi) * wi;
          a1 += load_lanes(xi + kLanes) * wi;
          a2 += load_lanes(xi + 2 * kLanes) * wi;
          a3 += load_lanes(xi + 3 * kLanes) * wi;
        }
        store_lanes(sums, a0);
        store_lanes(sums + kLanes, a1);
        store_lanes(sums + 2 * kLanes, a2);
        store_lanes(sums + 3 * kLanes, a3);
        for (size_t b = 0; b < kRowBlock; ++b) yb[b * out + o] = sums[b];
      }
    }
    if (bias)
      for (size_t b = 0; b < kRowBlock; ++b)
        for (uint32_t o = 0; o < out; ++o) yb[b * out + o] = yb[b * out + o] + bias[o];
  }
  for (size_t r = r0; r < rows; ++r) {
    const float* xr = x + r * in;
    float* yr = y + r * out;
    for (uint32_t o = 0; o < out; ++o) {
      const float* wo = w + static_cast<size_t>(o) * in;
      float acc = 0.0f;
      for (uint32_t i = 0; i < in; ++i) acc += input(xr[i]) * wo[i];
      yr[o] = bias ? acc + bias[o] : acc;
    }
  }
}

}  // namespace

void fully_connected(const float* x, size_t rows, uint32_t in, const float* w, const float* bias,
                     uint32_t out, float* y) {
  dense_rows<false>(x, rows, in, w, bias, out, y);
}

void fully_connected_fp16(const float* x, size_t rows, uint32_t in, const float* w,
                          const float* bias, uint32_t out, float* y) {
  dense_rows<true>(x, rows, in, w, bias, out, y);
}

void fully_connected_bf16(const float* x, size_t rows, uint32_t in, const uint16_t* w,
                          const float* bias, uint32_t out, float* y) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * in;
    for (uint32_t o = 0; o < out; ++o) {
      const uint16_t* wo = w + static_cast<size_t>(o) * in;
      float acc = bias ? bias[o] : 0.0f;
      for (uint32_t i = 0; i < in; i += 2) {
        const bool pair = i + 1 < in;
        acc = detail::bf16_dot_pair(acc, detail::float_to_bf16(xr[i]),
                                    pair ? detail::float_to_bf16(xr[i + 1]) : uint16_t{0}, wo[i],
                                    pair ? wo[i + 1] : uint16_t{0});
      }
      y[r * out + o] = acc;
    }
  }
}

}  // namespace siflow::reference
