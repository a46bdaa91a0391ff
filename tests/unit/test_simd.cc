// SPDX-License-Identifier: Apache-2.0
// The simd kernels (kernels/simd) against the reference backend, for every instruction-set
// variant this CPU runs: the vector activations and their derivatives within the documented
// error bounds on random and extreme inputs, dense layers (bias, fused activation, pre-activation
// output) within a GEMM rounding bound on odd shapes, and row splits that leave every bit alone.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/reference/activation.hpp"
#include "kernels/simd/kernels.hpp"
#include "support/env_guard.hpp"
#include "support/random_vectors.hpp"
#include "support/simd_variants.hpp"

namespace {

using siflow::UnaryKind;
namespace simd = siflow::simd;

constexpr UnaryKind kAllKinds[] = {
    UnaryKind::kIdentity, UnaryKind::kRelu,     UnaryKind::kLeakyRelu, UnaryKind::kElu,
    UnaryKind::kSelu,     UnaryKind::kTanh,     UnaryKind::kSigmoid,   UnaryKind::kSilu,
    UnaryKind::kGeluErf,  UnaryKind::kGeluTanh, UnaryKind::kSoftplus,  UnaryKind::kSin,
    UnaryKind::kCos};

// The documented bound (docs/architecture.md): |f_simd - f_ref| <= kTolerance * max(|f_ref|,
// floor), i.e. relative above the floor and absolute below it. The floor is kFloor for
// activations and 1 for derivatives: a derivative multiplies tangents, so its absolute error is
// what reaches them (and near its zeros, e.g. GELU' at x = -0.75, the formula cancels).
constexpr double kTolerance = 4e-6;
constexpr double kFloor = 1e-3;
constexpr double kDerivativeFloor = 1.0;

// Inputs: a dense grid over [-30, 30], random normals at three scales, and extremes.
std::vector<float> activation_inputs(UnaryKind kind) {
  std::vector<float> x;
  for (int i = -30000; i <= 30000; ++i) x.push_back(i * 0.001f);
  std::mt19937 rng(7);
  for (double scale : {0.01, 1.0, 10.0}) {
    std::normal_distribution<double> g(0.0, scale);
    for (int i = 0; i < 20000; ++i) x.push_back(static_cast<float>(g(rng)));
  }
  const bool trig = kind == UnaryKind::kSin || kind == UnaryKind::kCos;
  for (float e : {0.0f, 1e-30f, 1e-20f, 1e-7f, 1e-3f, 0.625f, 9.0f, 20.0f, 87.0f, 88.5f, 89.0f,
                  100.0f, 1e4f, 1e6f, 1e20f, 3e38f}) {
    if (trig && e > 1e6f) continue;  // the reference's reduction is not exact beyond 2^50
    x.push_back(e);
    x.push_back(-e);
  }
  while (x.size() % 8) x.push_back(0.5f);
  return x;
}

double relative_error(float got, float want, double floor = kFloor) {
  if (std::isnan(want)) return std::isnan(got) ? 0.0 : INFINITY;
  if (std::isinf(want)) return got == want ? 0.0 : INFINITY;
  return std::fabs(double(got) - double(want)) / std::max(std::fabs(double(want)), floor);
}

}  // namespace

TEST_CASE("vector activations and derivatives stay within the documented bound of the reference") {
  for (const simd::Kernels* k : test_support::simd_variants()) {
    for (UnaryKind kind : kAllKinds) {
      const float alpha = kind == UnaryKind::kLeakyRelu ? 0.01f : 1.0f;
      const std::vector<float> x = activation_inputs(kind);
      for (bool deriv : {false, true}) {
        double worst = 0.0;
        float worst_x = 0.0f;
        for (size_t i = 0; i < x.size(); i += 8) {
          float y[8];
          k->activation8(kind, alpha, x.data() + i, y, deriv);
          for (int j = 0; j < 8; ++j) {
            const float want = deriv ? siflow::reference::unary_derivative(kind, alpha, x[i + j])
                                     : siflow::reference::unary(kind, alpha, x[i + j]);
            const double e = relative_error(y[j], want, deriv ? kDerivativeFloor : kFloor);
            if (!(e <= worst)) {
              worst = e;
              worst_x = x[i + j];
            }
          }
        }
        INFO(std::string(k->isa) << " " << siflow::unary_kind_name(kind) << (deriv ? "'" : "")
                                 << " worst at x = " << worst_x);
        const std::string name =
            std::string(k->isa) + " " + siflow::unary_kind_name(kind) + (deriv ? "'" : "");
        MESSAGE(name << ": max error " << worst << " (at x = " << worst_x << ")");
        CHECK(worst <= kTolerance);
      }
    }
  }
}

