// SPDX-License-Identifier: Apache-2.0
// Conv2d on the simd kernels (kernels/simd/kernels_conv.inc) for every instruction-set variant
// this CPU runs: against the textbook formula in double on odd shapes (odd H and W, channels not a
// multiple of the vector width or of the tile height, stride 2, pads, dilation, groups,
// depthwise, 1x1, K split into chunks, batch 1, 3, 17), bit-identical for any split into units; and
// through a plan: the simd backend against the reference backend (velocity, exact log-likelihood),
// thread counts bit-equal.
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
#include "support/conv_cases.hpp"
#include "support/parallel.hpp"
#include "support/simd_variants.hpp"

namespace {

namespace simd = siflow::simd;

using test_support::Case;
using test_support::outputs;
using test_support::random_floats;
using test_support::textbook;

const Case kCases[] = {
    {"3x3 same, 19 outputs", 5, 13, 11, 19, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"stride 2, asymmetric pads", 3, 9, 7, 10, 1, 3, 3, 2, 2, 1, 1, 0, 1, 2, 0},
    {"dilation 2, 3x2 kernel", 2, 11, 9, 9, 1, 3, 2, 1, 1, 2, 2, 2, 1, 2, 1},
    {"groups 3", 6, 7, 5, 9, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"depthwise, stride 2", 5, 9, 9, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
    {"1x1", 33, 5, 7, 17, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
    {"K = 360: two chunks", 40, 6, 6, 24, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"K = 630: three chunks, stride 2 rows only", 70, 7, 5, 11, 1, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1},
    {"kernel wider than the image", 1, 2, 3, 2, 1, 3, 5, 1, 1, 1, 1, 1, 2, 1, 2},
    {"32 channels, 15x13", 32, 15, 13, 32, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    // Rows of 12 pixels or more take the direct path with AVX-512 and AVX2.
    {"direct: 3x3 same, 29 wide", 7, 9, 29, 11, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"direct: stride 2 rows, dilation 2, asymmetric pads", 3, 11, 21, 10, 1, 3, 3, 2, 1, 2, 2, 2, 0,
     1, 3},
    {"direct: groups 2, 1x5 kernel", 4, 5, 17, 6, 2, 1, 5, 1, 1, 1, 1, 0, 2, 0, 2},
    // Output channels left over after the full MR-row tiles (MR 8, 6, 2): 23 leaves 7 (AVX-512)
    // and 5 (AVX2), 44 leaves 4 and 2, 13 leaves 5 and 1; on the packed and the direct path.
    {"packed: 23 outputs, 7x7", 9, 7, 7, 23, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"packed: 44 outputs, 1x1 on 5x9", 12, 5, 9, 44, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
    {"direct: 23 outputs, 14x14", 6, 14, 14, 23, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"direct: 13 outputs, groups 1, 15x31", 3, 15, 31, 13, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"direct: 44 outputs in 2 groups, stride 2 rows", 8, 9, 13, 44, 2, 3, 3, 2, 1, 1, 1, 1, 1, 1,
     1},
    // Depthwise (groups = cin = cout) with stride 1 along rows: its own kernel with AVX-512 and
    // AVX2, rows in blocks of 4 (odd heights leave partial blocks).
    {"depthwise 3x3, 13x11", 5, 13, 11, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"depthwise 3x3, 64 channels, 14x14", 64, 14, 14, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"depthwise 5x5, 29 wide, dilation 2, asymmetric pads", 3, 7, 29, 3, 3, 5, 5, 1, 1, 2, 2, 3, 1,
     2, 4},
    {"depthwise, stride 2 rows only, 3x1 kernel", 7, 10, 9, 7, 7, 3, 1, 2, 1, 1, 1, 1, 0, 1, 0},
    {"depthwise 1x1, 1x3 image", 4, 1, 3, 4, 4, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
    {"depthwise, kernel wider than the image", 2, 3, 2, 2, 2, 3, 5, 1, 1, 1, 1, 1, 2, 1, 2},
    {"depthwise 3x9 kernel (wider than the direct path's 8)", 3, 6, 12, 3, 3, 3, 9, 1, 1, 1, 1, 1,
     4, 1, 4},
};

TEST_CASE("simd conv2d matches the textbook formula within float rounding, every variant") {
  const auto ks = test_support::simd_variants();
  REQUIRE(!ks.empty());
  std::mt19937 rng(5);
  for (const simd::Kernels* k : ks)
    for (const Case& c : kCases)
      for (size_t batch : {size_t{1}, size_t{3}, size_t{17}})
        for (bool with_bias : {true, false}) {
          INFO(k->isa << ": " << c.what << ", batch " << batch << (with_bias ? "" : ", no bias"));
          const uint32_t oh = outputs(c.h, c.pt, c.pb, c.kh, c.sh, c.dh);
          const uint32_t ow = outputs(c.w, c.pl, c.pr, c.kw, c.sw, c.dw);
          const size_t in = size_t{c.cin} * c.h * c.w, out = size_t{c.cout} * oh * ow;
          const uint32_t terms = c.cin / c.groups * c.kh * c.kw;
          const auto w = random_floats(size_t{c.cout} * terms, rng, 0.5f);
          const auto b = random_floats(c.cout, rng, 1.0f);
          const auto x = random_floats(batch * in, rng, 2.0f);
          // The kernels take the weights transposed per group (simd::Conv).
          std::vector<float> wt(w.size());
          simd::conv_weights_transposed(w.data(), c.cout, c.groups, terms, wt.data());
          const simd::Conv conv{wt.data(), with_bias ? b.data() : nullptr,
                                c.cin,     c.h,
                                c.w,       c.cout,
                                oh,        ow,
                                c.groups,  c.kh,
                                c.kw,      c.sh,
                                c.sw,      c.dh,
                                c.dw,      c.pt,
                                c.pl};
          const size_t units = k->conv_units(conv, batch);
          std::vector<float> y(batch * out, NAN), y2(batch * out, NAN);
          k->conv2d(conv, x.data(), in, y.data(), out, 0, units);
          // One unit at a time, last first: the same bits (thread splits cannot change them).
          for (size_t u = units; u-- > 0;) k->conv2d(conv, x.data(), in, y2.data(), out, u, u + 1);
          CHECK(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0);
          // Recursive float summation of n terms (FMA or not, any order): error at most
          // gamma_n sum |terms| with gamma_n < (n + 1) 2^-24 for these n; + 1 for the bias.
          size_t bad = 0;
          double worst = 0;
          for (size_t r = 0; r < batch; ++r) {
            const float* bp = with_bias ? b.data() : nullptr;
            const auto ref = textbook(c, oh, ow, x.data() + r * in, w, bp, false);
            const auto mag = textbook(c, oh, ow, x.data() + r * in, w, bp, true);
            for (size_t i = 0; i < out; ++i) {
              const double err = std::fabs(y[r * out + i] - ref[i]);
              const double bound = (terms + 2) * 0x1p-24 * mag[i] + 1e-30;
              if (!(err <= bound)) ++bad;
              if (mag[i] > 0) worst = std::max(worst, err / mag[i]);
            }
          }
          INFO("worst |error| / sum |terms| = " << worst);
          CHECK(bad == 0);
        }
}

// A model of dim 3 * 9 * 7 whose velocity is conv(silu(conv(silu(conv(x))))) with channel counts
// 3 -> 12 -> 12 (stride 1, dilation 1) -> 3, so every conv of it runs on the simd kernels.
std::vector<uint8_t> conv_model() {
  std::mt19937 rng(9);
  siflow::ModelBuilder b(3 * 9 * 7);
  b.set_x_shape({3, 9, 7});
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(b.x(), 12, {3, 3}, random_floats(12 * 3 * 9, rng, 0.3f),
                        random_floats(12, rng, 0.1f), same);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  siflow::ImageWindow grouped = same;
  grouped.groups = 2;
  h = b.conv2d(h, 12, {3, 3}, random_floats(12 * 6 * 9, rng, 0.2f), random_floats(12, rng, 0.1f),
               grouped);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  b.set_output(b.conv2d(h, 3, {3, 3}, random_floats(3 * 12 * 9, rng, 0.2f), {}, same));
  return b.finish();
}

TEST_CASE("conv model: simd backend against the reference backend, bit-equal over threads") {
  // Three layers of K <= 108 terms each in another order: a few float ulps of the scale.
  test_support::check_simd_against_reference(conv_model(), {0}, 1e-5);
}

}  // namespace
