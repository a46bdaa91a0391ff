// SPDX-License-Identifier: Apache-2.0
// The reference dense kernel: the definition of a fully connected layer's arithmetic, which the
// optimized backends are tested against. Never allocates, never calls libm.
#pragma once

#include <cstddef>
#include <cstdint>

namespace siflow::reference {

// y[r][o] = sum_i x[r][i] * w[o][i] + bias[o] (bias nullable), summed in order i = 0, 1, ...
void fully_connected(const float* x, size_t rows, uint32_t in, const float* w, const float* bias,
                     uint32_t out, float* y);

// The fp16 dense layer (docs/math.md, "Reduced precision"): fully_connected with every x rounded
// to the nearest IEEE half first (detail::round_to_half); w holds the decoded half weights.
void fully_connected_fp16(const float* x, size_t rows, uint32_t in, const float* w,
                          const float* bias, uint32_t out, float* y);

// The bf16 dense layer (docs/math.md, "Reduced precision"): w [out][in] bfloat16, bias (nullable)
// with its subnormals flushed. y[r][o] starts from bias[o] (or 0) and adds the pairs of inputs
// (2p, 2p+1) in order p = 0, 1, ... as vdpbf16ps does (math/reduced.hpp, bf16_dot_pair), each x
// rounded to bfloat16 first; an odd `in` pairs its last input with a zero.
void fully_connected_bf16(const float* x, size_t rows, uint32_t in, const uint16_t* w,
                          const float* bias, uint32_t out, float* y);

}  // namespace siflow::reference
