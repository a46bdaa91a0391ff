// SPDX-License-Identifier: Apache-2.0
// ConvTranspose2d on the simd kernels (ops/conv2d_simd.cc, run_conv_transposed_simd: each sample
// spread out in the scratch, then the simd Conv2d with the flipped weights): the op, values and
// tangents, against the transposed formula in double on every simd variant of the build and every
// case of support/deconv_cases.hpp (odd shapes, stride 2 with and without output padding,
// asymmetric pads, dilation, groups, 1x1, 70 channels), at batch 1, 3 and 17 (17 samples, and 34
// tangent samples, run in more than one chunk); the same bits on a pool of two threads; and in
// plans: named "simd/<isa> nchw" on the default backend, its fp16 and int8 weights decoded into the
// flipped layout, bf16 on the reference loops and named so.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "format/model_data.hpp"
#include "ops/op.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/conv_cases.hpp"
#include "support/deconv_cases.hpp"
#include "support/env_guard.hpp"
#include "support/parallel.hpp"
#include "support/requirements.hpp"
#include "support/simd_variants.hpp"
#include "support/velocity_gap.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace {

using siflow::ops::NodeKernel;
using test_support::Deconv;
using test_support::kDeconvCases;
using test_support::random_floats;

// A model whose node 0 is the transposed conv (the test runs that op directly); a reshape and a
// dense layer back to x's size make it a valid flow.
std::vector<uint8_t> one_layer(const Deconv& c, const std::vector<float>& w,
                               const std::vector<float>& b) {
  siflow::ModelBuilder mb(c.cin * c.h * c.w);
  mb.set_x_shape({c.cin, c.h, c.w});
  siflow::ImageWindow win;
  win.strides = {c.sh, c.sw};
  win.dilations = {c.dh, c.dw};
  win.pads = {c.pt, c.pl, c.pb, c.pr};
  win.output_padding = {c.oph, c.opw};
  win.groups = c.groups;
  const uint32_t up = mb.conv_transpose2d(mb.x(), c.cout, {c.kh, c.kw}, w, b, win);
  const uint32_t out = c.cout * c.oh() * c.ow(), dim = c.cin * c.h * c.w;
  mb.set_output(mb.fully_connected(mb.reshape(up, {out}), dim,
                                   std::vector<float>(size_t{out} * dim, 0.01f),
                                   std::vector<float>(dim, 0.0f)));
  return mb.finish();
}

}  // namespace

