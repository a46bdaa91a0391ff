// SPDX-License-Identifier: Apache-2.0
// ConvTranspose2d on XNNPACK's NHWC deconvolution (kernels/xnnpack/xnn_conv.hpp with
// ConvShape::transposed): the layer, layout conversions included, against the transposed-conv
// formula in double on odd shapes (odd H and W, channels not a multiple of the vector width,
// stride 2 with and without output padding, asymmetric pads, dilation, groups, 1x1, batch 1, 3,
// 17, with and without the bias); and a small net with transposed convs on the xnnpack backend:
// the node named "xnnpack nhwc", against the reference backend (velocity and exact
// log-likelihood), bit-equal on 1 and 2 threads, no XNNPACK allocation while running; the same
// net under blocked execution (blocks of 1, 4 and the whole batch give the same bits); and a
// transposed conv XNNPACK refuses (it runs on simd), whose plan must fit the arena arena_bytes()
// measured.
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
#include "support/conv_cases.hpp"
#include "support/deconv_cases.hpp"
#include "support/requirements.hpp"
#include "support/velocity_gap.hpp"
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/xnnpack/xnn_conv.hpp"
#include "kernels/xnnpack/xnn_dense.hpp"
#endif

namespace {

using test_support::random_floats;

using test_support::Deconv;
using test_support::kDeconvCases;

}  // namespace

TEST_CASE("XNNPACK ConvTranspose2d layer, NHWC conversions included, matches the formula" *
          SIFLOW_NEEDS_XNNPACK) {
#if defined(SIFLOW_WITH_XNNPACK)
  namespace xnn = siflow::xnn;
  const siflow::simd::Kernels* k = nullptr;
  REQUIRE(siflow::simd::select(&k).ok());
  std::mt19937 rng(25);
  for (const Deconv& c : kDeconvCases) {
    const uint32_t oh = c.oh(), ow = c.ow();
    const size_t in = size_t{c.cin} * c.h * c.w, out = size_t{c.cout} * oh * ow;
    const auto w = random_floats(size_t{c.cin} * (c.cout / c.groups) * c.kh * c.kw, rng, 0.5f);
    const auto b = random_floats(c.cout, rng, 1.0f);
    xnn::ConvShape shape{c.cin, c.h,  c.w,  c.cout, oh,   ow,   c.groups, c.kh, c.kw,
                         c.pt,  c.pl, c.pb, c.pr,   c.sh, c.sw, c.dh,     c.dw};
    shape.transposed = true;
    xnn::ConvLayer* layer = nullptr;
    const siflow::Status s = xnn::create_conv(shape, w.data(), b.data(), nullptr, &layer);
    REQUIRE_MESSAGE(s.ok(), c.what << ": " << s.message());
    std::vector<float> scratch(xnn::conv_scratch_floats(shape, 17));
    const siflow::Status primed = xnn::prime_conv(layer, scratch.data());
    if (!primed.ok()) {
      // Only an output padding not below the stride may be refused (the plan then runs the
      // simd kernels).
      INFO(c.what << ": " << primed.message());
      CHECK((c.oph >= c.sh || c.opw >= c.sw));
      xnn::destroy_conv(layer);
      continue;
    }
    CHECK(c.oph < c.sh);
    CHECK(c.opw < c.sw);
    // Every output sums at most this many products (each input channel of the group, each tap).
    const uint32_t terms = c.cin / c.groups * c.kh * c.kw;
    for (size_t batch : {size_t{1}, size_t{3}, size_t{17}})
      for (bool tangent : {false, true}) {
        INFO(c.what << ", batch " << batch << (tangent ? ", tangent (no bias)" : ""));
        const size_t xs = in + 5, ys = out + 3;
        const auto x = random_floats(batch * xs, rng, 2.0f);
        std::vector<float> y(batch * ys, 7.0f);
        auto serial = [](size_t count, auto&& fn) { fn(size_t{0}, count); };
        const size_t chunk = batch > 2 ? 2 : batch;
        xnn::run_conv(layer, x.data(), xs, batch, y.data(), ys, scratch.data(), chunk, tangent,
                      k->transpose, serial);
        size_t bad = 0;
        double worst = 0;
        for (size_t r = 0; r < batch; ++r) {
          const float* bp = tangent ? nullptr : b.data();
          const auto ref = test_support::textbook(c, x.data() + r * xs, w, bp, false);
          const auto mag = test_support::textbook(c, x.data() + r * xs, w, bp, true);
          for (size_t i = 0; i < out; ++i) {
            // Float summation of at most `terms` products and the bias in any order.
            const double err = std::fabs(y[r * ys + i] - ref[i]);
            if (!(err <= (terms + 2) * 0x1p-24 * mag[i] + 1e-30)) ++bad;
            if (mag[i] > 0) worst = std::max(worst, err / mag[i]);
          }
          for (size_t i = out; i < ys; ++i) CHECK(y[r * ys + i] == 7.0f);
        }
        INFO("worst |error| / sum |terms| = " << worst);
        CHECK(bad == 0);
      }
    xnn::destroy_conv(layer);
  }
#endif
}

