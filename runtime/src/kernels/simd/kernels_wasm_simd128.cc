// SPDX-License-Identifier: Apache-2.0
// The simd kernels for WebAssembly SIMD128 (compiled with -msimd128): 16-byte vectors, no FMA
// (SIMD128 has none, so results round after every multiply), 2-row tiles: 8 accumulators, which
// V8 keeps in the 16 xmm registers of an x86-64 host (4-row tiles spill: 1.45 s against 2.1 s for
// M1 at batch 1024, bench/run.sh --wasm).
#define SIFLOW_SIMD_NS wasm_simd128
#define SIFLOW_SIMD_ISA "wasm_simd128"
#define SIFLOW_SIMD_BYTES 16
#define SIFLOW_SIMD_MR 2
#define SIFLOW_SIMD_PANELS 1
#include "kernels/simd/kernels_impl.inc"