TEST_CASE(
    "simd ConvTranspose2d matches the transposed formula, values and tangents, every variant") {
#if defined(SIFLOW_WITH_SIMD)
  siflow::RowPool* pool = nullptr;
  if (siflow::RowPool::available())
    REQUIRE(siflow::RowPool::create(2, &pool).ok());
  else
    MESSAGE("SKIPPED: the two-thread comparison (this build has no thread pool)");
  std::mt19937 rng(41);
  for (const Deconv& c : kDeconvCases) {
    const auto w = random_floats(size_t{c.cin} * (c.cout / c.groups) * c.kh * c.kw, rng, 0.5f);
    const auto b = random_floats(c.cout, rng, 1.0f);
    const std::vector<uint8_t> bytes = one_layer(c, w, b);
    std::unique_ptr<siflow::Model> m;
    siflow::LoadOptions lo;
    lo.allow_copy = true;
    const siflow::Status loaded = siflow::Model::load(bytes.data(), bytes.size(), lo, &m);
    REQUIRE_MESSAGE(loaded.ok(), std::string(loaded.message()));
    const siflow::detail::ModelData& md = m->data();
    REQUIRE(md.nodes[0].packed != nullptr);  // the flipped weights, packed at load
    const siflow::ops::OpModule& op = siflow::ops::op_module(md.nodes[0].op);
    const size_t in = size_t{c.cin} * c.h * c.w, out = size_t{c.cout} * c.oh() * c.ow();
    REQUIRE(md.tensors[2].width == out);
    const uint32_t terms = c.cin / c.groups * c.kh * c.kw;
    for (const siflow::simd::Kernels* k : test_support::simd_variants())
      for (size_t rows : {size_t{1}, size_t{3}, size_t{17}}) {
        INFO(c.what << ", " << k->isa << ", batch " << rows);
        const size_t directions = 2;
        const auto x = random_floats(rows * in, rng, 2.0f);
        const auto tx = random_floats(rows * directions * in, rng, 1.0f);
        std::vector<float> scratch(op.scratch_floats(md, 0, rows, directions) + 1);
        auto run = [&](siflow::RowPool* p, std::vector<float>* y, std::vector<float>* ty) {
          y->assign(rows * out, 7.0f);
          ty->assign(rows * directions * out, 7.0f);
          std::vector<float> t(rows, 0.5f);
          float* values[3] = {const_cast<float*>(x.data()), t.data(), y->data()};
          float* tangents[3] = {const_cast<float*>(tx.data()), nullptr, ty->data()};
          const NodeKernel kernel = NodeKernel::kSimd;
          siflow::ops::FastKernels kernels;
          kernels.simd = k;
          kernels.node = &kernel;
          kernels.pool = p;
          const siflow::ops::NodeRun r{&md,        0,     values,   tangents,      rows,
                                       directions, false, &kernels, scratch.data()};
          op.run(r);
        };
        std::vector<float> y, ty;
        run(nullptr, &y, &ty);
        size_t bad = 0;
        double worst = 0;
        for (size_t s = 0; s < rows * (1 + directions); ++s) {
          const bool tangent = s >= rows;
          const float* xs = tangent ? tx.data() + (s - rows) * in : x.data() + s * in;
          const float* ys = tangent ? ty.data() + (s - rows) * out : y.data() + s * out;
          const float* bp = tangent ? nullptr : b.data();
          const auto ref = test_support::textbook(c, xs, w, bp, false);
          const auto mag = test_support::textbook(c, xs, w, bp, true);
          for (size_t i = 0; i < out; ++i) {
            const double err = std::fabs(ys[i] - ref[i]);
            if (!(err <= (terms + 2) * 0x1p-24 * mag[i] + 1e-30)) ++bad;
            if (mag[i] > 0) worst = std::max(worst, err / mag[i]);
          }
        }
        INFO("worst |error| / sum |terms| = " << worst);
        CHECK(bad == 0);
        if (pool) {
          std::vector<float> y2, ty2;
          run(pool, &y2, &ty2);
          CHECK(std::memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0);
          CHECK(std::memcmp(ty.data(), ty2.data(), ty.size() * sizeof(float)) == 0);
        }
      }
  }
  siflow::RowPool::destroy(pool);
#else
  MESSAGE("SKIPPED: this build has no simd kernels");
#endif
}

namespace {

// x [4, 3, 5] -> transposed conv 4 -> 20 (3x3, stride 2, pads 1, output padding 1: 6 x 10;
// reduction 4 x 9 and 20 outputs, so converted in reduced precision) -> silu -> conv 20 -> 4
// (3x3, stride 2, pads 1: 3 x 5) + the time through a dense layer.
std::vector<uint8_t> up_down_net() {
  std::mt19937 rng(43);
  siflow::ModelBuilder b(4 * 3 * 5);
  b.set_x_shape({4, 3, 5});
  siflow::ImageWindow up;
  up.strides = {2, 2};
  up.pads = {1, 1, 1, 1};
  up.output_padding = {1, 1};
  const uint32_t time = b.fully_connected(b.t(), 1, {0.5f}, {0.0f});
  uint32_t h = b.conv_transpose2d(b.x(), 20, {3, 3}, random_floats(4 * 20 * 9, rng, 0.3f),
                                  random_floats(20, rng, 0.1f), up);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  siflow::ImageWindow down;
  down.strides = {2, 2};
  down.pads = {1, 1, 1, 1};
  h = b.conv2d(h, 4, {3, 3}, random_floats(4 * 20 * 9, rng, 0.2f), random_floats(4, rng, 0.1f),
               down);
  b.set_output(b.add(h, time));
  return b.finish();
}

struct PlanRun {
  std::string kernel;  // the transposed conv's
  std::vector<float> v;
  std::vector<double> exact;
};

PlanRun plan_run(const siflow::Model& m, siflow::Backend backend, siflow::Precision precision,
                 uint32_t threads) {
  siflow::PlanOptions po;
  po.max_batch = 5;
  po.backend = backend;
  po.precision = precision;
  po.threads = threads;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  PlanRun r;
  r.kernel = plan->node_kernel(1);
  const size_t n = 5, d = m.info().dim;
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> y(n * d), t(n, 0.3f);
  for (float& f : y) f = u(rng);
  r.v.resize(n * d);
  REQUIRE(plan->velocity(n, t.data(), y.data(), r.v.data()).ok());
  siflow::LogProbOptions lp;
  lp.ode.steps = 1;
  lp.ode.method = siflow::Method::kHeun;
  r.exact.resize(n);
  REQUIRE(plan->log_prob(n, y.data(), lp, r.exact.data()).ok());
  return r;
}

}  // namespace