TEST_CASE("NaN and infinities map as in the reference") {
  for (const simd::Kernels* k : test_support::simd_variants()) {
    for (UnaryKind kind : kAllKinds) {
      const float alpha = 0.01f;
      float x[8] = {NAN, INFINITY, -INFINITY, 1.0f, -1.0f, 0.0f, 2.0f, -2.0f}, y[8];
      k->activation8(kind, alpha, x, y, false);
      INFO(std::string(k->isa) << " " << siflow::unary_kind_name(kind));
      for (int j = 0; j < 3; ++j) {
        const float want = siflow::reference::unary(kind, alpha, x[j]);
        if (std::isnan(want))
          CHECK(std::isnan(y[j]));
        else
          CHECK(relative_error(y[j], want) <= kTolerance);
      }
    }
  }
}

namespace {

using test_support::random_normals;

struct Layer {
  uint32_t in, out;
  std::vector<float> w, b, packed;
};

Layer make_layer(uint32_t in, uint32_t out, bool bias, uint32_t seed) {
  Layer l{in,
          out,
          random_normals(size_t{in} * out, seed, 1.0 / std::sqrt(double(in))),
          bias ? random_normals(out, seed + 1, 0.5) : std::vector<float>(),
          {}};
  l.packed.assign(simd::packed_floats(in, out) + 16, 0.0f);
  // The kernels expect 64-byte alignment (the loader's block); place the panels there.
  float* p = l.packed.data();
  while (reinterpret_cast<uintptr_t>(p) % 64) ++p;
  simd::pack_weights(l.w.data(), bias ? l.b.data() : nullptr, in, out, p);
  return l;
}
const float* packed_of(const Layer& l) {
  const float* p = l.packed.data();
  while (reinterpret_cast<uintptr_t>(p) % 64) ++p;
  return p;
}

}  // namespace

TEST_CASE("pack_weights lays out 16-output panels with zero padding and the bias last") {
  const Layer l = make_layer(3, 20, true, 3);
  const float* p = packed_of(l);
  REQUIRE(simd::packed_floats(3, 20) == 2 * 4 * 16);
  for (uint32_t j = 0; j < 2; ++j)
    for (uint32_t c = 0; c < 16; ++c) {
      const uint32_t o = j * 16 + c;
      for (uint32_t i = 0; i < 3; ++i)
        CHECK(p[j * 64 + i * 16 + c] == (o < 20 ? l.w[o * 3 + i] : 0.0f));
      CHECK(p[j * 64 + 48 + c] == (o < 20 ? l.b[o] : 0.0f));
    }
}

