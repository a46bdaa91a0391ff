// SPDX-License-Identifier: Apache-2.0
// This machine's single-core fp32 FMA peak, the yardstick for bench_flow's GFLOP/s.
//   peak_fma        prints "peak_gflops_avx2 G" and, where the CPU has AVX-512,
//                   "peak_gflops_avx512 G": the best of 5 runs of a loop of FMAs over 12
//                   independent accumulators (enough to cover the FMA latency on both FMA
//                   ports), counting 2 flops per lane per FMA; then "peak_gflops G", the larger
//                   (the widest vectors the simd backend uses on this CPU)
// x86-64 with AVX2 and FMA only; elsewhere it says so and exits 0.
#include "peak_fma.hpp"

#include <cstdio>

#if defined(__x86_64__)

using namespace peak_fma;

int main() {
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
    std::printf("peak_fma: this CPU lacks AVX2 or FMA\n");
    return 0;
  }
  const double avx2 = peak(fma_avx2, 8);
  std::printf("peak_gflops_avx2 %.1f\n", avx2);
  double best = avx2;
  if (__builtin_cpu_supports("avx512f")) {
    const double avx512 = peak(fma_avx512, 16);
    std::printf("peak_gflops_avx512 %.1f\n", avx512);
    best = avx512 > best ? avx512 : best;
  }
  std::printf("peak_gflops %.1f\n", best);
  return 0;
}

#else

int main() {
  std::printf("peak_fma: unsupported architecture\n");
  return 0;
}

#endif
