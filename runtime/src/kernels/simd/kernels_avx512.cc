// The simd kernels for x86-64 CPUs with AVX-512 (F, DQ, BW, VL; compiled with those flags): one
// zmm register per 16-output tile row, SIFLOW_SIMD_MR rows per tile.
#define SIFLOW_SIMD_NS avx512
#define SIFLOW_SIMD_ISA "avx512"
#define SIFLOW_SIMD_BYTES 64
#ifndef SIFLOW_SIMD_MR
#define SIFLOW_SIMD_MR 12
#endif
#include "kernels/simd/kernels_impl.inc"
