// SPDX-License-Identifier: Apache-2.0
// The simd kernels for x86-64 CPUs with AVX2, FMA and F16C (compiled with -mavx2 -mfma -mf16c):
// 6-row tiles, 12 accumulators in the 16 ymm registers.
#define SIFLOW_SIMD_NS avx2
#define SIFLOW_SIMD_ISA "avx2"
#define SIFLOW_SIMD_BYTES 32
#define SIFLOW_SIMD_MR 6
#define SIFLOW_SIMD_PANELS 1
#include "kernels/simd/kernels_impl.inc"
