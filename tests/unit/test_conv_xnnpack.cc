// SPDX-License-Identifier: Apache-2.0
// Conv2d on XNNPACK's NHWC convolution (kernels/xnnpack/xnn_conv.hpp): the layer, layout
// conversions included, against the textbook formula in double on odd shapes (odd H and W,
// channels not a multiple of 16, stride 2, pads, dilation, groups, depthwise, 1x1, batch 1, 3,
// 17, with and without the bias); a small conv net on the xnnpack backend against the reference
// backend (velocity, exact and Hutchinson log-likelihoods), bit-equal on 1 and 2 threads, with
// no heap call while running; calls of changing batch on one plan against the reference; and
// the tuned choice named per node with its layout.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/conv_cases.hpp"
#include "support/parallel.hpp"
#include "support/requirements.hpp"
#include "support/split_layers_model.hpp"
#include "support/velocity_gap.hpp"
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/xnnpack/xnn_conv.hpp"
#include "kernels/xnnpack/xnn_dense.hpp"
#endif
#if defined(SIFLOW_TEST_HEAP_HOOKS)
#include "support/alloc_hooks.hpp"
#endif

namespace {

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
    {"1x1 stride 2", 20, 9, 7, 12, 1, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0},
    {"37 channels, 15x13", 37, 15, 13, 35, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    {"stride 2 rows only, 70 channels", 70, 7, 5, 11, 1, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1},
};

// dim 3 * 9 * 7: conv 3 -> 12 (3x3 same), silu, conv 12 -> 12 (groups 2, dilation 2, pads 2),
// silu, conv 12 -> 13 (1x1), silu, conv 13 -> 3 (3x3 same, no bias). Nodes 1, 3, 5, 7 are
// the convolutions (node 0 is x's shape).
std::vector<uint8_t> conv_net() {
  std::mt19937 rng(9);
  siflow::ModelBuilder b(3 * 9 * 7);
  b.set_x_shape({3, 9, 7});
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(b.x(), 12, {3, 3}, random_floats(12 * 3 * 9, rng, 0.3f),
                        random_floats(12, rng, 0.1f), same);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  siflow::ImageWindow dilated;
  dilated.pads = {2, 2, 2, 2};
  dilated.dilations = {2, 2};
  dilated.groups = 2;
  h = b.conv2d(h, 12, {3, 3}, random_floats(12 * 6 * 9, rng, 0.2f), random_floats(12, rng, 0.1f),
               dilated);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.conv2d(h, 13, {1, 1}, random_floats(13 * 12, rng, 0.3f), random_floats(13, rng, 0.1f));
  h = b.unary(h, siflow::UnaryKind::kSilu);
  b.set_output(b.conv2d(h, 3, {3, 3}, random_floats(3 * 13 * 9, rng, 0.2f), {}, same));
  return b.finish();
}

// A loaded model with the bytes it may point into (an aligned buffer is not copied), kept alive
// together.
struct LoadedNet {
  std::vector<uint8_t> bytes;
  std::unique_ptr<siflow::Model> model;
  const siflow::Model& operator*() const { return *model; }
  const siflow::Model* operator->() const { return model.get(); }
};

LoadedNet load(std::vector<uint8_t> bytes) {
  LoadedNet net{std::move(bytes), nullptr};
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  REQUIRE(siflow::Model::load(net.bytes.data(), net.bytes.size(), lo, &net.model).ok());
  return net;
}

std::vector<uint32_t> conv_nodes(const siflow::Model& m) {
  std::vector<uint32_t> nodes;
  const char* op = nullptr;
  uint32_t in = 0, width = 0;
  for (uint32_t i = 0; m.node(i, &op, &in, &width); ++i)
    if (std::string(op) == "conv2d") nodes.push_back(i);
  return nodes;
}

struct NetRun {
  std::vector<float> v;
  std::vector<double> exact, hutch;
  std::vector<std::string> kernels;  // of the conv nodes
};

// 17 rows of uniform values in [-1, 1]: the velocity at t in (0, 1), a 2-step exact
// log-likelihood and a 2-step Hutchinson one (2 Rademacher probes, seed 4).
NetRun run_net(const siflow::Model& m, siflow::Backend backend, uint32_t threads, bool tune) {
  siflow::PlanOptions po;
  po.max_batch = 17;
  po.backend = backend;
  po.threads = threads;
  po.max_probes = 2;
  po.tune = tune;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  const size_t n = 17, d = m.info().dim;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> y(n * d), t(n);
  for (float& f : y) f = u(rng);
  for (size_t i = 0; i < n; ++i) t[i] = (i + 0.5f) / n;
  NetRun r;
  for (uint32_t i : conv_nodes(m)) r.kernels.push_back(plan->node_kernel(i));
  r.v.resize(n * d);
  REQUIRE(plan->velocity(n, t.data(), y.data(), r.v.data()).ok());
  siflow::LogProbOptions lo;
  lo.ode.steps = 2;
  r.exact.resize(n);
  REQUIRE(plan->log_prob(n, y.data(), lo, r.exact.data()).ok());
  lo.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lo.divergence.probes = 2;
  lo.divergence.seed = 4;
  r.hutch.resize(n);
  REQUIRE(plan->log_prob(n, y.data(), lo, r.hutch.data()).ok());
  return r;
}

void check_against_reference(const NetRun& fast, const NetRun& ref) {
  const test_support::VelocityGap gap = test_support::velocity_gap(fast.v, ref.v);
  const double worst = gap.worst, scale = gap.scale;
  INFO("worst velocity difference " << worst << " at scale " << scale);
  // Four layers of at most 117 terms each, summed in another order: a few float ulps of the scale.
  CHECK(worst <= 1e-5 * scale);
  for (size_t i = 0; i < ref.exact.size(); ++i) {
    INFO("row " << i << ": exact " << fast.exact[i] << " vs " << ref.exact[i] << ", Hutchinson "
                << fast.hutch[i] << " vs " << ref.hutch[i]);
    CHECK(std::fabs(fast.exact[i] - ref.exact[i]) <= 1e-4 * (1.0 + std::fabs(ref.exact[i])));
    CHECK(std::fabs(fast.hutch[i] - ref.hutch[i]) <= 1e-4 * (1.0 + std::fabs(ref.hutch[i])));
  }
}

}  // namespace

