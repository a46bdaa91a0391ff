// SPDX-License-Identifier: Apache-2.0
// The simd transpose (kernels/simd/kernels_transpose.inc) for every instruction-set variant this
// CPU runs, and XNNPACK's portable fallback (xnn::transpose_blocked): the bits of the plain
// element-by-element loop on odd shapes, with row strides wider than the rows and the gaps left
// untouched; and an XNNPACK convolution layer (kernels/xnnpack/xnn_conv.hpp) whose layout
// conversions run on them: bit for bit the layer with the plain loops, for any split of its units
// between calls and on a pool of 2 threads.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "support/parallel.hpp"
#include "support/requirements.hpp"
#include "support/simd_variants.hpp"
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/xnnpack/xnn_conv.hpp"
#endif

namespace {

using TransposeFn = void (*)(const float*, size_t, size_t, size_t, float*, size_t);

struct Named {
  std::string name;
  TransposeFn fn;
};

// Every transpose to check: one per simd variant, and the portable fallback.
std::vector<Named> transposes() {
  std::vector<Named> out;
  for (const siflow::simd::Kernels* k : test_support::simd_variants())
    out.push_back({k->isa, k->transpose});
#if defined(SIFLOW_WITH_XNNPACK)
  out.push_back({"xnn::transpose_blocked", siflow::xnn::transpose_blocked});
#endif
  return out;
}

std::vector<float> random_values(size_t n, std::mt19937& rng) {
  // Random bit patterns of finite floats of both signs (any bit of the value must move).
  std::uniform_int_distribution<uint32_t> u;
  std::vector<float> v(n);
  for (float& f : v) {
    uint32_t b = u(rng);
    if (((b >> 23) & 0xffu) == 0xffu) b ^= 0x40000000u;  // no Inf or NaN
    std::memcpy(&f, &b, 4);
  }
  return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

}  // namespace

TEST_CASE("simd transpose: the plain loop's bits, every variant, odd shapes and strides") {
  std::mt19937 rng(15);
  const size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 49, 64, 65, 70, 256};
  const auto fns = transposes();
  REQUIRE(!fns.empty());
  for (const Named& t : fns)
    for (size_t rows : sizes)
      for (size_t cols : sizes) {
        if (rows * cols > 70 * 256) continue;
        for (size_t pad : {size_t{0}, size_t{3}}) {
          INFO(t.name << ": " << rows << " x " << cols << ", stride padding " << pad);
          const size_t lds = cols + pad, ldd = rows + pad;
          const auto src = random_values(rows * lds, rng);
          const float sentinel = -1234.5f;
          std::vector<float> dst(cols * ldd + 5, sentinel);
          t.fn(src.data(), lds, rows, cols, dst.data(), ldd);
          size_t bad = 0, touched = 0;
          for (size_t c = 0; c < cols; ++c)
            for (size_t r = 0; r < ldd; ++r) {
              const float got = dst[c * ldd + r];
              if (r < rows)
                bad += !same_bits(got, src[r * lds + c]);
              else
                touched += !same_bits(got, sentinel);
            }
          for (size_t i = cols * ldd; i < dst.size(); ++i) touched += !same_bits(dst[i], sentinel);
          CHECK(bad == 0);
          CHECK(touched == 0);
        }
      }
}

#if defined(SIFLOW_WITH_XNNPACK)
namespace {

namespace xnn = siflow::xnn;

// The layer with the plain element loops (what run_conv did before the simd transpose): every
// sample converted to NHWC, XNNPACK on all of them at once, converted back.
void plain_layer(xnn::ConvLayer* layer, const float* x, size_t xs, size_t samples, float* y,
                 size_t ys, float* scratch, bool tangent) {
  const xnn::ConvShape& s = xnn::conv_shape(layer);
  const size_t iplane = size_t{s.h} * s.w, oplane = size_t{s.oh} * s.ow;
  float* out = scratch + xnn::conv_scratch_output_offset(s, samples);
  for (size_t k = 0; k < samples; ++k)
    for (size_t c = 0; c < s.cin; ++c)
      for (size_t p = 0; p < iplane; ++p)
        scratch[k * s.cin * iplane + p * s.cin + c] = x[k * xs + c * iplane + p];
  REQUIRE(xnn::run_nhwc(layer, scratch, samples, out, tangent));
  for (size_t k = 0; k < samples; ++k)
    for (size_t c = 0; c < s.cout; ++c)
      for (size_t p = 0; p < oplane; ++p)
        y[k * ys + c * oplane + p] = out[k * s.cout * oplane + p * s.cout + c];
}

struct Layer {
  uint32_t cin, h, w, cout, k, stride;
};

}  // namespace

