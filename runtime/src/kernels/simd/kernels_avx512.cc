// SPDX-License-Identifier: Apache-2.0
// The simd kernels for x86-64 CPUs with AVX-512 (F, DQ, BW, VL; compiled with those flags):
// full tiles of 8 rows by 2 panels (16 zmm accumulators, each input broadcast feeding two FMAs).
#define SIFLOW_SIMD_NS avx512
#define SIFLOW_SIMD_ISA "avx512"
#define SIFLOW_SIMD_BYTES 64
#define SIFLOW_SIMD_MR 8
#define SIFLOW_SIMD_PANELS 2
#include "kernels/simd/kernels_impl.inc"