namespace {

// dim 6 * 5 * 7: ConvTranspose2d 6 -> 8 (3x3, stride 2, pads 1, output padding 1: 10 x 14),
// silu, Conv2d 8 -> 4 (3x3, stride 2, pads 1: 5 x 7), silu, ConvTranspose2d 4 -> 6 (groups 2,
// 1x1): back to 6 x 5 x 7. Nodes 1 and 5 are the transposed convs.
std::vector<uint8_t> deconv_net() {
  std::mt19937 rng(19);
  siflow::ModelBuilder b(6 * 5 * 7);
  b.set_x_shape({6, 5, 7});
  siflow::ImageWindow up;
  up.strides = {2, 2};
  up.pads = {1, 1, 1, 1};
  up.output_padding = {1, 1};
  uint32_t h = b.conv_transpose2d(b.x(), 8, {3, 3}, random_floats(6 * 8 * 9, rng, 0.3f),
                                  random_floats(8, rng, 0.1f), up);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  siflow::ImageWindow down;
  down.strides = {2, 2};
  down.pads = {1, 1, 1, 1};
  h = b.conv2d(h, 4, {3, 3}, random_floats(4 * 8 * 9, rng, 0.2f), random_floats(4, rng, 0.1f),
               down);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  siflow::ImageWindow grouped;
  grouped.groups = 2;
  b.set_output(b.conv_transpose2d(h, 6, {1, 1}, random_floats(4 * 3, rng, 0.3f), {}, grouped));
  return b.finish();
}

struct Run {
  std::vector<float> v;
  std::vector<double> exact;
  std::vector<std::string> kernels;  // of the transposed convs
};

Run run_net(const std::vector<uint8_t>& bytes, siflow::Backend backend, uint32_t threads,
            bool tune = false, size_t block_rows = 0) {
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), lo, &m).ok());
  siflow::PlanOptions po;
  po.max_batch = 9;
  po.backend = backend;
  po.threads = threads;
  po.tune = tune;
  po.block_rows = block_rows;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(*m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  Run r;
  const char* op = nullptr;
  uint32_t in = 0, width = 0;
  for (uint32_t i = 0; m->node(i, &op, &in, &width); ++i)
    if (std::string(op) == "conv_transpose2d") r.kernels.push_back(plan->node_kernel(i));
  const size_t n = 9, d = m->info().dim;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> y(n * d), t(n);
  for (float& f : y) f = u(rng);
  for (size_t i = 0; i < n; ++i) t[i] = (i + 0.5f) / n;
  r.v.resize(n * d);
  REQUIRE(plan->velocity(n, t.data(), y.data(), r.v.data()).ok());
  siflow::LogProbOptions lp;
  lp.ode.steps = 2;
  r.exact.resize(n);
#if defined(SIFLOW_WITH_XNNPACK)
  if (backend == siflow::Backend::kXnnpack) {
    // 20 rows: batches of 9, 9 and 2, so XNNPACK runs several batch sizes, allocating nothing.
    const uint64_t xnn_before = siflow::xnn::allocation_stats().calls;
    std::vector<float> y20(20 * d);
    for (float& f : y20) f = u(rng);
    std::vector<double> logp20(20);
    REQUIRE(plan->log_prob(20, y20.data(), lp, logp20.data()).ok());
    CHECK(siflow::xnn::allocation_stats().calls == xnn_before);
  }
#endif
  REQUIRE(plan->log_prob(n, y.data(), lp, r.exact.data()).ok());
  return r;
}

}  // namespace

