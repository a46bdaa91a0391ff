// SPDX-License-Identifier: Apache-2.0
// Plan-time NHWC layouts (plan/layout_choice.cc): image tensors between XNNPACK convolutions
// kept NHWC, so the convolutions convert nothing there. On small nets with odd shapes (odd H and
// W, 12 and 13 channels, stride 2, a transposed conv, a per-channel time bias, a residual add,
// GroupNorm): the NHWC plan against the reference backend (velocity, exact and Hutchinson log p)
// and against the all-NCHW XNNPACK plan (SIFLOW_LAYOUT=nchw): bit-equal without GroupNorm (the
// other ops' NHWC forms do the same operations per element), within the GroupNorm bound with it;
// on every forced simd variant, 1 and 2 threads and several block sizes; the layouts named per
// node. Also: C = 1 and one-pixel tensors and full-width constants next to XNNPACK convolutions
// stay NCHW (regressions: a 512-channel GroupNorm, a bilinear Resize, an add_constant), and
// batch 1 to 5 on two threads, where convolutions split by output channels in place.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/net_run.hpp"
#include "support/random_vectors.hpp"
#include "support/requirements.hpp"
#include "support/simd_variants.hpp"
#include "support/velocity_gap.hpp"

namespace {

using test_support::check_close;
using test_support::count_with;
using test_support::EnvGuard;
using test_support::NetRun;
using test_support::random_floats;
using test_support::run_net;
using test_support::same_bits;

// dim 3 * 9 * 7. h1 = conv(x) 3 -> 12; e = reshape(fc(t), [12, 1, 1]); h2 = h1 + e;
// [GroupNorm(4)]; silu; h4 = conv 12 -> 12; h5 = h4 + h1 + resize(e, [12, 9, 7]);
// [GroupNorm(3)]; concat(h5, h1) read as [24, 9, 7]; conv 24 -> 13 stride 2 (5 x 4); silu;
// output = conv_transpose 13 -> 3 stride 2 back to 9 x 7.
std::vector<uint8_t> net(bool group_norm) {
  std::mt19937 rng(21);
  siflow::ModelBuilder b(3 * 9 * 7);
  b.set_x_shape({3, 9, 7});
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  const uint32_t h1 = b.conv2d(b.x(), 12, {3, 3}, random_floats(12 * 3 * 9, rng, -0.3f, 0.3f),
                               random_floats(12, rng, -0.1f, 0.1f), same);
  const uint32_t e = b.reshape(b.fully_connected(b.t(), 12, random_floats(12, rng, -1.0f, 1.0f),
                                                 random_floats(12, rng, -1.0f, 1.0f)),
                               {12, 1, 1});
  uint32_t h = b.add(h1, e);
  if (group_norm)
    h = b.group_norm(h, 4, random_floats(12, rng, 0.5f, 1.5f), random_floats(12, rng, -1.0f, 1.0f));
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.conv2d(h, 12, {3, 3}, random_floats(12 * 12 * 9, rng, -0.2f, 0.2f),
               random_floats(12, rng, -0.1f, 0.1f), same);
  h = b.add(h, h1);
  // The time bias again, as an exported U-Net spreads it: nearest Resize [12, 1, 1] -> [12, 9, 7].
  h = b.add(h, b.resize(e, siflow::ModelBuilder::Resize::kNearest, 9, 7));
  if (group_norm) h = b.group_norm(h, 3);
  // A U-Net's skip: the channels concatenated (flat) and read back as [24, 9, 7].
  h = b.reshape(b.concat({h, h1}), {24, 9, 7});
  siflow::ImageWindow down = same;
  down.strides = {2, 2};
  h = b.conv2d(h, 13, {3, 3}, random_floats(13 * 24 * 9, rng, -0.2f, 0.2f),
               random_floats(13, rng, -0.1f, 0.1f), down);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  siflow::ImageWindow up = same;
  up.strides = {2, 2};
  b.set_output(b.conv_transpose2d(h, 3, {3, 3}, random_floats(13 * 3 * 9, rng, -0.2f, 0.2f),
                                  random_floats(3, rng, -0.1f, 0.1f), up));
  return b.finish();
}

struct LoadedNet {
  std::vector<uint8_t> bytes;
  std::unique_ptr<siflow::Model> model;
};

LoadedNet load(std::vector<uint8_t> bytes) {
  LoadedNet net{std::move(bytes), nullptr};
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  const siflow::Status s = siflow::Model::load(net.bytes.data(), net.bytes.size(), lo, &net.model);
  REQUIRE_MESSAGE(s.ok(), s.message());
  return net;
}

}  // namespace

