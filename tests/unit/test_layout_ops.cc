// SPDX-License-Identifier: Apache-2.0
// The layout ops (Reshape, Transpose, Slice): forward against index formulas, JVP per direction,
// VJP as the exact adjoint, every refusal of a bad node, and Reshape's aliasing in a plan (no
// buffer of its own, its input kept alive while it is read, the same bits as without it).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "format/model_data.hpp"
#include "net/executor.hpp"
#include "ops/op.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"
#include "support/random_vectors.hpp"

namespace {

using siflow::Model;
using siflow::ModelBuilder;
using siflow::Plan;
using siflow::PlanOptions;
using siflow::Status;
using siflow::StatusCode;
using siflow::UnaryKind;
using siflow::detail::NodeData;
using siflow::detail::OpKind;
using siflow::detail::Shape;
using test_support::random_normals;

namespace fb = siflow::fb;

// Loads a model whose bytes this test keeps alive (a model loaded in place reads its file's
// bytes for as long as it lives).
std::unique_ptr<Model> load(const std::vector<uint8_t>& file, Status* status = nullptr) {
  static std::deque<std::vector<uint8_t>> kept;
  kept.push_back(file);
  const std::vector<uint8_t>& bytes = kept.back();
  std::unique_ptr<Model> model;
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  const Status s = Model::load(bytes.data(), bytes.size(), lo, &model);
  if (status) *status = s;
  return s.ok() ? std::move(model) : nullptr;
}

void expect_refused(const std::vector<uint8_t>& bytes,
                    std::initializer_list<const char*> fragments) {
  Status s;
  auto model = load(bytes, &s);
  INFO("message: " << std::string(s.message()));
  CHECK(s.code() == StatusCode::kInvalidModel);
  CHECK_FALSE(model);
  for (const char* f : fragments) {
    INFO("expected fragment: " << f);
    CHECK(std::string(s.message()).find(f) != std::string::npos);
  }
}

// One layout node written field by field (the builder always writes one input), on an x of
// shape x_shape, as the graph's output.
struct RawNode {
  fb::OpType op = fb::OpType::Reshape;
  std::vector<uint32_t> inputs{0};
  std::vector<uint32_t> shape, perm;
  int32_t axis = -1;
  uint32_t start = 0, end = 0;
};
RawNode node(fb::OpType op, std::vector<uint32_t> inputs = {0}, std::vector<uint32_t> shape = {},
             std::vector<uint32_t> perm = {}) {
  RawNode r;
  r.op = op;
  r.inputs = std::move(inputs);
  r.shape = std::move(shape);
  r.perm = std::move(perm);
  return r;
}
std::vector<uint8_t> raw_model(const RawNode& r, const std::vector<uint32_t>& x_shape) {
  flatbuffers::FlatBufferBuilder fbb;
  uint32_t dim = 1;
  for (uint32_t e : x_shape) dim *= e;
  auto in = fbb.CreateVector(r.inputs);
  auto shape = r.shape.empty() ? 0 : fbb.CreateVector(r.shape);
  auto perm = r.perm.empty() ? 0 : fbb.CreateVector(r.perm);
  auto node = fb::CreateNode(fbb, r.op, in, fbb.CreateString("n"), fb::UnaryKind::Identity, 0.01f,
                             0, 0, 0, 0, 0, 1e-5f, shape, 0, 0, 0, 0, 0, 1, fb::PoolKind::Average,
                             false, fb::ResizeMode::Nearest, perm, r.axis, r.start, r.end);
  auto graph = fb::CreateGraph(fbb, dim, fbb.CreateVector(std::vector<decltype(node)>{node}), 2,
                               fbb.CreateVector(x_shape));
  fbb.Finish(fb::CreateModel(fbb, 1, 4, 0, graph), fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

// Index formulas, written independently of the modules: the flat index of (i0, i1, i2) in a
// row-major shape of rank <= 3.
size_t flat(const std::vector<uint32_t>& dims, const std::vector<uint32_t>& idx) {
  size_t f = 0;
  for (size_t a = 0; a < dims.size(); ++a) f = f * dims[a] + idx[a];
  return f;
}
// Every multi-index of `dims` in row-major order.
std::vector<std::vector<uint32_t>> indices(const std::vector<uint32_t>& dims) {
  std::vector<std::vector<uint32_t>> out;
  std::vector<uint32_t> idx(dims.size(), 0);
  size_t total = 1;
  for (uint32_t e : dims) total *= e;
  for (size_t n = 0; n < total; ++n) {
    out.push_back(idx);
    for (size_t a = dims.size(); a-- > 0;) {
      if (++idx[a] < dims[a]) break;
      idx[a] = 0;
    }
  }
  return out;
}

// y[idx] = x[idx permuted back]: output axis i is input axis perm[i].
std::vector<double> transpose_formula(const std::vector<double>& x, size_t rows,
                                      const std::vector<uint32_t>& in,
                                      const std::vector<uint32_t>& perm) {
  std::vector<uint32_t> out_dims;
  for (uint32_t p : perm) out_dims.push_back(in[p]);
  const size_t w = x.size() / rows;
  std::vector<double> y(x.size());
  for (size_t r = 0; r < rows; ++r)
    for (const auto& o : indices(out_dims)) {
      std::vector<uint32_t> i(in.size());
      for (size_t a = 0; a < perm.size(); ++a) i[perm[a]] = o[a];
      y[r * w + flat(out_dims, o)] = x[r * w + flat(in, i)];
    }
  return y;
}

std::vector<double> slice_formula(const std::vector<double>& x, size_t rows,
                                  const std::vector<uint32_t>& in, uint32_t axis, uint32_t start,
                                  uint32_t end) {
  std::vector<uint32_t> out_dims = in;
  out_dims[axis] = end - start;
  const size_t w_in = x.size() / rows;
  size_t w_out = 1;
  for (uint32_t e : out_dims) w_out *= e;
  std::vector<double> y(rows * w_out);
  for (size_t r = 0; r < rows; ++r)
    for (const auto& o : indices(out_dims)) {
      std::vector<uint32_t> i = o;
      i[axis] += start;
      y[r * w_out + flat(out_dims, o)] = x[r * w_in + flat(in, i)];
    }
  return y;
}

// A node as the loader leaves it, for running the module directly.
NodeData layout_node(OpKind op, const std::vector<uint32_t>& out_shape, uint32_t width,
                     const uint32_t* input) {
  NodeData n{};
  n.op = op;
  n.input_count = 1;
  n.inputs = input;
  n.width = width;
  n.shape.rank = static_cast<uint32_t>(out_shape.size());
  for (size_t i = 0; i < out_shape.size(); ++i) n.shape.dims[i] = out_shape[i];
  return n;
}

// Runs node n (input tensor 0 of width w_in) through its module: forward on `rows` rows and the
// JVP of `directions` directions; then its double forward and VJP (dy -> dx) through the
// Operands/Gradients interface the training tape uses.
struct ModuleRun {
  std::vector<float> y, t_out;
  std::vector<double> y64, dx;
};
struct VjpTape {
  std::vector<double> dx;
  int commits = 0;
};
ModuleRun run_module(NodeData& n, uint32_t w_in, const std::vector<float>& x,
                     const std::vector<float>& t_in, size_t rows, size_t directions,
                     const std::vector<double>& dy) {
  ModuleRun out;
  siflow::detail::TensorData tensors[3] = {
      {w_in, true, 0, {}}, {1, false, 0, {}}, {n.width, true, 1, n.shape}};
  siflow::detail::ModelData md{};
  md.dim = w_in;
  md.node_count = 1;
  md.nodes = &n;
  md.tensors = tensors;
  out.y.assign(rows * n.width, NAN);
  out.t_out.assign(rows * directions * n.width, NAN);
  float* values[3] = {const_cast<float*>(x.data()), nullptr, out.y.data()};
  float* tangents[3] = {const_cast<float*>(t_in.data()), nullptr, out.t_out.data()};
  const siflow::ops::FastKernels kernels;
  const siflow::ops::NodeRun run{&md,        0,     values,   tangents, rows,
                                 directions, false, &kernels, nullptr};
  const siflow::ops::OpModule& m = siflow::ops::op_module(n.op);
  m.run(run);
  // Double forward and VJP.
  const uint32_t widths[3] = {w_in, 1, n.width};
  std::vector<double> x64(x.begin(), x.end());
  out.y64.assign(rows * n.width, NAN);
  const double* vals[3] = {x64.data(), nullptr, out.y64.data()};
  siflow::ops::Operands<double> op{&n,      widths,  vals, out.y64.data(), nullptr, nullptr,
                                   nullptr, nullptr, rows};
  m.forward_f64(op);
  VjpTape tape;
  siflow::ops::Gradients<double> g{};
  g.dy = dy.data();
  g.tape = &tape;
  g.needs = [](void*, uint32_t tensor) { return tensor == 0; };
  g.target = [](void* t, uint32_t, size_t count) {
    auto* vt = static_cast<VjpTape*>(t);
    vt->dx.assign(count, NAN);
    return vt->dx.data();
  };
  g.commit = [](void* t, uint32_t, size_t) { ++static_cast<VjpTape*>(t)->commits; };
  m.vjp_f64(op, g);
  CHECK(tape.commits == 1);
  out.dx = tape.dx;
  return out;
}

// The checks every layout op shares, given its forward formula f (linear in x): the float
// forward and each tangent direction are f applied exactly (copies, no arithmetic); the double
// forward too; and the VJP is f's adjoint: <dy, f(u)> = <vjp(dy), u> for every basis u, i.e.
// vjp(dy)[j] = sum_i dy[i] f(e_j)[i].
template <typename F>
void check_layout_op(NodeData& n, uint32_t w_in, F f) {
  const size_t rows = 3, directions = 4;
  const std::vector<float> x = random_normals(rows * w_in, 11, 1.0);
  const std::vector<float> t_in = random_normals(rows * directions * w_in, 12, 1.0);
  const std::vector<float> dyf = random_normals(rows * n.width, 13, 1.0);
  const std::vector<double> dy(dyf.begin(), dyf.end());
  const ModuleRun m = run_module(n, w_in, x, t_in, rows, directions, dy);
  const std::vector<double> want = f(std::vector<double>(x.begin(), x.end()), rows);
  REQUIRE(want.size() == m.y.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(m.y[i] == static_cast<float>(want[i]));
    CHECK(m.y64[i] == want[i]);
  }
  const std::vector<double> want_t =
      f(std::vector<double>(t_in.begin(), t_in.end()), rows * directions);
  for (size_t i = 0; i < want_t.size(); ++i) CHECK(m.t_out[i] == static_cast<float>(want_t[i]));
  // The adjoint, basis vector by basis vector (one row: rows are independent).
  REQUIRE(m.dx.size() == rows * w_in);
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t j = 0; j < w_in; ++j) {
      std::vector<double> e(w_in, 0.0);
      e[j] = 1.0;
      const std::vector<double> fe = f(e, 1);
      double want_dx = 0.0;
      for (uint32_t i = 0; i < n.width; ++i) want_dx += dy[r * n.width + i] * fe[i];
      CHECK(m.dx[r * w_in + j] == want_dx);  // one non-zero term at most: exact
    }
}

}  // namespace

TEST_CASE("transpose forward, JVP and VJP match the index formula for ranks 1 to 3") {
  struct Case {
    std::vector<uint32_t> in, perm;
  };
  const Case cases[] = {{{7}, {0}},
                        {{3, 5}, {1, 0}},
                        {{3, 5}, {0, 1}},
                        {{2, 3, 4}, {2, 0, 1}},
                        {{2, 3, 4}, {1, 2, 0}},
                        {{2, 3, 4}, {0, 2, 1}},
                        {{2, 3, 4}, {2, 1, 0}},
                        {{4, 1, 3}, {1, 0, 2}}};
  for (const Case& c : cases) {
    CAPTURE(c.in.size());
    CAPTURE(c.perm[0]);
    std::vector<uint32_t> out;
    uint32_t w = 1;
    for (uint32_t p : c.perm) out.push_back(c.in[p]);
    for (uint32_t e : c.in) w *= e;
    const uint32_t input = 0;
    NodeData n = layout_node(OpKind::kTranspose, out, w, &input);
    for (size_t i = 0; i < c.perm.size(); ++i) n.perm[i] = c.perm[i];
    check_layout_op(n, w, [&](const std::vector<double>& x, size_t rows) {
      return transpose_formula(x, rows, c.in, c.perm);
    });
  }
}

TEST_CASE("slice forward, JVP and VJP keep [start, end) of one axis, as the index formula") {
  struct Case {
    std::vector<uint32_t> in;
    uint32_t axis, start, end;
  };
  const Case cases[] = {{{9}, 0, 2, 7},       {{4, 6}, 0, 0, 2},    {{4, 6}, 1, 3, 6},
                        {{3, 4, 5}, 0, 1, 3}, {{3, 4, 5}, 1, 2, 3}, {{3, 4, 5}, 2, 0, 5},
                        {{3, 4, 5}, 2, 4, 5}};
  for (const Case& c : cases) {
    CAPTURE(c.in.size());
    CAPTURE(c.axis);
    std::vector<uint32_t> out = c.in;
    out[c.axis] = c.end - c.start;
    uint32_t w_in = 1, w_out = 1;
    for (uint32_t e : c.in) w_in *= e;
    for (uint32_t e : out) w_out *= e;
    const uint32_t input = 0;
    NodeData n = layout_node(OpKind::kSlice, out, w_out, &input);
    n.axis = c.axis;
    n.start = c.start;
    n.end = c.end;
    check_layout_op(n, w_in, [&](const std::vector<double>& x, size_t rows) {
      return slice_formula(x, rows, c.in, c.axis, c.start, c.end);
    });
  }
}

TEST_CASE("reshape forward, JVP and VJP are the identity on the flat values") {
  const uint32_t input = 0;
  NodeData n = layout_node(OpKind::kReshape, {3, 2, 4}, 24, &input);
  check_layout_op(n, 24, [](const std::vector<double>& x, size_t) { return x; });
  CHECK(siflow::ops::op_module(OpKind::kReshape).aliases_input);
}

TEST_CASE("the loader gives each layout op its output shape and records format 1.4") {
  ModelBuilder b(24);
  b.set_x_shape({2, 3, 4});
  const uint32_t tr = b.transpose(ModelBuilder::x(), {2, 3, 4}, {2, 0, 1});  // [4, 2, 3]
  const uint32_t s = b.slice(tr, {4, 2, 3}, -3, 1, 3);                       // [2, 2, 3]
  const uint32_t r = b.reshape(s, {12});
  const uint32_t both =
      b.concat({r, b.reshape(b.slice(ModelBuilder::x(), {2, 3, 4}, 1, 0, 1), {8})});  // [12] + [8]
  const uint32_t v = b.fully_connected(both, 24, random_normals(24 * 20, 5, 0.2));
  b.set_output(b.reshape(v, {2, 3, 4}));
  auto model = load(b.finish());
  REQUIRE(model);
  CHECK(model->info().format_minor == 4);
  const auto& md = model->data();
  CHECK(std::string(shape_text(md.x_shape).text) == "[2, 3, 4]");
  CHECK(std::string(shape_text(md.tensors[tr].shape).text) == "[4, 2, 3]");
  CHECK(std::string(shape_text(md.tensors[s].shape).text) == "[2, 2, 3]");
  CHECK(std::string(shape_text(md.tensors[r].shape).text) == "[12]");
  CHECK(std::string(shape_text(md.tensors[md.output].shape).text) == "[2, 3, 4]");
  // A plain MLP stays at the version it needs.
  ModelBuilder plain(2);
  plain.set_output(plain.unary(ModelBuilder::x(), UnaryKind::kTanh));
  CHECK(load(plain.finish())->info().format_minor == 0);
}

TEST_CASE(
    "a Reshape node is refused without a shape, with rank above 3, extent 0 or a wrong "
    "size") {
  expect_refused(raw_model(node(fb::OpType::Reshape), {2, 3}),
                 {"node 0 (Reshape, n)", "has no shape (Reshape needs one)"});
  expect_refused(raw_model(node(fb::OpType::Reshape, {0}, {1, 2, 3, 1}), {2, 3}),
                 {"node 0 (Reshape, n)", "shape has rank 4, the limit is 3"});
  expect_refused(raw_model(node(fb::OpType::Reshape, {0}, {0, 6}), {2, 3}),
                 {"node 0 (Reshape, n)", "shape has extent 0 on axis 0"});
  expect_refused(raw_model(node(fb::OpType::Reshape, {0}, {4, 2}), {2, 3}),
                 {"node 0 (Reshape, n)", "shape [4, 2] does not hold the input's 6 values",
                  "input shape [2, 3]"});
  expect_refused(raw_model(node(fb::OpType::Reshape, {0, 0}, {6}), {2, 3}),
                 {"node 0 (Reshape, n)", "has 2 inputs, expected 1"});
  expect_refused(raw_model(node(fb::OpType::Reshape, {}, {6}), {2, 3}),
                 {"node 0 (Reshape, n)", "has 0 inputs, expected 1"});
}

TEST_CASE("a Transpose node is refused when perm does not permute the input's axes") {
  expect_refused(raw_model(node(fb::OpType::Transpose, {0}, {}, {1, 0}), {2, 3, 4}),
                 {"node 0 (Transpose, n)", "perm has 2 axes, but the input [2, 3, 4] has rank 3"});
  expect_refused(raw_model(node(fb::OpType::Transpose, {0}, {}, {}), {2, 3}),
                 {"node 0 (Transpose, n)", "perm has 0 axes"});
  expect_refused(raw_model(node(fb::OpType::Transpose, {0}, {}, {0, 0}), {2, 3}),
                 {"node 0 (Transpose, n)", "perm is not a permutation", "entry 1 is 0"});
  expect_refused(raw_model(node(fb::OpType::Transpose, {0}, {}, {0, 2}), {2, 3}),
                 {"node 0 (Transpose, n)", "perm is not a permutation", "entry 1 is 2"});
  expect_refused(raw_model(node(fb::OpType::Transpose, {0, 0}, {}, {1, 0}), {2, 3}),
                 {"node 0 (Transpose, n)", "has 2 inputs, expected 1"});
  // A stored output shape must be the permuted one.
  expect_refused(
      raw_model(node(fb::OpType::Transpose, {0}, {2, 3}, {1, 0}), {2, 3}),
      {"node 0 (Transpose, n)", "gives its output shape as [2, 3]", "the op produces [3, 2]"});
}

TEST_CASE("a Slice node is refused for an axis outside the input or an empty or outside range") {
  auto slice = [](int32_t axis, uint32_t start, uint32_t end) {
    RawNode r = node(fb::OpType::Slice);
    r.axis = axis;
    r.start = start;
    r.end = end;
    return r;
  };
  expect_refused(raw_model(slice(2, 0, 1), {2, 3}),
                 {"node 0 (Slice, n)", "axis 2 is outside the input [2, 3]"});
  expect_refused(raw_model(slice(-3, 0, 1), {2, 3}),
                 {"node 0 (Slice, n)", "axis -3 is outside the input [2, 3]"});
  expect_refused(raw_model(slice(1, 2, 2), {2, 3}),
                 {"node 0 (Slice, n)", "range [2, 2) on axis 1 is empty or outside"});
  expect_refused(raw_model(slice(1, 2, 1), {2, 3}),
                 {"node 0 (Slice, n)", "range [2, 1) on axis 1 is empty or outside"});
  expect_refused(raw_model(slice(-1, 1, 4), {2, 3}),
                 {"node 0 (Slice, n)", "range [1, 4) on axis 1 is empty or outside the input"});
  RawNode two = slice(0, 0, 1);
  two.inputs = {0, 0};
  expect_refused(raw_model(two, {2, 3}), {"node 0 (Slice, n)", "has 2 inputs, expected 1"});
}

namespace {

// v = W2 tanh(W1 [a_or_reshaped, ...]) where a = fc(x) is read again, through a Reshape, only at
// the end, after three other layers that would reuse a's buffer if the plan freed it after the
// Reshape node. `with_reshape` false reads a directly: the same computation.
std::vector<uint8_t> late_reader(bool with_reshape) {
  const uint32_t dim = 6;
  ModelBuilder b(dim);
  b.set_x_shape({2, 3});
  const uint32_t a = b.fully_connected(ModelBuilder::x(), 8, random_normals(48, 1, 0.4),
                                       random_normals(8, 2, 0.1));
  const uint32_t late = with_reshape ? b.reshape(a, {2, 4}) : a;
  uint32_t h = b.concat({ModelBuilder::x(), ModelBuilder::t()});
  h = b.unary(b.fully_connected(h, 8, random_normals(56, 3, 0.4)), UnaryKind::kTanh);
  h = b.unary(b.fully_connected(h, 8, random_normals(64, 4, 0.4)), UnaryKind::kSilu);
  h = b.fully_connected(h, 8, random_normals(64, 5, 0.4));
  const uint32_t sum = b.add(h, late);
  const uint32_t xr = with_reshape ? b.reshape(ModelBuilder::x(), {6}) : ModelBuilder::x();
  const uint32_t v = b.fully_connected(b.concat({b.unary(sum, UnaryKind::kTanh), xr}), dim,
                                       random_normals(dim * 14, 6, 0.4));
  b.set_output(with_reshape ? b.reshape(v, {2, 3}) : v);
  return b.finish();
}

}  // namespace

TEST_CASE("Reshape is free in a plan: no buffer, its input kept alive, the same bits") {
  auto aliased = load(late_reader(true));
  auto direct = load(late_reader(false));
  REQUIRE(aliased);
  REQUIRE(direct);
  for (siflow::Backend backend : {siflow::Backend::kReference, siflow::Backend::kAuto}) {
    CAPTURE(static_cast<int>(backend));
    PlanOptions po;
    po.max_batch = 64;
    po.backend = backend;
    // The Reshapes take no arena bytes: the plans differ only by the three extra nodes' table
    // entries (pointers, offsets, kernel names: under 512 bytes), less than the smallest buffer
    // a Reshape would need (64 rows x 6 floats = 1536 bytes).
    size_t bytes_aliased = 0, bytes_direct = 0;
    REQUIRE(siflow::arena_bytes(*aliased, po, &bytes_aliased).ok());
    REQUIRE(siflow::arena_bytes(*direct, po, &bytes_direct).ok());
    CHECK(bytes_aliased >= bytes_direct);
    CHECK(bytes_aliased - bytes_direct < 512);
    std::unique_ptr<Plan> pa, pd;
    REQUIRE(Plan::create(*aliased, po, nullptr, 0, &pa).ok());
    REQUIRE(Plan::create(*direct, po, nullptr, 0, &pd).ok());
    const size_t rows = 37;
    const std::vector<float> y = random_normals(rows * 6, 9, 1.0);
    std::vector<float> t(rows, 0.3f), va(rows * 6), vd(rows * 6);
    REQUIRE(pa->velocity(rows, t.data(), y.data(), va.data()).ok());
    REQUIRE(pd->velocity(rows, t.data(), y.data(), vd.data()).ok());
    CHECK(std::memcmp(va.data(), vd.data(), va.size() * sizeof(float)) == 0);
    // Tangents alias too: exact log-likelihoods agree bit for bit.
    siflow::LogProbOptions lo;
    lo.ode.steps = 4;
    std::vector<double> la(rows), ld(rows);
    REQUIRE(pa->log_prob(rows, y.data(), lo, la.data()).ok());
    REQUIRE(pd->log_prob(rows, y.data(), lo, ld.data()).ok());
    for (size_t r = 0; r < rows; ++r) CHECK(la[r] == ld[r]);
  }
}

TEST_CASE(
    "limits: d = 3 x 64 x 64 and a 96-channel 28 x 28 concat load and run; wider is refused") {
  static_assert(siflow::Limits::kMaxDim >= 3 * 64 * 64, "the paper's largest images");
  static_assert(siflow::Limits::kMaxWidth >= 96 * 28 * 28, "an MNIST U-Net's widest skip concat");
  {
    // v = x on 64 x 64 RGB images, through a Reshape and back.
    ModelBuilder b(3 * 64 * 64);
    b.set_x_shape({3, 64, 64});
    b.set_output(b.reshape(b.reshape(ModelBuilder::x(), {3, 4096}), {3, 64, 64}));
    auto model = load(b.finish());
    REQUIRE(model);
    CHECK(model->info().dim == 12288);
  }
  {
    // 96 copies of a 28 x 28 image side by side (75 264 values), sliced back to the first.
    ModelBuilder b(28 * 28);
    b.set_x_shape({1, 28, 28});
    const uint32_t wide = b.concat(std::vector<uint32_t>(64, ModelBuilder::x()));
    const uint32_t wider = b.concat({wide, b.concat(std::vector<uint32_t>(32, ModelBuilder::x()))});
    b.set_output(b.reshape(b.slice(wider, {96 * 28 * 28}, 0, 784, 2 * 784), {1, 28, 28}));
    Status s;
    auto model = load(b.finish(), &s);
    REQUIRE_MESSAGE(model, std::string(s.message()));
    CHECK(model->data().tensors[wider].width == 75264);
    PlanOptions po;
    po.max_batch = 2;
    po.divergence = siflow::DivergenceMode::kNone;
    std::unique_ptr<Plan> plan;
    REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
    const std::vector<float> y = random_normals(2 * 784, 3, 1.0);
    std::vector<float> t(2, 0.5f), v(2 * 784);
    REQUIRE(plan->velocity(2, t.data(), y.data(), v.data()).ok());
    CHECK(v == y);
  }
  {
    ModelBuilder b(12288);
    b.set_output(b.concat(std::vector<uint32_t>(11, ModelBuilder::x())));  // 135 168 wide
    expect_refused(b.finish(), {"node 0 (Concat)", "output width 135168 exceeds 131072"});
    ModelBuilder c(12289);
    c.set_output(c.unary(ModelBuilder::x(), UnaryKind::kIdentity));
    expect_refused(c.finish(), {"graph dim 12289 is outside [1, 12288]"});
  }
}

namespace {

// A d = 12 image net ([3, 2, 2]) whose Jacobian is dense: a transpose, layer norm, dense layers
// with t, and a skip from x.
std::vector<uint8_t> dense_jacobian_net() {
  ModelBuilder b(12);
  b.set_x_shape({3, 2, 2});
  const uint32_t tr = b.reshape(b.transpose(ModelBuilder::x(), {3, 2, 2}, {1, 2, 0}), {12});
  uint32_t h = b.concat({tr, ModelBuilder::t()});
  h = b.unary(
      b.fully_connected(h, 16, random_normals(16 * 13, 31, 0.4), random_normals(16, 32, 0.1)),
      UnaryKind::kTanh);
  h = b.layer_norm(h, random_normals(16, 33, 1.0), random_normals(16, 34, 0.2));
  h = b.unary(b.fully_connected(h, 12, random_normals(12 * 16, 35, 0.4)), UnaryKind::kSilu);
  const uint32_t skip =
      b.mul_constant(b.reshape(ModelBuilder::x(), {12}), random_normals(12, 36, 0.5));
  b.set_output(b.reshape(b.add(h, skip), {3, 2, 2}));
  return b.finish();
}

}  // namespace

TEST_CASE("exact divergence in tangent blocks is bit-identical to all d at once, in less arena") {
  auto model = load(dense_jacobian_net());
  REQUIRE(model);
  const size_t n = 11;  // two chunks of 8
  const std::vector<float> x = random_normals(n * 12, 37, 1.0);
  for (siflow::Backend backend : {siflow::Backend::kReference, siflow::Backend::kAuto}) {
    CAPTURE(static_cast<int>(backend));
    std::vector<double> reference_logp;
    std::vector<float> reference_samples;
    std::vector<double> reference_sample_logp;
    size_t previous_bytes = 0;
    for (uint32_t block : {12u, 0u, 100u, 7u, 4u, 1u}) {
      CAPTURE(block);
      PlanOptions po;
      po.max_batch = 8;
      po.backend = backend;
      po.tangent_block = block;
      size_t bytes = 0;
      REQUIRE(siflow::arena_bytes(*model, po, &bytes).ok());
      std::unique_ptr<Plan> plan;
      REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
      siflow::LogProbOptions lo;
      lo.ode.steps = 3;
      std::vector<double> logp(n);
      REQUIRE(plan->log_prob(n, x.data(), lo, logp.data()).ok());
      siflow::SampleOptions so;
      so.seed = 5;
      so.ode.steps = 3;
      std::vector<float> samples(n * 12);
      std::vector<double> sample_logp(n);
      REQUIRE(plan->sample(n, so, samples.data(), sample_logp.data()).ok());
      if (reference_logp.empty()) {
        reference_logp = logp;
        reference_samples = samples;
        reference_sample_logp = sample_logp;
      } else {
        for (size_t i = 0; i < n; ++i) {
          CHECK(logp[i] == reference_logp[i]);
          CHECK(sample_logp[i] == reference_sample_logp[i]);
        }
        CHECK(samples == reference_samples);
      }
      // 0 (automatic) and 100 resolve to d = 12 here; smaller blocks take less arena.
      if (block == 0 || block == 100) CHECK(bytes == previous_bytes);
      if (block == 7 || block == 4 || block == 1) CHECK(bytes < previous_bytes);
      previous_bytes = bytes;
    }
  }
}

TEST_CASE("a tangent_block above the largest dimension is refused; Hutchinson is unaffected") {
  auto model = load(dense_jacobian_net());
  REQUIRE(model);
  PlanOptions po;
  po.tangent_block = siflow::Limits::kMaxDim + 1;
  std::unique_ptr<Plan> plan;
  const Status s = Plan::create(*model, po, nullptr, 0, &plan);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("tangent_block 12289 exceeds") != std::string::npos);
  // A Hutchinson plan with fewer probes than d still refuses exact divergence by name.
  PlanOptions hp;
  hp.divergence = siflow::DivergenceMode::kHutchinson;
  hp.max_probes = 3;
  REQUIRE(Plan::create(*model, hp, nullptr, 0, &plan).ok());
  siflow::LogProbOptions lo;
  std::vector<double> logp(1);
  const std::vector<float> x(12, 0.1f);
  const Status e = plan->log_prob(1, x.data(), lo, logp.data());
  CHECK(e.code() == StatusCode::kInvalidArgument);
  CHECK(std::string(e.message()).find("needs a plan made with divergence exact") !=
        std::string::npos);
}

