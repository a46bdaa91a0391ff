// SPDX-License-Identifier: Apache-2.0
// Softmax, the MatMul between activations and Resize on the simd kernels
// (kernels/simd/kernels_attention.inc, kernels_resize.inc) for every instruction-set variant this
// CPU runs: against the formulas in double on odd shapes (lengths not a multiple of the vector
// width, several heads, batch 1, 3, 17), within the bounds kernels.hpp states, nearest resize bit
// for bit; and through a plan (an attention block and both resizes): simd against the reference
// backend, bit-equal over thread counts.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/backend_comparison.hpp"
#include "support/parallel.hpp"
#include "support/random_vectors.hpp"
#include "support/simd_variants.hpp"

namespace {

namespace simd = siflow::simd;

using test_support::random_floats;

TEST_CASE("simd softmax and its JVP within the stated bounds, every variant") {
  std::mt19937 rng(31);
  for (const simd::Kernels* k : test_support::simd_variants())
    for (uint32_t extent : {1u, 5u, 16u, 49u, 100u})
      for (size_t count : {size_t{1}, size_t{3}, size_t{17}})
        for (float spread : {1.0f, 30.0f}) {
          const std::string what = std::string(k->isa) + ", extent " + std::to_string(extent) +
                                   ", groups " + std::to_string(count) + ", spread " +
                                   std::to_string(spread);
          INFO(what);
          const size_t n = count * extent;
          const auto x = random_floats(n, rng, -spread, spread);
          const auto t = random_floats(n, rng, -1.0f, 1.0f);
          std::vector<float> y(n, NAN), y2(n, NAN), ty(n, NAN);
          k->softmax(x.data(), count, extent, y.data());
          for (size_t g = count; g-- > 0;)
            k->softmax(x.data() + g * extent, 1, extent, y2.data() + g * extent);
          CHECK(std::memcmp(y.data(), y2.data(), n * sizeof(float)) == 0);
          k->softmax_jvp(y.data(), count, extent, t.data(), ty.data());
          size_t bad = 0;
          double worst = 0, worst_t = 0;
          for (size_t g = 0; g < count; ++g) {
            const float* xg = x.data() + g * extent;
            double m = xg[0], sum = 0, dot = 0;
            for (uint32_t i = 1; i < extent; ++i) m = std::max(m, double{xg[i]});
            for (uint32_t i = 0; i < extent; ++i) sum += std::exp(xg[i] - m);
            for (uint32_t i = 0; i < extent; ++i)
              dot += double{y[g * extent + i]} * t[g * extent + i];
            for (uint32_t i = 0; i < extent; ++i) {
              const size_t at = g * extent + i;
              const double want = std::exp(xg[i] - m) / sum;
              const double bound = 0x1p-21 * (std::fabs(xg[i] - m) + 8) * want + 1e-45;
              const double err = std::fabs(y[at] - want);
              if (!(err <= bound)) ++bad;
              worst = std::max(worst, err / want);
              // The tangent of the kernel's own y: out = y (t - y.t), rounding only.
              const double want_t = y[at] * (t[at] - dot);
              const double err_t = std::fabs(ty[at] - want_t);
              const double mag_t = std::fabs(y[at] * t[at]) + std::fabs(y[at] * dot);
              if (!(err_t <= 0x1p-22 * mag_t + 1e-45)) ++bad;
              if (mag_t > 0) worst_t = std::max(worst_t, err_t / mag_t);
            }
          }
          INFO("worst relative error " << worst << ", tangent " << worst_t);
          CHECK(bad == 0);
        }
}

TEST_CASE("simd softmax: a NaN or an infinity makes its group NaN, as the reference") {
  for (const simd::Kernels* k : test_support::simd_variants()) {
    INFO(k->isa);
    std::vector<float> x(3 * 19, 0.5f), y(x.size(), 0.0f);
    x[3] = NAN;                                          // group 0
    x[19 + 18] = INFINITY;                               // group 1
    for (int i = 0; i < 19; ++i) x[38 + i] = -INFINITY;  // group 2: all -inf
    k->softmax(x.data(), 3, 19, y.data());
    for (float v : y) CHECK(std::isnan(v));
    x[3] = 1.0f;
    x[19 + 18] = -INFINITY;  // one -inf in an otherwise finite group gives 0 there
    k->softmax(x.data(), 2, 19, y.data());
    CHECK(y[19 + 18] == 0.0f);
    CHECK(std::fabs(y[0] + 18 * y[1] - 1.0f + (y[3] - y[1])) < 1e-6f);
  }
}

struct MatCase {
  uint32_t g, m, k, n;
};

TEST_CASE(
    "simd MatMul (both layouts, with the JVP's second product) within the float summation "
    "bound, every variant") {
  std::mt19937 rng(41);
  const MatCase cases[] = {{1, 5, 7, 9},    {2, 49, 33, 49}, {3, 4, 64, 17}, {1, 1, 1, 1},
                           {1, 49, 49, 64}, {2, 7, 65, 17},  {1, 5, 70, 33}, {3, 9, 16, 16}};
  for (const simd::Kernels* k : test_support::simd_variants())
    for (const MatCase& c : cases)
      for (bool tb : {false, true})
        for (int pairs = 1; pairs <= 2; ++pairs) {
          const std::string what = std::string(k->isa) + ": g " + std::to_string(c.g) + " m " +
                                   std::to_string(c.m) + " k " + std::to_string(c.k) + " n " +
                                   std::to_string(c.n) + (tb ? ", b transposed" : "") +
                                   (pairs == 2 ? ", two products" : "");
          INFO(what);
          const size_t na = size_t{c.g} * c.m * c.k, nb = size_t{c.g} * c.k * c.n;
          const size_t ny = size_t{c.g} * c.m * c.n;
          const auto a1 = random_floats(na, rng, -1, 1), a2 = random_floats(na, rng, -1, 1);
          const auto b1 = random_floats(nb, rng, -1, 1), b2 = random_floats(nb, rng, -1, 1);
          const float scale = 0.37f;
          const simd::MatMul mm{c.g, c.m, c.k, c.n, tb, scale};
          std::vector<float> y(ny, NAN);
          k->matmul(mm, a1.data(), b1.data(), pairs == 2 ? a2.data() : nullptr,
                    pairs == 2 ? b2.data() : nullptr, y.data());
          auto b_at = [&](const std::vector<float>& b, uint32_t g, uint32_t kk, uint32_t j) {
            return tb ? b[(size_t{g} * c.n + j) * c.k + kk] : b[(size_t{g} * c.k + kk) * c.n + j];
          };
          size_t bad = 0;
          for (uint32_t g = 0; g < c.g; ++g)
            for (uint32_t i = 0; i < c.m; ++i)
              for (uint32_t j = 0; j < c.n; ++j) {
                double want = 0, mag = 0;
                for (uint32_t kk = 0; kk < c.k; ++kk) {
                  const size_t ai = (size_t{g} * c.m + i) * c.k + kk;
                  double p = double{a1[ai]} * b_at(b1, g, kk, j);
                  want += p;
                  mag += std::fabs(p);
                  if (pairs == 2) {
                    p = double{a2[ai]} * b_at(b2, g, kk, j);
                    want += p;
                    mag += std::fabs(p);
                  }
                }
                // Float summation of n terms in any order: gamma_n sum |terms|, then the scale
                // and the lanes' sum: (n + 2 + lanes) 2^-24.
                const double terms = static_cast<double>(c.k) * pairs + 2 + 16;
                const double err = std::fabs(y[(size_t{g} * c.m + i) * c.n + j] - scale * want);
                if (!(err <= terms * 0x1p-24 * scale * mag + 1e-30)) ++bad;
              }
          CHECK(bad == 0);
        }
}

TEST_CASE(
    "simd MatMul: each output has the same bits computed alone (the tiles, tails read whole or "
    "lane by lane), every variant") {
  // The kernel computes outputs in tiles (four columns of b transposed at a time, up to four
  // vectors of columns otherwise) and reads a tail of k or of the columns as one vector where it
  // lies inside the operand; computed alone (one row of a, one column or row of b), the same
  // output takes the other branches: the bits must not differ.
  std::mt19937 rng(43);
  const MatCase cases[] = {{1, 5, 7, 9},   {2, 49, 33, 49}, {3, 4, 64, 17}, {1, 7, 19, 37},
                           {2, 3, 17, 21}, {1, 49, 49, 64}, {1, 2, 3, 70},  {1, 6, 40, 5},
                           {1, 1, 1, 1},   {2, 9, 16, 16},  {2, 7, 65, 17}, {1, 5, 70, 33}};
  for (const simd::Kernels* k : test_support::simd_variants())
    for (const MatCase& c : cases)
      for (bool tb : {false, true})
        for (int pairs = 1; pairs <= 2; ++pairs) {
          INFO(std::string(k->isa)
               << ": g " << c.g << " m " << c.m << " k " << c.k << " n " << c.n
               << (tb ? ", b transposed" : "") << (pairs == 2 ? ", two products" : ""));
          const size_t na = size_t{c.g} * c.m * c.k, nb = size_t{c.g} * c.k * c.n;
          const auto a1 = random_floats(na, rng, -1, 1), a2 = random_floats(na, rng, -1, 1);
          const auto b1 = random_floats(nb, rng, -1, 1), b2 = random_floats(nb, rng, -1, 1);
          const simd::MatMul mm{c.g, c.m, c.k, c.n, tb, 0.37f};
          std::vector<float> y(size_t{c.g} * c.m * c.n, NAN);
          k->matmul(mm, a1.data(), b1.data(), pairs == 2 ? a2.data() : nullptr,
                    pairs == 2 ? b2.data() : nullptr, y.data());
          const simd::MatMul one{1, 1, c.k, 1, tb, 0.37f};
          size_t differ = 0;
          for (uint32_t g = 0; g < c.g; ++g)
            for (uint32_t i = 0; i < c.m; ++i)
              for (uint32_t j = 0; j < c.n; ++j) {
                // Exactly sized copies: row i of a, column (or row) j of b.
                std::vector<float> ra1(c.k), ra2(c.k), cb1(c.k), cb2(c.k);
                for (uint32_t kk = 0; kk < c.k; ++kk) {
                  const size_t ai = (size_t{g} * c.m + i) * c.k + kk;
                  const size_t bi =
                      tb ? (size_t{g} * c.n + j) * c.k + kk : (size_t{g} * c.k + kk) * c.n + j;
                  ra1[kk] = a1[ai], ra2[kk] = a2[ai], cb1[kk] = b1[bi], cb2[kk] = b2[bi];
                }
                float alone = NAN;
                k->matmul(one, ra1.data(), cb1.data(), pairs == 2 ? ra2.data() : nullptr,
                          pairs == 2 ? cb2.data() : nullptr, &alone);
                const float tiled = y[(size_t{g} * c.m + i) * c.n + j];
                if (std::memcmp(&alone, &tiled, sizeof alone) != 0) ++differ;
              }
          CHECK(differ == 0);
        }
}

// y = the resize of x by ops/resize.cc's taps, in double.
std::vector<double> resize_textbook(const simd::Resize& rs, const float* x, bool magnitude) {
  std::vector<double> y(size_t{rs.c} * rs.oh * rs.ow);
  auto tap = [&](uint32_t o, uint32_t in, uint32_t out, uint32_t* i0, uint32_t* i1, double* f) {
    if (!rs.bilinear) {
      *i0 = *i1 = static_cast<uint32_t>(uint64_t{o} * in / out);
      *f = 0;
      return;
    }
    double src = (o + 0.5) * (static_cast<double>(in) / out) - 0.5;
    if (src < 0) src = 0;
    uint32_t i = static_cast<uint32_t>(src);
    if (i > in - 1) i = in - 1;
    *i0 = i;
    *i1 = i + 1 < in ? i + 1 : i;
    *f = src - i;
  };
  for (uint32_t ch = 0; ch < rs.c; ++ch)
    for (uint32_t oy = 0; oy < rs.oh; ++oy)
      for (uint32_t ox = 0; ox < rs.ow; ++ox) {
        uint32_t y0, y1, x0, x1;
        double fy, fx;
        tap(oy, rs.h, rs.oh, &y0, &y1, &fy);
        tap(ox, rs.w, rs.ow, &x0, &x1, &fx);
        const float* xc = x + size_t{ch} * rs.h * rs.w;
        auto v = [&](uint32_t iy, uint32_t ix) {
          const double s = xc[size_t{iy} * rs.w + ix];
          return magnitude ? std::fabs(s) : s;
        };
        y[(size_t{ch} * rs.oh + oy) * rs.ow + ox] =
            (1 - fy) * ((1 - fx) * v(y0, x0) + fx * v(y0, x1)) +
            fy * ((1 - fx) * v(y1, x0) + fx * v(y1, x1));
      }
  return y;
}

TEST_CASE("simd Resize: nearest bit for bit, bilinear within 2^-20 of the taps' magnitude") {
  std::mt19937 rng(51);
  const simd::Resize shapes[] = {{3, 7, 7, 14, 14, false},
                                 {2, 5, 3, 11, 7, false},
                                 {4, 6, 9, 3, 4, false},
                                 {3, 3, 5, 6, 10, false},
                                 {2, 4, 9, 5, 18, false},
                                 {5, 4, 4, 8, 8, false},
                                 // Twice the width past whole vectors (17 and 33 columns, 16 on 16
                                 // lanes), and a per-channel value broadcast over odd planes.
                                 {3, 5, 17, 10, 34, false},
                                 {2, 3, 33, 7, 66, false},
                                 {2, 2, 16, 3, 32, false},
                                 {5, 1, 1, 7, 9, false},
                                 {3, 1, 1, 28, 28, false},
                                 {2, 3, 1, 5, 37, false},
                                 {3, 7, 7, 14, 14, true},
                                 {2, 5, 3, 11, 7, true},
                                 {1, 8, 6, 3, 5, true}};
  for (const simd::Kernels* k : test_support::simd_variants())
    for (const simd::Resize& rs : shapes) {
      const std::string what = std::string(k->isa) + (rs.bilinear ? ": bilinear " : ": nearest ") +
                               std::to_string(rs.h) + "x" + std::to_string(rs.w) + " to " +
                               std::to_string(rs.oh) + "x" + std::to_string(rs.ow);
      INFO(what);
      const auto x = random_floats(size_t{rs.c} * rs.h * rs.w, rng, -3, 3);
      std::vector<float> y(size_t{rs.c} * rs.oh * rs.ow, NAN);
      k->resize(rs, x.data(), y.data());
      const auto want = resize_textbook(rs, x.data(), false);
      const auto mag = resize_textbook(rs, x.data(), true);
      size_t bad = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        if (!rs.bilinear) {
          if (y[i] != static_cast<float>(want[i])) ++bad;
        } else if (!(std::fabs(y[i] - want[i]) <= 0x1p-20 * mag[i] + 1e-30)) {
          ++bad;
        }
      }
      CHECK(bad == 0);
    }
}