TEST_CASE("XNNPACK conv layer with the simd conversions: the plain loops' bits, any split" *
          SIFLOW_NEEDS_XNNPACK) {
  std::mt19937 rng(51);
  // Channels 1..70 (not multiples of the vector width, and 64), planes 7x7, 13x5, 1x1 and two
  // of more than kConvertPixels pixels (units that split a plane); 1x1 and 3x3, stride 2.
  const Layer layers[] = {
      {3, 7, 7, 5, 3, 1},   {1, 13, 5, 17, 3, 1},   {17, 13, 5, 33, 1, 1},
      {64, 7, 7, 64, 1, 1}, {70, 1, 1, 5, 1, 1},    {33, 17, 19, 70, 3, 2},
      {5, 28, 28, 3, 3, 1}, {64, 14, 14, 64, 3, 1}, {70, 23, 13, 17, 1, 1},
  };
  const auto fns = transposes();
  for (const Layer& l : layers) {
    const uint32_t pad = l.k / 2;
    const uint32_t oh = (l.h + 2 * pad - l.k) / l.stride + 1,
                   ow = (l.w + 2 * pad - l.k) / l.stride + 1;
    const xnn::ConvShape shape{l.cin, l.h, l.w, l.cout, oh,       ow,       1, l.k, l.k,
                               pad,   pad, pad, pad,    l.stride, l.stride, 1, 1};
    std::vector<float> w(size_t{l.cout} * l.cin * l.k * l.k), b(l.cout);
    std::uniform_real_distribution<float> u(-1, 1);
    for (float& v : w) v = u(rng);
    for (float& v : b) v = u(rng);
    xnn::ConvLayer* layer = nullptr;
    REQUIRE(xnn::create_conv(shape, w.data(), b.data(), nullptr, &layer).ok());
    const size_t in = size_t{l.cin} * l.h * l.w, out = size_t{l.cout} * oh * ow;
    std::vector<float> scratch(xnn::conv_scratch_floats(shape, 17));
    REQUIRE(xnn::prime_conv(layer, scratch.data()).ok());
    for (size_t batch : {size_t{1}, size_t{3}, size_t{17}})
      for (bool tangent : {false, true}) {
        const size_t xs = in + 5, ys = out + 3;
        std::vector<float> x(batch * xs);
        for (float& v : x) v = u(rng);
        std::vector<float> want(batch * ys, 7.0f);
        plain_layer(layer, x.data(), xs, batch, want.data(), ys, scratch.data(), tangent);
        for (const Named& t : fns)
          for (int split_kind = 0; split_kind < 3; ++split_kind) {
            INFO(t.name << ": " << l.cin << " -> " << l.cout << ", " << l.h << "x" << l.w
                        << ", kernel " << l.k << ", stride " << l.stride << ", batch " << batch
                        << (tangent ? ", tangent" : "") << ", split " << split_kind);
            // 0: one call; 1: one call per unit, last first; 2: ranges of 3 units.
            auto split = [&](size_t count, auto&& fn) {
              if (split_kind == 0) {
                fn(size_t{0}, count);
              } else if (split_kind == 1) {
                for (size_t i = count; i-- > 0;) fn(i, i + 1);
              } else {
                for (size_t i = 0; i < count; i += 3) fn(i, i + 3 < count ? i + 3 : count);
              }
            };
            std::vector<float> y(batch * ys, 7.0f);
            // Chunks of 2 samples for batch 17: the chunk loop runs too.
            const size_t chunk = batch > 3 ? 2 : batch;
            xnn::run_conv(layer, x.data(), xs, batch, y.data(), ys, scratch.data(), chunk, tangent,
                          t.fn, split);
            size_t bad = 0;
            for (size_t i = 0; i < y.size(); ++i) bad += !same_bits(y[i], want[i]);
            CHECK(bad == 0);
          }
      }
    xnn::destroy_conv(layer);
  }
}