TEST_CASE("dense layers match the reference within the GEMM rounding bound on odd shapes") {
  struct Shape {
    uint32_t in, out;
  };
  const Shape shapes[] = {{1, 1}, {3, 17}, {17, 5}, {64, 33}, {255, 129}, {31, 256}};
  const UnaryKind acts[] = {UnaryKind::kIdentity, UnaryKind::kSilu, UnaryKind::kGeluErf,
                            UnaryKind::kTanh};
  for (const simd::Kernels* k : test_support::simd_variants()) {
    uint32_t seed = 100;
    for (const Shape& sh : shapes) {
      for (size_t rows : {size_t{1}, size_t{3}, size_t{17}, size_t{1024}}) {
        if (rows == 1024 && sh.in * sh.out > 10000) continue;
        for (bool bias : {true, false}) {
          const Layer l = make_layer(sh.in, sh.out, bias, ++seed);
          const std::vector<float> x = random_normals(rows * sh.in, ++seed, 1.0);
          for (UnaryKind act : acts) {
            INFO(std::string(k->isa)
                 << " in " << sh.in << " out " << sh.out << " rows " << rows << " bias " << bias
                 << " act " << siflow::unary_kind_name(act));
            std::vector<float> pre(rows * sh.out, NAN), post(rows * sh.out, NAN);
            const simd::Dense d{packed_of(l), sh.in, sh.out, bias, act, 0.0f};
            k->dense(d, x.data(), 0, rows, pre.data(), post.data());
            double worst = 0.0;
            for (size_t r = 0; r < rows; ++r)
              for (uint32_t o = 0; o < sh.out; ++o) {
                double exact = bias ? l.b[o] : 0.0, magnitude = std::fabs(exact);
                for (uint32_t i = 0; i < sh.in; ++i) {
                  const double p = double(x[r * sh.in + i]) * l.w[size_t{o} * sh.in + i];
                  exact += p;
                  magnitude += std::fabs(p);
                }
                // Any float summation order: |error| <= (in + 1) eps sum |x_i w_i|.
                const double bound = (sh.in + 1) * 1.2e-7 * magnitude;
                const double e = std::fabs(pre[r * sh.out + o] - exact);
                worst = std::max(worst, e / std::max(bound, 1e-30));
                CHECK(e <= bound);
                if (act != UnaryKind::kIdentity) {
                  // The activation of exactly the value written to pre.
                  const float want = siflow::reference::unary(act, 0.0f, pre[r * sh.out + o]);
                  CHECK(relative_error(post[r * sh.out + o], want) <= kTolerance);
                }
              }
          }
        }
      }
    }
  }
}