TEST_CASE("NHWC layouts: named per node, against the reference and the all-NCHW plan" *
          SIFLOW_NEEDS_XNNPACK) {
  for (bool gn : {false, true}) {
    INFO("GroupNorm: " << gn);
    const LoadedNet m = load(net(gn));
    const NetRun ref = run_net(*m.model, siflow::Backend::kReference, 1, 0, false, false);
    const NetRun nchw = run_net(*m.model, siflow::Backend::kXnnpack, 1, 0, false, true);
    const NetRun nhwc = run_net(*m.model, siflow::Backend::kXnnpack, 1, 0, false, false);
    std::string names;
    for (const std::string& k : nhwc.kernels) names += "[" + k + "] ";
    INFO("nodes: " << names);
    // The all-NCHW plan converts around every convolution; the NHWC plan keeps h1 .. h5 NHWC:
    // the first conv writes NHWC, the second reads and writes it, the strided one reads it. Its
    // output stays NCHW: the transposed conv after it writes the network output, and exact
    // divergence's diagonal-only JVP reads that conv's input NCHW.
    CHECK(count_with(nchw, ">") == 0);
    CHECK(count_with(nhwc, "xnnpack nchw>nhwc") == 1);
    CHECK(count_with(nhwc, "xnnpack nhwc>nhwc") == 1);
    CHECK(count_with(nhwc, "xnnpack nhwc>nchw") == 1);
    // The three adds, the Resize, the first silu and the GroupNorms run NHWC on simd.
    size_t simd_nhwc = 0;
    for (const std::string& k : nhwc.kernels)
      simd_nhwc += k.rfind("simd/", 0) == 0 && k.size() > 5 && k.substr(k.size() - 5) == " nhwc";
    CHECK(simd_nhwc == (gn ? 7u : 5u));
    // The Concat and the Reshape reading it as an image, on the reference kernels, NHWC too.
    CHECK(count_with(nhwc, "reference nhwc") == 2);
    CHECK(nhwc.kernels.back() == "xnnpack nhwc");
    check_close(nhwc, ref, 1e-5);
    if (gn)
      check_close(nhwc, nchw, 1e-5);
    else
      CHECK(same_bits(nhwc, nchw));
  }
}

TEST_CASE("NHWC layouts: every forced simd variant, threads and block sizes" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  EnvGuard isa("SIFLOW_SIMD_ISA");
  // The reference backend does not depend on the simd variant.
  const LoadedNet nets[2] = {load(net(false)), load(net(true))};
  const NetRun refs[2] = {run_net(*nets[0].model, siflow::Backend::kReference, 1, 0, false, false),
                          run_net(*nets[1].model, siflow::Backend::kReference, 1, 0, false, false)};
  for (const siflow::simd::Kernels* k : test_support::simd_variants()) {
    CAPTURE(std::string(k->isa));
    setenv("SIFLOW_SIMD_ISA", k->isa, 1);
    for (bool gn : {false, true}) {
      INFO("GroupNorm: " << gn);
      const LoadedNet& m = nets[gn];
      const NetRun& ref = refs[gn];
      const NetRun nchw = run_net(*m.model, siflow::Backend::kXnnpack, 1, 0, false, true);
      const NetRun one = run_net(*m.model, siflow::Backend::kXnnpack, 1, 0, false, false);
      CHECK(count_with(one, "nhwc>nhwc") == 1);
      check_close(one, ref, 1e-5);
      if (!gn) CHECK(same_bits(one, nchw));
      const NetRun two = run_net(*m.model, siflow::Backend::kXnnpack, 2, 0, false, false);
      CHECK(same_bits(one, two));
      for (size_t block : {size_t{1}, size_t{5}, size_t{16}}) {
        INFO("block " << block);
        CHECK(same_bits(one, run_net(*m.model, siflow::Backend::kXnnpack, 1, block, false, false)));
        CHECK(same_bits(one, run_net(*m.model, siflow::Backend::kXnnpack, 2, block, false, false)));
      }
    }
  }
}

