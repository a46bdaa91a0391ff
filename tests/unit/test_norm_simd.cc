// SPDX-License-Identifier: Apache-2.0
// GroupNorm and LayerNorm on the simd kernels (kernels/simd/kernels_norm.inc) for every
// instruction-set variant this CPU runs: forward and JVP against the formula in double on odd
// shapes (channels not a multiple of the vector width, one or several channels per group, odd
// H x W, batch 1, 3, 17), within the documented bound, the same bits for any split of rows; and
// through a plan: simd against the reference backend, bit-equal over thread counts.
#include <doctest/doctest.h>

#include <algorithm>
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

struct Shape {
  const char* what;
  uint32_t channels, plane, groups;
};

const Shape kShapes[] = {
    {"GroupNorm 12 channels 7x9, 4 groups", 12, 63, 4},
    {"GroupNorm 5 channels 3x3, 5 groups (one channel each)", 5, 9, 5},
    {"GroupNorm 6 channels 5x1, 3 groups", 6, 5, 3},
    {"GroupNorm 33 channels 1x1, 11 groups", 33, 1, 11},
    {"GroupNorm 32 channels 7x7, 8 groups", 32, 49, 8},
    {"GroupNorm 3 channels 1x17, 1 group", 3, 17, 1},
    {"LayerNorm width 1", 1, 1, 1},
    {"LayerNorm width 7", 7, 1, 1},
    {"LayerNorm width 100", 100, 1, 1},
};

// The statistics of one block, in double.
void moments(const float* x, uint32_t n, double eps, double* mean, double* inv) {
  double m = 0, v = 0;
  for (uint32_t k = 0; k < n; ++k) m += x[k];
  m /= n;
  for (uint32_t k = 0; k < n; ++k) v += (x[k] - m) * (x[k] - m);
  *mean = m;
  *inv = 1.0 / std::sqrt(v / n + eps);
}

