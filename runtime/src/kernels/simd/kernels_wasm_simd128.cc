// SPDX-License-Identifier: Apache-2.0
// The simd kernels for WebAssembly SIMD128 (compiled with -msimd128): 16-byte vectors, no FMA
// (SIMD128 has none, so results round after every multiply), 4-row tiles: 16 accumulators, which
// engines such as V8 keep in the 16 xmm registers of an x86-64 host.
#define SIFLOW_SIMD_NS wasm_simd128
#define SIFLOW_SIMD_ISA "wasm_simd128"
#define SIFLOW_SIMD_BYTES 16
#define SIFLOW_SIMD_MR 4
#define SIFLOW_SIMD_PANELS 1
#include "kernels/simd/kernels_impl.inc"
