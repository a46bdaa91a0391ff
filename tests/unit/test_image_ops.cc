// SPDX-License-Identifier: Apache-2.0
// The image op modules (Conv2d, ConvTranspose2d) as one-node models loaded from files written
// with the generated code: forward against the textbook formulas in double, bit-reproducibility
// across batch splits and thread counts, the JVP against central differences, the training VJP
// against the adjoint identities, and every refusal of a bad node by its message.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "format/model_data.hpp"
#include "net/executor.hpp"
#include "ops/op.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"
#include "support/byte_span.hpp"
#include "support/parallel.hpp"

namespace {

namespace fb = siflow::fb;
using siflow::Model;
using siflow::Status;
using siflow::StatusCode;
using siflow::detail::ModelData;
using siflow::detail::NodeData;

// A model whose node 0 is one image node reading x (per-sample shape `in_shape`), written field
// by field (empty vectors leave the field out).
struct Spec {
  fb::OpType op = fb::OpType::Conv2d;
  std::vector<uint32_t> in_shape;
  std::vector<uint32_t> kernel, strides, pads, dilations, output_padding;
  uint32_t groups = 1;
  std::vector<uint32_t> weight_shape;
  std::vector<float> weight, bias;
  uint32_t inputs = 1;
  // Pool2d, Resize, GroupNorm.
  fb::PoolKind pool = fb::PoolKind::Average;
  bool count_include_pad = false;
  fb::ResizeMode resize = fb::ResizeMode::Nearest;
  std::vector<uint32_t> shape;  // the node's stored output shape
  std::vector<float> gamma, beta;
  float epsilon = 1e-5f;
  uint8_t raw_pool = 0, raw_resize = 0;  // nonzero: written instead of pool/resize
};

uint32_t product(const std::vector<uint32_t>& v) {
  uint32_t p = 1;
  for (uint32_t d : v) p *= d;
  return p;
}

std::vector<uint8_t> build(const Spec& s) {
  flatbuffers::FlatBufferBuilder fbb;
  auto vec = [&](const std::vector<uint32_t>& v) { return v.empty() ? 0 : fbb.CreateVector(v); };
  auto weights = [&](const std::vector<float>& v, const std::vector<uint32_t>& shape) {
    if (v.empty()) return flatbuffers::Offset<fb::Weights>();
    auto sh = fbb.CreateVector(shape);
    fbb.ForceVectorAlignment(v.size(), sizeof(float), 64);
    auto data = fbb.CreateVector(v);
    return fb::CreateWeights(fbb, fb::DType::F32, sh, data);
  };
  auto in = fbb.CreateVector(std::vector<uint32_t>(s.inputs, 0));
  auto kernel = vec(s.kernel), strides = vec(s.strides), pads = vec(s.pads),
       dilations = vec(s.dilations), output_padding = vec(s.output_padding);
  auto w = weights(s.weight, s.weight_shape);
  auto b = weights(s.bias, {static_cast<uint32_t>(s.bias.size())});
  auto gamma = weights(s.gamma, {static_cast<uint32_t>(s.gamma.size())});
  auto beta = weights(s.beta, {static_cast<uint32_t>(s.beta.size())});
  auto xs = vec(s.in_shape), shape = vec(s.shape);
  fb::NodeBuilder nb(fbb);
  nb.add_op(s.op);
  nb.add_inputs(in);
  if (!s.kernel.empty()) nb.add_kernel(kernel);
  if (!s.strides.empty()) nb.add_strides(strides);
  if (!s.pads.empty()) nb.add_pads(pads);
  if (!s.dilations.empty()) nb.add_dilations(dilations);
  if (!s.output_padding.empty()) nb.add_output_padding(output_padding);
  nb.add_groups(s.groups);
  if (!s.weight.empty()) nb.add_weight(w);
  if (!s.bias.empty()) nb.add_bias(b);
  if (!s.gamma.empty()) nb.add_gamma(gamma);
  if (!s.beta.empty()) nb.add_beta(beta);
  if (!s.shape.empty()) nb.add_shape(shape);
  nb.add_epsilon(s.epsilon);
  nb.add_pool(s.raw_pool ? static_cast<fb::PoolKind>(s.raw_pool) : s.pool);
  nb.add_count_include_pad(s.count_include_pad);
  nb.add_resize(s.raw_resize ? static_cast<fb::ResizeMode>(s.raw_resize) : s.resize);
  auto node = nb.Finish();
  // The graph's output must be as wide as x: v = exp(x) beside the node under test.
  auto tail = fb::CreateNode(fbb, fb::OpType::Exp, fbb.CreateVector(std::vector<uint32_t>{0}));
  auto nodes = fbb.CreateVector(std::vector<decltype(node)>{node, tail});
  fb::GraphBuilder gb(fbb);
  gb.add_dim(product(s.in_shape));
  gb.add_nodes(nodes);
  gb.add_output(3);
  if (!s.in_shape.empty()) gb.add_x_shape(xs);
  auto graph = gb.Finish();
  fbb.Finish(fb::CreateModel(fbb, 1, 4, 0, graph), fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

struct Loaded {
  explicit Loaded(const std::vector<uint8_t>& bytes) : span(bytes, 1) {
    status = Model::load(span.data(), span.size(), siflow::LoadOptions(), &model);
  }
  siflow_test::ByteSpan span;
  Status status;
  std::unique_ptr<Model> model;
};

void expect_refused(const Spec& spec, std::initializer_list<const char*> fragments) {
  Loaded l(build(spec));
  INFO("message: " << std::string(l.status.message()));
  CHECK(l.status.code() == StatusCode::kInvalidModel);
  CHECK_FALSE(l.model);
  for (const char* f : fragments) {
    INFO("expected fragment: " << f);
    CHECK(std::string(l.status.message()).find(f) != std::string::npos);
  }
}

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

// A conv (or transposed conv) with random weights; weight_shape from the geometry.
Spec conv_spec(fb::OpType op, std::vector<uint32_t> in_shape, uint32_t cout,
               std::vector<uint32_t> kernel, std::vector<uint32_t> strides,
               std::vector<uint32_t> pads, std::vector<uint32_t> dilations, uint32_t groups,
               bool bias, std::mt19937& rng, std::vector<uint32_t> output_padding = {}) {
  Spec s;
  s.op = op;
  s.in_shape = in_shape;
  s.kernel = kernel;
  s.strides = strides;
  s.pads = pads;
  s.dilations = dilations;
  s.output_padding = output_padding;
  s.groups = groups;
  const uint32_t cin = in_shape[0];
  s.weight_shape = op == fb::OpType::Conv2d
                       ? std::vector<uint32_t>{cout, cin / groups, kernel[0], kernel[1]}
                       : std::vector<uint32_t>{cin, cout / groups, kernel[0], kernel[1]};
  s.weight = random_floats(product(s.weight_shape), rng, 0.5f);
  if (bias) s.bias = random_floats(cout, rng);
  return s;
}

uint32_t at(const std::vector<uint32_t>& v, size_t i, uint32_t fallback) {
  return v.empty() ? fallback : v[i];
}

// The textbook definitions in double, one sample: conv as y[o][p] = b[o] + sum over the window;
// the transposed conv as each input cell scattering its kernel-weighted value onto the output.
std::vector<double> conv_reference(const Spec& s, const std::vector<uint32_t>& out_shape,
                                   const double* x, const double* w, const double* b) {
  const uint32_t cin = s.in_shape[0], h = s.in_shape[1], wd = s.in_shape[2];
  const uint32_t cout = out_shape[0], oh = out_shape[1], ow = out_shape[2];
  const uint32_t kh = s.kernel[0], kw = s.kernel[1], g = s.groups;
  const uint32_t sh = at(s.strides, 0, 1), sw = at(s.strides, 1, 1);
  const uint32_t dh = at(s.dilations, 0, 1), dw = at(s.dilations, 1, 1);
  const int pt = static_cast<int>(at(s.pads, 0, 0)), pl = static_cast<int>(at(s.pads, 1, 0));
  std::vector<double> y(size_t{cout} * oh * ow, 0.0);
  if (s.op == fb::OpType::Conv2d) {
    const uint32_t cig = cin / g, cog = cout / g;
    for (uint32_t o = 0; o < cout; ++o)
      for (uint32_t oy = 0; oy < oh; ++oy)
        for (uint32_t ox = 0; ox < ow; ++ox) {
          double acc = b ? b[o] : 0.0;
          for (uint32_t i = 0; i < cig; ++i)
            for (uint32_t ky = 0; ky < kh; ++ky)
              for (uint32_t kx = 0; kx < kw; ++kx) {
                const int iy = static_cast<int>(oy * sh + ky * dh) - pt;
                const int ix = static_cast<int>(ox * sw + kx * dw) - pl;
                if (iy < 0 || ix < 0 || iy >= static_cast<int>(h) || ix >= static_cast<int>(wd))
                  continue;
                const uint32_t c = (o / cog) * cig + i;
                acc += w[((o * cig + i) * kh + ky) * kw + kx] * x[(c * h + iy) * wd + ix];
              }
          y[(o * oh + oy) * ow + ox] = acc;
        }
  } else {
    const uint32_t cig = cin / g, cog = cout / g;
    for (uint32_t o = 0; o < cout; ++o)
      for (uint32_t k = 0; k < oh * ow; ++k) y[o * oh * ow + k] = b ? b[o] : 0.0;
    for (uint32_t c = 0; c < cin; ++c)
      for (uint32_t iy = 0; iy < h; ++iy)
        for (uint32_t ix = 0; ix < wd; ++ix)
          for (uint32_t j = 0; j < cog; ++j)
            for (uint32_t ky = 0; ky < kh; ++ky)
              for (uint32_t kx = 0; kx < kw; ++kx) {
                const int oy = static_cast<int>(iy * sh + ky * dh) - pt;
                const int ox = static_cast<int>(ix * sw + kx * dw) - pl;
                if (oy < 0 || ox < 0 || oy >= static_cast<int>(oh) || ox >= static_cast<int>(ow))
                  continue;
                const uint32_t o = (c / cig) * cog + j;
                y[(o * oh + oy) * ow + ox] +=
                    w[((c * cog + j) * kh + ky) * kw + kx] * x[(c * h + iy) * wd + ix];
              }
  }
  return y;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Runs node 0 of a loaded one-node model through its module: rows of x into y, and with t_in
// `directions` tangents per row into t_out.
void run_node(const Model& model, const float* x, size_t rows, float* y,
              const float* t_in = nullptr, float* t_out = nullptr, size_t directions = 0,
              siflow::RowPool* pool = nullptr) {
  const ModelData& md = model.data();
  std::vector<float> t(rows, 0.5f);
  float* values[3] = {const_cast<float*>(x), t.data(), y};
  float* tangents[3] = {const_cast<float*>(t_in), nullptr, t_out};
  siflow::ops::FastKernels kernels;
  kernels.pool = pool;
  const siflow::ops::NodeRun run{&md,   0,        values, tangents, rows, t_out ? directions : 0,
                                 false, &kernels, nullptr};
  siflow::ops::op_module(md.nodes[0].op).run(run);
}

std::vector<uint32_t> out_shape_of(const Model& m) {
  const auto& s = m.data().nodes[0].shape;
  return std::vector<uint32_t>(s.dims, s.dims + s.rank);
}

// Geometries covering stride, asymmetric pads, dilation, groups, depthwise, with and without
// bias; for the transposed conv also output_padding.
struct Case {
  const char* what;
  std::vector<uint32_t> in_shape;
  uint32_t cout;
  std::vector<uint32_t> kernel, strides, pads, dilations;
  uint32_t groups;
  bool bias;
  std::vector<uint32_t> output_padding;
};

const std::vector<Case>& conv_cases() {
  static const std::vector<Case> cases = {
      {"3x3 same", {2, 5, 6}, 3, {3, 3}, {}, {1, 1, 1, 1}, {}, 1, true, {}},
      {"stride 2, asymmetric pads", {3, 7, 6}, 4, {3, 2}, {2, 2}, {0, 1, 2, 0}, {}, 1, true, {}},
      {"dilation 2, no bias", {2, 7, 7}, 2, {3, 3}, {1, 2}, {2, 1, 2, 1}, {2, 2}, 1, false, {}},
      {"groups 2", {4, 5, 5}, 6, {3, 3}, {1, 1}, {1, 1, 1, 1}, {}, 2, true, {}},
      {"depthwise", {3, 6, 5}, 3, {3, 3}, {2, 1}, {1, 1, 1, 1}, {}, 3, true, {}},
      {"1x1", {4, 3, 3}, 2, {1, 1}, {}, {}, {}, 1, true, {}},
      {"kernel wider than the image", {1, 2, 3}, 2, {3, 5}, {}, {1, 2, 1, 2}, {}, 1, true, {}},
  };
  return cases;
}

const std::vector<Case>& conv_transpose_cases() {
  static const std::vector<Case> cases = {
      {"stride 2 up-sampling", {3, 4, 4}, 2, {4, 4}, {2, 2}, {1, 1, 1, 1}, {}, 1, true, {}},
      {"stride 2, output_padding", {2, 3, 4}, 3, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 1, true, {1, 1}},
      {"asymmetric pads, no bias", {2, 4, 3}, 2, {3, 2}, {1, 2}, {0, 1, 1, 0}, {}, 1, false, {}},
      {"dilation 2", {2, 3, 3}, 2, {2, 3}, {2, 1}, {0, 0, 1, 1}, {2, 2}, 1, true, {1, 0}},
      {"groups 2", {4, 3, 3}, 6, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, 2, true, {}},
      {"depthwise", {3, 3, 4}, 3, {3, 3}, {1, 1}, {}, {}, 3, true, {}},
  };
  return cases;
}

Spec spec_of(fb::OpType op, const Case& c, std::mt19937& rng) {
  return conv_spec(op, c.in_shape, c.cout, c.kernel, c.strides, c.pads, c.dilations, c.groups,
                   c.bias, rng, c.output_padding);
}

void check_forward(fb::OpType op, const std::vector<Case>& cases) {
  std::mt19937 rng(11);
  for (const Case& c : cases) {
    INFO(c.what);
    const Spec s = spec_of(op, c, rng);
    Loaded l(build(s));
    REQUIRE_MESSAGE(l.status.ok(), std::string(l.status.message()));
    const auto out_shape = out_shape_of(*l.model);
    const uint32_t in = product(s.in_shape), out = product(out_shape);
    const size_t rows = 3;
    const auto x = random_floats(rows * in, rng, 2.0f);
    std::vector<float> y(rows * out);
    run_node(*l.model, x.data(), rows, y.data());
    const auto w = to_double(s.weight), b = to_double(s.bias);
    // |w x| summed over the window bounds the float rounding of each output.
    std::vector<double> wabs(w.size()), xabs(x.size());
    for (size_t i = 0; i < w.size(); ++i) wabs[i] = std::fabs(w[i]);
    for (size_t i = 0; i < x.size(); ++i) xabs[i] = std::fabs(x[i]);
    const uint32_t terms = s.weight_shape[1] * s.kernel[0] * s.kernel[1] *
                           (op == fb::OpType::Conv2d ? 1 : s.weight_shape[0] / s.groups);
    for (size_t r = 0; r < rows; ++r) {
      const auto xd = to_double(std::vector<float>(x.begin() + r * in, x.begin() + (r + 1) * in));
      const auto ref =
          conv_reference(s, out_shape, xd.data(), w.data(), b.empty() ? nullptr : b.data());
      const auto mag = conv_reference(s, out_shape, xabs.data() + r * in, wabs.data(), nullptr);
      for (uint32_t k = 0; k < out; ++k) {
        const double bound = (terms + 2) * 0x1p-24 *
                             (mag[k] + (b.empty() ? 0.0 : std::fabs(b[k / (out / out_shape[0])])));
        INFO("row " << r << " output " << k);
        CHECK(std::fabs(y[r * out + k] - ref[k]) <= bound + 1e-30);
      }
    }
  }
}

TEST_CASE("conv2d forward matches the textbook formula in double within float rounding") {
  check_forward(fb::OpType::Conv2d, conv_cases());
}

TEST_CASE("conv_transpose2d forward matches the scatter formula in double within float rounding") {
  check_forward(fb::OpType::ConvTranspose2d, conv_transpose_cases());
}

TEST_CASE("conv output shapes follow PyTorch's size formulas") {
  std::mt19937 rng(2);
  // floor((H + pt + pb - d (k - 1) - 1) / s) + 1
  Loaded a(build(
      conv_spec(fb::OpType::Conv2d, {3, 7, 6}, 4, {3, 2}, {2, 2}, {0, 1, 2, 0}, {}, 1, true, rng)));
  REQUIRE(a.status.ok());
  CHECK(out_shape_of(*a.model) == std::vector<uint32_t>{4, 4, 3});
  // (H - 1) s - pt - pb + d (k - 1) + output_padding + 1
  Loaded b(build(conv_spec(fb::OpType::ConvTranspose2d, {2, 3, 4}, 3, {3, 3}, {2, 2}, {1, 1, 1, 1},
                           {}, 1, true, rng, {1, 1})));
  REQUIRE(b.status.ok());
  CHECK(out_shape_of(*b.model) == std::vector<uint32_t>{3, 6, 8});
  CHECK(b.model->data().tensors[2].width == 3u * 6 * 8);
}

TEST_CASE("conv results are bit-identical whatever the batch split and the thread count") {
  std::mt19937 rng(5);
  for (fb::OpType op : {fb::OpType::Conv2d, fb::OpType::ConvTranspose2d}) {
    const Case& c = op == fb::OpType::Conv2d ? conv_cases()[3] : conv_transpose_cases()[1];
    const Spec s = spec_of(op, c, rng);
    Loaded l(build(s));
    REQUIRE(l.status.ok());
    const uint32_t in = product(s.in_shape), out = product(out_shape_of(*l.model));
    const size_t rows = 50, dirs = 2;
    const auto x = random_floats(rows * in, rng), tx = random_floats(rows * dirs * in, rng);
    std::vector<float> y(rows * out), ty(rows * dirs * out);
    run_node(*l.model, x.data(), rows, y.data(), tx.data(), ty.data(), dirs);
    // Row by row.
    for (size_t r = 0; r < rows; r += 7) {
      std::vector<float> y1(out), ty1(dirs * out);
      run_node(*l.model, x.data() + r * in, 1, y1.data(), tx.data() + r * dirs * in, ty1.data(),
               dirs);
      CHECK(std::memcmp(y1.data(), y.data() + r * out, out * sizeof(float)) == 0);
      CHECK(std::memcmp(ty1.data(), ty.data() + r * dirs * out, dirs * out * sizeof(float)) == 0);
    }
    if (!siflow::RowPool::available()) {
      MESSAGE("SKIPPED: the thread-count half of this check (this build has no thread pool)");
      continue;
    }
    siflow::RowPool* pool = nullptr;
    REQUIRE(siflow::RowPool::create(2, &pool).ok());
    std::vector<float> y2(rows * out), ty2(rows * dirs * out);
    run_node(*l.model, x.data(), rows, y2.data(), tx.data(), ty2.data(), dirs, pool);
    siflow::RowPool::destroy(pool);
    CHECK(y2 == y);
    CHECK(ty2 == ty);
  }
}

void check_jvp(fb::OpType op, const std::vector<Case>& cases) {
  std::mt19937 rng(23);
  for (const Case& c : cases) {
    INFO(c.what);
    const Spec s = spec_of(op, c, rng);
    Loaded l(build(s));
    REQUIRE(l.status.ok());
    const auto out_shape = out_shape_of(*l.model);
    const uint32_t in = product(s.in_shape), out = product(out_shape);
    const size_t rows = 2, dirs = 3;
    const auto x = random_floats(rows * in, rng), tx = random_floats(rows * dirs * in, rng);
    std::vector<float> y(rows * out), ty(rows * dirs * out);
    run_node(*l.model, x.data(), rows, y.data(), tx.data(), ty.data(), dirs);
    const auto w = to_double(s.weight), b = to_double(s.bias);
    const double h = 1e-3;
    for (size_t r = 0; r < rows; ++r)
      for (size_t p = 0; p < dirs; ++p) {
        std::vector<double> xp(in), xm(in);
        for (uint32_t i = 0; i < in; ++i) {
          const double t = tx[(r * dirs + p) * in + i];
          xp[i] = x[r * in + i] + h * t;
          xm[i] = x[r * in + i] - h * t;
        }
        const double* bp = b.empty() ? nullptr : b.data();
        const auto fp = conv_reference(s, out_shape, xp.data(), w.data(), bp);
        const auto fm = conv_reference(s, out_shape, xm.data(), w.data(), bp);
        for (uint32_t k = 0; k < out; ++k) {
          const double fd = (fp[k] - fm[k]) / (2 * h);
          CHECK(std::fabs(ty[(r * dirs + p) * out + k] - fd) <= 1e-5 * (1 + std::fabs(fd)));
        }
      }
  }
}

TEST_CASE("conv2d JVP matches central differences of the double formula, per direction") {
  check_jvp(fb::OpType::Conv2d, conv_cases());
}

TEST_CASE("conv_transpose2d JVP matches central differences of the double formula") {
  check_jvp(fb::OpType::ConvTranspose2d, conv_transpose_cases());
}

// A tape with one gradient buffer for x.
struct OneTape {
  std::vector<double> dx;
  bool committed = false;
};

void check_vjp(fb::OpType op, const std::vector<Case>& cases) {
  std::mt19937 rng(31);
  for (const Case& c : cases) {
    INFO(c.what);
    const Spec s = spec_of(op, c, rng);
    Loaded l(build(s));
    REQUIRE(l.status.ok());
    const ModelData& md = l.model->data();
    const NodeData& node = md.nodes[0];
    const siflow::ops::OpModule& m = siflow::ops::op_module(node.op);
    const uint32_t in = product(s.in_shape), out = node.width;
    const size_t rows = 2;
    const uint32_t widths[3] = {in, 1, out};
    const auto w = to_double(s.weight), b = to_double(s.bias);
    const auto x = to_double(random_floats(rows * in, rng)),
               dy = to_double(random_floats(rows * out, rng));
    std::vector<double> y(rows * out), tcol(rows, 0.5);
    const double* values[3] = {x.data(), tcol.data(), y.data()};
    siflow::ops::Operands<double> o{&node,    widths,   values,
                                    y.data(), w.data(), b.empty() ? nullptr : b.data(),
                                    nullptr,  nullptr,  rows};
    m.forward_f64(o);
    OneTape tape;
    std::vector<double> dw(w.size(), 0.0), db(b.size(), 0.0);
    siflow::ops::Gradients<double> g{};
    g.dy = dy.data();
    g.tape = &tape;
    g.needs = [](void*, uint32_t tensor) { return tensor == 0; };
    g.target = [](void* t, uint32_t, size_t count) {
      auto* tp = static_cast<OneTape*>(t);
      tp->dx.assign(count, 0.0);
      return tp->dx.data();
    };
    g.commit = [](void* t, uint32_t, size_t) { static_cast<OneTape*>(t)->committed = true; };
    g.d_weight = dw.data();
    g.d_bias = b.empty() ? nullptr : db.data();
    m.vjp_f64(o, g);
    REQUIRE(tape.committed);
    // f is linear in x and in W: <dy, f(v; W, no bias)> = <dx, v> and <dy, f(x; V, no bias)> =
    // <dW, V>; and <dy, f(0; 0, c)> = <db, c>.
    const auto v = to_double(random_floats(rows * in, rng));
    const auto vw = to_double(random_floats(w.size(), rng));
    const auto out_shape = out_shape_of(*l.model);
    double lhs_x = 0, rhs_x = 0, lhs_w = 0, rhs_w = 0;
    for (size_t r = 0; r < rows; ++r) {
      const auto fv = conv_reference(s, out_shape, v.data() + r * in, w.data(), nullptr);
      const auto fw = conv_reference(s, out_shape, x.data() + r * in, vw.data(), nullptr);
      for (uint32_t k = 0; k < out; ++k) {
        lhs_x += dy[r * out + k] * fv[k];
        lhs_w += dy[r * out + k] * fw[k];
      }
      for (uint32_t i = 0; i < in; ++i) rhs_x += tape.dx[r * in + i] * v[r * in + i];
    }
    for (size_t i = 0; i < w.size(); ++i) rhs_w += dw[i] * vw[i];
    CHECK(lhs_x == doctest::Approx(rhs_x).epsilon(1e-12));
    CHECK(lhs_w == doctest::Approx(rhs_w).epsilon(1e-12));
    if (!b.empty()) {
      const uint32_t plane = out / out_shape[0];
      for (uint32_t ch = 0; ch < out_shape[0]; ++ch) {
        double sum = 0;
        for (size_t r = 0; r < rows; ++r)
          for (uint32_t k = 0; k < plane; ++k) sum += dy[r * out + ch * plane + k];
        CHECK(db[ch] == doctest::Approx(sum).epsilon(1e-12));
      }
    }
    // The float VJP agrees with the double one.
    const auto wf = s.weight;
    const auto bf = s.bias;
    std::vector<float> xf(x.begin(), x.end()), dyf(dy.begin(), dy.end()), yf(rows * out),
        tf(rows, 0.5f), dwf(w.size(), 0.0f), dbf(b.size(), 0.0f);
    const float* fvalues[3] = {xf.data(), tf.data(), yf.data()};
    siflow::ops::Operands<float> of{&node,     widths,    fvalues,
                                    yf.data(), wf.data(), bf.empty() ? nullptr : bf.data(),
                                    nullptr,   nullptr,   rows};
    m.forward_f32(of);
    for (size_t k = 0; k < yf.size(); ++k) CHECK(yf[k] == doctest::Approx(y[k]).epsilon(1e-5));
    struct FloatTape {
      std::vector<float> dx;
    } ft;
    siflow::ops::Gradients<float> gf{};
    gf.dy = dyf.data();
    gf.tape = &ft;
    gf.needs = [](void*, uint32_t tensor) { return tensor == 0; };
    gf.target = [](void* t, uint32_t, size_t count) {
      auto* tp = static_cast<FloatTape*>(t);
      tp->dx.assign(count, 0.0f);
      return tp->dx.data();
    };
    gf.commit = [](void*, uint32_t, size_t) {};
    gf.d_weight = dwf.data();
    gf.d_bias = bf.empty() ? nullptr : dbf.data();
    m.vjp_f32(of, gf);
    for (size_t k = 0; k < dw.size(); ++k)
      CHECK(dwf[k] == doctest::Approx(dw[k]).epsilon(1e-4).scale(1.0));
    for (size_t k = 0; k < tape.dx.size(); ++k)
      CHECK(ft.dx[k] == doctest::Approx(tape.dx[k]).epsilon(1e-4).scale(1.0));
  }
}

TEST_CASE("conv2d VJP: dx, dW and db satisfy the adjoint identities in double") {
  check_vjp(fb::OpType::Conv2d, conv_cases());
}

TEST_CASE("conv_transpose2d VJP: dx, dW and db satisfy the adjoint identities in double") {
  check_vjp(fb::OpType::ConvTranspose2d, conv_transpose_cases());
}

TEST_CASE("conv2d refusals name the cause") {
  std::mt19937 rng(3);
  const Spec good =
      conv_spec(fb::OpType::Conv2d, {4, 5, 5}, 6, {3, 3}, {1, 1}, {1, 1, 1, 1}, {}, 2, true, rng);
  REQUIRE(Loaded(build(good)).status.ok());
  Spec s = good;
  s.inputs = 2;
  expect_refused(s, {"node 0 (Conv2d)", "has 2 inputs, expected 1"});
  s = good;
  s.in_shape = {100};  // x flat
  expect_refused(s, {"input shape [100] is not an image [C, H, W]"});
  s = good;
  s.kernel = {};
  expect_refused(s, {"kernel [kh, kw] is missing"});
  s = good;
  s.kernel = {3, 3, 1};
  expect_refused(s, {"kernel has 3 values, expected 2"});
  s = good;
  s.kernel = {3, 0};
  expect_refused(s, {"kernel[1] = 0 is outside [1, 65536]"});
  s = good;
  s.strides = {0, 1};
  expect_refused(s, {"strides[0] = 0 is outside [1, 65536]"});
  s = good;
  s.dilations = {1, 0};
  expect_refused(s, {"dilations[1] = 0 is outside [1, 65536]"});
  s = good;
  s.dilations = {70000, 1};
  expect_refused(s, {"dilations[0] = 70000 is outside [1, 65536]"});
  s = good;
  s.pads = {1, 1, 1};
  expect_refused(s, {"pads has 3 values, expected 4"});
  s = good;
  s.groups = 0;
  expect_refused(s, {"groups = 0 does not divide the 4 input channels"});
  s = good;
  s.groups = 3;
  expect_refused(s, {"groups = 3 does not divide the 4 input channels"});
  s = conv_spec(fb::OpType::Conv2d, {4, 5, 5}, 3, {3, 3}, {}, {}, {}, 2, false, rng);
  expect_refused(s, {"groups = 2 does not divide the 3 output channels"});
  s = good;
  s.weight = {};
  expect_refused(s, {"weight must have shape [Cout, Cin/groups, kh, kw]"});
  s = good;
  s.weight_shape = {6, 4, 3, 3};
  s.weight.resize(6 * 4 * 9);
  expect_refused(s, {"weight shape [6, 4, 3, 3] does not match [Cout, Cin/groups = 2, kh = 3"});
  s = good;
  s.weight_shape = {6, 2, 3, 2};
  expect_refused(s, {"weight shape [6, 2, 3, 2] does not match"});
  s = good;
  s.weight.pop_back();
  expect_refused(s, {"node 0 (Conv2d): weight"});
  s = good;
  s.weight[7] = NAN;
  expect_refused(s, {"weight[7] is not finite"});
  s = good;
  s.bias.pop_back();
  expect_refused(s, {"node 0 (Conv2d): bias"});
  s = good;
  s.pads = {0, 0, 0, 0};
  s.dilations = {3, 1};
  expect_refused(s, {"would be empty"});
  s = good;
  s.output_padding = {1, 1};
  expect_refused(s, {"output_padding is a ConvTranspose2d field"});
  // 6 channels of (5 + 40000 + 40000 - 2) rows: far beyond the width limit.
  s = good;
  s.pads = {40000, 0, 40000, 0};
  expect_refused(s, {"output width", "is outside [1, 131072]"});
}

TEST_CASE("conv_transpose2d refusals name the cause") {
  std::mt19937 rng(4);
  const Spec good = conv_spec(fb::OpType::ConvTranspose2d, {4, 3, 3}, 6, {3, 3}, {2, 2},
                              {1, 1, 1, 1}, {}, 2, true, rng, {1, 1});
  REQUIRE(Loaded(build(good)).status.ok());
  Spec s = good;
  s.output_padding = {2, 0};
  expect_refused(s, {"node 0 (ConvTranspose2d)",
                     "output_padding[0] = 2 must be smaller than the stride (2) or the dilation"});
  s = good;
  s.output_padding = {1};
  expect_refused(s, {"output_padding has 1 values, expected 2"});
  s = good;
  s.weight_shape = {2, 3, 3, 3};
  expect_refused(s, {"weight shape [2, 3, 3, 3] does not match [Cin = 4, Cout/groups"});
  s = good;
  s.weight = {};
  expect_refused(s, {"weight must have shape [Cin, Cout/groups, kh, kw]"});
  s = good;
  s.groups = 3;
  expect_refused(s, {"groups = 3 does not divide the 4 input channels"});
  s = good;
  s.pads = {5, 1, 5, 1};
  s.output_padding = {};
  expect_refused(s, {"would be empty"});
  s = good;
  s.bias.push_back(1.0f);
  expect_refused(s, {"node 0 (ConvTranspose2d): bias"});
  s = good;
  s.in_shape = {36};
  expect_refused(s, {"input shape [36] is not an image [C, H, W]"});
}

// ---- GroupNorm, Pool2d, Resize ----

// The per-sample double formulas, written from their definitions.
std::vector<double> group_norm_reference(const Spec& s, const double* x, const double* gamma,
                                         const double* beta) {
  const uint32_t c = s.in_shape[0], width = product(s.in_shape), plane = width / c;
  const uint32_t cpg = c / s.groups;
  std::vector<double> y(width);
  for (uint32_t g = 0; g < s.groups; ++g) {
    double mean = 0, var = 0;
    const uint32_t n = cpg * plane, base = g * n;
    for (uint32_t k = 0; k < n; ++k) mean += x[base + k];
    mean /= n;
    for (uint32_t k = 0; k < n; ++k) var += (x[base + k] - mean) * (x[base + k] - mean);
    var /= n;
    for (uint32_t k = 0; k < n; ++k) {
      const uint32_t ch = g * cpg + k / plane;
      y[base + k] =
          (x[base + k] - mean) / std::sqrt(var + double(s.epsilon)) * (gamma ? gamma[ch] : 1.0) +
          (beta ? beta[ch] : 0.0);
    }
  }
  return y;
}

std::vector<double> pool_reference(const Spec& s, const std::vector<uint32_t>& out_shape,
                                   const double* x) {
  const uint32_t c = s.in_shape[0], h = s.in_shape[1], w = s.in_shape[2];
  const uint32_t oh = out_shape[1], ow = out_shape[2];
  const uint32_t sh = at(s.strides, 0, 1), sw = at(s.strides, 1, 1);
  const uint32_t dh = at(s.dilations, 0, 1), dw = at(s.dilations, 1, 1);
  const int pt = static_cast<int>(at(s.pads, 0, 0)), pl = static_cast<int>(at(s.pads, 1, 0));
  std::vector<double> y(size_t{c} * oh * ow);
  for (uint32_t ch = 0; ch < c; ++ch)
    for (uint32_t oy = 0; oy < oh; ++oy)
      for (uint32_t ox = 0; ox < ow; ++ox) {
        double sum = 0, best = -INFINITY;
        int cells = 0;
        for (uint32_t ky = 0; ky < s.kernel[0]; ++ky)
          for (uint32_t kx = 0; kx < s.kernel[1]; ++kx) {
            const int iy = static_cast<int>(oy * sh + ky * dh) - pt;
            const int ix = static_cast<int>(ox * sw + kx * dw) - pl;
            if (iy < 0 || ix < 0 || iy >= static_cast<int>(h) || ix >= static_cast<int>(w))
              continue;
            const double v = x[(ch * h + iy) * w + ix];
            sum += v;
            best = std::max(best, v);
            ++cells;
          }
        const double div = s.count_include_pad ? double(s.kernel[0] * s.kernel[1]) : cells;
        y[(ch * oh + oy) * ow + ox] = s.pool == fb::PoolKind::Max ? best : sum / div;
      }
  return y;
}

// PyTorch's upsample_nearest2d / upsample_bilinear2d (align_corners=False) for a given size.
double source_index(uint32_t o, uint32_t in, uint32_t out) {
  const double src = (double(in) / out) * (o + 0.5) - 0.5;
  return src < 0 ? 0 : src;
}

std::vector<double> resize_reference(const Spec& s, const double* x) {
  const uint32_t c = s.in_shape[0], h = s.in_shape[1], w = s.in_shape[2];
  const uint32_t oh = s.shape[1], ow = s.shape[2];
  std::vector<double> y(size_t{c} * oh * ow);
  for (uint32_t ch = 0; ch < c; ++ch)
    for (uint32_t oy = 0; oy < oh; ++oy)
      for (uint32_t ox = 0; ox < ow; ++ox) {
        const double* xc = x + size_t{ch} * h * w;
        double v;
        if (s.resize == fb::ResizeMode::Nearest) {
          v = xc[(oy * h / oh) * w + ox * w / ow];
        } else {
          const double sy = source_index(oy, h, oh), sx = source_index(ox, w, ow);
          const uint32_t y0 = static_cast<uint32_t>(std::floor(sy)),
                         x0 = static_cast<uint32_t>(std::floor(sx));
          const uint32_t y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
          const double fy = sy - y0, fx = sx - x0;
          v = (1 - fy) * ((1 - fx) * xc[y0 * w + x0] + fx * xc[y0 * w + x1]) +
              fy * ((1 - fx) * xc[y1 * w + x0] + fx * xc[y1 * w + x1]);
        }
        y[(size_t{ch} * oh + oy) * ow + ox] = v;
      }
  return y;
}

// The node's value on one sample in double; `p` and `q` are gamma and beta (GroupNorm).
std::vector<double> reference(const Spec& s, const std::vector<uint32_t>& out_shape,
                              const double* x, const double* p, const double* q) {
  switch (s.op) {
    case fb::OpType::GroupNorm:
      return group_norm_reference(s, x, p, q);
    case fb::OpType::Pool2d:
      return pool_reference(s, out_shape, x);
    case fb::OpType::Resize:
      return resize_reference(s, x);
    default:
      return conv_reference(s, out_shape, x, p, q);
  }
}

const double* data_or_null(const std::vector<double>& v) { return v.empty() ? nullptr : v.data(); }

// Forward against the reference (outputs computed in double and rounded once: within a few
// float ulps), the JVP against central differences of the reference, the float and double VJPs
// against central differences of <dy, f> in x, gamma and beta.
void check_op(const Spec& s, std::mt19937& rng, double scale = 1.0) {
  Loaded l(build(s));
  REQUIRE_MESSAGE(l.status.ok(), std::string(l.status.message()));
  const auto out_shape = out_shape_of(*l.model);
  const ModelData& md = l.model->data();
  const NodeData& node = md.nodes[0];
  const uint32_t in = product(s.in_shape), out = node.width;
  const size_t rows = 3, dirs = 2;
  const auto x = random_floats(rows * in, rng, static_cast<float>(scale));
  const auto tx = random_floats(rows * dirs * in, rng);
  std::vector<float> y(rows * out), ty(rows * dirs * out);
  run_node(*l.model, x.data(), rows, y.data(), tx.data(), ty.data(), dirs);
  const auto gd = to_double(s.gamma), bd = to_double(s.beta);
  const double h = 1e-4;
  for (size_t r = 0; r < rows; ++r) {
    const auto xd = to_double(std::vector<float>(x.begin() + r * in, x.begin() + (r + 1) * in));
    const auto ref = reference(s, out_shape, xd.data(), data_or_null(gd), data_or_null(bd));
    for (uint32_t k = 0; k < out; ++k)
      CHECK(std::fabs(y[r * out + k] - ref[k]) <= 2e-7 * (1 + std::fabs(ref[k])));
    for (size_t p = 0; p < dirs; ++p) {
      std::vector<double> xp(xd), xm(xd);
      for (uint32_t i = 0; i < in; ++i) {
        xp[i] += h * tx[(r * dirs + p) * in + i];
        xm[i] -= h * tx[(r * dirs + p) * in + i];
      }
      const auto fp = reference(s, out_shape, xp.data(), data_or_null(gd), data_or_null(bd));
      const auto fm = reference(s, out_shape, xm.data(), data_or_null(gd), data_or_null(bd));
      for (uint32_t k = 0; k < out; ++k) {
        const double fd = (fp[k] - fm[k]) / (2 * h);
        INFO("row " << r << " direction " << p << " output " << k);
        CHECK(std::fabs(ty[(r * dirs + p) * out + k] - fd) <= 2e-5 * (1 + std::fabs(fd)));
      }
    }
  }
  // VJP in double against central differences of L = sum_r <dy_r, f(x_r)>.
  const siflow::ops::OpModule& m = siflow::ops::op_module(node.op);
  const uint32_t widths[3] = {in, 1, out};
  const auto xd = to_double(x), dy = to_double(random_floats(rows * out, rng));
  std::vector<double> yd(rows * out), tcol(rows, 0.5);
  const double* values[3] = {xd.data(), tcol.data(), yd.data()};
  siflow::ops::Operands<double> o{&node,   widths,           values,           yd.data(), nullptr,
                                  nullptr, data_or_null(gd), data_or_null(bd), rows};
  m.forward_f64(o);
  OneTape tape;
  std::vector<double> dgamma(gd.size(), 0.0), dbeta(bd.size(), 0.0);
  siflow::ops::Gradients<double> g{};
  g.dy = dy.data();
  g.tape = &tape;
  g.needs = [](void*, uint32_t tensor) { return tensor == 0; };
  g.target = [](void* t, uint32_t, size_t count) {
    auto* tp = static_cast<OneTape*>(t);
    tp->dx.assign(count, 0.0);
    return tp->dx.data();
  };
  g.commit = [](void* t, uint32_t, size_t) { static_cast<OneTape*>(t)->committed = true; };
  g.d_gamma = gd.empty() ? nullptr : dgamma.data();
  g.d_beta = bd.empty() ? nullptr : dbeta.data();
  m.vjp_f64(o, g);
  REQUIRE(tape.committed);
  auto loss = [&](const std::vector<double>& xs, const std::vector<double>& gs,
                  const std::vector<double>& bs) {
    double sum = 0;
    for (size_t r = 0; r < rows; ++r) {
      const auto f =
          reference(s, out_shape, xs.data() + r * in, data_or_null(gs), data_or_null(bs));
      for (uint32_t k = 0; k < out; ++k) sum += dy[r * out + k] * f[k];
    }
    return sum;
  };
  const double e = 1e-6;
  for (size_t i = 0; i < rows * in; ++i) {
    std::vector<double> xp(xd), xm(xd);
    xp[i] += e;
    xm[i] -= e;
    const double fd = (loss(xp, gd, bd) - loss(xm, gd, bd)) / (2 * e);
    INFO("dx " << i);
    CHECK(std::fabs(tape.dx[i] - fd) <= 1e-6 * (1 + std::fabs(fd)));
  }
  for (size_t i = 0; i < gd.size(); ++i) {
    std::vector<double> gp(gd), gm(gd);
    gp[i] += e;
    gm[i] -= e;
    CHECK(std::fabs(dgamma[i] - (loss(xd, gp, bd) - loss(xd, gm, bd)) / (2 * e)) <= 1e-6);
  }
  for (size_t i = 0; i < bd.size(); ++i) {
    std::vector<double> bp(bd), bm(bd);
    bp[i] += e;
    bm[i] -= e;
    CHECK(std::fabs(dbeta[i] - (loss(xd, gd, bp) - loss(xd, gd, bm)) / (2 * e)) <= 1e-6);
  }
  // The float path agrees with the double one.
  const std::vector<float> gf(s.gamma), bf(s.beta);
  std::vector<float> yf(rows * out), tf(rows, 0.5f);
  const float* fvalues[3] = {x.data(), tf.data(), yf.data()};
  siflow::ops::Operands<float> of{&node,
                                  widths,
                                  fvalues,
                                  yf.data(),
                                  nullptr,
                                  nullptr,
                                  gf.empty() ? nullptr : gf.data(),
                                  bf.empty() ? nullptr : bf.data(),
                                  rows};
  m.forward_f32(of);
  for (size_t k = 0; k < yf.size(); ++k) CHECK(yf[k] == doctest::Approx(yd[k]).epsilon(1e-6));
}

Spec group_norm_spec(std::vector<uint32_t> shape, uint32_t groups, bool affine, std::mt19937& rng) {
  Spec s;
  s.op = fb::OpType::GroupNorm;
  s.in_shape = shape;
  s.groups = groups;
  if (affine) {
    s.gamma = random_floats(shape[0], rng, 2.0f);
    s.beta = random_floats(shape[0], rng);
  }
  return s;
}

TEST_CASE("group_norm: forward, JVP (of the normalisation) and VJP against the double formula") {
  std::mt19937 rng(41);
  SUBCASE("[6, 3, 4], 3 groups, affine") {
    check_op(group_norm_spec({6, 3, 4}, 3, true, rng), rng);
  }
  SUBCASE("[4, 5, 2], 1 group, no affine") {
    check_op(group_norm_spec({4, 5, 2}, 1, false, rng), rng);
  }
  SUBCASE("[4, 5], one channel per group") { check_op(group_norm_spec({4, 5}, 4, true, rng), rng); }
  SUBCASE("large offset: statistics in double") {
    Spec s = group_norm_spec({2, 3, 3}, 2, true, rng);
    s.epsilon = 1e-3f;
    check_op(s, rng, 3.0);
  }
}

TEST_CASE("group_norm refusals name the cause") {
  std::mt19937 rng(42);
  const Spec good = group_norm_spec({6, 2, 2}, 3, true, rng);
  REQUIRE(Loaded(build(good)).status.ok());
  Spec s = good;
  s.groups = 4;
  expect_refused(s, {"node 0 (GroupNorm)",
                     "groups = 4 does not divide the 6 channels of input "
                     "shape [6, 2, 2]"});
  s = good;
  s.groups = 0;
  expect_refused(s, {"groups = 0 does not divide"});
  s = good;
  s.epsilon = 0.0f;
  expect_refused(s, {"epsilon 0 must be positive"});
  s = good;
  s.epsilon = NAN;
  expect_refused(s, {"epsilon nan must be positive"});
  s = good;
  s.gamma.pop_back();
  expect_refused(s, {"node 0 (GroupNorm): gamma"});
  s = good;
  s.beta.push_back(0.0f);
  expect_refused(s, {"node 0 (GroupNorm): beta"});
  s = good;
  s.inputs = 2;
  expect_refused(s, {"has 2 inputs, expected 1"});
}

Spec pool_spec(fb::PoolKind kind, std::vector<uint32_t> in_shape, std::vector<uint32_t> kernel,
               std::vector<uint32_t> strides, std::vector<uint32_t> pads,
               std::vector<uint32_t> dilations = {}, bool include_pad = false) {
  Spec s;
  s.op = fb::OpType::Pool2d;
  s.pool = kind;
  s.in_shape = in_shape;
  s.kernel = kernel;
  s.strides = strides;
  s.pads = pads;
  s.dilations = dilations;
  s.count_include_pad = include_pad;
  return s;
}

TEST_CASE("pool2d: average and max forward, JVP and VJP against the double formula") {
  std::mt19937 rng(51);
  SUBCASE("average 2x2 stride 2") {
    check_op(pool_spec(fb::PoolKind::Average, {3, 4, 6}, {2, 2}, {2, 2}, {}), rng);
  }
  SUBCASE("average 3x3, asymmetric pads, padded cells excluded") {
    check_op(pool_spec(fb::PoolKind::Average, {2, 5, 4}, {3, 3}, {2, 1}, {1, 0, 1, 2}), rng);
  }
  SUBCASE("average 3x3, pads, count_include_pad") {
    check_op(pool_spec(fb::PoolKind::Average, {2, 5, 4}, {3, 3}, {1, 2}, {1, 1, 1, 1}, {}, true),
             rng);
  }
  SUBCASE("max 2x2 stride 2") {
    check_op(pool_spec(fb::PoolKind::Max, {3, 4, 6}, {2, 2}, {2, 2}, {}), rng);
  }
  SUBCASE("max 3x3, pads, dilation 2") {
    check_op(pool_spec(fb::PoolKind::Max, {2, 7, 6}, {3, 2}, {1, 2}, {1, 0, 2, 1}, {2, 2}), rng);
  }
}

TEST_CASE("max pool on ties takes the first maximum in scan order, for value and tangent") {
  const Spec s = pool_spec(fb::PoolKind::Max, {1, 2, 2}, {2, 2}, {}, {});
  Loaded l(build(s));
  REQUIRE(l.status.ok());
  const float x[4] = {1.0f, 3.0f, 3.0f, 3.0f};
  const float t[4] = {10.0f, 20.0f, 30.0f, 40.0f};
  float y = 0, ty = 0;
  run_node(*l.model, x, 1, &y, t, &ty, 1);
  CHECK(y == 3.0f);
  CHECK(ty == 20.0f);  // the first of the three equal maxima
  const float xn[4] = {1.0f, NAN, 5.0f, 2.0f};
  run_node(*l.model, xn, 1, &y, t, &ty, 1);
  CHECK(std::isnan(y));
  CHECK(ty == 20.0f);
}

TEST_CASE("pool2d refusals name the cause") {
  const Spec good = pool_spec(fb::PoolKind::Average, {2, 4, 4}, {2, 2}, {2, 2}, {1, 1, 1, 1});
  REQUIRE(Loaded(build(good)).status.ok());
  Spec s = good;
  s.raw_pool = 7;
  expect_refused(s, {"node 0 (Pool2d)", "unknown pool kind 7"});
  s = good;
  s.dilations = {2, 2};
  expect_refused(s, {"dilations [2, 2] apply to max pooling only"});
  s = good;
  s.pool = fb::PoolKind::Max;
  s.count_include_pad = true;
  expect_refused(s, {"count_include_pad applies to average pooling only"});
  s = good;
  s.kernel = {};
  expect_refused(s, {"kernel [kh, kw] is missing"});
  s = good;
  s.strides = {2, 0};
  expect_refused(s, {"strides[1] = 0 is outside [1, 65536]"});
  s = good;
  s.kernel = {7, 2};
  s.pads = {};
  expect_refused(s, {"would be empty"});
  s = good;
  s.pads = {2, 0, 2, 0};
  expect_refused(s, {"the window of output row 0 lies entirely in the padding"});
  s = good;
  s.pads = {0, 0, 0, 3};
  s.strides = {1, 1};
  expect_refused(s, {"the window of output column 4 lies entirely in the padding"});
  // A dilated max window whose taps step over the one input row: -1 and 2 miss row 0.
  s = pool_spec(fb::PoolKind::Max, {1, 1, 4}, {2, 1}, {}, {1, 0, 2, 0}, {3, 1});
  expect_refused(s, {"the window of output row 0 lies entirely in the padding"});
  s.pads = {0, 0, 3, 0};  // taps 0 and 3: row 0 is in
  CHECK(Loaded(build(s)).status.ok());
  s = good;
  s.in_shape = {32};
  expect_refused(s, {"input shape [32] is not an image [C, H, W]"});
  s = good;
  s.inputs = 2;
  expect_refused(s, {"has 2 inputs, expected 1"});
}

Spec resize_spec(fb::ResizeMode mode, std::vector<uint32_t> in_shape,
                 std::vector<uint32_t> out_shape) {
  Spec s;
  s.op = fb::OpType::Resize;
  s.resize = mode;
  s.in_shape = in_shape;
  s.shape = out_shape;
  return s;
}

TEST_CASE("resize: nearest and bilinear forward, JVP and VJP against PyTorch's definitions") {
  std::mt19937 rng(61);
  SUBCASE("nearest x2") {
    check_op(resize_spec(fb::ResizeMode::Nearest, {2, 3, 4}, {2, 6, 8}), rng);
  }
  SUBCASE("nearest 3 -> 5, 4 -> 3") {
    check_op(resize_spec(fb::ResizeMode::Nearest, {2, 3, 4}, {2, 5, 3}), rng);
  }
  SUBCASE("bilinear x2") {
    check_op(resize_spec(fb::ResizeMode::Bilinear, {2, 3, 4}, {2, 6, 8}), rng);
  }
  SUBCASE("bilinear 3 -> 7, 4 -> 2") {
    check_op(resize_spec(fb::ResizeMode::Bilinear, {1, 3, 4}, {1, 7, 2}), rng);
  }
}

TEST_CASE("bilinear x2 up-sampling of a 2x2 image gives PyTorch's values") {
  // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), scale_factor=2,
  // mode='bilinear', align_corners=False): rows [1, 1.25, 1.75, 2], [1.5, 1.75, 2.25, 2.5],
  // [2.5, 2.75, 3.25, 3.5], [3, 3.25, 3.75, 4].
  Loaded l(build(resize_spec(fb::ResizeMode::Bilinear, {1, 2, 2}, {1, 4, 4})));
  REQUIRE(l.status.ok());
  const float x[4] = {1, 2, 3, 4};
  float y[16];
  run_node(*l.model, x, 1, y);
  const float want[16] = {1,    1.25f, 1.75f, 2,    1.5f, 1.75f, 2.25f, 2.5f,
                          2.5f, 2.75f, 3.25f, 3.5f, 3,    3.25f, 3.75f, 4};
  for (int k = 0; k < 16; ++k) CHECK(y[k] == want[k]);
}

TEST_CASE("resize refusals name the cause") {
  const Spec good = resize_spec(fb::ResizeMode::Bilinear, {2, 3, 3}, {2, 6, 6});
  REQUIRE(Loaded(build(good)).status.ok());
  Spec s = good;
  s.shape = {};
  expect_refused(s, {"node 0 (Resize)", "shape must give the output size [C, OH, OW]"});
  s = good;
  s.shape = {72};
  expect_refused(s, {"shape must give the output size [C, OH, OW]"});
  s = good;
  s.shape = {3, 6, 4};
  expect_refused(s, {"output shape [3, 6, 4] changes the channel count of input [2, 3, 3]"});
  s = good;
  s.raw_resize = 9;
  expect_refused(s, {"unknown resize mode 9"});
  s = good;
  s.in_shape = {18};
  expect_refused(s, {"input shape [18] is not an image [C, H, W]"});
  s = good;
  s.shape = {2, 300, 300};
  expect_refused(s, {"output width 180000 is outside [1, 131072]"});
}

// ---- An image net written with ModelBuilder, through the loader, the executor and a Plan ----

siflow::ModelBuilder image_builder(std::mt19937& rng) {
  using B = siflow::ModelBuilder;
  B b(72);
  b.set_x_shape({2, 6, 6});
  B::Window down;
  down.strides = {2, 2};
  down.pads = {1, 0, 1, 1};
  down.groups = 2;
  uint32_t h =
      b.conv2d(B::x(), 4, {3, 3}, random_floats(4 * 1 * 9, rng, 0.5f), random_floats(4, rng), down);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.group_norm(h, 2, random_floats(4, rng, 2.0f), random_floats(4, rng));
  h = b.mul(h, B::t());
  B::Window same;
  same.pads = {1, 1, 1, 1};
  h = b.pool2d(h, B::Pool::kMax, {3, 3}, same);
  h = b.pool2d(h, B::Pool::kAverage, {3, 3}, same, true);
  h = b.resize(h, B::Resize::kBilinear, 5, 4);
  h = b.resize(h, B::Resize::kNearest, 3, 3);
  B::Window up;
  up.strides = {2, 2};
  up.pads = {1, 1, 1, 1};
  up.groups = 2;
  h = b.conv_transpose2d(h, 2, {4, 4}, random_floats(4 * 1 * 16, rng, 0.5f), random_floats(2, rng),
                         up);
  b.set_output(b.add(h, B::x()));
  return b;
}

// v(t, x) of a loaded model in double through each module's forward_f64 (each checked against
// an independent formula above).
std::vector<double> eval_f64(const ModelData& md, double t, const std::vector<double>& x) {
  std::vector<std::vector<double>> v = {x, {t}};
  std::vector<uint32_t> widths;
  for (uint32_t i = 0; i < md.node_count + 2; ++i) widths.push_back(md.tensors[i].width);
  for (uint32_t k = 0; k < md.node_count; ++k) {
    const NodeData& n = md.nodes[k];
    auto params = [](const float* p, size_t count) {
      return p ? std::vector<double>(p, p + count) : std::vector<double>();
    };
    std::vector<const double*> ptrs;
    for (const auto& t_ : v) ptrs.push_back(t_.data());
    std::vector<double> out(n.width);
    size_t wcount = 0;  // conv weights: [C_out][C_in/g][kh][kw] or [C_in][C_out/g][kh][kw]
    if (n.weight) {
      const auto& s = n.op == siflow::detail::OpKind::kConv2d ? n.in_shape : n.shape;
      const uint32_t per_group = s.dims[0] / n.groups;
      wcount =
          size_t{n.op == siflow::detail::OpKind::kConv2d ? n.shape.dims[0] : n.in_shape.dims[0]} *
          per_group * n.kernel[0] * n.kernel[1];
    }
    const auto weight = params(n.weight, wcount);
    const uint32_t channels = n.shape.rank ? n.shape.dims[0] : n.width;
    const auto bias = params(n.bias, n.bias ? channels : 0);
    const auto gamma = params(n.gamma, n.gamma ? channels : 0);
    const auto beta = params(n.beta, n.beta ? channels : 0);
    siflow::ops::Operands<double> o{&n,
                                    widths.data(),
                                    ptrs.data(),
                                    out.data(),
                                    n.weight ? weight.data() : nullptr,
                                    n.bias ? bias.data() : nullptr,
                                    n.gamma ? gamma.data() : nullptr,
                                    n.beta ? beta.data() : nullptr,
                                    1};
    siflow::ops::op_module(n.op).forward_f64(o);
    v.push_back(out);
  }
  return v[md.output];
}

TEST_CASE("an image net from ModelBuilder: shapes, velocity, Jacobian and divergence") {
  std::mt19937 rng(71);
  const std::vector<uint8_t> bytes = image_builder(rng).finish();
  CHECK(fb::GetModel(bytes.data())->format_minor() == 4);
  Loaded l(bytes);
  REQUIRE_MESSAGE(l.status.ok(), std::string(l.status.message()));
  const ModelData& md = l.model->data();
  CHECK(std::string(siflow::detail::shape_text(md.x_shape).text) == "[2, 6, 6]");
  CHECK(std::string(siflow::detail::shape_text(md.tensors[2].shape).text) == "[4, 3, 3]");
  CHECK(std::string(siflow::detail::shape_text(md.tensors[8].shape).text) == "[4, 5, 4]");
  CHECK(std::string(siflow::detail::shape_text(md.tensors[md.output].shape).text) == "[2, 6, 6]");
  const uint32_t dim = md.dim;
  const size_t rows = 3;
  std::vector<float> x = random_floats(rows * dim, rng, 1.5f);
  std::vector<float> t = {0.2f, 0.5f, 0.9f};
  // The public API.
  std::unique_ptr<siflow::Plan> plan;
  siflow::PlanOptions po;
  po.max_batch = rows;
  REQUIRE(siflow::Plan::create(*l.model, po, nullptr, 0, &plan).ok());
  std::vector<float> v(rows * dim);
  REQUIRE(plan->velocity(rows, t.data(), x.data(), v.data()).ok());
  double worst = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    const auto want =
        eval_f64(md, t[r], std::vector<double>(x.begin() + r * dim, x.begin() + (r + 1) * dim));
    for (uint32_t k = 0; k < dim; ++k)
      worst =
          std::max(worst, std::fabs(v[r * dim + k] - want[k]) / std::max(1.0, std::fabs(want[k])));
  }
  MESSAGE("image net: max relative velocity error " << worst);
  CHECK(worst <= 1e-5);
  // The executor with identity seeds: every Jacobian column against central differences.
  std::vector<std::vector<float>> values(md.node_count + 2), tangents(md.node_count + 2);
  std::vector<float*> vp, tp;
  for (uint32_t id = 0; id < md.node_count + 2; ++id) {
    if (id >= 1) values[id].assign(rows * md.tensors[id].width, NAN);
    if (id == 0 || (id >= 2 && md.tensors[id].depends_on_x))
      tangents[id].assign(rows * dim * md.tensors[id].width, NAN);
    vp.push_back(values[id].empty() ? nullptr : values[id].data());
    tp.push_back(tangents[id].empty() ? nullptr : tangents[id].data());
  }
  for (size_t r = 0; r < rows; ++r) values[1][r] = t[r];
  siflow::NetBuffers net;
  net.values = vp.data();
  net.tangents = tp.data();
  net.directions = dim;
  siflow::fill_identity_seeds(tangents[0].data(), rows, dim);
  siflow::run_network(md, net, x.data(), rows, dim, true);
  std::vector<double> div(rows);
  siflow::exact_divergence(tp[md.output], rows, dim, div.data());
  double jworst = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    double trace = 0.0;
    for (uint32_t p = 0; p < dim; ++p) {
      std::vector<double> xp(x.begin() + r * dim, x.begin() + (r + 1) * dim), xm(xp);
      const double h = 1e-5;
      xp[p] += h;
      xm[p] -= h;
      const auto fp = eval_f64(md, t[r], xp), fm = eval_f64(md, t[r], xm);
      for (uint32_t k = 0; k < dim; ++k) {
        const double fd = (fp[k] - fm[k]) / (2 * h);
        if (k == p) trace += fd;
        jworst = std::max(jworst, std::fabs(tp[md.output][(r * dim + p) * dim + k] - fd) /
                                      std::max(1.0, std::fabs(fd)));
      }
    }
    CHECK(std::fabs(div[r] - trace) <= 1e-4 * (1 + std::fabs(trace)));
  }
  MESSAGE("image net: max Jacobian error " << jworst);
  CHECK(jworst <= 1e-4);
}

}  // namespace
