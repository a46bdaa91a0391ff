// SPDX-License-Identifier: Apache-2.0
// Reduced precision in Conv2d and ConvTranspose2d (docs/math.md, "Reduced precision"), through
// plans on every simd variant this CPU runs and the reference backend: bf16 gives the bits of an
// independent im2col definition built on math/reduced.hpp's bf16_dot_pair; fp16 and int8 give the
// bits of the fp32 plan on the decoded weights; narrow convolutions stay f32.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "math/half.hpp"
#include "math/reduced.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/env_guard.hpp"

namespace {

namespace detail = siflow::detail;
using siflow::Precision;

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

struct Case {
  const char* what;
  bool transposed;
  uint32_t cin, h, w, cout, groups, k, stride, pad;
  // Scales of the weights, the inputs and the biases (tiny: products and sums below 2^-126,
  // subnormal biases, which the kernels' float path hands to the scalar definition).
  float wscale = 0.5f, xscale = 2.0f, bscale = 0.2f;
};

// Each converted (reduction length and output channels per group above 16).
const Case kCases[] = {
    {"3x3 same, 19 -> 17 channels, 7x5", false, 19, 7, 5, 17, 1, 3, 1, 1},
    {"stride 2, 9x7, 6 -> 18 channels", false, 6, 9, 7, 18, 1, 3, 2, 1},
    {"groups 2, 36 -> 34 channels", false, 36, 5, 7, 34, 2, 3, 1, 1},
    {"5x5 kernel, no padding, odd sizes", false, 3, 11, 9, 21, 1, 5, 1, 0},
    {"transposed, stride 1, 19 -> 17 channels", true, 19, 7, 5, 17, 1, 3, 1, 1},
    {"transposed, stride 2, 20 -> 34 channels, groups 2", true, 20, 4, 3, 34, 2, 3, 2, 1},
    {"tiny products and sums", false, 19, 7, 5, 17, 1, 3, 1, 1, 0x1p-20f, 0x1p-104f, 0x1p-127f},
    {"tiny, transposed", true, 19, 7, 5, 17, 1, 3, 1, 1, 0x1p-20f, 0x1p-104f, 0x1p-127f},
};

struct Geometry {
  uint32_t oh, ow;
};
Geometry out_size(const Case& c) {
  if (c.transposed)
    return {(c.h - 1) * c.stride - 2 * c.pad + c.k, (c.w - 1) * c.stride - 2 * c.pad + c.k};
  return {(c.h + 2 * c.pad - c.k) / c.stride + 1, (c.w + 2 * c.pad - c.k) / c.stride + 1};
}
size_t weight_count(const Case& c) {
  return c.transposed ? size_t{c.cin} * (c.cout / c.groups) * c.k * c.k
                      : size_t{c.cout} * (c.cin / c.groups) * c.k * c.k;
}

// The tested convolution between two layers that copy exactly and stay f32 (the plan keeps the
// first and last converting node in f32): a dense layer on t with zero weights added at the end,
// and a dense layer taking the conv's first outputs to v (identity weights). So v[r][o] is the
// conv's output o of row r for o < min(its size, dim), 0 beyond.
std::vector<uint8_t> model(const Case& c, const std::vector<float>& w,
                           const std::vector<float>& b) {
  using B = siflow::ModelBuilder;
  const uint32_t dim = c.cin * c.h * c.w;
  B m(dim);
  m.set_x_shape({c.cin, c.h, c.w});
  const uint32_t zero = m.fully_connected(B::t(), 1, {0.0f}, {0.0f});
  B::Window win;
  win.strides = {c.stride, c.stride};
  win.pads = {c.pad, c.pad, c.pad, c.pad};
  win.groups = c.groups;
  const uint32_t y = c.transposed ? m.conv_transpose2d(B::x(), c.cout, {c.k, c.k}, w, b, win)
                                  : m.conv2d(B::x(), c.cout, {c.k, c.k}, w, b, win);
  const Geometry g = out_size(c);
  const uint32_t outputs = c.cout * g.oh * g.ow;
  std::vector<float> copy(size_t{dim} * outputs, 0.0f);
  for (uint32_t o = 0; o < dim && o < outputs; ++o) copy[size_t{o} * outputs + o] = 1.0f;
  const uint32_t flat = m.reshape(y, {outputs});
  m.set_output(m.add(m.fully_connected(flat, dim, copy, {}), zero));
  return m.finish();
}

// The conv's output for one sample in bf16 by its definition: im2col column of each output
// pixel, k over (input channel of the group, kernel row, kernel column), taps outside the input
// +0; the bias flushed, then bf16_dot_pair over pairs (2p, 2p + 1), an odd k padded with 0.
std::vector<float> bf16_definition(const Case& c, const float* x, const std::vector<float>& w,
                                   const std::vector<float>& b) {
  const Geometry g = out_size(c);
  const uint32_t cing = c.cin / c.groups, coutg = c.cout / c.groups, taps = c.k * c.k;
  std::vector<float> y(size_t{c.cout} * g.oh * g.ow);
  for (uint32_t o = 0; o < c.cout; ++o)
    for (uint32_t oy = 0; oy < g.oh; ++oy)
      for (uint32_t ox = 0; ox < g.ow; ++ox) {
        std::vector<uint16_t> col, row;
        const uint32_t group = o / coutg;
        for (uint32_t i = 0; i < cing; ++i)
          for (uint32_t ky = 0; ky < c.k; ++ky)
            for (uint32_t kx = 0; kx < c.k; ++kx) {
              const uint32_t ci = group * cing + i;
              float xv = 0.0f, wv;
              if (!c.transposed) {
                const int iy = static_cast<int>(oy * c.stride + ky) - static_cast<int>(c.pad);
                const int ix = static_cast<int>(ox * c.stride + kx) - static_cast<int>(c.pad);
                if (iy >= 0 && ix >= 0 && iy < static_cast<int>(c.h) && ix < static_cast<int>(c.w))
                  xv = x[(size_t{ci} * c.h + iy) * c.w + ix];
                wv = w[(size_t{o} * cing + i) * taps + ky * c.k + kx];
              } else {
                // Input pixel (iy, ix) reaches output (iy s - pad + ky, ix s - pad + kx).
                const int ny = static_cast<int>(oy + c.pad) - static_cast<int>(ky);
                const int nx = static_cast<int>(ox + c.pad) - static_cast<int>(kx);
                const int s = static_cast<int>(c.stride);
                if (ny >= 0 && nx >= 0 && ny % s == 0 && nx % s == 0 &&
                    ny / s < static_cast<int>(c.h) && nx / s < static_cast<int>(c.w))
                  xv = x[(size_t{ci} * c.h + ny / s) * c.w + nx / s];
                wv = w[(size_t{ci} * coutg + o % coutg) * taps + ky * c.k + kx];
              }
              col.push_back(detail::float_to_bf16(xv));
              row.push_back(detail::float_to_bf16(wv));
            }
        if (col.size() % 2) col.push_back(0), row.push_back(0);
        float acc = detail::flush_subnormal(b[o]);
        for (size_t p = 0; p < col.size(); p += 2)
          acc = detail::bf16_dot_pair(acc, col[p], col[p + 1], row[p], row[p + 1]);
        y[(size_t{o} * g.oh + oy) * g.ow + ox] = acc;
      }
  return y;
}

// +0 and -0 compare equal: the copying layers add +0.
bool same_bits(float a, float b) {
  return detail::float_bits(a) == detail::float_bits(b) || (a == 0.0f && b == 0.0f) ||
         (a != a && b != b);
}

struct Variant {
  const char* isa;  // SIFLOW_SIMD_ISA, or nullptr for the reference backend
};
const Variant kVariants[] = {{"avx512_bf16"}, {"avx512"},  {"avx2"}, {"sse2"},
                             {"neon"},        {"generic"}, {nullptr}};

// Velocities of `rows` rows under a variant and precision; empty when the CPU or build lacks the
// variant. Also returns the conv's kernel name (node 1).
std::vector<float> velocities(const std::vector<uint8_t>& bytes, const Variant& v, Precision p,
                              size_t rows, const std::vector<float>& x, std::string* kernel) {
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &m).ok());
  siflow::PlanOptions po;
  po.max_batch = 17;
  po.divergence = siflow::DivergenceMode::kNone;  // velocities only: no tangent arena to zero
  po.precision = p;
  po.backend = v.isa ? siflow::Backend::kSimd : siflow::Backend::kReference;
  std::unique_ptr<siflow::Plan> plan;
  siflow::Status s;
  {
    const test_support::EnvGuard isa("SIFLOW_SIMD_ISA");
    if (v.isa) isa.set(v.isa);
    s = siflow::Plan::create(*m, po, nullptr, 0, &plan);
  }
  if (!s.ok()) return {};
  if (kernel) *kernel = plan->node_kernel(1);
  const uint32_t dim = static_cast<uint32_t>(x.size() / rows);
  std::vector<float> t(rows), out(rows * dim);
  for (size_t r = 0; r < rows; ++r) t[r] = 0.1f + 0.05f * static_cast<float>(r);
  REQUIRE(plan->velocity(rows, t.data(), x.data(), out.data()).ok());
  return out;
}

}  // namespace

