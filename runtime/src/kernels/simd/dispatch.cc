// SPDX-License-Identifier: Apache-2.0
// Weight packing and the choice of simd variant by CPU features.
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "kernels/simd/kernels.hpp"
#include "math/half.hpp"
#include "math/reduced.hpp"

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
namespace avx512_bf16 {
extern const Kernels kKernels;
}
#endif
#if defined(__aarch64__)
namespace neon_fhm {
extern const Kernels kKernels;
}
#endif
#if defined(__wasm__) && defined(SIFLOW_WITH_WASM_SIMD128)
namespace wasm_simd128 {
extern const Kernels kKernels;
}
#endif

uint64_t packed_floats(uint32_t in, uint32_t out) {
  const uint64_t panels = (uint64_t{out} + kPanel - 1) / kPanel;
  return panels * (uint64_t{in} + 1) * kPanel;
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

namespace {

size_t round64(size_t bytes) { return (bytes + 63) / 64 * 64; }

size_t panel_bytes(Precision precision, uint32_t in) {
  switch (precision) {
    case Precision::kFp32:
      return 0;
    case Precision::kBf16:
      return (size_t{in} + 1) / 2 * kPanel * 4 + kPanel * 4;
    case Precision::kFp16:
      return round64(size_t{in} * kPanel * 2) + kPanel * 4;
    case Precision::kInt8:
      return round64(size_t{in} * kPanel) + 2 * kPanel * 4;
  }
  return 0;
}

}  // namespace

size_t reduced_bytes(Precision precision, uint32_t in, uint32_t out) {
  if (precision == Precision::kFp32) return 0;
  const size_t panels = (size_t{out} + kPanel - 1) / kPanel;
  return (precision == Precision::kBf16 ? 64 : 0) + panels * panel_bytes(precision, in);
}

void pack_reduced(Precision precision, const float* w, const float* bias, uint32_t in, uint32_t out,
                  void* packed) {
  if (precision == Precision::kFp32) return;
  uint8_t* at = static_cast<uint8_t*>(packed);
  const uint32_t panels = (out + kPanel - 1) / kPanel;
  const size_t bytes = panel_bytes(precision, in);
  if (precision == Precision::kBf16) {
    // {min, max} biased exponent of the nonzero weights, then whether every bias is an integer
    // multiple of 2^-126 (zero or a biased exponent of 24 or more): dense_reduced's test for
    // plain multiply-adds.
    int32_t range[16] = {255, 0, 1};
    for (uint32_t o = 0; bias && o < out; ++o) {
      const uint32_t b = detail::float_bits(detail::flush_subnormal(bias[o]));
      if ((b & 0x7fffffffu) != 0 && ((b >> 23) & 0xffu) < 24) range[2] = 0;
    }
    for (size_t k = 0; k < size_t{out} * in; ++k) {
      const int32_t e = (detail::float_to_bf16(w[k]) >> 7) & 0xff;
      if (e == 0) continue;  // zero
      range[0] = e < range[0] ? e : range[0];
      range[1] = e > range[1] ? e : range[1];
    }
    std::memcpy(at, range, sizeof range);
    at += 64;
  }
  for (uint32_t j = 0; j < panels; ++j, at += bytes) {
    std::memset(at, 0, bytes);
    float* panel_bias = reinterpret_cast<float*>(at + bytes - kPanel * 4);
    for (uint32_t c = 0; c < kPanel; ++c) {
      const uint32_t o = j * kPanel + c;
      if (o >= out) continue;
      const float* row = w + size_t{o} * in;
      const float b = bias ? bias[o] : 0.0f;
      switch (precision) {
        case Precision::kFp32:
          break;
        case Precision::kBf16: {
          uint16_t* pairs = reinterpret_cast<uint16_t*>(at);
          for (uint32_t i = 0; i < in; ++i)
            pairs[(size_t{i} / 2 * kPanel + c) * 2 + i % 2] = detail::float_to_bf16(row[i]);
          panel_bias[c] = detail::flush_subnormal(b);
          break;
        }
        case Precision::kFp16: {
          uint16_t* halves = reinterpret_cast<uint16_t*>(at);
          for (uint32_t i = 0; i < in; ++i)
            halves[size_t{i} * kPanel + c] = detail::float_to_half(row[i]);
          panel_bias[c] = b;
          break;
        }
        case Precision::kInt8: {
          int8_t* q = reinterpret_cast<int8_t*>(at);
          float* scales = panel_bias - kPanel;
          const float scale = detail::int8_scale(row, in);
          for (uint32_t i = 0; i < in; ++i)
            q[size_t{i} * kPanel + c] = detail::int8_quantize(row[i], scale);
          scales[c] = scale;
          panel_bias[c] = b;
          break;
        }
      }
    }
  }
}

namespace {

// detail::float_to_bf16 of the bits b without branches (so that loops over it vectorize).
inline uint32_t bf16_bits(uint32_t b) {
  const uint32_t nan = (b & 0x7fffffffu) > 0x7f800000u ? ~0u : 0u;
  uint32_t r = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16 & 0xffffu;
  const uint32_t tiny = (r & 0x7f80u) == 0 ? ~0u : 0u;
  r = (tiny & (r & 0x8000u)) | (~tiny & r);
  return (nan & ((b >> 16 | 0x40u) & 0xffffu)) | (~nan & r);
}

}  // namespace

void pack_bf16_transposed(const float* m, uint32_t rows, uint32_t cols, void* packed) {
  uint8_t* at = static_cast<uint8_t*>(packed);
  const size_t bytes = panel_bytes(Precision::kBf16, rows), pairs = (size_t{rows} + 1) / 2;
  const uint32_t panels = (cols + kPanel - 1) / kPanel;
  // Per lane, the {min, max} biased exponent of the nonzero values (min 255 and max 0: none).
  uint32_t lo[kPanel], hi[kPanel];
  for (uint32_t c = 0; c < kPanel; ++c) lo[c] = 255, hi[c] = 0;
  for (uint32_t j = 0; j < panels; ++j) {
    uint8_t* panel = at + 64 + j * bytes;
    uint32_t* words = reinterpret_cast<uint32_t*>(panel);
    const uint32_t c0 = j * kPanel, n = cols - c0 < kPanel ? cols - c0 : kPanel;
    for (size_t p = 0; p < pairs; ++p) {
      // The pair's two rows, zero past `rows` and `cols`.
      uint32_t even[kPanel], odd[kPanel];
      if (n == kPanel) {
        std::memcpy(even, m + 2 * p * cols + c0, sizeof even);
        if (2 * p + 1 < rows)
          std::memcpy(odd, m + (2 * p + 1) * cols + c0, sizeof odd);
        else
          std::memset(odd, 0, sizeof odd);
      } else {
        std::memset(even, 0, sizeof even);
        std::memset(odd, 0, sizeof odd);
        std::memcpy(even, m + 2 * p * cols + c0, n * sizeof(float));
        if (2 * p + 1 < rows) std::memcpy(odd, m + (2 * p + 1) * cols + c0, n * sizeof(float));
      }
      uint32_t* w = words + p * kPanel;
      for (uint32_t c = 0; c < kPanel; ++c) {
        const uint32_t e = bf16_bits(even[c]), o = bf16_bits(odd[c]);
        w[c] = e | o << 16;
        const uint32_t ee = (e >> 7) & 0xffu, eo = (o >> 7) & 0xffu;
        const uint32_t ee_lo = ee ? ee : 255u, eo_lo = eo ? eo : 255u;
        lo[c] = ee_lo < lo[c] ? ee_lo : lo[c];
        lo[c] = eo_lo < lo[c] ? eo_lo : lo[c];
        hi[c] = ee > hi[c] ? ee : hi[c];
        hi[c] = eo > hi[c] ? eo : hi[c];
      }
    }
    std::memset(panel + bytes - kPanel * 4, 0, kPanel * 4);  // no bias
  }
  int32_t range[16] = {255, 0, 1};  // pack_reduced's header; no bias, so "every bias exact"
  for (uint32_t c = 0; c < kPanel; ++c) {
    range[0] = static_cast<int32_t>(lo[c]) < range[0] ? static_cast<int32_t>(lo[c]) : range[0];
    range[1] = static_cast<int32_t>(hi[c]) > range[1] ? static_cast<int32_t>(hi[c]) : range[1];
  }
  std::memcpy(at, range, sizeof range);
}

#if defined(__x86_64__)
// F16C from CPUID leaf 1 (ECX bit 29), read directly: clang's __builtin_cpu_supports does not
// know "f16c". The AVX2 check beside it already covers the OS saving the YMM state.
static bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}
#endif

