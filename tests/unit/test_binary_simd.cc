// SPDX-License-Identifier: Apache-2.0
// Add, Mul and Div on the simd kernels (kernels/simd/kernels_binary.inc) for every
// instruction-set variant this CPU runs: forward and the one-rounding JVP cases bit for bit
// against the reference's arithmetic, the two-rounding JVP cases within kernels.hpp's bound, the
// same bits however a sample's units are split; and through a plan (per-channel, per-row, scalar
// and constant-row broadcasts): velocities bit-equal to the reference backend's, bit-equal over
// thread counts.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/backend_comparison.hpp"
#include "support/parallel.hpp"
#include "support/simd_variants.hpp"

namespace {

namespace simd = siflow::simd;

std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

// Each operand: 0 one value, 1 per outer index (a channel), 2 per inner index, 3 every element.
struct Form {
  uint32_t outer, inner;
  int a, b;
};

void strides_of(int kind, uint32_t inner, uint32_t* so, uint32_t* si) {
  *so = kind == 1 ? 1 : kind == 3 ? inner : 0;
  *si = kind >= 2 ? 1 : 0;
}

size_t operand_size(int kind, const Form& f) {
  return kind == 0 ? 1 : kind == 1 ? f.outer : kind == 2 ? f.inner : size_t{f.outer} * f.inner;
}

TEST_CASE("simd Add, Mul, Div: the reference's bits forward and JVP, every variant and split") {
  std::mt19937 rng(71);
  const Form forms[] = {{1, 315, 3, 3},  {5, 63, 3, 1},   {5, 63, 1, 3},   {35, 9, 3, 1},
                        {1, 1100, 3, 0}, {1, 1100, 0, 3}, {7, 1037, 3, 1}, {35, 9, 3, 2},
                        {1, 1, 3, 3},    {3, 17, 1, 0},   {16, 49, 3, 3}};
  const simd::BinaryOp ops[] = {simd::BinaryOp::kAdd, simd::BinaryOp::kMul, simd::BinaryOp::kDiv};
  for (const simd::Kernels* k : test_support::simd_variants())
    for (const Form& f : forms)
      for (simd::BinaryOp op : ops) {
        const int opi = static_cast<int>(op);
        INFO(k->isa << ": op " << opi << ", outer " << f.outer << ", inner " << f.inner
                    << ", forms " << f.a << " " << f.b);
        simd::Binary bin{op, f.outer, f.inner, 0, 0, 0, 0};
        strides_of(f.a, f.inner, &bin.a_outer, &bin.a_inner);
        strides_of(f.b, f.inner, &bin.b_outer, &bin.b_inner);
        const size_t na = operand_size(f.a, f), nb = operand_size(f.b, f);
        const size_t n = size_t{f.outer} * f.inner;
        const auto a = random_floats(na, rng, -2, 2), ta = random_floats(na, rng, -1, 1);
        auto b = random_floats(nb, rng, 0.5f, 3);
        const auto tb = random_floats(nb, rng, -1, 1);
        auto at = [&](const std::vector<float>& v, const simd::Binary& bb, bool first, size_t o,
                      size_t i) {
          return first ? v[o * bb.a_outer + i * bb.a_inner] : v[o * bb.b_outer + i * bb.b_inner];
        };
        std::vector<float> want(n), y(n, NAN), y2(n, NAN);
        for (size_t o = 0; o < f.outer; ++o)
          for (size_t i = 0; i < f.inner; ++i) {
            const float x = at(a, bin, true, o, i), z = at(b, bin, false, o, i);
            want[o * f.inner + i] = op == simd::BinaryOp::kAdd   ? x + z
                                    : op == simd::BinaryOp::kMul ? x * z
                                                                 : x / z;
          }
        const size_t units = simd::binary_units(bin);
        k->binary(bin, a.data(), b.data(), y.data(), 0, units);
        CHECK(std::memcmp(y.data(), want.data(), n * sizeof(float)) == 0);
        // Any split of the units: the same bits.
        for (size_t cut = 0; cut <= units; cut += 1 + units / 3) {
          k->binary(bin, a.data(), b.data(), y2.data(), cut, units);
          k->binary(bin, a.data(), b.data(), y2.data(), 0, cut);
          CHECK(std::memcmp(y2.data(), y.data(), n * sizeof(float)) == 0);
        }
        // JVP with ta alone, tb alone and both.
        for (int which = 1; which <= 3; ++which) {
          INFO("tangents " << which);
          const float* pta = which & 1 ? ta.data() : nullptr;
          const float* ptb = which & 2 ? tb.data() : nullptr;
          std::vector<float> t(n, NAN), t2(n, NAN);
          k->binary_jvp(bin, a.data(), b.data(), y.data(), pta, ptb, t.data(), 0, units);
          size_t bad = 0;
          bool exact = true;
          for (size_t o = 0; o < f.outer; ++o)
            for (size_t i = 0; i < f.inner; ++i) {
              const size_t e = o * f.inner + i;
              const float x = at(a, bin, true, o, i), z = at(b, bin, false, o, i);
              const float dx = pta ? at(ta, bin, true, o, i) : 0.0f;
              const float dz = ptb ? at(tb, bin, false, o, i) : 0.0f;
              float r;
              double mag;
              if (op == simd::BinaryOp::kAdd) {
                r = dx + dz;
                mag = 0;
              } else if (op == simd::BinaryOp::kMul) {
                float v = pta ? dx * z : 0.0f;
                const float p = x * dz;  // separately rounded, as the reference
                if (ptb) v = v + p;
                r = v;
                mag = std::fabs(double{dx} * z) + std::fabs(double{x} * dz);
                exact = which != 3;
              } else {
                const float p = y[e] * dz;
                r = (ptb ? dx - p : dx) / z;
                mag = (std::fabs(double{dx}) + std::fabs(double{y[e]} * dz)) / std::fabs(z);
                exact = which == 1;
              }
              if (exact ? std::memcmp(&t[e], &r, sizeof r) != 0
                        : !(std::fabs(double{t[e]} - r) <= 0x1p-22 * mag + 1e-38))
                ++bad;
            }
          CHECK(bad == 0);
          const size_t cut = units / 2;
          k->binary_jvp(bin, a.data(), b.data(), y.data(), pta, ptb, t2.data(), cut, units);
          k->binary_jvp(bin, a.data(), b.data(), y.data(), pta, ptb, t2.data(), 0, cut);
          CHECK(std::memcmp(t2.data(), t.data(), n * sizeof(float)) == 0);
        }
      }
}

// x [5, 7, 9]: a per-channel time embedding added ([5, 1, 1], no tangent), the square of that
// (both tangents), divided per row by 1 + the rows' mean squared ([5, 7, 1], a tangent), divided
// by t + 2 (one value per sample), a constant [9] added along the last axis, a [1, 315] constant
// row multiplied. Every node runs on the simd kernels but the Reduce and Reshapes.
std::vector<uint8_t> binary_model() {
  std::mt19937 rng(81);
  siflow::ModelBuilder b(5 * 7 * 9);
  b.set_x_shape({5, 7, 9});
  uint32_t e = b.mul_constant(b.t(), random_floats(5, rng, -1, 1));  // [B, 5]: a [B, 1] operand
  e = b.add_constant(e, random_floats(5, rng, -1, 1));               // equal widths, a constant
  const uint32_t e3 = b.reshape(e, {5, 1, 1});
  uint32_t h = b.add(b.x(), e3);                                  // per channel
  h = b.mul(h, h);                                                // both tangents
  const uint32_t m = b.reduce(b.x(), siflow::ReduceKind::kMean);  // [5, 7, 1]
  const uint32_t den = b.add_constant(b.mul(m, m), std::vector<float>(35, 1.0f));
  h = b.div(h, den);                            // per row of 9
  h = b.div(h, b.add_constant(b.t(), {2.0f}));  // one value per sample
  h = b.reshape(h, {35, 9});
  h = b.add_constant(h, random_floats(9, rng, -1, 1));  // a [9] constant along the last axis
  h = b.reshape(h, {5, 7, 9});
  b.set_output(b.mul_constant(h, random_floats(315, rng, 0.5f, 1.5f)));
  return b.finish();
}

TEST_CASE("binary model: simd velocities bit-equal to the reference backend's, and over threads") {
  // Nodes 0, 1, 3, 4, 6, 7, 8, 9, 10, 12, 14: the Add/Mul/Div nodes (2, 5, 11, 13 are the
  // Reshapes and the Reduce). A velocity bound of 0: every forward value has the reference's bits;
  // the log-likelihood (two-rounding tangents) within the helper's 1e-4.
  test_support::check_simd_against_reference(binary_model(), {0, 1, 3, 4, 6, 7, 8, 9, 10, 12, 14},
                                             0.0);
}

}  // namespace
