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

}  // namespace siflow::reference