#if defined(__aarch64__) && defined(__linux__)
// The kernel's report of the CPU's features (the auxiliary vector: no system call). FEAT_FHM
// without FEAT_FP16 does not exist, but both are asked for: the variant is built for both.
static bool cpu_has_fp16_fml() {
  const unsigned long hwcap = getauxval(AT_HWCAP);
  return (hwcap & HWCAP_ASIMDHP) != 0 && (hwcap & HWCAP_ASIMDFHM) != 0;
}
#endif

const Kernels* kernels_for(Isa isa) {
  switch (isa) {
    case Isa::kBaseline:
      return &baseline::kKernels;
    case Isa::kAvx2:
#if defined(__x86_64__)
      if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
        return &avx2::kKernels;
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
    case Isa::kAvx512Bf16:
#if defined(__x86_64__)
      if (kernels_for(Isa::kAvx512) && __builtin_cpu_supports("avx512bf16"))
        return &avx512_bf16::kKernels;
#endif
      return nullptr;
    case Isa::kNeonFhm:
#if defined(__aarch64__) && defined(__linux__)
      if (cpu_has_fp16_fml()) return &neon_fhm::kKernels;
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
  const Kernels* const available[] = {kernels_for(Isa::kAvx512Bf16),  kernels_for(Isa::kAvx512),
                                      kernels_for(Isa::kAvx2),        kernels_for(Isa::kNeonFhm),
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
  // A variant this build has but the CPU lacks names the feature it needs.
  const char* needs = "";
#if defined(__aarch64__)
  if (std::strcmp(forced, "neon_fhm") == 0)
    needs = "; neon_fhm needs FEAT_FP16 and FEAT_FHM (asimdhp and asimdfhm in /proc/cpuinfo)";
#endif
  return Status::error(StatusCode::kInvalidArgument,
                       "SIFLOW_SIMD_ISA=%s is not a kernel set this CPU and build run (choices: "
                       "%s%s)",
                       forced, choices, needs);
}

}  // namespace siflow::simd
