// SPDX-License-Identifier: Apache-2.0
// Weight packing and the choice of simd variant by CPU features.
#include <cstdlib>
#include <cstring>

#include "kernels/simd/kernels.hpp"

namespace siflow::simd {

namespace baseline {
extern const Kernels kKernels;
}
#if defined(__x86_64__)
namespace avx2 {
extern const Kernels kKernels;
}
namespace avx512 {
extern const Kernels kKernels;
}
#endif
#if defined(__wasm__) && defined(SIFLOW_WITH_WASM_SIMD128)
namespace wasm_simd128 {
extern const Kernels kKernels;
}
#endif

size_t packed_floats(uint32_t in, uint32_t out) {
  const size_t panels = (size_t{out} + kPanel - 1) / kPanel;
  return panels * (size_t{in} + 1) * kPanel;
}

void pack_weights(const float* w, const float* bias, uint32_t in, uint32_t out, float* packed) {
  const uint32_t panels = (out + kPanel - 1) / kPanel;
  for (uint32_t j = 0; j < panels; ++j) {
    float* panel = packed + size_t{j} * (size_t{in} + 1) * kPanel;
    for (uint32_t c = 0; c < kPanel; ++c) {
      const uint32_t o = j * kPanel + c;
      for (uint32_t i = 0; i < in; ++i)
        panel[size_t{i} * kPanel + c] = o < out ? w[size_t{o} * in + i] : 0.0f;
      panel[size_t{in} * kPanel + c] = o < out && bias ? bias[o] : 0.0f;
    }
  }
}

void pack_transposed(const float* m, uint32_t rows, uint32_t cols, float* packed) {
  const uint32_t panels = (cols + kPanel - 1) / kPanel;
  for (uint32_t j = 0; j < panels; ++j) {
    float* panel = packed + size_t{j} * (size_t{rows} + 1) * kPanel;
    const uint32_t c0 = j * kPanel;
    const uint32_t n = cols - c0 < kPanel ? cols - c0 : kPanel;
    for (uint32_t i = 0; i < rows; ++i) {
      float* dst = panel + size_t{i} * kPanel;
      std::memcpy(dst, m + size_t{i} * cols + c0, n * sizeof(float));
      for (uint32_t c = n; c < kPanel; ++c) dst[c] = 0.0f;
    }
    for (uint32_t c = 0; c < kPanel; ++c) panel[size_t{rows} * kPanel + c] = 0.0f;
  }
}

size_t tn_packed_floats(size_t k, uint32_t n, uint32_t strip) {
  return k * ((size_t{n} + strip - 1) / strip) * strip;
}

void pack_tn(const float* b, size_t ldb, size_t k, uint32_t n, uint32_t strip, float* packed,
             bool ones_column) {
  const uint32_t columns = n + (ones_column ? 1 : 0);
  const uint32_t strips = (columns + strip - 1) / strip;
  for (uint32_t j = 0; j < strips; ++j) {
    const uint32_t c0 = j * strip;
    const uint32_t w = c0 >= n ? 0 : (n - c0 < strip ? n - c0 : strip);
    float* dst = packed + size_t{j} * k * strip;
    for (size_t kk = 0; kk < k; ++kk) {
      if (w) std::memcpy(dst + kk * strip, b + kk * ldb + c0, w * sizeof(float));
      for (uint32_t c = w; c < strip; ++c)
        dst[kk * strip + c] = ones_column && c0 + c == n ? 1.0f : 0.0f;
    }
  }
}

const Kernels* kernels_for(Isa isa) {
  switch (isa) {
    case Isa::kBaseline:
      return &baseline::kKernels;
    case Isa::kAvx2:
#if defined(__x86_64__)
      if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2::kKernels;
#endif
      return nullptr;
    case Isa::kAvx512:
#if defined(__x86_64__)
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("fma"))
        return &avx512::kKernels;
#endif
      return nullptr;
    case Isa::kWasmSimd128:
      // A WebAssembly engine validates a module's SIMD instructions when it loads it, so a module
      // that contains this variant only runs where SIMD128 does: no run-time check is needed.
#if defined(__wasm__) && defined(SIFLOW_WITH_WASM_SIMD128)
      return &wasm_simd128::kKernels;
#endif
      return nullptr;
  }
  return nullptr;
}

Status select(const Kernels** out) {
  // Best first.
  const Kernels* const available[] = {kernels_for(Isa::kAvx512), kernels_for(Isa::kAvx2),
                                      kernels_for(Isa::kWasmSimd128), kernels_for(Isa::kBaseline)};
  const char* forced = std::getenv("SIFLOW_SIMD_ISA");
  char choices[64] = "";
  for (const Kernels* k : available) {
    if (!k) continue;
    if (!forced || !*forced || std::strcmp(forced, k->isa) == 0) {
      *out = k;
      return Status();
    }
    std::strncat(choices, *choices ? ", " : "", sizeof choices - std::strlen(choices) - 1);
    std::strncat(choices, k->isa, sizeof choices - std::strlen(choices) - 1);
  }
  return Status::error(StatusCode::kInvalidArgument,
                       "SIFLOW_SIMD_ISA=%s is not a kernel set this CPU and build run (choices: "
                       "%s)",
                       forced, choices);
}

}  // namespace siflow::simd