TEST_CASE("XNNPACK conv layer with the simd conversions: the same bits on a pool of 2 threads" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  siflow::RowPool* pool = nullptr;
  REQUIRE(siflow::RowPool::create(2, &pool).ok());
  const siflow::simd::Kernels* k = nullptr;
  REQUIRE(siflow::simd::select(&k).ok());
  std::mt19937 rng(52);
  std::uniform_real_distribution<float> u(-1, 1);
  // 33 -> 70 on 23x13 (2 units per sample) and 64 -> 64 1x1 on 7x7.
  const Layer layers[] = {{33, 23, 13, 70, 3, 1}, {64, 7, 7, 64, 1, 1}};
  for (const Layer& l : layers) {
    const uint32_t pad = l.k / 2;
    const xnn::ConvShape shape{l.cin, l.h, l.w, l.cout, l.h, l.w, 1, l.k, l.k,
                               pad,   pad, pad, pad,    1,   1,   1, 1};
    std::vector<float> w(size_t{l.cout} * l.cin * l.k * l.k), b(l.cout);
    for (float& v : w) v = u(rng);
    for (float& v : b) v = u(rng);
    xnn::ConvLayer* serial_layer = nullptr;
    xnn::ConvLayer* pool_layer = nullptr;
    REQUIRE(xnn::create_conv(shape, w.data(), b.data(), nullptr, &serial_layer).ok());
    REQUIRE(xnn::create_conv(shape, w.data(), b.data(), pool, &pool_layer).ok());
    const size_t in = size_t{l.cin} * l.h * l.w, out = size_t{l.cout} * l.h * l.w;
    std::vector<float> scratch(xnn::conv_scratch_floats(shape, 17));
    REQUIRE(xnn::prime_conv(serial_layer, scratch.data()).ok());
    REQUIRE(xnn::prime_conv(pool_layer, scratch.data()).ok());
    // 1 and 3 samples: the pool layer's output-channel slices (70 = 32 + 38, 64 = 32 + 32);
    // 17: its sample shares. Values and tangents (the operators without the bias).
    for (const size_t batch : {size_t{1}, size_t{3}, size_t{17}})
      for (const bool tangent : {false, true}) {
        std::vector<float> x(batch * in);
        for (float& v : x) v = u(rng);
        std::vector<float> y1(batch * out), y2(batch * out);
        auto serial = [](size_t count, auto&& fn) { fn(size_t{0}, count); };
        auto threaded = [&](size_t count, auto&& fn) { siflow::parallel_rows(pool, count, 1, fn); };
        xnn::run_conv(serial_layer, x.data(), in, batch, y1.data(), out, scratch.data(), batch,
                      tangent, k->transpose, serial);
        xnn::run_conv(pool_layer, x.data(), in, batch, y2.data(), out, scratch.data(), batch,
                      tangent, k->transpose, threaded);
        INFO(k->isa << ": " << l.cin << " -> " << l.cout << ", batch " << batch
                    << (tangent ? ", tangent" : ""));
        CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
      }
    xnn::destroy_conv(serial_layer);
    xnn::destroy_conv(pool_layer);
  }
  siflow::RowPool::destroy(pool);
}
#else
// Without XNNPACK the same cases are reported as skipped (the decorators say why), not absent.
TEST_CASE("XNNPACK conv layer with the simd conversions: the plain loops' bits, any split" *
          SIFLOW_NEEDS_XNNPACK) {}
TEST_CASE("XNNPACK conv layer with the simd conversions: the same bits on a pool of 2 threads" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {}
#endif