TEST_CASE(
    "bf16_dot_step_fast gives bf16_dot_step's bits on random, tiny, huge and special values") {
  std::mt19937 gen(17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto pick = [&](bool bf16) {
    float v;
    switch (gen() % 6) {
      case 0:
        v = u(gen) * 0x1p-63f;  // products near 2^-126
        break;
      case 1:
        v = u(gen) * 0x1p+64f;  // products overflow
        break;
      case 2:
        v = gen() % 2 ? INFINITY : NAN;
        break;
      default:
        v = u(gen);
    }
    return bf16 ? detail::bf16_to_float(detail::float_to_bf16(v)) : detail::flush_subnormal(v);
  };
  size_t differ = 0;
  for (int i = 0; i < 2000000; ++i) {
    const float acc = pick(false), x = pick(true), w = pick(true);
    // Accumulators as the kernels produce them: results of earlier steps (never subnormal).
    const float a = detail::bf16_dot_step(0.0f, acc, 1.0f);
    differ += !same_bits(detail::bf16_dot_step_fast(a, x, w), detail::bf16_dot_step(a, x, w));
  }
  CHECK(differ == 0);
}

TEST_CASE("bf16 convolutions give the bits of the im2col definition on every variant and batch") {
  for (const Case& c : kCases) {
    CAPTURE(c.what);
    std::mt19937 rng(c.cin * 31 + c.cout);
    const std::vector<float> w = random_floats(weight_count(c), rng, c.wscale);
    const std::vector<float> b = random_floats(c.cout, rng, c.bscale);
    const auto bytes = model(c, w, b);
    const uint32_t dim = c.cin * c.h * c.w;
    const Geometry g = out_size(c);
    const size_t outputs = size_t{c.cout} * g.oh * g.ow;
    for (size_t rows : {size_t{1}, size_t{3}, size_t{17}}) {
      CAPTURE(rows);
      const std::vector<float> x = random_floats(rows * dim, rng, c.xscale);
      size_t ran = 0;
      for (const Variant& v : kVariants) {
        const std::string isa = v.isa ? v.isa : "reference";
        CAPTURE(isa);
        std::string kernel;
        const std::vector<float> got = velocities(bytes, v, Precision::kBf16, rows, x, &kernel);
        if (got.empty()) continue;
        ++ran;
        CHECK(kernel.find("/bf16") != std::string::npos);
        size_t differ = 0;
        for (size_t r = 0; r < rows; ++r) {
          const std::vector<float> want = bf16_definition(c, x.data() + r * dim, w, b);
          for (uint32_t o = 0; o < dim; ++o)
            differ += !same_bits(got[r * dim + o], o < outputs ? want[o] : 0.0f);
        }
        CHECK(differ == 0);
      }
      CHECK(ran >= 2);  // the reference backend and the CPU's baseline at least
    }
  }
}

TEST_CASE("fp16 and int8 convolutions give the fp32 plan's bits on the decoded weights") {
  for (const Case& c : kCases) {
    CAPTURE(c.what);
    std::mt19937 rng(c.cin * 7 + c.cout);
    const std::vector<float> w = random_floats(weight_count(c), rng, 0.5f);
    const std::vector<float> b = random_floats(c.cout, rng, 0.2f);
    const uint32_t dim = c.cin * c.h * c.w;
    const std::vector<float> x = random_floats(3 * dim, rng, 2.0f);
    // Decoded weights by the formulas of docs/math.md, written out here: the half's value; per
    // output channel (a conv's first weight axis, a transposed conv's second) scale = max|w|/127
    // and scale * round-to-even(w / scale).
    std::vector<float> half(w.size()), int8(w.size());
    for (size_t i = 0; i < w.size(); ++i)
      half[i] = detail::half_to_float(detail::float_to_half(w[i]));
    const uint32_t taps = c.k * c.k, coutg = c.cout / c.groups, cing = c.cin / c.groups;
    for (uint32_t o = 0; o < c.cout; ++o) {
      std::vector<size_t> at;
      if (!c.transposed) {
        for (size_t i = 0; i < size_t{cing} * taps; ++i) at.push_back(o * size_t{cing} * taps + i);
      } else {
        const uint32_t group = o / coutg;
        for (uint32_t i = 0; i < cing; ++i)
          for (uint32_t t = 0; t < taps; ++t)
            at.push_back((size_t{group * cing + i} * coutg + o % coutg) * taps + t);
      }
      float m = 0.0f;
      for (size_t i : at) m = std::fabs(w[i]) > m ? std::fabs(w[i]) : m;
      const float scale = m / 127.0f;
      for (size_t i : at) int8[i] = scale * std::nearbyint(w[i] / scale);
    }
    for (const Variant& v : kVariants) {
      const std::string isa = v.isa ? v.isa : "reference";
      CAPTURE(isa);
      for (Precision p : {Precision::kFp16, Precision::kInt8}) {
        CAPTURE(static_cast<int>(p));
        std::string kernel;
        const auto got = velocities(model(c, w, b), v, p, 3, x, &kernel);
        if (got.empty()) continue;
        CHECK(kernel.find(p == Precision::kFp16 ? "/fp16" : "/int8") != std::string::npos);
        const auto want = velocities(model(c, p == Precision::kFp16 ? half : int8, b), v,
                                     Precision::kFp32, 3, x, nullptr);
        REQUIRE(want.size() == got.size());
        size_t differ = 0;
        for (size_t i = 0; i < got.size(); ++i) differ += !same_bits(got[i], want[i]);
        CHECK(differ == 0);
        // And the precision changed something (the weights are not representable exactly).
        const auto f32 = velocities(model(c, w, b), v, Precision::kFp32, 3, x, nullptr);
        CHECK(std::memcmp(f32.data(), got.data(), got.size() * sizeof(float)) != 0);
      }
    }
  }
}

TEST_CASE("narrow convolutions (depthwise, 16 or fewer output channels) stay f32") {
  using B = siflow::ModelBuilder;
  std::mt19937 rng(5);
  B m(20 * 5 * 5);
  m.set_x_shape({20, 5, 5});
  B::Window same;
  same.pads = {1, 1, 1, 1};
  B::Window depthwise = same;
  depthwise.groups = 20;
  const uint32_t zero = m.fully_connected(B::t(), 1, {0.0f}, {0.0f});
  uint32_t h = m.conv2d(B::x(), 20, {3, 3}, random_floats(20 * 9, rng, 0.5f), {}, depthwise);
  h = m.conv2d(h, 16, {3, 3}, random_floats(16 * 20 * 9, rng, 0.5f), {}, same);
  h = m.conv2d(h, 20, {3, 3}, random_floats(20 * 16 * 9, rng, 0.5f), {}, same);
  m.set_output(m.add(
      m.fully_connected(m.reshape(h, {500}), 500, random_floats(500 * 500, rng, 0.05f), {}), zero));
  const auto bytes = m.finish();
  std::unique_ptr<siflow::Model> model;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &model).ok());
  siflow::PlanOptions po;
  po.precision = Precision::kInt8;
  std::unique_ptr<siflow::Plan> plan;
  REQUIRE(siflow::Plan::create(*model, po, nullptr, 0, &plan).ok());
  // Node 0 the first dense layer, 1 the depthwise conv (9 taps), 2 the 16-channel conv, 3 the
  // conv reading 16 channels (reduction 144, 20 outputs: converted), the last dense layer f32.
  CHECK(std::string(plan->node_kernel(1)).find("/int8") == std::string::npos);
  CHECK(std::string(plan->node_kernel(2)).find("/int8") == std::string::npos);
  CHECK(std::string(plan->node_kernel(3)).find("/int8") != std::string::npos);
}
