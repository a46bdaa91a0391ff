// SPDX-License-Identifier: Apache-2.0
// Reduced-precision dense layers (docs/math.md, "Reduced precision") on every simd variant this
// CPU runs: bf16 layers give the bits of the scalar reference (the definition of vdpbf16ps's
// arithmetic) on random inputs and on subnormals, infinities, NaNs, rounding ties and tiny partial
// sums; fp16 layers give the bits of the f32 kernel on the decoded weights and the activations
// rounded to halves (on AArch64 with FHM by FMLAL, elsewhere by conversion), int8 layers those of
// the f32 kernel on the decoded weights; int8 quantization keeps every weight within half a step;
// plans honour the option.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/reference/dense.hpp"
#include "kernels/simd/kernels.hpp"
#include "math/half.hpp"
#include "math/reduced.hpp"
#include "siflow/siflow.hpp"
#include "support/aligned_memory.hpp"
#include "support/env_guard.hpp"
#include "support/simd_variants.hpp"

namespace {

using siflow::Precision;
using siflow::UnaryKind;
namespace simd = siflow::simd;
namespace detail = siflow::detail;

struct Aligned {
  void* p;
  explicit Aligned(size_t bytes) : p(detail::aligned_malloc(64, bytes ? bytes : 1)) {
    std::memset(p, 0, bytes ? bytes : 1);
  }
  ~Aligned() { detail::aligned_free(p); }
};

bool same_bits(float a, float b) {
  return detail::float_bits(a) == detail::float_bits(b) || (a != a && b != b);
}

// Runs a reduced layer on kernels k for rows [0, rows) in two row ranges (threads split rows so).
std::vector<float> run_reduced(const simd::Kernels& k, Precision precision, const float* w,
                               const float* bias, uint32_t in, uint32_t out,
                               const std::vector<float>& x, size_t rows, bool add_bias) {
  Aligned packed(simd::reduced_bytes(precision, in, out));
  simd::pack_reduced(precision, w, bias, in, out, packed.p);
  std::vector<uint32_t> xb(rows * simd::reduced_rows_words(precision, in) + 1);
  const simd::DenseReduced d{precision, packed.p, in, out, add_bias, UnaryKind::kIdentity,
                             0.0f,      xb.data()};
  std::vector<float> y(rows * out, -1.0f);
  k.dense_reduced(d, x.data(), 0, rows / 2, y.data(), nullptr);
  k.dense_reduced(d, x.data(), rows / 2, rows, y.data(), nullptr);
  return y;
}

// Random values, with a share of edge values when `edges`.
float value(std::mt19937& gen, bool edges) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  if (!edges || gen() % 4 != 0) return u(gen);
  switch (gen() % 10) {
    case 0:
      return detail::bits_float(gen() & 0x807fffffu);  // subnormal
    case 1:
      return INFINITY;
    case 2:
      return -INFINITY;
    case 3:
      return NAN;
    case 4:
      return detail::bits_float(0x3f808000u);  // a bf16 tie (1 + 2^-8), rounds to even
    case 5:
      return detail::bits_float(0x3f818000u);  // a tie that rounds up
    case 6:
      return 0x1p-70f * u(gen);  // products below 2^-126
    case 7:
      return 0x1p-126f;
    case 8:
      return -0.0f;
    default:
      return 3.0e38f * u(gen);  // products overflow
  }
}

