// SPDX-License-Identifier: Apache-2.0
// The simd kernels for AArch64 CPUs with FEAT_FP16 and FEAT_FHM (compiled with
// -march=armv8.2-a+fp16fml; dispatch.cc selects it only where the auxiliary vector says so):
// NEON's kernels, except that fp16 dense layers run FMLAL/FMLAL2 on halves.
#include <arm_neon.h>

#define SIFLOW_SIMD_NS neon_fhm
#define SIFLOW_SIMD_ISA "neon_fhm"
#define SIFLOW_SIMD_BYTES 16
#define SIFLOW_SIMD_MR 6
#define SIFLOW_SIMD_PANELS 1
#define SIFLOW_SIMD_FP16_FMLAL 1
#include "kernels/simd/kernels_impl.inc"