TEST_CASE("a conv net plans on the xnnpack backend exactly when the build has XNNPACK") {
  auto m = load(conv_net());
  siflow::PlanOptions po;
  po.backend = siflow::Backend::kXnnpack;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(*m, po, nullptr, 0, &plan);
  if (siflow_test::kHaveXnnpack) {
    REQUIRE_MESSAGE(s.ok(), s.message());
    for (uint32_t i : conv_nodes(*m))
      CHECK(std::string(plan->node_kernel(i)).rfind("xnnpack n", 0) == 0);
  } else {
    CHECK(s.code() == siflow::StatusCode::kUnsupported);
    MESSAGE("SKIPPED: the XNNPACK convolution cases (this build has no XNNPACK)");
  }
}

TEST_CASE("XNNPACK conv layer, NHWC conversions included, matches the textbook formula" *
          SIFLOW_NEEDS_XNNPACK) {
#if defined(SIFLOW_WITH_XNNPACK)
  namespace xnn = siflow::xnn;
  std::mt19937 rng(5);
  for (const Case& c : kCases) {
    const uint32_t oh = outputs(c.h, c.pt, c.pb, c.kh, c.sh, c.dh);
    const uint32_t ow = outputs(c.w, c.pl, c.pr, c.kw, c.sw, c.dw);
    const size_t in = size_t{c.cin} * c.h * c.w, out = size_t{c.cout} * oh * ow;
    const uint32_t terms = c.cin / c.groups * c.kh * c.kw;
    const auto w = random_floats(size_t{c.cout} * terms, rng, 0.5f);
    const auto b = random_floats(c.cout, rng, 1.0f);
    const xnn::ConvShape shape{c.cin, c.h,  c.w,  c.cout, oh,   ow,   c.groups, c.kh, c.kw,
                               c.pt,  c.pl, c.pb, c.pr,   c.sh, c.sw, c.dh,     c.dw};
    xnn::ConvLayer* layer = nullptr;
    const siflow::Status s = xnn::create_conv(shape, w.data(), b.data(), nullptr, &layer);
    REQUIRE_MESSAGE(s.ok(), c.what << ": " << s.message());
    std::vector<float> scratch(xnn::conv_scratch_floats(shape, 17));
    REQUIRE(xnn::prime_conv(layer, scratch.data()).ok());
    for (size_t batch : {size_t{1}, size_t{3}, size_t{17}})
      for (bool tangent : {false, true}) {
        INFO(c.what << ", batch " << batch << (tangent ? ", tangent (no bias)" : ""));
        // Samples with a stride larger than their size: the layer must not read past them.
        const size_t xs = in + 5, ys = out + 3;
        const auto x = random_floats(batch * xs, rng, 2.0f);
        std::vector<float> y(batch * ys, 7.0f);
        auto serial = [](size_t count, auto&& fn) { fn(size_t{0}, count); };
        // Chunks of 2 samples when batch > 2: the chunk loop is exercised too.
        const size_t chunk = batch > 2 ? 2 : batch;
        xnn::run_conv(layer, x.data(), xs, batch, y.data(), ys, scratch.data(), chunk, tangent,
                      nullptr, serial);
        size_t bad = 0;
        double worst = 0;
        for (size_t r = 0; r < batch; ++r) {
          const float* bp = tangent ? nullptr : b.data();
          const auto ref = textbook(c, oh, ow, x.data() + r * xs, w, bp, false);
          const auto mag = textbook(c, oh, ow, x.data() + r * xs, w, bp, true);
          for (size_t i = 0; i < out; ++i) {
            // Recursive float summation of n terms (FMA or not, any order): error at most
            // gamma_n sum |terms| with gamma_n < (n + 1) 2^-24 for these n; + 1 for the bias.
            const double err = std::fabs(y[r * ys + i] - ref[i]);
            if (!(err <= (terms + 2) * 0x1p-24 * mag[i] + 1e-30)) ++bad;
            if (mag[i] > 0) worst = std::max(worst, err / mag[i]);
          }
          for (size_t i = out; i < ys; ++i) CHECK(y[r * ys + i] == 7.0f);  // gap untouched
        }
        INFO("worst |error| / sum |terms| = " << worst);
        CHECK(bad == 0);
      }
    xnn::destroy_conv(layer);
  }
#endif
}