TEST_CASE("simd GroupNorm on NHWC rows within the documented bound, every variant") {
  const auto ks = test_support::simd_variants();
  REQUIRE(!ks.empty());
  std::mt19937 rng(12);
  const float eps = 1e-5f;
  for (const simd::Kernels* k : ks)
    for (const Shape& s : kShapes)
      for (size_t batch : {size_t{1}, size_t{3}, size_t{17}})
        for (int affine = 0; affine < 2; ++affine) {
          INFO(k->isa << ": " << s.what << ", batch " << batch << (affine ? "" : ", no gamma"));
          const uint32_t c_count = s.channels, plane = s.plane, width = c_count * plane;
          const uint32_t per = c_count / s.groups;
          const size_t directions = 3;
          // NCHW values; the kernel gets them NHWC (x_nhwc[r][p][c] = x[r][c][p]).
          const auto x = random_floats(batch * width, rng, 3.0f, 7.0f);
          const auto t = random_floats(batch * directions * width, rng, -1.0f, 1.0f);
          const auto gamma = random_floats(c_count, rng, -1.5f, 1.5f);
          const auto beta = random_floats(c_count, rng, -1.0f, 1.0f);
          auto to_nhwc = [&](const std::vector<float>& v) {
            std::vector<float> out(v.size());
            for (size_t r = 0; r < v.size() / width; ++r)
              for (uint32_t c = 0; c < c_count; ++c)
                for (uint32_t p = 0; p < plane; ++p)
                  out[r * width + size_t{p} * c_count + c] = v[r * width + size_t{c} * plane + p];
            return out;
          };
          const auto xn = to_nhwc(x), tn = to_nhwc(t);
          const simd::Norm norm{affine ? gamma.data() : nullptr,
                                affine ? beta.data() : nullptr,
                                width,
                                s.groups,
                                plane,
                                eps,
                                0,
                                0};
          std::vector<float> y(batch * width, NAN), y2(y), ty(t.size(), NAN), ty2(ty);
          k->norm_forward_nhwc(norm, xn.data(), 0, batch, y.data());
          k->norm_jvp_nhwc(norm, xn.data(), 0, batch, directions, tn.data(), ty.data());
          for (size_t r = batch; r-- > 0;) {  // row by row: the same bits
            k->norm_forward_nhwc(norm, xn.data(), r, r + 1, y2.data());
            k->norm_jvp_nhwc(norm, xn.data(), r, r + 1, directions, tn.data(), ty2.data());
          }
          CHECK(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0);
          CHECK(std::memcmp(ty.data(), ty2.data(), ty.size() * sizeof(float)) == 0);
          size_t bad = 0;
          double worst = 0;
          auto check = [&](double got, double want, double magnitude) {
            const double err = std::fabs(got - want);
            if (!(err <= 0x1p-21 * magnitude)) ++bad;
            worst = std::max(worst, err / magnitude);
          };
          for (size_t r = 0; r < batch; ++r)
            for (uint32_t g = 0; g < s.groups; ++g) {
              // The group in NCHW is one block: channels g * per .. + per, every pixel.
              const size_t at = r * width + size_t{g} * per * plane, block = size_t{per} * plane;
              double mean, inv;
              moments(x.data() + at, static_cast<uint32_t>(block), eps, &mean, &inv);
              for (size_t i = 0; i < block; ++i) {
                const uint32_t c = g * per + static_cast<uint32_t>(i / plane);
                const size_t nhwc = r * width + (i % plane) * c_count + c;
                const double gm = affine ? gamma[c] : 1.0, bt = affine ? beta[c] : 0.0;
                const double sc = gm * inv, xv = x[at + i];
                const double want = (xv - mean) * sc + bt;
                check(y[nhwc], want,
                      std::fabs(xv * sc) + std::fabs(mean * sc) + std::fabs(bt) + std::fabs(want));
              }
              for (size_t p = 0; p < directions; ++p) {
                const size_t tat = (r * directions + p) * width + size_t{g} * per * plane;
                double mt = 0, mxt = 0;
                for (size_t i = 0; i < block; ++i) {
                  mt += t[tat + i];
                  mxt += (x[at + i] - mean) * t[tat + i];
                }
                mt /= block;
                mxt /= block;
                for (size_t i = 0; i < block; ++i) {
                  const uint32_t c = g * per + static_cast<uint32_t>(i / plane);
                  const size_t nhwc = (r * directions + p) * width + (i % plane) * c_count + c;
                  const double sc = (affine ? gamma[c] : 1.0) * inv;
                  const double xv = x[at + i], tv = t[tat + i];
                  const double want = sc * (tv - mt - (xv - mean) * inv * inv * mxt);
                  check(ty[nhwc], want,
                        std::fabs(tv * sc) + std::fabs(xv * sc * inv * inv * mxt) +
                            std::fabs(sc * inv * inv * mxt * mean) + std::fabs(sc * mt) +
                            std::fabs(want));
                }
              }
            }
          INFO("worst |error| / magnitude = " << worst);
          CHECK(bad == 0);
        }
}

