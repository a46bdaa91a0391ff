// SPDX-License-Identifier: Apache-2.0
// The simd Winograd F(2x2, 3x3) convolution (kernels_conv_wino.inc, ops/conv2d_nhwc.cc): the
// kernel against the textbook formula in double on odd shapes (1x1, 2x2, 3x3, 5x7 and other odd
// images, partial tiles, pads 0 and 1 and asymmetric ones, channel counts of 1, 3 and others that
// are no multiple of the vector width or of the 64-channel weight block; batch 1, 3 and 17; with
// and without the bias) on every simd variant, each unit computed alone giving the same bits;
// the error bound is that of the Winograd products' magnitudes, which the test computes in double
// too; and whole plans with every 3x3 stride-1 Conv2d on it (SIFLOW_CONV=wino) against the
// reference backend (velocity, exact and Hutchinson log p, so the tangent passes too), on every
// forced variant, bit-equal over 1 and 2 threads, block sizes 1 and 5 and the all-NCHW layout.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/conv_cases.hpp"
#include "support/conv_chain_model.hpp"
#include "support/net_run.hpp"
#include "support/parallel.hpp"
#include "support/simd_variants.hpp"

namespace {

namespace simd = siflow::simd;
using test_support::Case;
using test_support::check_blocks_and_threads;
using test_support::check_close;
using test_support::count_with;
using test_support::EnvGuard;
using test_support::kernel_list;
using test_support::load_model;
using test_support::NetRun;
using test_support::outputs;
using test_support::random_floats;
using test_support::run_net;
using test_support::same_bits;
using test_support::textbook;

// {what, cin, h, w, cout, groups, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr}
const Case kCases[] = {
    {"1x1 image, pad 1, 3 -> 5", 3, 1, 1, 5, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"2x2 image, pad 1, 1 -> 1", 1, 2, 2, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 image, pad 0, 17 -> 3", 17, 3, 3, 3, 1, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0},
    {"5x7 image, pad 0, 3 -> 37", 3, 5, 7, 37, 1, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0},
    {"5x7 image, pad 1, 20 -> 70", 20, 5, 7, 70, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"9x7, asymmetric pads, 6 -> 9", 6, 9, 7, 9, 1, 3, 3, 1, 1, 1, 1, 2, 0, 1, 2},
    {"15x13, 32 -> 32", 32, 15, 13, 32, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"7x7, 64 -> 64", 64, 7, 7, 64, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"11x11, 70 -> 130", 70, 11, 11, 130, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
};

std::vector<float> to_nhwc(const float* x, uint32_t c, size_t plane) {
  std::vector<float> y(c * plane);
  for (uint32_t i = 0; i < c; ++i)
    for (size_t p = 0; p < plane; ++p) y[p * c + i] = x[i * plane + p];
  return y;
}

// The magnitude the Winograd computation's rounding errors scale with, per output [o][oy][ox] of
// one sample: |b| + sum over the tile's 16 elements e of |A^T|_e sum_i |V_e,i| |U_e,o,i|, with
// |V| = |B^T| |d| |B| and |U| = |G| |g| |G^T| (double).
std::vector<double> wino_magnitude(const Case& c, uint32_t oh, uint32_t ow, const float* x,
                                   const std::vector<float>& w, const float* b) {
  static const double kBt[4][4] = {{1, 0, 1, 0}, {0, 1, 1, 0}, {0, 1, 1, 0}, {0, 1, 0, 1}};
  static const double kG[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5}, {0, 0, 1}};
  static const double kAt[2][4] = {{1, 1, 1, 0}, {0, 1, 1, 1}};
  std::vector<double> u(size_t{c.cout} * c.cin * 16);  // |U|
  for (size_t oi = 0; oi < size_t{c.cout} * c.cin; ++oi)
    for (int r = 0; r < 4; ++r)
      for (int s = 0; s < 4; ++s) {
        double acc = 0;
        for (int p = 0; p < 3; ++p)
          for (int q = 0; q < 3; ++q) acc += kG[r][p] * std::fabs(w[oi * 9 + p * 3 + q]) * kG[s][q];
        u[oi * 16 + r * 4 + s] = acc;
      }
  std::vector<double> mag(size_t{c.cout} * oh * ow);
  std::vector<double> v(size_t{c.cin} * 16);
  for (uint32_t ty = 0; ty < (oh + 1) / 2; ++ty)
    for (uint32_t tx = 0; tx < (ow + 1) / 2; ++tx) {
      for (uint32_t i = 0; i < c.cin; ++i)
        for (int r = 0; r < 4; ++r)
          for (int s = 0; s < 4; ++s) {
            double acc = 0;
            for (int p = 0; p < 4; ++p)
              for (int q = 0; q < 4; ++q) {
                const int iy = static_cast<int>(2 * ty) + p - static_cast<int>(c.pt);
                const int ix = static_cast<int>(2 * tx) + q - static_cast<int>(c.pl);
                if (iy < 0 || ix < 0 || iy >= static_cast<int>(c.h) || ix >= static_cast<int>(c.w))
                  continue;
                acc += kBt[r][p] * std::fabs(x[(size_t{i} * c.h + iy) * c.w + ix]) * kBt[s][q];
              }
            v[i * 16 + r * 4 + s] = acc;
          }
      for (uint32_t o = 0; o < c.cout; ++o)
        for (uint32_t a = 0; a < 2 && 2 * ty + a < oh; ++a)
          for (uint32_t d = 0; d < 2 && 2 * tx + d < ow; ++d) {
            double acc = b ? std::fabs(b[o]) : 0.0;
            for (int e = 0; e < 16; ++e) {
              double m = 0;
              for (uint32_t i = 0; i < c.cin; ++i)
                m += v[i * 16 + e] * u[(size_t{o} * c.cin + i) * 16 + e];
              acc += kAt[a][e / 4] * kAt[d][e % 4] * m;
            }
            mag[(size_t{o} * oh + 2 * ty + a) * ow + 2 * tx + d] = acc;
          }
    }
  return mag;
}

}  // namespace

TEST_CASE("simd Winograd conv2d matches the textbook formula within its rounding, every variant") {
  const auto ks = test_support::simd_variants();
  if (ks.empty()) {
    MESSAGE("SKIPPED: this build has no simd kernels");
    return;
  }
  std::mt19937 rng(16);
  for (const Case& c : kCases)
    for (size_t batch : {size_t{1}, size_t{3}, size_t{17}})
      for (bool with_bias : {true, false}) {
        INFO(c.what << ", batch " << batch << (with_bias ? "" : ", no bias"));
        REQUIRE(simd::conv_wino_applies(c.groups, c.cin, c.kh, c.kw, c.sh, c.sw, c.dh, c.dw));
        const uint32_t oh = outputs(c.h, c.pt, c.pb, c.kh, c.sh, c.dh);
        const uint32_t ow = outputs(c.w, c.pl, c.pr, c.kw, c.sw, c.dw);
        const size_t iplane = size_t{c.h} * c.w, oplane = size_t{oh} * ow;
        const size_t in = c.cin * iplane, out = c.cout * oplane;
        const auto w = random_floats(size_t{c.cout} * c.cin * 9, rng, 0.5f);
        const auto b = random_floats(c.cout, rng, 1.0f);
        const auto x = random_floats(batch * in, rng, 2.0f);
        std::vector<float> packed(simd::conv_wino_packed_floats(c.cin, c.cout), NAN);
        simd::pack_conv_wino(w.data(), c.cin, c.cout, packed.data());
        const simd::ConvWino conv{
            packed.data(), with_bias ? b.data() : nullptr, c.cin, c.h, c.w, c.cout, oh, ow, c.pt,
            c.pl};
        std::vector<float> xn(batch * in);
        std::vector<double> ref(batch * out), mag(batch * out), direct(batch * out);
        for (size_t r = 0; r < batch; ++r) {
          const auto s = to_nhwc(x.data() + r * in, c.cin, iplane);
          std::copy(s.begin(), s.end(), xn.begin() + r * in);
          const float* bp = with_bias ? b.data() : nullptr;
          const auto f = textbook(c, oh, ow, x.data() + r * in, w, bp, false);
          const auto d = textbook(c, oh, ow, x.data() + r * in, w, bp, true);
          const auto m = wino_magnitude(c, oh, ow, x.data() + r * in, w, bp);
          std::copy(f.begin(), f.end(), ref.begin() + r * out);
          std::copy(d.begin(), d.end(), direct.begin() + r * out);
          std::copy(m.begin(), m.end(), mag.begin() + r * out);
        }
        // A workspace of NaNs: its old contents must not reach an output.
        std::vector<float> work(simd::conv_wino_work_floats(c.cin), NAN);
        for (const simd::Kernels* k : ks) {
          INFO(k->isa);
          const size_t units = simd::conv_wino_units(conv, batch);
          std::vector<float> y(batch * out, NAN), y2(batch * out, NAN);
          k->conv2d_wino(conv, xn.data(), in, y.data(), out, work.data(), 0, units);
          // One unit at a time, last first: the same bits (thread splits cannot change them).
          for (size_t u = units; u-- > 0;)
            k->conv2d_wino(conv, xn.data(), in, y2.data(), out, work.data(), u, u + 1);
          CHECK(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0);
          // Rounding: U and the two levels of the input transform (3), the cin products' sum
          // (cin + 1), the output transform's two levels of three terms and the bias (5): within
          // (cin + 10) 2^-24 of the Winograd magnitude.
          size_t bad = 0;
          double worst = 0, worst_direct = 0;
          for (size_t r = 0; r < batch; ++r)
            for (uint32_t o = 0; o < c.cout; ++o)
              for (size_t p = 0; p < oplane; ++p) {
                const size_t at = r * out + o * oplane + p;
                const double err = std::fabs(y[r * out + p * c.cout + o] - ref[at]);
                if (!(err <= (c.cin + 10) * 0x1p-24 * mag[at] + 1e-30)) ++bad;
                if (mag[at] > 0) worst = std::max(worst, err / mag[at]);
                if (direct[at] > 0) worst_direct = std::max(worst_direct, err / direct[at]);
              }
          INFO("worst |error| / Winograd magnitude = " << worst << ", / direct sum |terms| = "
                                                       << worst_direct);
          CHECK(bad == 0);
          // Against the direct formula's magnitude the error stays a few float roundings.
          CHECK(worst_direct <= 64 * 0x1p-24 * (c.cin + 2));
        }
      }
}

namespace {

// The chain of test_support::conv_chain_model, its middle convolution 3x3 (pad 1).
std::vector<uint8_t> net() { return test_support::conv_chain_model(37, 3); }

}  // namespace

TEST_CASE("simd Winograd conv2d in a plan: every forced variant, threads, blocks and layouts") {
  if (test_support::simd_variants().empty()) {
    MESSAGE("SKIPPED: this build has no simd kernels");
    return;
  }
  EnvGuard isa("SIFLOW_SIMD_ISA");
  const std::vector<uint8_t> bytes = net();
  const std::unique_ptr<siflow::Model> m = load_model(bytes);
  const NetRun ref = run_net(*m, siflow::Backend::kReference, 1, 0, false, false);
  // Without the variable the simd backend keeps its NCHW convolutions.
  CHECK(count_with(run_net(*m, siflow::Backend::kSimd, 1, 0, false, false), "wino") == 0);
  if (!siflow::RowPool::available())
    MESSAGE("SKIPPED: the two-thread comparisons (this build has no thread pool)");
  for (const simd::Kernels* k : test_support::simd_variants()) {
    CAPTURE(std::string(k->isa));
    setenv("SIFLOW_SIMD_ISA", k->isa, 1);
    const NetRun one = run_net(*m, siflow::Backend::kSimd, 1, 0, true, false, "wino");
    INFO("nodes: " << kernel_list(one));
    // Four 3x3 stride-1 convolutions on it; the stride-2 one stays on the NCHW kernel.
    CHECK(count_with(one, " wino ") == 4);
    CHECK(count_with(one, " nchw") >= 1);
    check_close(one, ref, 1e-5);
    // The layouts move data only: the all-NCHW plan (each conv converting both sides) agrees.
    const NetRun nchw = run_net(*m, siflow::Backend::kSimd, 1, 0, true, true, "wino");
    CHECK(count_with(nchw, "wino nchw>nchw") == 4);
    CHECK(same_bits(one, nchw));
    check_blocks_and_threads(*m, one, "wino");
  }
}