void check_bf16(uint32_t in, uint32_t out, size_t rows, bool edges, bool with_bias) {
  std::mt19937 gen(in * 131 + out * 7 + rows + (edges ? 1 : 0));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> w(size_t{out} * in), bias(out), x(rows * in);
  for (float& v : w) v = value(gen, false);
  for (float& v : bias) v = value(gen, edges);
  for (float& v : x) v = value(gen, edges);
  if (edges) {
    // No inf or NaN weights (the loader refuses them), but subnormal ones; and whole rows and
    // outputs scaled by 2^-64, so that their products and partial sums fall below 2^-126.
    for (size_t i = 0; i < w.size(); i += 7) w[i] = detail::bits_float(gen() & 0x807fffffu);
    for (uint32_t o = 0; o < out; o += 3)
      for (uint32_t i = 0; i < in; ++i) w[size_t{o} * in + i] = u(gen) * 0x1p-64f;
    for (size_t r = 0; r < rows; r += 3)
      for (uint32_t i = 0; i < in; ++i) x[r * in + i] = u(gen) * 0x1p-64f;
  }
  std::vector<uint16_t> wb(w.size());
  for (size_t i = 0; i < w.size(); ++i) wb[i] = detail::float_to_bf16(w[i]);
  std::vector<float> flushed(out);
  for (uint32_t o = 0; o < out; ++o) flushed[o] = detail::flush_subnormal(bias[o]);
  std::vector<float> expected(rows * out);
  siflow::reference::fully_connected_bf16(
      x.data(), rows, in, wb.data(), with_bias ? flushed.data() : nullptr, out, expected.data());
  for (const simd::Kernels* k : test_support::simd_variants()) {
    const std::string isa = k->isa;
    CAPTURE(isa);
    const std::vector<float> y =
        run_reduced(*k, Precision::kBf16, w.data(), bias.data(), in, out, x, rows, with_bias);
    size_t differ = 0;
    for (size_t i = 0; i < y.size(); ++i) differ += !same_bits(y[i], expected[i]);
    CHECK(differ == 0);
  }
}

}  // namespace

TEST_CASE("bf16 rounding is to nearest even, flushes subnormal results and keeps NaN quiet") {
  CHECK(detail::float_to_bf16(1.0f) == 0x3f80);
  CHECK(detail::float_to_bf16(detail::bits_float(0x3f808000u)) == 0x3f80);  // tie to even
  CHECK(detail::float_to_bf16(detail::bits_float(0x3f818000u)) == 0x3f82);  // tie to even, up
  CHECK(detail::float_to_bf16(detail::bits_float(0x3f808001u)) == 0x3f81);  // above the tie
  CHECK(detail::float_to_bf16(3.4028235e38f) == 0x7f80);                    // rounds to inf
  CHECK(detail::float_to_bf16(detail::bits_float(0x00400000u)) == 0x0000);  // subnormal -> 0
  CHECK(detail::float_to_bf16(detail::bits_float(0x80400000u)) == 0x8000);  // sign kept
  CHECK(detail::float_to_bf16(detail::bits_float(0x007fffffu)) == 0x0080);  // rounds up to normal
  const uint16_t nan = detail::float_to_bf16(detail::bits_float(0x7f800001u));
  CHECK((nan & 0x7f80) == 0x7f80);
  CHECK((nan & 0x0040) != 0);  // quiet, not inf
}

TEST_CASE("bf16 dense layers give the reference's bits on every simd variant") {
  for (uint32_t in : {1u, 2u, 7u, 64u, 257u})
    for (uint32_t out : {1u, 16u, 33u, 256u})
      for (size_t rows : {1u, 9u, 37u}) {
        CAPTURE(in);
        CAPTURE(out);
        CAPTURE(rows);
        check_bf16(in, out, rows, false, true);
        check_bf16(in, out, rows, false, false);
      }
}

TEST_CASE(
    "bf16 dense layers keep the reference's bits on subnormals, inf, NaN, ties and tiny sums") {
  for (uint32_t in : {3u, 32u, 129u})
    for (uint32_t out : {5u, 48u})
      for (size_t rows : {1u, 17u}) {
        CAPTURE(in);
        CAPTURE(out);
        CAPTURE(rows);
        check_bf16(in, out, rows, true, true);
        check_bf16(in, out, rows, true, false);
      }
}

