// SPDX-License-Identifier: Apache-2.0
// The single-core fp32 FMA peak loops of bench/peak_fma.cc, shared with bench/bench_conv.cc
// (which measures the peak in its own run, timed in the thread's CPU seconds). x86-64 only.
#pragma once
#if defined(__x86_64__)

#include <immintrin.h>
#include <time.h>

#include <chrono>
#include <cstdint>

namespace peak_fma {

constexpr int kAccumulators = 12;

// Runs iters x kAccumulators FMAs on every lane and returns a value depending on all of them,
// so that the compiler cannot drop any. acc = acc * a + b converges (to b / (1 - a) = 1) and
// stays well away from overflow and denormals however long the loop runs.
#define SIFLOW_FMA_KERNEL(NAME, TARGET, VEC, SET1, FMA, ADD, STORE, LANES)                \
  __attribute__((target(TARGET), noinline)) inline float NAME(uint64_t iters, float a_in, \
                                                              float b_in) {               \
    const VEC a = SET1(a_in);                                                             \
    const VEC b = SET1(b_in);                                                             \
    VEC acc[kAccumulators];                                                               \
    for (int k = 0; k < kAccumulators; ++k) acc[k] = SET1(static_cast<float>(k) * 0.01f); \
    for (uint64_t i = 0; i < iters; ++i) {                                                \
      acc[0] = FMA(acc[0], a, b);                                                         \
      acc[1] = FMA(acc[1], a, b);                                                         \
      acc[2] = FMA(acc[2], a, b);                                                         \
      acc[3] = FMA(acc[3], a, b);                                                         \
      acc[4] = FMA(acc[4], a, b);                                                         \
      acc[5] = FMA(acc[5], a, b);                                                         \
      acc[6] = FMA(acc[6], a, b);                                                         \
      acc[7] = FMA(acc[7], a, b);                                                         \
      acc[8] = FMA(acc[8], a, b);                                                         \
      acc[9] = FMA(acc[9], a, b);                                                         \
      acc[10] = FMA(acc[10], a, b);                                                       \
      acc[11] = FMA(acc[11], a, b);                                                       \
    }                                                                                     \
    VEC sum = acc[0];                                                                     \
    for (int k = 1; k < kAccumulators; ++k) sum = ADD(sum, acc[k]);                       \
    alignas(64) float lanes[LANES];                                                       \
    STORE(lanes, sum);                                                                    \
    float total = 0;                                                                      \
    for (float v : lanes) total += v;                                                     \
    return total;                                                                         \
  }

SIFLOW_FMA_KERNEL(fma_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
                  _mm256_store_ps, 8)
SIFLOW_FMA_KERNEL(fma_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
                  _mm512_store_ps, 16)

inline volatile float g_sink;                      // the kernels' results end here
inline volatile float g_a = 0.999f, g_b = 0.001f;  // opaque to the compiler

typedef float (*Kernel)(uint64_t, float, float);

// Wall seconds, or with cpu_time the calling thread's CPU seconds (what counts on a loaded
// machine).
inline double now(bool cpu_time) {
  if (cpu_time) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double time_kernel(Kernel kernel, uint64_t iters, bool cpu_time = false) {
  const double start = now(cpu_time);
  g_sink = kernel(iters, g_a, g_b);
  return now(cpu_time) - start;
}

// GFLOP/s of the kernel: calibrated to about 0.3 s a run, best of 5.
inline double peak(Kernel kernel, int lanes, bool cpu_time = false) {
  uint64_t iters = uint64_t{1} << 20;
  double sec = time_kernel(kernel, iters, cpu_time);
  while (sec < 0.05) {
    iters *= 2;
    sec = time_kernel(kernel, iters, cpu_time);
  }
  iters = static_cast<uint64_t>(static_cast<double>(iters) * (0.3 / sec));
  if (iters == 0) iters = 1;
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    sec = time_kernel(kernel, iters, cpu_time);
    const double gflops = static_cast<double>(iters) * kAccumulators * lanes * 2 / sec * 1e-9;
    if (gflops > best) best = gflops;
  }
  return best;
}

}  // namespace peak_fma

#endif