TEST_CASE("dense results do not depend on how rows are split (threads, chunks, tiles)") {
  for (const simd::Kernels* k : test_support::simd_variants()) {
    const Layer l = make_layer(37, 45, true, 9);
    const size_t rows = 101;
    const std::vector<float> x = random_normals(rows * 37, 10, 1.0);
    const simd::Dense d{packed_of(l), 37, 45, true, UnaryKind::kSilu, 0.0f};
    std::vector<float> whole(rows * 45), whole_post(rows * 45);
    k->dense(d, x.data(), 0, rows, whole.data(), whole_post.data());
    for (size_t split : {size_t{1}, size_t{5}, size_t{13}, size_t{50}, size_t{100}}) {
      std::vector<float> parts(rows * 45), parts_post(rows * 45);
      k->dense(d, x.data(), 0, split, parts.data(), parts_post.data());
      k->dense(d, x.data(), split, rows, parts.data(), parts_post.data());
      INFO(std::string(k->isa) << " split at " << split);
      CHECK(std::memcmp(whole.data(), parts.data(), whole.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(whole_post.data(), parts_post.data(), whole.size() * sizeof(float)) == 0);
    }
  }
}

// a^T b over k rows in chunks of kTnMaxK, as training's weight gradient runs it.
void run_gemm_tn(const simd::Kernels* k, const float* a, size_t lda, const float* b, size_t rows,
                 uint32_t n, float* c, size_t ldc, size_t o0, size_t o1) {
  std::vector<float> packed(simd::tn_packed_floats(simd::kTnMaxK, n, k->tn_strip));
  for (size_t r0 = 0; r0 < rows; r0 += simd::kTnMaxK) {
    const size_t m = std::min(rows - r0, simd::kTnMaxK);
    simd::pack_tn(b + r0 * n, n, m, n, k->tn_strip, packed.data());
    k->gemm_tn(a + r0 * lda, lda, packed.data(), m, n, c, ldc, o0, o1, r0 > 0);
  }
}

TEST_CASE("gemm_tn computes a^T b within the rounding bound on odd shapes, any row split") {
  struct Shape {
    size_t k;
    uint32_t m, n;
  };
  // k across the 256-row chunks; m and n across tile and vector edges.
  const Shape shapes[] = {{1, 1, 1}, {3, 7, 3}, {17, 9, 33}, {300, 17, 20}, {700, 40, 70}};
  for (const simd::Kernels* k : test_support::simd_variants()) {
    uint32_t seed = 500;
    for (const Shape& sh : shapes) {
      INFO(std::string(k->isa) << " k " << sh.k << " m " << sh.m << " n " << sh.n);
      const std::vector<float> a = random_normals(sh.k * sh.m, ++seed, 1.0);
      const std::vector<float> b = random_normals(sh.k * sh.n, ++seed, 1.0);
      // Output rows with a stride wider than n, to catch writes past a row's end.
      const size_t ldc = sh.n + 5;
      std::vector<float> c(sh.m * ldc, -7.0f), parts(sh.m * ldc, -7.0f);
      run_gemm_tn(k, a.data(), sh.m, b.data(), sh.k, sh.n, c.data(), ldc, 0, sh.m);
      const size_t split = sh.m / 3;
      run_gemm_tn(k, a.data(), sh.m, b.data(), sh.k, sh.n, parts.data(), ldc, 0, split);
      run_gemm_tn(k, a.data(), sh.m, b.data(), sh.k, sh.n, parts.data(), ldc, split, sh.m);
      CHECK(std::memcmp(c.data(), parts.data(), c.size() * sizeof(float)) == 0);
      for (uint32_t o = 0; o < sh.m; ++o) {
        for (uint32_t i = 0; i < sh.n; ++i) {
          double exact = 0.0, magnitude = 0.0;
          for (size_t kk = 0; kk < sh.k; ++kk) {
            const double p = double(a[kk * sh.m + o]) * b[kk * sh.n + i];
            exact += p;
            magnitude += std::fabs(p);
          }
          // Any float summation order: |error| <= k eps sum |a b|.
          CHECK(std::fabs(c[o * ldc + i] - exact) <= sh.k * 1.2e-7 * magnitude);
        }
        for (size_t i = sh.n; i < ldc; ++i) CHECK(c[o * ldc + i] == -7.0f);
      }
    }
    // A column of ones after b's columns gives a's column sums in column n.
    {
      const size_t rows = 300;
      const uint32_t m = 11, n = 21;
      const std::vector<float> a = random_normals(rows * m, 88, 1.0);
      const std::vector<float> b = random_normals(rows * n, 89, 1.0);
      std::vector<float> packed(simd::tn_packed_floats(simd::kTnMaxK, n + 1, k->tn_strip));
      std::vector<float> c(m * (n + 1));
      for (size_t r0 = 0; r0 < rows; r0 += simd::kTnMaxK) {
        const size_t kk = std::min(rows - r0, simd::kTnMaxK);
        simd::pack_tn(b.data() + r0 * n, n, kk, n, k->tn_strip, packed.data(), true);
        k->gemm_tn(a.data() + r0 * m, m, packed.data(), kk, n + 1, c.data(), n + 1, 0, m, r0 > 0);
      }
      for (uint32_t o = 0; o < m; ++o) {
        double exact = 0.0, magnitude = 0.0;
        for (size_t r = 0; r < rows; ++r) {
          exact += a[r * m + o];
          magnitude += std::fabs(a[r * m + o]);
        }
        CHECK(std::fabs(c[o * (n + 1) + n] - exact) <= rows * 1.2e-7 * magnitude);
      }
    }
    // lda = 0: column sums.
    const std::vector<float> b = random_normals(300 * 19, 77, 1.0);
    const float one = 1.0f;
    std::vector<float> sums(19);
    run_gemm_tn(k, &one, 0, b.data(), 300, 19, sums.data(), 19, 0, 1);
    for (uint32_t i = 0; i < 19; ++i) {
      double exact = 0.0, magnitude = 0.0;
      for (size_t kk = 0; kk < 300; ++kk) {
        exact += b[kk * 19 + i];
        magnitude += std::fabs(b[kk * 19 + i]);
      }
      CHECK(std::fabs(sums[i] - exact) <= 300 * 1.2e-7 * magnitude);
    }
  }
}

TEST_CASE("unary_jvp multiplies every direction by the derivative at its row") {
  for (const simd::Kernels* k : test_support::simd_variants()) {
    const uint32_t width = 21;
    const size_t rows = 5, directions = 3;
    const std::vector<float> x = random_normals(rows * width, 1, 2.0);
    const std::vector<float> t = random_normals(rows * directions * width, 2, 1.0);
    std::vector<float> out(t.size(), NAN);
    k->unary_jvp(UnaryKind::kGeluTanh, 0.0f, x.data(), 1, rows, width, directions, t.data(),
                 out.data(), nullptr);
    for (size_t r = 0; r < rows; ++r)
      for (size_t p = 0; p < directions; ++p)
        for (uint32_t c = 0; c < width; ++c) {
          const size_t i = (r * directions + p) * width + c;
          if (r == 0) {
            CHECK(std::isnan(out[i]));  // rows outside [r0, r1) are untouched
            continue;
          }
          const float want =
              siflow::reference::unary_derivative(UnaryKind::kGeluTanh, 0.0f, x[r * width + c]) *
              t[i];
          CHECK(std::fabs(out[i] - want) <= kTolerance * std::max(std::fabs(want), 1.0f));
        }
  }
}

TEST_CASE("unary_jvp writing the values too gives unary_forward's and its own bits, every kind") {
  // Width 37 (vector tails) and 1100 (two chunks of the kernel's 512-value buffer); NaN, +-inf,
  // +-0 and values past the sigmoid's range among the inputs.
  for (const simd::Kernels* k : test_support::simd_variants())
    for (uint32_t width : {37u, 1100u}) {
      const size_t rows = 4, directions = 3;
      std::vector<float> x = random_normals(rows * width, 7, 6.0);
      const float specials[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 120.0f, -120.0f};
      for (size_t i = 0; i < 7; ++i) x[3 + 5 * i] = specials[i];
      const std::vector<float> t = random_normals(rows * directions * width, 8, 1.0);
      for (unsigned kind = 0; kind <= static_cast<unsigned>(UnaryKind::kMish); ++kind) {
        const UnaryKind u = static_cast<UnaryKind>(kind);
        INFO(std::string(k->isa) << " " << siflow::unary_kind_name(u) << " width " << width);
        std::vector<float> y1(rows * width, 7.0f), y2(rows * width, 7.0f);
        std::vector<float> t1(t.size(), 7.0f), t2(t.size(), 7.0f);
        k->unary_forward(u, 0.2f, x.data(), 1, rows, width, y1.data());
        k->unary_jvp(u, 0.2f, x.data(), 1, rows, width, directions, t.data(), t1.data(), nullptr);
        k->unary_jvp(u, 0.2f, x.data(), 1, rows, width, directions, t.data(), t2.data(), y2.data());
        CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(t1.data(), t2.data(), t1.size() * sizeof(float)) == 0);
      }
    }
}

TEST_CASE("SIFLOW_SIMD_ISA forces a variant by name and refuses unknown ones") {
  const test_support::EnvGuard guard("SIFLOW_SIMD_ISA");
  for (const simd::Kernels* k : test_support::simd_variants()) {
    guard.set(k->isa);
    const simd::Kernels* chosen = nullptr;
    REQUIRE(simd::select(&chosen).ok());
    CHECK(chosen == k);
  }
  guard.set("mmx");
  const simd::Kernels* chosen = nullptr;
  const siflow::Status s = simd::select(&chosen);
  CHECK(s.code() == siflow::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("SIFLOW_SIMD_ISA=mmx") != std::string::npos);
}
