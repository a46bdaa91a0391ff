// SPDX-License-Identifier: Apache-2.0
// bf16 training (TrainOptions::precision, docs/math.md "Reduced precision"): the three bf16
// GEMMs of DenseOps bit for bit against the scalar definition of math/reduced.hpp on every simd
// variant, and short seeded runs that learn, repeat bit for bit whatever the thread count and
// kernel set, and differ from f32 runs.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "kernels/simd/kernels.hpp"
#include "math/reduced.hpp"
#include "siflow/train.hpp"
#include "support/random_vectors.hpp"
#include "support/simd_variants.hpp"
#include "train/dense.hpp"
#include "train/graph.hpp"

namespace {

using namespace siflow;
namespace detail = siflow::detail;
using test_support::random_normals;

uint16_t bf(float f) { return detail::float_to_bf16(f); }

// sum over k of a(k) b(k) as vdpbf16ps adds it (pairs (2p, 2p+1), odd product first), from acc.
template <typename A, typename B>
float bf16_dot(float acc, size_t n, const A& a, const B& b) {
  for (size_t k = 0; k < n; k += 2) {
    const uint16_t a_odd = k + 1 < n ? bf(a(k + 1)) : 0, b_odd = k + 1 < n ? bf(b(k + 1)) : 0;
    acc = detail::bf16_dot_pair(acc, bf(a(k)), a_odd, bf(b(k)), b_odd);
  }
  return acc;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Values that exercise the edges: zeros, ties of the bf16 rounding, tiny products (below 2^-126,
// where the plain multiply-add fallback must give way to the scalar definition) and a subnormal.
void add_edges(std::vector<float>* v, uint32_t seed) {
  const float edges[] = {0.0f,     -0.0f,     1.00390625f /* 1 + 2^-8: a tie */,
                         0x1p-70f, -0x1p-80f, 0x1p-140f /* subnormal: reads as zero */,
                         3.0e10f};
  for (size_t i = seed % 7; i < v->size(); i += 13) (*v)[i] = edges[(i / 13 + seed) % 7];
}

TEST_CASE("the bf16 training GEMMs give the scalar definition's bits on every simd variant") {
  // Odd sizes: a pair padded with zero, partial panels, rows not a multiple of any tile height.
  const size_t rows = 37;
  const uint32_t in = 33, out = 21;
  std::vector<float> x = random_normals(rows * in, 1, 1.0);
  std::vector<float> w = random_normals(size_t{out} * in, 2, 0.2);
  std::vector<float> b = random_normals(out, 3, 0.1);
  std::vector<float> dy = random_normals(rows * out, 4, 1e-3);
  for (int edges = 0; edges < 2; ++edges) {
    CAPTURE(edges);
    if (edges) {
      add_edges(&x, 1);
      add_edges(&w, 2);
      add_edges(&dy, 3);
      b[1] = 0x1p-130f;  // a subnormal bias: flushed
    }
    // The definitions.
    std::vector<float> y_ref(rows * out), dx_ref(rows * in), dw_ref(size_t{out} * in), db_ref(out);
    for (size_t r = 0; r < rows; ++r)
      for (uint32_t o = 0; o < out; ++o)
        y_ref[r * out + o] = bf16_dot(
            detail::flush_subnormal(b[o]), in, [&](size_t k) { return x[r * in + k]; },
            [&](size_t k) { return w[o * in + k]; });
    for (size_t r = 0; r < rows; ++r)
      for (uint32_t i = 0; i < in; ++i)
        dx_ref[r * in + i] = bf16_dot(
            0.0f, out, [&](size_t k) { return dy[r * out + k]; },
            [&](size_t k) { return w[k * in + i]; });
    for (uint32_t o = 0; o < out; ++o) {
      for (uint32_t i = 0; i < in; ++i)
        dw_ref[o * in + i] = bf16_dot(
            0.0f, rows, [&](size_t k) { return dy[k * out + o]; },
            [&](size_t k) { return x[k * in + i]; });
      float s = 0.0f;
      for (size_t r = 0; r < rows; ++r) s += dy[r * out + o];
      db_ref[o] = s;
    }
    for (const simd::Kernels* k : test_support::simd_variants()) {
      CAPTURE(k->isa);
      train::DenseOps ops(k, nullptr);
      std::vector<float> y(rows * out), post(rows * out), dx(rows * in), dw(size_t{out} * in),
          db(out);
      ops.forward_bf16(x.data(), rows, in, w.data(), b.data(), out, UnaryKind::kIdentity, 0.0f,
                       y.data(), y.data());
      CHECK(same_bits(y, y_ref));
      // With the activation fused: the same sums before it, SiLU of them after.
      std::fill(y.begin(), y.end(), 0.0f);
      ops.forward_bf16(x.data(), rows, in, w.data(), b.data(), out, UnaryKind::kSilu, 0.0f,
                       y.data(), post.data());
      CHECK(same_bits(y, y_ref));
      for (size_t i = 0; i < y.size(); ++i) {
        const double s = y_ref[i] / (1.0 + std::exp(-static_cast<double>(y_ref[i])));
        CHECK(std::fabs(post[i] - s) <= 1e-6 * (1.0 + std::fabs(s)));
      }
      ops.input_gradient_bf16(dy.data(), rows, in, w.data(), out, dx.data());
      CHECK(same_bits(dx, dx_ref));
      ops.weight_gradient_bf16(dy.data(), x.data(), rows, in, out, dw.data(), db.data());
      CHECK(same_bits(dw, dw_ref));
      CHECK(same_bits(db, db_ref));
      // Without a bias gradient the weight gradient is the same.
      std::fill(dw.begin(), dw.end(), 0.0f);
      ops.weight_gradient_bf16(dy.data(), x.data(), rows, in, out, dw.data(), nullptr);
      CHECK(same_bits(dw, dw_ref));
    }
  }
}

TEST_CASE("the bf16 layers are the hidden-to-hidden ones wider than 16") {
  // concat(x, t) -> 256 -> 256 -> 256 -> 2: the two middle layers.
  const train::Graph g = train::make_mlp(2, {256, 256, 256}, UnaryKind::kSilu, 0);
  const std::vector<bool> bf16 = train::bf16_layers(g);
  std::vector<size_t> dense, reduced;
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    if (g.nodes()[k].op == detail::OpKind::kFullyConnected) dense.push_back(k);
    if (bf16[k]) reduced.push_back(k);
  }
  REQUIRE(dense.size() == 4);
  CHECK(reduced == std::vector<size_t>{dense[1], dense[2]});
  // A 16-wide hidden layer stays f32.
  const train::Graph narrow = train::make_mlp(2, {64, 16, 64, 64}, UnaryKind::kSilu, 0);
  size_t count = 0;
  for (bool b : train::bf16_layers(narrow)) count += b;
  CHECK(count == 1);  // only 64 -> 64
}

TrainOptions small_bf16() {
  TrainOptions o;
  o.hidden = {48, 48, 48};  // two bf16 layers
  o.batch = 256;
  o.steps = 300;
  o.warmup = 20;
  o.lr = 1e-2;
  o.eval_every = 0;
  o.holdout_points = 500;
  o.threads = 1;
  o.precision = Precision::kBf16;
  return o;
}

TrainData eight_gaussians() {
  TrainData d;
  d.toy_kind = ToyData::kEightGaussians;
  d.name = "8gaussians";
  return d;
}

// Trains to the end; the model's bytes and the mean losses of the first and last 50 steps.
std::vector<uint8_t> run(const TrainOptions& o, double* first = nullptr, double* last = nullptr) {
  std::unique_ptr<Trainer> t;
  const Status s = Trainer::create(o, eight_gaussians(), &t);
  REQUIRE_MESSAGE(s.ok(), s.message());
  TrainStepReport r;
  double f = 0.0, l = 0.0;
  while (t->steps_done() < o.steps) {
    REQUIRE(t->step(&r).ok());
    if (r.step <= 50) f += r.loss / 50;
    if (r.step > o.steps - 50) l += r.loss / 50;
  }
  if (first) *first = f;
  if (last) *last = l;
  std::vector<uint8_t> bytes;
  REQUIRE(t->model_bytes(&bytes).ok());
  return bytes;
}

TEST_CASE("a bf16 run learns, differs from the f32 run and repeats bit for bit on any threads") {
  TrainOptions o = small_bf16();
  double first = 0.0, last = 0.0;
  const std::vector<uint8_t> a = run(o, &first, &last);
  MESSAGE("bf16 loss, first 50 steps " << first << ", last 50 " << last);
  // As test_trainer's f32 case: G starts near 0 and falls well below it.
  CHECK(last < first - 0.3);
  CHECK(last < 0.0);
  CHECK(run(o) == a);
  o.threads = 2;
  std::unique_ptr<Trainer> probe;
  if (Trainer::create(o, eight_gaussians(), &probe).ok()) CHECK(run(o) == a);
  o.threads = 1;
  o.precision = Precision::kFp32;
  const std::vector<uint8_t> f32 = run(o, &first, &last);
  MESSAGE("f32 loss, first 50 steps " << first << ", last 50 " << last);
  CHECK(f32 != a);
}

bool have_avx512_bf16() {
#if defined(__x86_64__)
  __builtin_cpu_init();  // decorators run before main, possibly before the CPU model is read
#endif
  return simd::kernels_for(simd::Isa::kAvx512Bf16) != nullptr;
}

// ctest entry test_train_bf16_avx512_bf16 (skipped, exit 77, on CPUs without the instruction).
TEST_CASE("a bf16 run gives the same bits with vdpbf16ps as with its AVX-512F fallback" *
          doctest::test_suite("needs_avx512_bf16") * doctest::skip(!have_avx512_bf16()) *
          doctest::description("needs a CPU with AVX-512 BF16")) {
  // The variants differ only in the bf16 dot (kernels_avx512_bf16.cc); the f32 layers and
  // activations run the same code. (Other instruction sets also change the f32 parts' rounding,
  // so whole runs are compared here only between these two; the GEMMs alone are compared on
  // every variant above.)
  TrainOptions o = small_bf16();
  o.steps = 60;
  const char* old = std::getenv("SIFLOW_SIMD_ISA");
  const std::string saved = old ? old : "";
  setenv("SIFLOW_SIMD_ISA", "avx512_bf16", 1);
  const std::vector<uint8_t> with_instruction = run(o);
  setenv("SIFLOW_SIMD_ISA", "avx512", 1);
  const std::vector<uint8_t> fallback = run(o);
  if (old)
    setenv("SIFLOW_SIMD_ISA", saved.c_str(), 1);
  else
    unsetenv("SIFLOW_SIMD_ISA");
  CHECK(with_instruction == fallback);
}

TEST_CASE("training precisions other than fp32 and bf16 are refused by name") {
  for (Precision p : {Precision::kFp16, Precision::kInt8}) {
    TrainOptions o = small_bf16();
    o.precision = p;
    std::unique_ptr<Trainer> t;
    const Status s = Trainer::create(o, eight_gaussians(), &t);
    CHECK(!s.ok());
    CHECK(std::string(s.message()).find(precision_name(p)) != std::string::npos);
  }
  TrainOptions o = small_bf16();
  o.kernels = TrainKernels::kReference;
  std::unique_ptr<Trainer> t;
  const Status s = Trainer::create(o, eight_gaussians(), &t);
  CHECK(!s.ok());
  CHECK(std::string(s.message()).find("bf16") != std::string::npos);
}

}  // namespace