TEST_CASE("ConvTranspose2d net on xnnpack: named, against the reference, bit-equal on 2 threads" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  const auto bytes = deconv_net();
  const Run ref = run_net(bytes, siflow::Backend::kReference, 1);
  const Run fast = run_net(bytes, siflow::Backend::kXnnpack, 1);
  const Run fast2 = run_net(bytes, siflow::Backend::kXnnpack, 2);
  REQUIRE(fast.kernels.size() == 2);
  for (const std::string& k : fast.kernels)
    CHECK(k.rfind("xnnpack n", 0) == 0);  // its layouts: xnnpack nhwc, nchw>nhwc, ...
  for (const std::string& k : ref.kernels) CHECK(k == "reference");
  const test_support::VelocityGap gap = test_support::velocity_gap(fast.v, ref.v);
  const double worst = gap.worst, scale = gap.scale;
  INFO("worst velocity difference " << worst << " at scale " << scale);
  // Three layers of at most 72 terms each, summed in another order: a few float ulps of the scale.
  CHECK(worst <= 1e-5 * scale);
  for (size_t i = 0; i < ref.exact.size(); ++i) {
    INFO("row " << i << ": exact " << fast.exact[i] << " vs " << ref.exact[i]);
    CHECK(std::fabs(fast.exact[i] - ref.exact[i]) <= 1e-4 * (1.0 + std::fabs(ref.exact[i])));
  }
  CHECK(std::memcmp(fast.v.data(), fast2.v.data(), fast.v.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(fast.exact.data(), fast2.exact.data(), fast.exact.size() * sizeof(double)) ==
        0);
}

TEST_CASE("ConvTranspose2d net on the default backend: the simd kernels, near the reference") {
  // The default plan (no tuning) runs transposed convs on the simd kernels, not XNNPACK, in every
  // build that has them (test_deconv_simd checks the layer itself).
  const auto bytes = deconv_net();
  const Run ref = run_net(bytes, siflow::Backend::kReference, 1);
  const Run dflt = run_net(bytes, siflow::Backend::kAuto, 1);
  REQUIRE(dflt.kernels.size() == 2);
  for (const std::string& k : dflt.kernels) CHECK(k.rfind("simd/", 0) == 0);
  // Another summation order than the reference loops': a few float ulps of the scale.
  const test_support::VelocityGap gap = test_support::velocity_gap(dflt.v, ref.v);
  const double worst = gap.worst, scale = gap.scale;
  CHECK(worst <= 1e-5 * scale);
}

TEST_CASE("ConvTranspose2d net tuned: each transposed conv on XNNPACK or simd, named" *
          SIFLOW_NEEDS_XNNPACK) {
  const auto bytes = deconv_net();
  const Run ref = run_net(bytes, siflow::Backend::kReference, 1);
  const Run tuned = run_net(bytes, siflow::Backend::kAuto, 1, true);
  REQUIRE(tuned.kernels.size() == 2);
  // What the tuner does not keep on XNNPACK runs on simd (the first one reads the caller's x,
  // so it is not timed: simd).
  CHECK(tuned.kernels[0].rfind("simd/", 0) == 0);
  CHECK((tuned.kernels[1].rfind("xnnpack n", 0) == 0 || tuned.kernels[1].rfind("simd/", 0) == 0));
  MESSAGE("tuned kernels: " << tuned.kernels[0] << ", " << tuned.kernels[1]);
  const test_support::VelocityGap gap = test_support::velocity_gap(tuned.v, ref.v);
  const double worst = gap.worst, scale = gap.scale;
  CHECK(worst <= 1e-5 * scale);
}

TEST_CASE("ConvTranspose2d nets under blocking: every block size gives the whole batch's bits") {
  // Blocked execution runs each transposed conv over one block of rows at a time, with one
  // block's buffers: on its reference loops and (in builds with it) on XNNPACK, blocks of 1, 4
  // and the whole batch (9 rows; exact log p's integration runs 9 rows too) must agree bit for
  // bit, values and exact log-likelihoods.
  const auto bytes = deconv_net();
  std::vector<siflow::Backend> backends = {siflow::Backend::kReference};
#if defined(SIFLOW_WITH_XNNPACK)
  backends.push_back(siflow::Backend::kXnnpack);
#endif
  for (siflow::Backend backend : backends) {
    const Run whole = run_net(bytes, backend, 1, false, 18);
    for (size_t block : {size_t{1}, size_t{4}}) {
      INFO("backend " << static_cast<int>(backend) << ", block_rows " << block);
      const Run blocked = run_net(bytes, backend, 1, false, block);
      REQUIRE(blocked.kernels == whole.kernels);
      CHECK(std::memcmp(blocked.v.data(), whole.v.data(), whole.v.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(blocked.exact.data(), whole.exact.data(),
                        whole.exact.size() * sizeof(double)) == 0);
    }
  }
}

TEST_CASE("a transposed conv XNNPACK refuses: the plan stays within arena_bytes() on xnnpack" *
          SIFLOW_NEEDS_XNNPACK) {
  // Output padding 1 at stride 1 (dilation 2) is a valid layer XNNPACK refuses, so the plan
  // runs it on the simd kernels. The plan's block size must not depend on that (arena_bytes()
  // cannot know it): a plan built in an arena of exactly arena_bytes() must fit and run, with
  // the layer named "simd/...", and one 64 bytes smaller must be refused naming the arena.
  std::mt19937 rng(31);
  siflow::ModelBuilder b(4 * 5 * 6);
  b.set_x_shape({4, 5, 6});
  siflow::ImageWindow odd;
  odd.dilations = {2, 2};
  odd.pads = {1, 1, 1, 1};
  odd.output_padding = {1, 1};
  uint32_t h = b.conv_transpose2d(b.x(), 8, {3, 3}, random_floats(4 * 8 * 9, rng, 0.3f),
                                  random_floats(8, rng, 0.1f), odd);  // 8 x 8 x 9
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.conv_transpose2d(h, 3, {3, 3}, random_floats(8 * 3 * 9, rng, 0.3f), {},
                         odd);  // 3 x 11 x 12
  siflow::ImageWindow down;
  down.strides = {2, 2};
  down.pads = {1, 1, 1, 1};
  // 3 x 11 x 12 -> 4 x 6 x 6, then a 2x1 conv back to the 4 x 5 x 6 of x.
  h = b.conv2d(h, 4, {3, 3}, random_floats(4 * 3 * 9, rng, 0.2f), {}, down);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  b.set_output(b.conv2d(h, 4, {2, 1}, random_floats(4 * 4 * 2, rng, 0.3f), {}));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<siflow::Model> m;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  const siflow::Status loaded = siflow::Model::load(bytes.data(), bytes.size(), lo, &m);
  REQUIRE_MESSAGE(loaded.ok(), std::string(loaded.message()));
  REQUIRE(m->info().dim == 4 * 5 * 6);
  for (size_t max_batch : {size_t{1}, size_t{9}, size_t{64}}) {
    INFO("max_batch " << max_batch);
    siflow::PlanOptions po;
    po.max_batch = max_batch;
    po.backend = siflow::Backend::kXnnpack;
    size_t need = 0;
    REQUIRE(siflow::arena_bytes(*m, po, &need).ok());
    std::vector<uint8_t> small(need), exact(need + 64);
    void* small_at = small.data() + (64 - reinterpret_cast<uintptr_t>(small.data()) % 64) % 64;
    void* exact_at = exact.data() + (64 - reinterpret_cast<uintptr_t>(exact.data()) % 64) % 64;
    std::unique_ptr<siflow::Plan> plan;
    const siflow::Status refused = siflow::Plan::create(*m, po, small_at, need - 64, &plan);
    CHECK_FALSE(refused.ok());
    CHECK(std::string(refused.message()).find("arena") != std::string::npos);
    const siflow::Status s = siflow::Plan::create(*m, po, exact_at, need, &plan);
    REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
    CHECK(plan->arena_bytes() == need);
    const char* op = nullptr;
    uint32_t in = 0, width = 0;
    for (uint32_t i = 0; m->node(i, &op, &in, &width); ++i)
      if (std::string(op) == "conv_transpose2d")
        CHECK(std::string(plan->node_kernel(i)).rfind("simd/", 0) == 0);
    const size_t n = max_batch, d = m->info().dim;
    std::vector<float> y(n * d, 0.25f), t(n, 0.5f), v(n * d);
    REQUIRE(plan->velocity(n, t.data(), y.data(), v.data()).ok());
    for (float f : v) REQUIRE(std::isfinite(f));
  }
}