TEST_CASE("NHWC layouts: the simd and reference backends stay NCHW") {
  const LoadedNet m = load(net(true));
  for (siflow::Backend b : {siflow::Backend::kReference, siflow::Backend::kSimd}) {
    const NetRun r = run_net(*m.model, b, 1, 0, false, false);
    CHECK(count_with(r, "nhwc") == 0);
  }
}

TEST_CASE("NHWC layouts: a plan without tangents also reads the output conv's input NHWC" *
          SIFLOW_NEEDS_XNNPACK) {
  const LoadedNet m = load(net(false));
  auto velocity = [&](siflow::Backend backend, bool nchw, std::vector<std::string>* names) {
    const EnvGuard guard("SIFLOW_LAYOUT");
    guard.set(nchw ? "nchw" : nullptr);
    siflow::PlanOptions po;
    po.max_batch = 5;
    po.backend = backend;
    po.divergence = siflow::DivergenceMode::kNone;
    std::unique_ptr<siflow::Plan> plan;
    REQUIRE(siflow::Plan::create(*m.model, po, nullptr, 0, &plan).ok());
    const size_t n = 5, d = m.model->info().dim;
    std::vector<float> y(n * d), t(n, 0.3f), v(n * d);
    for (size_t i = 0; i < y.size(); ++i) y[i] = std::sin(0.1f * i);
    REQUIRE(plan->velocity(n, t.data(), y.data(), v.data()).ok());
    if (names)
      for (uint32_t i = 0; i < m.model->info().node_count; ++i)
        names->push_back(plan->node_kernel(i));
    return v;
  };
  std::vector<std::string> names;
  const auto ref = velocity(siflow::Backend::kReference, false, nullptr);
  const auto nchw = velocity(siflow::Backend::kXnnpack, true, nullptr);
  const auto nhwc = velocity(siflow::Backend::kXnnpack, false, &names);
  // The strided conv now writes NHWC, the output's transposed conv reads it in place.
  CHECK(names.back() == "xnnpack nhwc>nchw");
  CHECK(std::memcmp(nhwc.data(), nchw.data(), nhwc.size() * sizeof(float)) == 0);
  const test_support::VelocityGap gap = test_support::velocity_gap(nhwc, ref);
  const double worst = gap.worst, scale = gap.scale;
  CHECK(worst <= 1e-5 * scale);
}

