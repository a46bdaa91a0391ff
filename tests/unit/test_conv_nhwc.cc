// SPDX-License-Identifier: Apache-2.0
// The simd NHWC implicit-GEMM convolution (kernels_conv_nhwc.inc, ops/conv2d_nhwc.cc): the
// kernel against the textbook formula in double on odd shapes (odd H and W, channel counts that
// are no multiple of the vector width or of the 64-channel weight block, stride 2, dilation,
// asymmetric pads, one channel, kernels wider than the image; batch 1, 3 and 17) on every simd
// variant, each unit computed alone giving the same bits; and whole plans with every Conv2d on it
// (SIFLOW_CONV=nhwc) against the reference backend (velocity, exact and Hutchinson log p), on
// every forced variant, bit-equal over 1 and 2 threads, block sizes 1 and 5 and the all-NCHW
// layout.
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
    {"3x3, 3 -> 37, 9x7", 3, 9, 7, 37, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 stride 2, 17 -> 70, 11x13", 17, 11, 13, 70, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
    {"1x1, 33 -> 130, 5x5", 33, 5, 5, 130, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
    {"5x5 dilation 2, asymmetric pads, 6 -> 5, 13x11", 6, 13, 11, 5, 1, 5, 5, 1, 1, 2, 2, 3, 1, 2,
     4},
    {"3x3, one channel in and out, 7x9", 1, 7, 9, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"3x3, 64 -> 64, 7x7", 64, 7, 7, 64, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"3x3, 32 -> 32, 15x13", 32, 15, 13, 32, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 stride 2, 32 -> 48, 14x14", 32, 14, 14, 48, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
    {"3x1, stride 2 rows only, 12 -> 20", 12, 10, 9, 20, 1, 3, 1, 2, 1, 1, 1, 1, 0, 1, 0},
    {"3x5 kernel wider than the 3x2 image", 2, 3, 2, 9, 1, 3, 5, 1, 1, 1, 1, 1, 2, 1, 2},
};

// [c][p] (NCHW, one sample) to [p][c] (NHWC) and back.
std::vector<float> to_nhwc(const float* x, uint32_t c, size_t plane) {
  std::vector<float> y(c * plane);
  for (uint32_t i = 0; i < c; ++i)
    for (size_t p = 0; p < plane; ++p) y[p * c + i] = x[i * plane + p];
  return y;
}

}  // namespace

TEST_CASE("simd NHWC conv2d matches the textbook formula within float rounding, every variant") {
  const auto ks = test_support::simd_variants();
  REQUIRE(!ks.empty());
  std::mt19937 rng(15);
  for (const Case& c : kCases)
    for (size_t batch : {size_t{1}, size_t{3}, size_t{17}})
      for (bool with_bias : {true, false}) {
        INFO(c.what << ", batch " << batch << (with_bias ? "" : ", no bias"));
        REQUIRE(simd::conv_nhwc_applies(c.groups, c.cin, c.kh, c.kw));
        const uint32_t oh = outputs(c.h, c.pt, c.pb, c.kh, c.sh, c.dh);
        const uint32_t ow = outputs(c.w, c.pl, c.pr, c.kw, c.sw, c.dw);
        const size_t iplane = size_t{c.h} * c.w, oplane = size_t{oh} * ow;
        const size_t in = c.cin * iplane, out = c.cout * oplane;
        const uint32_t taps = c.kh * c.kw, terms = c.cin * taps;
        const auto w = random_floats(size_t{c.cout} * terms, rng, 0.5f);
        const auto b = random_floats(c.cout, rng, 1.0f);
        const auto x = random_floats(batch * in, rng, 2.0f);
        std::vector<float> packed(simd::conv_nhwc_packed_floats(c.cin, taps, c.cout), NAN);
        simd::pack_conv_nhwc(w.data(), c.cin, taps, c.cout, packed.data());
        const simd::ConvNhwc conv{packed.data(),
                                  with_bias ? b.data() : nullptr,
                                  c.cin,
                                  c.h,
                                  c.w,
                                  c.cout,
                                  oh,
                                  ow,
                                  c.kh,
                                  c.kw,
                                  c.sh,
                                  c.sw,
                                  c.dh,
                                  c.dw,
                                  c.pt,
                                  c.pl};
        std::vector<float> xn(batch * in);
        std::vector<double> ref(batch * out), mag(batch * out);
        for (size_t r = 0; r < batch; ++r) {
          const auto s = to_nhwc(x.data() + r * in, c.cin, iplane);
          std::copy(s.begin(), s.end(), xn.begin() + r * in);
          const float* bp = with_bias ? b.data() : nullptr;
          const auto f = textbook(c, oh, ow, x.data() + r * in, w, bp, false);
          const auto m = textbook(c, oh, ow, x.data() + r * in, w, bp, true);
          std::copy(f.begin(), f.end(), ref.begin() + r * out);
          std::copy(m.begin(), m.end(), mag.begin() + r * out);
        }
        for (const simd::Kernels* k : ks) {
          INFO(k->isa);
          const size_t units = k->conv_nhwc_units(conv, batch);
          std::vector<float> y(batch * out, NAN), y2(batch * out, NAN);
          k->conv2d_nhwc(conv, xn.data(), in, y.data(), out, 0, units);
          // One unit at a time, last first: the same bits (thread splits cannot change them).
          for (size_t u = units; u-- > 0;)
            k->conv2d_nhwc(conv, xn.data(), in, y2.data(), out, u, u + 1);
          CHECK(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0);
          // Recursive float summation of n terms (FMA or a multiply and an add, any order):
          // error at most gamma_(n + 1) sum |terms| < (n + 2) 2^-24 sum |terms|; + 1 for the bias.
          size_t bad = 0;
          double worst = 0;
          for (size_t r = 0; r < batch; ++r)
            for (uint32_t o = 0; o < c.cout; ++o)
              for (size_t p = 0; p < oplane; ++p) {
                const size_t at = r * out + o * oplane + p;
                const double err = std::fabs(y[r * out + p * c.cout + o] - ref[at]);
                if (!(err <= (terms + 3) * 0x1p-24 * mag[at] + 1e-30)) ++bad;
                if (mag[at] > 0) worst = std::max(worst, err / mag[at]);
              }
          INFO("worst |error| / sum |terms| = " << worst);
          CHECK(bad == 0);
        }
      }
}

namespace {

// The chain of test_support::conv_chain_model, its middle convolution 1x1.
std::vector<uint8_t> net() { return test_support::conv_chain_model(31, 1); }

}  // namespace

TEST_CASE("simd NHWC conv2d in a plan: every forced variant, threads, blocks and layouts") {
  if (test_support::simd_variants().empty()) {
    MESSAGE("SKIPPED: this build has no simd kernels");
    return;
  }
  EnvGuard isa("SIFLOW_SIMD_ISA");
  const std::vector<uint8_t> bytes = net();
  const std::unique_ptr<siflow::Model> m = load_model(bytes);
  const NetRun ref = run_net(*m, siflow::Backend::kReference, 1, 0, false, false);
  // Without the variable the simd backend keeps its NCHW convolutions.
  CHECK(count_with(run_net(*m, siflow::Backend::kSimd, 1, 0, false, false), "nhwc") == 0);
  if (!siflow::RowPool::available())
    MESSAGE("SKIPPED: the two-thread comparisons (this build has no thread pool)");
  for (const simd::Kernels* k : test_support::simd_variants()) {
    CAPTURE(std::string(k->isa));
    setenv("SIFLOW_SIMD_ISA", k->isa, 1);
    const NetRun one = run_net(*m, siflow::Backend::kSimd, 1, 0, true, false);
    INFO("nodes: " << kernel_list(one));
    // Five convolutions on it, NHWC between them (the SiLUs run NHWC on simd); x, the
    // transposed conv's input and the skip conv's output (added to the transposed conv's) NCHW.
    CHECK(count_with(one, " nhwc ") == 5);
    CHECK(count_with(one, "nhwc nchw>nhwc") == 1);
    CHECK(count_with(one, "nhwc nhwc>nhwc") == 2);
    CHECK(count_with(one, "nhwc nhwc>nchw") == 2);
    check_close(one, ref, 1e-5);
    // The layouts move data only: the all-NCHW plan (each conv converting both sides) agrees.
    const NetRun nchw = run_net(*m, siflow::Backend::kSimd, 1, 0, true, true);
    CHECK(count_with(nchw, "nhwc nchw>nchw") == 5);
    CHECK(same_bits(one, nchw));
    check_blocks_and_threads(*m, one, "nhwc");
  }
}