// d = 4 * 6 * 5: single-head attention over the 30 positions (Q = K = V = x read as [4, 30]:
// softmax(x^T x / 2) applied to x), then nearest up-sampling to 12 x 10, a stride-2 conv back to
// 6 x 5, bilinear up-sampling to 9 x 7 and a conv to 4 x 6 x 5 (pads 0, kernel 4 x 3).
std::vector<uint8_t> attention_model() {
  std::mt19937 rng(61);
  siflow::ModelBuilder b(4 * 6 * 5);
  b.set_x_shape({4, 6, 5});
  const uint32_t flat = b.reshape(b.x(), {4, 30});
  const uint32_t qt = b.transpose(flat, {4, 30}, {1, 0});  // [30, 4]
  const uint32_t scores = b.matmul(qt, qt, true, 0.5f);    // [30, 30]
  const uint32_t attn = b.softmax(scores);
  const uint32_t out = b.matmul(flat, attn, true);  // [4, 30] x [30, 30]^T
  uint32_t h = b.add(b.reshape(out, {4, 6, 5}), b.x());
  h = b.resize(h, siflow::ModelBuilder::Resize::kNearest, 12, 10);
  siflow::ImageWindow down;
  down.pads = {1, 1, 1, 1};
  down.strides = {2, 2};
  h = b.conv2d(h, 6, {3, 3}, random_floats(6 * 4 * 9, rng, -0.3f, 0.3f), {}, down);
  h = b.resize(h, siflow::ModelBuilder::Resize::kBilinear, 9, 7);
  b.set_output(b.conv2d(h, 4, {4, 3}, random_floats(4 * 6 * 12, rng, -0.3f, 0.3f), {}, {}));
  return b.finish();
}

TEST_CASE("attention model: simd backend against the reference backend, bit-equal over threads") {
  // Attention (sums of 4 and 30 terms, a float exp) and two convs, each a few float ulps. Nodes 2
  // to 4: the two MatMuls and the Softmax; 7 and 9: the two Resizes.
  test_support::check_simd_against_reference(attention_model(), {2, 3, 4, 7, 9}, 1e-5);
}

}  // namespace
