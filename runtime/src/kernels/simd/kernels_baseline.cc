// SPDX-License-Identifier: Apache-2.0
// The simd kernels for the architecture's baseline, in 16-byte vectors: SSE2 on x86-64 (any
// x86-64 CPU; 2-row tiles, 8 accumulators in the 16 xmm registers), NEON on AArch64 (6-row tiles,
// 24 of the 32 registers) and ARMv7 with NEON (2-row tiles in the 16 q registers), plain vector
// code elsewhere.
#if defined(__x86_64__)
#define SIFLOW_SIMD_ISA "sse2"
#define SIFLOW_SIMD_MR 2
#elif defined(__aarch64__)
#define SIFLOW_SIMD_ISA "neon"
#define SIFLOW_SIMD_MR 6
#elif defined(__ARM_NEON)
#define SIFLOW_SIMD_ISA "neon"
#define SIFLOW_SIMD_MR 2
#else
#define SIFLOW_SIMD_ISA "generic"
#define SIFLOW_SIMD_MR 2
#endif
#define SIFLOW_SIMD_NS baseline
#define SIFLOW_SIMD_BYTES 16
#define SIFLOW_SIMD_PANELS 1
#include "kernels/simd/kernels_impl.inc"
