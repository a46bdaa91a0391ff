// SPDX-License-Identifier: Apache-2.0
// The scalar definition of one vdpbf16ps lane (math/reduced.hpp, bf16_dot_pair) against the
// instruction itself on random and edge inputs: every bf16 exponent class (zero, subnormal, the
// smallest and largest normals, inf, NaN), subnormal accumulators, cancellations and the rounding
// ties next to 2^-126. Runs where the CPU has AVX-512 BF16; elsewhere it reports SKIPPED (77).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "math/reduced.hpp"

#if defined(__x86_64__)
#include <immintrin.h>

namespace {

using siflow::detail::bf16_dot_pair;
using siflow::detail::bf16_to_float;
using siflow::detail::bits_float;
using siflow::detail::float_bits;
using siflow::detail::flush_subnormal;

__attribute__((target("avx512bf16,avx512vl,avx512f"))) float instruction(float acc, uint16_t a0,
                                                                         uint16_t a1, uint16_t b0,
                                                                         uint16_t b1) {
  const __m128i a = _mm_set1_epi32(static_cast<int>(a0 | uint32_t{a1} << 16));
  const __m128i b = _mm_set1_epi32(static_cast<int>(b0 | uint32_t{b1} << 16));
  return _mm_cvtss_f32(_mm_dpbf16_ps(_mm_set1_ps(acc), (__m128bh)a, (__m128bh)b));
}

// The definition reads subnormal inputs as zero, as the instruction does (the runtime never
// hands it any: float_to_bf16 and the packed bias flush them).
uint16_t daz(uint16_t h) { return (h & 0x7f80u) == 0 ? h & 0x8000u : h; }

bool same(float a, float b) { return float_bits(a) == float_bits(b) || (a != a && b != b); }

}  // namespace

int main() {
  if (!__builtin_cpu_supports("avx512bf16")) {
    std::printf("SKIPPED: this CPU has no AVX-512 BF16 (vdpbf16ps)\n");
    return 77;
  }
  std::mt19937 gen(17);
  auto edge16 = [&]() -> uint16_t {
    const uint32_t k = gen() % 16, sign = (gen() & 1u) << 15;
    uint32_t e;
    if (k == 0)
      e = 0;
    else if (k == 1)
      e = 0xff;
    else if (k < 4)
      e = 1 + gen() % 4;
    else if (k < 6)
      e = 0xfe - gen() % 4;
    else
      e = 100 + gen() % 56;
    return static_cast<uint16_t>(sign | e << 7 | (gen() & 0x7fu));
  };
  long passed = 0, failed = 0;
  auto check = [&](float acc, uint16_t a0, uint16_t a1, uint16_t b0, uint16_t b1) {
    const float hw = instruction(acc, a0, a1, b0, b1);
    const float def = bf16_dot_pair(flush_subnormal(acc), daz(a0), daz(a1), daz(b0), daz(b1));
    if (same(hw, def)) {
      ++passed;
    } else if (failed++ < 5) {
      std::printf("mismatch: acc %a pair (%a, %a) . (%a, %a): instruction %a, definition %a\n", acc,
                  bf16_to_float(a0), bf16_to_float(a1), bf16_to_float(b0), bf16_to_float(b1), hw,
                  def);
    }
  };
  for (int it = 0; it < 2000000; ++it) {
    const uint16_t a0 = edge16(), a1 = edge16(), b0 = edge16(), b1 = edge16();
    float acc;
    switch (gen() % 4) {
      case 0:
        acc = bits_float(gen() & 0x807fffffu);
        break;  // subnormal or zero
      case 1:
        acc = -(bf16_to_float(a1) * bf16_to_float(b1));
        break;  // cancellation
      default:
        acc = bits_float(gen());
        break;
    }
    check(acc, a0, a1, b0, b1);
  }
  // Exact results around 2^-126 (the flush threshold): acc = 2^-126 plus odd products -k 2^-152.
  const float min_normal = bits_float(0x00800000u);
  for (int k = 0; k < 16; ++k)
    for (int sign = 0; sign < 2; ++sign) {
      // The product (k 2^-76) * 2^-76 = k 2^-152, both factors bfloat16 (k < 256).
      const float factor = (sign ? -1.0f : 1.0f) * static_cast<float>(k) * 0x1p-76f;
      const uint16_t x = static_cast<uint16_t>(float_bits(factor) >> 16);
      const uint16_t w = static_cast<uint16_t>(float_bits(0x1p-76f) >> 16);
      check(sign ? min_normal : -min_normal, 0, x, 0, w);
      check(sign ? -min_normal : min_normal, 0, x, 0, w);
    }
  std::printf("%ld passed, %ld failed\n", passed, failed);
  return failed ? 1 : 0;
}

#else
int main() {
  std::printf("SKIPPED: vdpbf16ps is an x86-64 instruction\n");
  return 77;
}
#endif
