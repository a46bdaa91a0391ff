// SPDX-License-Identifier: Apache-2.0
// This machine's single-core fp32 FMA peak, the yardstick for bench_flow's GFLOP/s.
//   peak_fma        prints "peak_gflops_avx2 G" and, where the CPU has AVX-512,
//                   "peak_gflops_avx512 G": the best of 5 runs of a loop of FMAs over 12
//                   independent accumulators (enough to cover the FMA latency on both FMA
//                   ports), counting 2 flops per lane per FMA; then "peak_gflops G", the larger
//                   (the widest vectors the simd backend uses on this CPU)
// x86-64 with AVX2 and FMA only; elsewhere it says so and exits 0.
#include <cstdio>

#if defined(__x86_64__)

#include <immintrin.h>

#include <chrono>
#include <cstdint>

namespace {

constexpr int kAccumulators = 12;

// Runs iters x kAccumulators FMAs on 8 lanes each and returns a value depending on all of them,
// so that the compiler cannot drop any. acc = acc * a + b converges (to b / (1 - a) = 1) and
// stays well away from overflow and denormals however long the loop runs.
// Runs iters x kAccumulators FMAs on every lane and returns a value depending on all of them,
// so that the compiler cannot drop any. acc = acc * a + b converges (to b / (1 - a) = 1) and
// stays well away from overflow and denormals however long the loop runs.
#define SIFLOW_FMA_KERNEL(NAME, TARGET, VEC, SET1, FMA, ADD, STORE, LANES)                       \
  __attribute__((target(TARGET), noinline)) float NAME(uint64_t iters, float a_in, float b_in) { \
    const VEC a = SET1(a_in);                                                                    \
    const VEC b = SET1(b_in);                                                                    \
    VEC acc[kAccumulators];                                                                      \
    for (int k = 0; k < kAccumulators; ++k) acc[k] = SET1(static_cast<float>(k) * 0.01f);        \
    for (uint64_t i = 0; i < iters; ++i) {                                                       \
      acc[0] = FMA(acc[0], a, b);                                                                \
      acc[1] = FMA(acc[1], a, b);                                                                \
      acc[2] = FMA(acc[2], a, b);                                                                \
      acc[3] = FMA(acc[3], a, b);                                                                \
      acc[4] = FMA(acc[4], a, b);                                                                \
      acc[5] = FMA(acc[5], a, b);                                                                \
      acc[6] = FMA(acc[6], a, b);                                                                \
      acc[7] = FMA(acc[7], a, b);                                                                \
      acc[8] = FMA(acc[8], a, b);                                                                \
      acc[9] = FMA(acc[9], a, b);                                                                \
      acc[10] = FMA(acc[10], a, b);                                                              \
      acc[11] = FMA(acc[11], a, b);                                                              \
    }                                                                                            \
    VEC sum = acc[0];                                                                            \
    for (int k = 1; k < kAccumulators; ++k) sum = ADD(sum, acc[k]);                              \
    alignas(64) float lanes[LANES];                                                              \
    STORE(lanes, sum);                                                                           \
    float total = 0;                                                                             \
    for (float v : lanes) total += v;                                                            \
    return total;                                                                                \
  }

SIFLOW_FMA_KERNEL(fma_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
                  _mm256_store_ps, 8)
SIFLOW_FMA_KERNEL(fma_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
                  _mm512_store_ps, 16)

volatile float g_sink;                      // the kernels' results end here
volatile float g_a = 0.999f, g_b = 0.001f;  // opaque to the compiler

typedef float (*Kernel)(uint64_t, float, float);

double time_kernel(Kernel kernel, uint64_t iters) {
  const auto start = std::chrono::steady_clock::now();
  g_sink = kernel(iters, g_a, g_b);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// GFLOP/s of the kernel: calibrated to about 0.3 s a run, best of 5.
double peak(Kernel kernel, int lanes) {
  uint64_t iters = uint64_t{1} << 20;
  double sec = time_kernel(kernel, iters);
  while (sec < 0.05) {
    iters *= 2;
    sec = time_kernel(kernel, iters);
  }
  iters = static_cast<uint64_t>(static_cast<double>(iters) * (0.3 / sec));
  if (iters == 0) iters = 1;
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    sec = time_kernel(kernel, iters);
    const double gflops = static_cast<double>(iters) * kAccumulators * lanes * 2 / sec * 1e-9;
    if (gflops > best) best = gflops;
  }
  return best;
}

}  // namespace

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
