// SPDX-License-Identifier: Apache-2.0
// The simd kernels for x86-64 CPUs with AVX-512 and AVX-512 BF16 (compiled with those flags):
// AVX-512's kernels, except that bf16 dense layers run vdpbf16ps (two products per f32 lane).
#define SIFLOW_SIMD_NS avx512_bf16
#define SIFLOW_SIMD_ISA "avx512_bf16"
#define SIFLOW_SIMD_BYTES 64
#define SIFLOW_SIMD_MR 8
#define SIFLOW_SIMD_PANELS 2
#define SIFLOW_SIMD_BF16_DOT 1
#include "kernels/simd/kernels_impl.inc"