TEST_CASE("a ConvTranspose2d whose spread-out input would be vast stays on the reference loops") {
  // Dilation 1000 over a 3-wide kernel, cropped back by pads of 999: 2 x 2 -> 4 x 4 outputs,
  // but a spread-out plane of 2004 x 2004 per input channel. The plan keeps the layer on the
  // reference loops (no scratch for it) and runs.
  std::mt19937 rng(47);
  siflow::ModelBuilder b(2 * 2 * 2);
  b.set_x_shape({2, 2, 2});
  siflow::ImageWindow wide;
  wide.dilations = {1000, 1000};
  wide.pads = {999, 999, 999, 999};
  const uint32_t up =
      b.conv_transpose2d(b.x(), 3, {3, 3}, random_floats(2 * 3 * 9, rng, 0.3f), {}, wide);
  b.set_output(b.fully_connected(b.reshape(up, {3 * 4 * 4}), 8, random_floats(48 * 8, rng, 0.1f),
                                 std::vector<float>(8, 0.0f)));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  const siflow::Status loaded = siflow::Model::load(bytes.data(), bytes.size(), lo, &m);
  REQUIRE_MESSAGE(loaded.ok(), std::string(loaded.message()));
  siflow::PlanOptions po;
  po.max_batch = 3;
  po.backend = siflow::Backend::kSimd;
  size_t need = 0;
  REQUIRE(siflow::arena_bytes(*m, po, &need).ok());
  CHECK(need < (size_t{1} << 20));
  std::unique_ptr<siflow::Plan> plan;
  REQUIRE(siflow::Plan::create(*m, po, nullptr, 0, &plan).ok());
  CHECK(std::string(plan->node_kernel(0)) == "reference");
  std::vector<float> x(3 * 8, 0.5f), t(3, 0.5f), v(3 * 8);
  REQUIRE(plan->velocity(3, t.data(), x.data(), v.data()).ok());
  for (float f : v) CHECK(std::isfinite(f));
}

TEST_CASE("ConvTranspose2d in plans on simd: named, against the reference, in every precision") {
#if defined(SIFLOW_WITH_SIMD)
  const std::vector<uint8_t> bytes = up_down_net();
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &m).ok());
  const test_support::EnvGuard isa("SIFLOW_SIMD_ISA");
  for (const siflow::simd::Kernels* k : test_support::simd_variants()) {
    isa.set(k->isa);
    for (siflow::Precision p : {siflow::Precision::kFp32, siflow::Precision::kFp16,
                                siflow::Precision::kInt8, siflow::Precision::kBf16}) {
      INFO(k->isa << ", precision " << siflow::precision_name(p));
      const PlanRun ref = plan_run(*m, siflow::Backend::kReference, p, 1);
      const PlanRun fast = plan_run(*m, siflow::Backend::kSimd, p, 1);
      CHECK(ref.kernel.rfind("reference", 0) == 0);
      if (p == siflow::Precision::kBf16) {
        // bf16's bit-specified sums have no simd transposed kernel: the reference loops.
        CHECK(fast.kernel == "reference/bf16");
      } else {
        const std::string expect = std::string("simd/") + k->isa + " nchw";
        CHECK(fast.kernel.rfind(expect, 0) == 0);
      }
      // The same decoded weights on both backends: only the summation order differs.
      const test_support::VelocityGap gap = test_support::velocity_gap(fast.v, ref.v);
      CHECK(gap.worst <= 1e-5 * gap.scale);
      for (size_t i = 0; i < ref.exact.size(); ++i)
        CHECK(std::fabs(fast.exact[i] - ref.exact[i]) <= 1e-4 * (1.0 + std::fabs(ref.exact[i])));
      if (siflow::RowPool::available()) {
        const PlanRun two = plan_run(*m, siflow::Backend::kSimd, p, 2);
        CHECK(std::memcmp(two.v.data(), fast.v.data(), fast.v.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(two.exact.data(), fast.exact.data(),
                          fast.exact.size() * sizeof(double)) == 0);
      }
    }
  }
#else
  MESSAGE("SKIPPED: this build has no simd kernels");
#endif
}