TEST_CASE("simd GroupNorm over parts of the groups gives the whole row's bits, every variant") {
  // The op splits a row's groups into parts (norm_groups_per_part: NHWC parts start on multiples
  // of kNhwcPartChannels channels) so batch 1 runs on every thread: each part's outputs, forward
  // and JVP, NCHW and NHWC, must be the bits of the call over every group, and a part must leave
  // the other groups' outputs alone.
  struct PartShape {
    const char* what;
    uint32_t channels, plane, groups;
  };
  const PartShape shapes[] = {
      {"40 channels 5x7, 10 groups (parts of 16, 16, 8)", 40, 35, 10},
      {"64 channels 3x3, 8 groups (4 parts of 16)", 64, 9, 8},
      {"48 channels 1x1, 3 groups (16 each)", 48, 1, 3},
      {"36 channels 7x5, 12 groups (one part: 3 channels a group)", 36, 35, 12},
      {"33 channels 3x5, 11 groups", 33, 15, 11},
      {"96 channels 2x3, 8 groups (12 each: parts of 48)", 96, 6, 8},
      {"17 channels 9x1, 17 groups", 17, 9, 17},
  };
  std::mt19937 rng(31);
  const float eps = 1e-5f;
  const size_t directions = 3;
  for (const simd::Kernels* k : test_support::simd_variants())
    for (const PartShape& s : shapes)
      for (size_t batch : {size_t{1}, size_t{3}})
        for (bool nhwc : {false, true}) {
          INFO(k->isa << ": " << s.what << ", batch " << batch << (nhwc ? ", NHWC" : ", NCHW"));
          const uint32_t width = s.channels * s.plane;
          const auto x = random_floats(batch * width, rng, -2.0f, 3.0f);
          const auto t = random_floats(batch * directions * width, rng, -1.0f, 1.0f);
          const auto gamma = random_floats(s.channels, rng, -1.5f, 1.5f);
          const auto beta = random_floats(s.channels, rng, -1.0f, 1.0f);
          const simd::Norm norm{gamma.data(), beta.data(), width, s.groups, s.plane, eps, 0, 0};
          const auto forward = nhwc ? k->norm_forward_nhwc : k->norm_forward;
          const auto jvp = nhwc ? k->norm_jvp_nhwc : k->norm_jvp;
          std::vector<float> y(batch * width, NAN), ty(t.size(), NAN);
          forward(norm, x.data(), 0, batch, y.data());
          jvp(norm, x.data(), 0, batch, directions, t.data(), ty.data());
          const uint32_t per_part = simd::norm_groups_per_part(norm, nhwc);
          if (nhwc)
            CHECK((per_part == s.groups ||
                   (per_part * (s.channels / s.groups)) % simd::kNhwcPartChannels == 0));
          for (uint32_t step : {per_part, 2 * per_part}) {
            INFO("parts of " << step << " groups");
            std::vector<float> y2(y.size(), NAN), ty2(ty.size(), NAN);
            // The group of value i of a row: channels are `plane` apart in NHWC, `plane` long
            // in NCHW.
            const uint32_t per = s.channels / s.groups;
            auto group_of = [&](size_t i) {
              const size_t k = i % width;
              return static_cast<uint32_t>((nhwc ? k % s.channels : k / s.plane) / per);
            };
            // Parts last first, each over every row, each also into a buffer of NaN that must
            // keep the other groups' NaN.
            const uint32_t parts = (s.groups + step - 1) / step;
            size_t outside = 0;
            for (uint32_t p = parts; p-- > 0;) {
              simd::Norm part = norm;
              part.g0 = p * step;
              part.g1 = std::min(s.groups, (p + 1) * step);
              forward(part, x.data(), 0, batch, y2.data());
              jvp(part, x.data(), 0, batch, directions, t.data(), ty2.data());
              std::vector<float> y3(y.size(), NAN), ty3(ty.size(), NAN);
              forward(part, x.data(), 0, batch, y3.data());
              jvp(part, x.data(), 0, batch, directions, t.data(), ty3.data());
              for (size_t i = 0; i < y3.size(); ++i) {
                const uint32_t g = group_of(i);
                outside += (g < part.g0 || g >= part.g1) != std::isnan(y3[i]);
              }
              for (size_t i = 0; i < ty3.size(); ++i) {
                const uint32_t g = group_of(i);
                outside += (g < part.g0 || g >= part.g1) != std::isnan(ty3[i]);
              }
            }
            CHECK(outside == 0);
            CHECK(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(ty.data(), ty2.data(), ty.size() * sizeof(float)) == 0);
          }
        }
}