TEST_CASE("the automatic tangent block fits the tangents in PlanOptions::kAutoTangentBytes") {
  // d = 12288 (3 x 64 x 64) through one 12288-wide layer: all d directions at max_batch 4 would
  // take 4 x 12288 x (12288 + 12288) x 4 bytes = 4.5 GiB of tangents; the automatic block is the
  // most that fit in 256 MiB: 256 MiB / (4 x 24576 x 4 bytes) = 682 directions.
  ModelBuilder b(12288);
  b.set_x_shape({3, 64, 64});
  b.set_output(
      b.reshape(b.unary(b.reshape(ModelBuilder::x(), {12288}), UnaryKind::kTanh), {3, 64, 64}));
  auto model = load(b.finish());
  REQUIRE(model);
  PlanOptions po;
  po.max_batch = 4;
  size_t bytes = 0;
  REQUIRE(siflow::arena_bytes(*model, po, &bytes).ok());
  MESSAGE("d = 12288, max_batch 4, automatic tangent block: arena " << bytes << " bytes");
  const uint64_t block = PlanOptions::kAutoTangentBytes / (4ull * 24576 * 4);
  CHECK(block == 682);
  // Seeds and the tanh's tangents for one block, plus the non-tangent buffers (a few MB).
  CHECK(bytes >= 4ull * block * 24576 * 4);
  CHECK(bytes <= 4ull * block * 24576 * 4 + (8ull << 20));
}