namespace {

// fp16 activation edges: half subnormals and the smallest normal, ties, values past 65504 and
// around the rounding to inf, inf, NaN, signed zeros, f32 subnormals.
float half_edge(std::mt19937& gen) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  switch (gen() % 12) {
    case 0:
      return 0x1p-20f * u(gen);  // half subnormal
    case 1:
      return 0x1p-14f;  // smallest normal half
    case 2:
      return detail::bits_float(0x3f801000u);  // 1 + 2^-11: a tie, to even (1)
    case 3:
      return detail::bits_float(0x3f803000u);  // 1 + 3 * 2^-11: a tie, up
    case 4:
      return 0x1.5p-25f;  // rounds up to 2^-24
    case 5:
      return 65519.0f;  // largest that rounds to 65504
    case 6:
      return -65520.0f;  // rounds to -inf
    case 7:
      return INFINITY;
    case 8:
      return NAN;
    case 9:
      return -0.0f;
    case 10:
      return detail::bits_float(gen() & 0x807fffffu);  // f32 subnormal: rounds to zero
    default:
      return 1000.0f * u(gen);
  }
}

bool has_fhm() { return simd::kernels_for(simd::Isa::kNeonFhm) != nullptr; }

bool aarch64_linux() {
#if defined(__aarch64__) && defined(__linux__)
  return true;
#else
  return false;
#endif
}

}  // namespace

TEST_CASE("fp16 activations round like detail::round_to_half, ties to even, inf past 65504") {
  CHECK(detail::round_to_half(detail::bits_float(0x3f801000u)) == 1.0f);
  CHECK(detail::round_to_half(detail::bits_float(0x3f803000u)) == 1.0f + 0x1p-9f);
  CHECK(detail::round_to_half(65519.0f) == 65504.0f);
  CHECK(detail::round_to_half(65520.0f) == INFINITY);
  CHECK(detail::round_to_half(0x1.5p-25f) == 0x1p-24f);
  CHECK(detail::round_to_half(0x1p-25f) == 0.0f);  // a tie at the smallest subnormal: to even
  CHECK(std::signbit(detail::round_to_half(-0x1p-30f)));
}

TEST_CASE("fp16 and int8 dense layers give the f32 kernel's bits on the decoded weights") {
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (uint32_t in : {1u, 5u, 64u, 200u})
    for (uint32_t out : {3u, 16u, 40u})
      for (bool edges : {false, true}) {
        const size_t rows = 19;
        std::vector<float> w(size_t{out} * in), bias(out), x(rows * in);
        for (float& v : w) v = u(gen) * (gen() % 5 == 0 ? 1e-5f : 1.0f);
        for (float& v : bias) v = u(gen);
        for (float& v : x) v = edges && gen() % 3 == 0 ? half_edge(gen) : u(gen);
        // fp16 activations: what the f32 kernel multiplies (int8 keeps them f32).
        std::vector<float> x_half(x.size());
        for (size_t i = 0; i < x.size(); ++i) x_half[i] = detail::round_to_half(x[i]);
        for (Precision precision : {Precision::kFp16, Precision::kInt8}) {
          const std::vector<float>& x_kernel = precision == Precision::kFp16 ? x_half : x;
          std::vector<float> decoded(w.size());
          for (uint32_t o = 0; o < out; ++o) {
            const float* row = w.data() + size_t{o} * in;
            const float scale = detail::int8_scale(row, in);
            for (uint32_t i = 0; i < in; ++i) {
              const size_t at = size_t{o} * in + i;
              decoded[at] = precision == Precision::kFp16
                                ? detail::half_to_float(detail::float_to_half(w[at]))
                                : scale * static_cast<float>(detail::int8_quantize(w[at], scale));
            }
          }
          for (const simd::Kernels* k : test_support::simd_variants()) {
            const std::string isa = k->isa;
            CAPTURE(isa);
            CAPTURE(siflow::precision_name(precision));
            Aligned packed(simd::packed_floats(in, out) * sizeof(float));
            simd::pack_weights(decoded.data(), bias.data(), in, out, static_cast<float*>(packed.p));
            const simd::Dense d{static_cast<float*>(packed.p), in,  out, true,
                                UnaryKind::kIdentity,          0.0f};
            std::vector<float> expected(rows * out);
            k->dense(d, x_kernel.data(), 0, rows, expected.data(), nullptr);
            const std::vector<float> y =
                run_reduced(*k, precision, w.data(), bias.data(), in, out, x, rows, true);
            size_t differ = 0;
            for (size_t i = 0; i < y.size(); ++i) differ += !same_bits(y[i], expected[i]);
            CHECK(differ == 0);
          }
        }
      }
}