namespace {

// Three nets whose C = 1 or H x W = 1 tensors, or full-width constants, meet an XNNPACK
// convolution: a plan once laid such tensors out "NHWC" (the same memory) and so sent the other
// ops reading them down NHWC paths that do not hold for them (a 512-channel GroupNorm past its
// NHWC kernel's stack arrays, a bilinear Resize run as nearest, an NCHW-ordered constant added
// to NHWC values).
std::vector<uint8_t> constant_net() {  // a full-width constant added between convolutions
  std::mt19937 rng(41);
  siflow::ModelBuilder b(3 * 9 * 7);
  b.set_x_shape({3, 9, 7});
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(b.x(), 12, {3, 3}, random_floats(12 * 27, rng, -0.3f, 0.3f),
                        random_floats(12, rng, -0.1f, 0.1f), same);
  h = b.add_constant(h, random_floats(12 * 63, rng, -1.0f, 1.0f));
  h = b.conv2d(h, 12, {3, 3}, random_floats(12 * 12 * 9, rng, -0.2f, 0.2f),
               random_floats(12, rng, -0.1f, 0.1f), same);
  b.set_output(b.conv2d(h, 3, {3, 3}, random_floats(3 * 12 * 9, rng, -0.2f, 0.2f), {}, same));
  return b.finish();
}

std::vector<uint8_t> bilinear_net() {  // a one-channel bilinear Resize into a convolution
  std::mt19937 rng(42);
  siflow::ModelBuilder b(8 * 8);
  b.set_x_shape({1, 8, 8});
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(b.x(), 1, {3, 3}, random_floats(9, rng, -0.5f, 0.5f),
                        random_floats(1, rng, -0.1f, 0.1f), same);
  h = b.resize(h, siflow::ModelBuilder::Resize::kBilinear, 16, 16);
  h = b.conv2d(h, 4, {3, 3}, random_floats(4 * 9, rng, -0.5f, 0.5f),
               random_floats(4, rng, -0.1f, 0.1f), same);
  siflow::ImageWindow down = same;
  down.strides = {2, 2};
  b.set_output(b.conv2d(h, 1, {3, 3}, random_floats(4 * 9, rng, -0.3f, 0.3f), {}, down));
  return b.finish();
}

std::vector<uint8_t> wide_norm_net() {  // GroupNorm over 512 channels of one pixel
  std::mt19937 rng(43);
  siflow::ModelBuilder b(2);
  b.set_x_shape({2, 1, 1});
  uint32_t h = b.conv2d(b.x(), 512, {1, 1}, random_floats(1024, rng, -0.5f, 0.5f),
                        random_floats(512, rng, -0.5f, 0.5f));
  h = b.group_norm(h, 32, random_floats(512, rng, -1.0f, 1.0f),
                   random_floats(512, rng, -1.0f, 1.0f));
  b.set_output(b.conv2d(h, 2, {1, 1}, random_floats(1024, rng, -0.1f, 0.1f)));
  return b.finish();
}

}  // namespace

TEST_CASE("NHWC layouts: C = 1 and one-pixel tensors and full-width constants stay NCHW" *
          SIFLOW_NEEDS_XNNPACK) {
  const std::pair<const char*, std::vector<uint8_t>> nets[] = {
      {"full-width constant", constant_net()},
      {"one-channel bilinear resize", bilinear_net()},
      {"512-channel GroupNorm of one pixel", wide_norm_net()}};
  for (const auto& [what, bytes] : nets) {
    INFO(what);
    const LoadedNet m = load(bytes);
    const NetRun ref = run_net(*m.model, siflow::Backend::kReference, 1, 0, false, false);
    const NetRun fast = run_net(*m.model, siflow::Backend::kXnnpack, 1, 0, false, false);
    const NetRun fast2 = run_net(*m.model, siflow::Backend::kXnnpack, 2, 0, false, false);
    check_close(fast, ref, 1e-5);
    CHECK(same_bits(fast, fast2));
  }
}

TEST_CASE("NHWC layouts: batch 1 to 5 on two threads (XNNPACK's channel slices in place)" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  // Fewer rows than threads split an XNNPACK convolution by output channels, each slice written
  // at its offset of an NHWC tensor read and written in place: against one thread bit for bit
  // and against the reference.
  const LoadedNet m = load(net(true));
  const size_t d = m.model->info().dim;
  auto velocity = [&](siflow::Backend backend, uint32_t threads, size_t n) {
    siflow::PlanOptions po;
    po.max_batch = n;
    po.backend = backend;
    po.threads = threads;
    std::unique_ptr<siflow::Plan> plan;
    REQUIRE(siflow::Plan::create(*m.model, po, nullptr, 0, &plan).ok());
    std::vector<float> y(n * d), t(n, 0.6f), v(n * d);
    for (size_t i = 0; i < y.size(); ++i) y[i] = std::cos(0.21f * i);
    REQUIRE(plan->velocity(n, t.data(), y.data(), v.data()).ok());
    return v;
  };
  for (size_t n : {size_t{1}, size_t{2}, size_t{3}, size_t{5}}) {
    INFO(n << " rows");
    const auto ref = velocity(siflow::Backend::kReference, 1, n);
    const auto one = velocity(siflow::Backend::kXnnpack, 1, n);
    const auto two = velocity(siflow::Backend::kXnnpack, 2, n);
    CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
    const test_support::VelocityGap gap = test_support::velocity_gap(two, ref);
    const double worst = gap.worst, scale = gap.scale;
    CHECK(worst <= 1e-5 * scale);
  }
}