TEST_CASE("conv net on xnnpack: against the reference backend, exact and Hutchinson" *
          SIFLOW_NEEDS_XNNPACK) {
  auto m = load(conv_net());
  const NetRun ref = run_net(*m, siflow::Backend::kReference, 1, false);
  const NetRun xnn = run_net(*m, siflow::Backend::kXnnpack, 1, false);
  REQUIRE(xnn.kernels.size() == 4);
  for (const std::string& k : xnn.kernels)
    CHECK(k.rfind("xnnpack n", 0) == 0);  // its layouts: xnnpack nhwc, nchw>nhwc, ...
  for (const std::string& k : ref.kernels) CHECK(k == "reference");
  check_against_reference(xnn, ref);
  // The simd backend names its convolutions with their layout too.
  const NetRun simd = run_net(*m, siflow::Backend::kSimd, 1, false);
  for (const std::string& k : simd.kernels) {
    CHECK(k.rfind("simd/", 0) == 0);
    CHECK(k.size() > 5);
    CHECK(k.compare(k.size() - 5, 5, " nchw") == 0);
  }
}

TEST_CASE("conv net on xnnpack: calls of 1, 1, 3, 1 and 2 rows on one plan, new values each" *
          SIFLOW_NEEDS_XNNPACK) {
  // Every call sets each XNNPACK operator up for its rows on the plan's scratch (the same
  // pointers at batch 1); each must match the reference and give a fresh plan's bits.
  auto m = load(conv_net());
  const size_t d = m->info().dim;
  auto plan_for = [&](siflow::Backend backend) {
    siflow::PlanOptions po;
    po.max_batch = 3;
    po.backend = backend;
    po.divergence = siflow::DivergenceMode::kNone;
    std::unique_ptr<siflow::Plan> plan;
    REQUIRE(siflow::Plan::create(*m, po, nullptr, 0, &plan).ok());
    return plan;
  };
  const auto xnn = plan_for(siflow::Backend::kXnnpack);
  const auto ref = plan_for(siflow::Backend::kReference);
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t rows : {size_t{1}, size_t{1}, size_t{3}, size_t{1}, size_t{2}}) {
    INFO(rows << " rows");
    std::vector<float> y(rows * d), t(rows, 0.375f), v(rows * d), w(rows * d), f(rows * d);
    for (float& x : y) x = u(rng);
    REQUIRE(xnn->velocity(rows, t.data(), y.data(), v.data()).ok());
    REQUIRE(ref->velocity(rows, t.data(), y.data(), w.data()).ok());
    REQUIRE(plan_for(siflow::Backend::kXnnpack)->velocity(rows, t.data(), y.data(), f.data()).ok());
    double worst = 0, scale = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      worst = std::max(worst, double{std::fabs(v[i] - w[i])});
      scale = std::max(scale, double{std::fabs(w[i])});
    }
    CHECK(worst <= 1e-5 * scale);
    CHECK(std::memcmp(v.data(), f.data(), v.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("conv net on xnnpack: bit-equal on 1 and 2 threads" * SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  auto m = load(conv_net());
  const NetRun one = run_net(*m, siflow::Backend::kXnnpack, 1, false);
  const NetRun two = run_net(*m, siflow::Backend::kXnnpack, 2, false);
  CHECK(std::memcmp(one.v.data(), two.v.data(), one.v.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(one.exact.data(), two.exact.data(), one.exact.size() * sizeof(double)) == 0);
  CHECK(std::memcmp(one.hutch.data(), two.hutch.data(), one.hutch.size() * sizeof(double)) == 0);
}

TEST_CASE("conv net tuned: each conv's choice and layout named, results agree" *
          SIFLOW_NEEDS_XNNPACK) {
  auto m = load(conv_net());
  const NetRun ref = run_net(*m, siflow::Backend::kReference, 1, false);
  const NetRun tuned = run_net(*m, siflow::Backend::kAuto, 1, true);
  REQUIRE(tuned.kernels.size() == 4);
  // The first convolution reads the caller's x (not bound at plan time): not timed, simd.
  CHECK(tuned.kernels[0].rfind("simd/", 0) == 0);
  for (const std::string& k : tuned.kernels) {
    INFO(k);
    const bool nchw = k.rfind("simd/", 0) == 0 && k.compare(k.size() - 5, 5, " nchw") == 0;
    CHECK((k.rfind("xnnpack n", 0) == 0 || nchw));
  }
  check_against_reference(tuned, ref);
  // Without tuning, auto keeps every convolution on simd.
  const NetRun plain = run_net(*m, siflow::Backend::kAuto, 1, false);
  for (const std::string& k : plain.kernels) CHECK(k.rfind("simd/", 0) == 0);
}

#if defined(SIFLOW_TEST_HEAP_HOOKS)
TEST_CASE("conv net on xnnpack with worker threads makes no heap call while running" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
#if defined(SIFLOW_WITH_XNNPACK)
  auto m = load(conv_net());
  for (uint32_t threads : {1u, 2u}) {
    INFO(threads << " thread(s)");
    siflow::PlanOptions po;
    po.max_batch = 8;
    po.threads = threads;
    po.max_probes = 2;
    po.backend = siflow::Backend::kXnnpack;
    std::unique_ptr<siflow::Plan> plan;
    REQUIRE(siflow::Plan::create(*m, po, nullptr, 0, &plan).ok());
    const size_t d = m->info().dim;
    std::vector<float> y(20 * d), x(20 * d);
    std::vector<double> logp(20);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
    siflow::SampleOptions so;
    so.ode.steps = 2;
    siflow::LogProbOptions exact, hutch;
    exact.ode.steps = 2;
    hutch.ode.steps = 2;
    hutch.divergence.mode = siflow::DivergenceMode::kHutchinson;
    hutch.divergence.probes = 2;
    siflow::Status s1, s2, s3;
    const uint64_t xnn_before = siflow::xnn::allocation_stats().calls;
    siflow_test::heap_watch_begin();
    // 20 rows: batches of 8, 8 and 4, so XNNPACK is set up for several batch sizes.
    s1 = plan->sample(20, so, y.data(), logp.data());
    s2 = plan->log_prob(20, x.data(), exact, logp.data());
    s3 = plan->log_prob(20, x.data(), hutch, logp.data());
    const unsigned long calls = siflow_test::heap_watch_end().calls;
    CHECK(s1.ok());
    CHECK(s2.ok());
    CHECK(s3.ok());
    CHECK(calls == 0);
    CHECK(siflow::xnn::allocation_stats().calls == xnn_before);
  }
#endif
}

TEST_CASE("XNNPACK convolutions run in parts (samples, channel slices) make no heap call" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
#if defined(SIFLOW_WITH_XNNPACK)
  // conv_net's layers are below the work a part needs (they run whole on two threads); this
  // net's 40 -> 64 and 64 -> 16 convolutions split: by output channels at 1 row, by samples at 8
  // and 4.
  auto m = load(test_support::nhwc_split_model());
  siflow::PlanOptions po;
  po.max_batch = 8;
  po.threads = 2;
  po.max_probes = 1;
  po.backend = siflow::Backend::kXnnpack;
  std::unique_ptr<siflow::Plan> plan;
  REQUIRE(siflow::Plan::create(*m, po, nullptr, 0, &plan).ok());
  const size_t d = m->info().dim;
  std::vector<float> y(20 * d), x(20 * d);
  std::vector<double> logp(20);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  siflow::SampleOptions so;
  so.ode.steps = 1;
  siflow::LogProbOptions hutch;
  hutch.ode.steps = 1;
  hutch.divergence.mode = siflow::DivergenceMode::kHutchinson;
  hutch.divergence.probes = 1;
  siflow::Status s1, s2, s3;
  const uint64_t xnn_before = siflow::xnn::allocation_stats().calls;
  siflow_test::heap_watch_begin();
  s1 = plan->sample(1, so, y.data(), nullptr);
  s2 = plan->sample(20, so, y.data(), nullptr);
  s3 = plan->log_prob(3, x.data(), hutch, logp.data());
  const unsigned long calls = siflow_test::heap_watch_end().calls;
  CHECK(s1.ok());
  CHECK(s2.ok());
  CHECK(s3.ok());
  CHECK(calls == 0);
  CHECK(siflow::xnn::allocation_stats().calls == xnn_before);
#endif
}
#endif