TEST_CASE("simd GroupNorm / LayerNorm forward and JVP within the documented bound, every variant") {
  const auto ks = test_support::simd_variants();
  REQUIRE(!ks.empty());
  std::mt19937 rng(11);
  const float eps = 1e-5f;
  for (const simd::Kernels* k : ks)
    for (const Shape& s : kShapes)
      for (size_t batch : {size_t{1}, size_t{3}, size_t{17}})
        for (int affine = 0; affine < 2; ++affine)
          for (float offset : {0.0f, 5.0f}) {
            const std::string what = std::string(k->isa) + ": " + s.what + ", batch " +
                                     std::to_string(batch) + (affine ? "" : ", no gamma") +
                                     ", mean offset " + std::to_string(offset);
            INFO(what);
            const uint32_t width = s.channels * s.plane, block = width / s.groups;
            const size_t directions = 3;
            const auto x = random_floats(batch * width, rng, offset - 2.0f, offset + 2.0f);
            const auto t = random_floats(batch * directions * width, rng, -1.0f, 1.0f);
            const auto gamma = random_floats(s.channels, rng, -1.5f, 1.5f);
            const auto beta = random_floats(s.channels, rng, -1.0f, 1.0f);
            const simd::Norm norm{affine ? gamma.data() : nullptr,
                                  affine ? beta.data() : nullptr,
                                  width,
                                  s.groups,
                                  s.plane,
                                  eps,
                                  0,
                                  0};
            std::vector<float> y(batch * width, NAN), y2(y), ty(t.size(), NAN), ty2(ty);
            k->norm_forward(norm, x.data(), 0, batch, y.data());
            k->norm_jvp(norm, x.data(), 0, batch, directions, t.data(), ty.data());
            // Row by row, last first: the same bits (a thread split cannot change them).
            for (size_t r = batch; r-- > 0;) {
              k->norm_forward(norm, x.data(), r, r + 1, y2.data());
              k->norm_jvp(norm, x.data(), r, r + 1, directions, t.data(), ty2.data());
            }
            CHECK(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(ty.data(), ty2.data(), ty.size() * sizeof(float)) == 0);
            // The bound of kernels.hpp: 2^-21 times the magnitudes of the float form's terms.
            size_t bad = 0;
            double worst = 0;
            auto check = [&](double got, double want, double magnitude) {
              const double err = std::fabs(got - want);
              if (!(err <= 0x1p-21 * magnitude)) ++bad;
              worst = std::max(worst, err / magnitude);
            };
            for (size_t r = 0; r < batch; ++r)
              for (uint32_t g = 0; g < s.groups; ++g) {
                const size_t at = r * width + size_t{g} * block;
                double mean, inv;
                moments(x.data() + at, block, eps, &mean, &inv);
                for (uint32_t i = 0; i < block; ++i) {
                  const uint32_t c = (g * block + i) / s.plane;
                  const double gm = affine ? gamma[c] : 1.0, bt = affine ? beta[c] : 0.0;
                  const double sc = gm * inv, xv = x[at + i];
                  const double want = (xv - mean) * sc + bt;
                  check(
                      y[at + i], want,
                      std::fabs(xv * sc) + std::fabs(mean * sc) + std::fabs(bt) + std::fabs(want));
                }
                for (size_t p = 0; p < directions; ++p) {
                  const size_t tat = (r * directions + p) * width + size_t{g} * block;
                  double mt = 0, mxt = 0;
                  for (uint32_t i = 0; i < block; ++i) {
                    mt += t[tat + i];
                    mxt += (x[at + i] - mean) * t[tat + i];
                  }
                  mt /= block;
                  mxt /= block;
                  for (uint32_t i = 0; i < block; ++i) {
                    const uint32_t c = (g * block + i) / s.plane;
                    const double sc = (affine ? gamma[c] : 1.0) * inv;
                    const double xv = x[at + i], tv = t[tat + i];
                    const double want = sc * (tv - mt - (xv - mean) * inv * inv * mxt);
                    check(ty[tat + i], want,
                          std::fabs(tv * sc) + std::fabs(xv * sc * inv * inv * mxt) +
                              std::fabs(sc * inv * inv * mxt * mean) + std::fabs(sc * mt) +
                              std::fabs(want));
                  }
                }
              }
            INFO("worst |error| / magnitude = " << worst);
            CHECK(bad == 0);
          }
}

// d = 4 * 7 * 5: conv to 12 channels, GroupNorm(4), SiLU, conv back to 4, then LayerNorm over the
// whole sample; every norm node runs on simd in the simd plan.
std::vector<uint8_t> norm_model() {
  std::mt19937 rng(21);
  siflow::ModelBuilder b(4 * 7 * 5);
  b.set_x_shape({4, 7, 5});
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(b.x(), 12, {3, 3}, random_floats(12 * 4 * 9, rng, -0.3f, 0.3f),
                        random_floats(12, rng, 0.5f, 1.5f), same);
  h = b.group_norm(h, 4, random_floats(12, rng, 0.5f, 1.5f), random_floats(12, rng, -0.2f, 0.2f));
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.conv2d(h, 4, {3, 3}, random_floats(4 * 12 * 9, rng, -0.2f, 0.2f), {}, same);
  b.set_output(
      b.layer_norm(h, random_floats(140, rng, 0.5f, 1.5f), random_floats(140, rng, -0.1f, 0.1f)));
  return b.finish();
}

TEST_CASE("norm model: simd backend against the reference backend, bit-equal over threads") {
  // Two convs of K <= 108 terms and two normalisations, each a few float ulps: 1e-5 of the scale
  // leaves room for their growth through the layers (node 1 is the GroupNorm).
  test_support::check_simd_against_reference(norm_model(), {1}, 1e-5);
}

}  // namespace