// The test above already holds every variant to the conversion's bits; this one adds odd shapes
// and rows counts (FMLAL tiles of 6 rows, single rows, partial panels) against the baseline NEON.
TEST_CASE("neon_fhm: FMLAL fp16 layers give the bits of the conversion path" *
          doctest::skip(!has_fhm())) {
  const simd::Kernels* fhm = simd::kernels_for(simd::Isa::kNeonFhm);
  const simd::Kernels* neon = simd::kernels_for(simd::Isa::kBaseline);
  REQUIRE(fhm != nullptr);
  REQUIRE(neon != nullptr);
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (uint32_t in : {1u, 3u, 17u, 128u, 301u})
    for (uint32_t out : {1u, 15u, 16u, 70u})
      for (size_t rows : {1u, 6u, 13u, 40u}) {
        CAPTURE(in);
        CAPTURE(out);
        CAPTURE(rows);
        std::vector<float> w(size_t{out} * in), bias(out), x(rows * in);
        for (float& v : w) v = u(gen) * (gen() % 7 == 0 ? 0x1p-18f : 2.0f);
        for (float& v : bias) v = u(gen);
        for (float& v : x) v = gen() % 4 == 0 ? half_edge(gen) : 8.0f * u(gen);
        for (bool with_bias : {true, false}) {
          const std::vector<float> a = run_reduced(*fhm, Precision::kFp16, w.data(), bias.data(),
                                                   in, out, x, rows, with_bias);
          const std::vector<float> b = run_reduced(*neon, Precision::kFp16, w.data(), bias.data(),
                                                   in, out, x, rows, with_bias);
          size_t differ = 0;
          for (size_t i = 0; i < a.size(); ++i) differ += !same_bits(a[i], b[i]);
          CHECK(differ == 0);
        }
      }
}

TEST_CASE("SIFLOW_SIMD_ISA=neon_fhm on an AArch64 CPU without FHM is an error naming the feature" *
          doctest::skip(!aarch64_linux() || has_fhm())) {
  const test_support::EnvGuard guard("SIFLOW_SIMD_ISA");
  guard.set("neon_fhm");
  const simd::Kernels* k = nullptr;
  const siflow::Status s = simd::select(&k);
  CHECK_FALSE(s.ok());
  CHECK(std::string(s.message()).find("FEAT_FHM") != std::string::npos);
  CHECK(std::string(s.message()).find("choices: neon") != std::string::npos);
  guard.set("neon");
  REQUIRE(simd::select(&k).ok());
  CHECK(std::string(k->isa) == "neon");
}

TEST_CASE("int8 quantization: scale max|w|/127, every weight within half a step, zero rows zero") {
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> row(100);
  for (float& v : row) v = u(gen);
  const float scale = detail::int8_scale(row.data(), 100);
  float m = 0;
  for (float v : row) m = std::fabs(v) > m ? std::fabs(v) : m;
  CHECK(scale == m / 127.0f);
  for (float v : row) {
    const int q = detail::int8_quantize(v, scale);
    CHECK(q >= -127);
    CHECK(q <= 127);
    CHECK(std::fabs(v - scale * q) <= 0.5f * scale * (1.0f + 1e-6f));
  }
  CHECK(detail::int8_quantize(2.5f * scale, scale) == 2);  // ties to even
  CHECK(detail::int8_quantize(3.5f * scale, scale) == 4);
  const float zeros[4] = {};
  CHECK(detail::int8_scale(zeros, 4) == 0.0f);
  CHECK(detail::int8_quantize(0.0f, 0.0f) == 0);
}

TEST_CASE("precision names parse and print; an unknown precision is refused by the plan") {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16, Precision::kInt8}) {
    Precision back;
    REQUIRE(siflow::parse_precision(siflow::precision_name(p), &back));
    CHECK(back == p);
  }
  Precision none;
  CHECK_FALSE(siflow::parse_precision("fp8", &none));
}
