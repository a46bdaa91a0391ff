// SPDX-License-Identifier: Apache-2.0
// Format 1.4's elementwise, reduction, softmax and matrix-product ops on the reference kernels:
// the unary kinds Log, Sqrt, Reciprocal, Abs, HardSwish and Mish against double formulas (and
// the simd kernels against them bit for bit), Div, Pow, Clip, Reduce, Softmax and MatMul as
// nodes of loaded models: forward against the op's double form, JVP against central differences,
// VJP against the same differences, every refusal of a bad node, and the domain edges that a run
// reports as numerical errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "format/model_data.hpp"
#include "kernels/reference/activation.hpp"
#include "ops/op.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/activation_formulas.hpp"
#include "support/byte_span.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace {

using siflow::Model;
using siflow::ModelBuilder;
using siflow::ReduceKind;
using siflow::Status;
using siflow::StatusCode;
using siflow::UnaryKind;
using siflow::detail::ModelData;
using siflow::detail::NodeData;

constexpr UnaryKind kNewKinds[] = {UnaryKind::kLog, UnaryKind::kSqrt,      UnaryKind::kReciprocal,
                                   UnaryKind::kAbs, UnaryKind::kHardSwish, UnaryKind::kMish};

std::string text(const Status& s) { return s.message() ? s.message() : ""; }

double float_ulp(double r) {
  const double a = std::fabs(r);
  if (a < FLT_MIN) return std::ldexp(1.0, -149);
  return std::ldexp(1.0, std::ilogb(a) - 23);
}

std::vector<float> random_vector(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

Status load(const ModelBuilder& b, std::unique_ptr<Model>* out) {
  const siflow_test::ByteSpan misaligned(b.finish(), 1);
  return Model::load(misaligned.data(), misaligned.size(), siflow::LoadOptions(), out);
}

std::unique_ptr<Model> expect_loads(const ModelBuilder& b) {
  std::unique_ptr<Model> model;
  const Status s = load(b, &model);
  REQUIRE_MESSAGE(s.ok(), text(s));
  return model;
}

void expect_refused(const ModelBuilder& b, StatusCode code,
                    std::initializer_list<const char*> fragments) {
  std::unique_ptr<Model> model;
  const Status s = load(b, &model);
  INFO("message: " << text(s));
  CHECK(s.code() == code);
  CHECK_FALSE(model);
  for (const char* f : fragments) {
    INFO("expected fragment: " << f);
    CHECK(text(s).find(f) != std::string::npos);
  }
}

// The float values of every tensor of a loaded model for `rows` rows of x (t = 0.5), each node
// run through its module on the reference kernels.
std::vector<std::vector<float>> forward_all(const ModelData& md, const std::vector<float>& x,
                                            size_t rows) {
  std::vector<std::vector<float>> v(md.node_count + 2);
  v[0] = x;
  v[1].assign(rows, 0.5f);
  for (uint32_t i = 0; i < md.node_count; ++i) v[i + 2].assign(rows * md.tensors[i + 2].width, NAN);
  std::vector<float*> values(v.size());
  for (size_t i = 0; i < v.size(); ++i) values[i] = v[i].data();
  std::vector<float*> tangents(v.size(), nullptr);
  const siflow::ops::FastKernels kernels;
  for (uint32_t i = 0; i < md.node_count; ++i) {
    const siflow::ops::NodeRun run{&md, i,     values.data(), tangents.data(), rows,
                                   0,   false, &kernels,      nullptr};
    siflow::ops::op_module(md.nodes[i].op).run(run);
  }
  return v;
}

// Node k's double forward on double inputs (the tensors it reads; others unset).
std::vector<double> node_f64(const ModelData& md, uint32_t k,
                             const std::map<uint32_t, std::vector<double>>& inputs, size_t rows) {
  const NodeData& n = md.nodes[k];
  std::vector<uint32_t> widths(md.node_count + 2);
  for (size_t i = 0; i < widths.size(); ++i) widths[i] = md.tensors[i].width;
  std::vector<const double*> values(widths.size(), nullptr);
  for (const auto& in : inputs) values[in.first] = in.second.data();
  std::vector<double> out(rows * n.width);
  siflow::ops::Operands<double> op{&n,      widths.data(), values.data(), out.data(), nullptr,
                                   nullptr, nullptr,       nullptr,       rows};
  siflow::ops::op_module(n.op).forward_f64(op);
  return out;
}

struct NodeCheckResult {
  double worst_value = 0;  // in float ulps of the double forward on the same inputs
  double worst_jvp = 0;    // |jvp - fd| / max(1, |fd|)
  double worst_vjp = 0;    // |<vjp(dy), u> - <dy, fd(u)>| / max(1, |<dy, fd(u)>|)
  size_t bad_finite = 0;
};

// Checks node k of a loaded model on rows of x: its float output against its double forward
// on the same (float) inputs, its JVP (random tangents on every input) against central
// differences of the double forward, and its double VJP against the same differences.
NodeCheckResult check_node(const ModelData& md, uint32_t k, const std::vector<float>& x,
                           size_t rows, size_t directions, uint32_t seed) {
  const NodeData& n = md.nodes[k];
  const std::vector<std::vector<float>> v = forward_all(md, x, rows);
  std::map<uint32_t, std::vector<double>> in;
  for (uint32_t i = 0; i < n.input_count; ++i)
    in[n.inputs[i]] = std::vector<double>(v[n.inputs[i]].begin(), v[n.inputs[i]].end());
  NodeCheckResult res;
  // Forward.
  const std::vector<double> want = node_f64(md, k, in, rows);
  const std::vector<float>& got = v[k + 2];
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) ++res.bad_finite;
    res.worst_value = std::max(res.worst_value, std::fabs(got[i] - want[i]) / float_ulp(want[i]));
  }
  // JVP: random tangents for every input tensor.
  std::vector<std::vector<float>> t(md.node_count + 2);
  std::vector<float*> tangents(t.size(), nullptr), values(v.size());
  std::vector<std::vector<float>> vv = v;
  for (size_t i = 0; i < vv.size(); ++i) values[i] = vv[i].data();
  uint32_t s = seed;
  for (const auto& i : in) {
    t[i.first] = random_vector(rows * directions * md.tensors[i.first].width, ++s, -1.0f, 1.0f);
    tangents[i.first] = t[i.first].data();
  }
  t[k + 2].assign(rows * directions * n.width, NAN);
  tangents[k + 2] = t[k + 2].data();
  const siflow::ops::FastKernels kernels;
  const siflow::ops::NodeRun run{&md,        k,     values.data(), tangents.data(), rows,
                                 directions, false, &kernels,      nullptr};
  siflow::ops::op_module(n.op).run(run);
  const double h = 1e-6;
  for (size_t p = 0; p < directions; ++p) {
    std::map<uint32_t, std::vector<double>> plus = in, minus = in;
    for (auto& i : plus) {
      const uint32_t w = md.tensors[i.first].width;
      for (size_t r = 0; r < rows; ++r)
        for (uint32_t c = 0; c < w; ++c) {
          const double d = t[i.first][(r * directions + p) * w + c];
          i.second[r * w + c] += h * d;
          minus[i.first][r * w + c] -= h * d;
        }
    }
    const std::vector<double> yp = node_f64(md, k, plus, rows), ym = node_f64(md, k, minus, rows);
    for (size_t r = 0; r < rows; ++r)
      for (uint32_t c = 0; c < n.width; ++c) {
        const double fd = (yp[r * n.width + c] - ym[r * n.width + c]) / (2 * h);
        const double jvp = t[k + 2][(r * directions + p) * n.width + c];
        res.worst_jvp = std::max(res.worst_jvp, std::fabs(jvp - fd) / std::max(1.0, std::fabs(fd)));
      }
    // VJP: <vjp(dy), u> against <dy, J u> with u this direction.
    const std::vector<float> dyf = random_vector(rows * n.width, ++s, -1.0f, 1.0f);
    const std::vector<double> dy(dyf.begin(), dyf.end());
    std::map<uint32_t, std::vector<double>> grads;
    struct Tape {
      std::map<uint32_t, std::vector<double>>* grads;
      std::vector<double> scratch;
    } tape{&grads, {}};
    siflow::ops::Gradients<double> g{};
    g.dy = dy.data();
    g.tape = &tape;
    g.needs = [](void*, uint32_t) { return true; };
    g.target = [](void* tp, uint32_t, size_t count) {
      Tape& tt = *static_cast<Tape*>(tp);
      tt.scratch.assign(count, NAN);
      return tt.scratch.data();
    };
    g.commit = [](void* tp, uint32_t tensor, size_t count) {
      Tape& tt = *static_cast<Tape*>(tp);
      std::vector<double>& acc = (*tt.grads)[tensor];
      if (acc.empty()) acc.assign(count, 0.0);
      for (size_t i = 0; i < count; ++i) acc[i] += tt.scratch[i];
    };
    std::vector<uint32_t> widths(md.node_count + 2);
    for (size_t i = 0; i < widths.size(); ++i) widths[i] = md.tensors[i].width;
    std::vector<const double*> dv(widths.size(), nullptr);
    for (const auto& i : in) dv[i.first] = i.second.data();
    const std::vector<double> y64 = node_f64(md, k, in, rows);
    siflow::ops::Operands<double> op{
        &n,      widths.data(), dv.data(), const_cast<double*>(y64.data()), nullptr, nullptr,
        nullptr, nullptr,       rows};
    siflow::ops::op_module(n.op).vjp_f64(op, g);
    double lhs = 0, rhs = 0;
    for (const auto& i : in) {
      const uint32_t w = md.tensors[i.first].width;
      REQUIRE(grads.count(i.first));
      for (size_t r = 0; r < rows; ++r)
        for (uint32_t c = 0; c < w; ++c)
          lhs += grads[i.first][r * w + c] * t[i.first][(r * directions + p) * w + c];
    }
    for (size_t i = 0; i < dy.size(); ++i) rhs += dy[i] * (yp[i] - ym[i]) / (2 * h);
    res.worst_vjp = std::max(res.worst_vjp, std::fabs(lhs - rhs) / std::max(1.0, std::fabs(rhs)));
  }
  return res;
}

// The output node's checks, with the bounds every op here meets: the value within 2 float ulps
// of the double form on the same inputs (each op rounds a double result once, or is one float
// operation), the JVP within 1e-5 of the differences (float tangents of O(1) values; the
// quotient's own error is below 1e-9), the double VJP within 1e-7.
// `tensor`: the checked node's output (default: the last node's).
void check_output_node(const ModelBuilder& b, size_t rows, uint32_t seed, float lo, float hi,
                       uint32_t tensor = 0) {
  auto model = expect_loads(b);
  const ModelData& md = model->data();
  const std::vector<float> x = random_vector(rows * md.dim, seed, lo, hi);
  const uint32_t node = tensor ? tensor - 2 : md.node_count - 1;
  const NodeCheckResult r = check_node(md, node, x, rows, 2, seed + 100);
  CHECK(r.bad_finite == 0);
  CHECK(r.worst_value <= 2.0);
  CHECK(r.worst_jvp <= 1e-5);
  CHECK(r.worst_vjp <= 1e-7);
  MESSAGE("value " << r.worst_value << " ulp, jvp " << r.worst_jvp << ", vjp " << r.worst_vjp);
}

std::unique_ptr<siflow::Plan> make_plan(const Model& model) {
  siflow::PlanOptions po;
  po.max_batch = 4;
  std::unique_ptr<siflow::Plan> plan;
  const Status s = siflow::Plan::create(model, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), text(s));
  return plan;
}

}  // namespace

// ---- Unary kinds 13..18 ---------------------------------------------------------------------

TEST_CASE("log, sqrt, reciprocal, abs, hard_swish and mish are within one float ulp of double") {
  using test_support::activation;
  for (UnaryKind kind : kNewKinds) {
    const bool positive = kind == UnaryKind::kLog || kind == UnaryKind::kSqrt;
    INFO("kind " << std::string(siflow::unary_kind_name(kind)));
    std::vector<float> xs;
    for (int i = -200000; i <= 200000; ++i) {
      const float x = positive ? std::ldexp(1.0f + std::fabs(i) / 200000.0f, i / 4000)
                               : static_cast<float>(i) * 2e-4f;
      if (kind == UnaryKind::kReciprocal && x == 0.0f) continue;
      xs.push_back(x);
    }
    for (float e : {FLT_MIN, 1e-30f, 1e-3f, 1e6f, 1e30f, FLT_MAX}) {
      xs.push_back(e);
      if (!positive) xs.push_back(-e);
    }
    double worst = 0.0;
    float worst_x = 0.0f;
    for (float x : xs) {
      const double want = activation(kind, 0.0, x);
      const float got = siflow::reference::unary(kind, 0.0f, x);
      if (std::isinf(want) || std::fabs(want) > FLT_MAX) {
        CHECK(std::isinf(got));
        continue;
      }
      const double err = std::fabs(got - want) / float_ulp(want);
      if (err > worst) worst = err, worst_x = x;
    }
    INFO("worst at x = " << worst_x);
    CHECK(worst <= 1.0);
  }
}

TEST_CASE("the new kinds' derivatives match central differences of the double formulas") {
  using test_support::activation;
  for (UnaryKind kind : kNewKinds) {
    INFO("kind " << std::string(siflow::unary_kind_name(kind)));
    const bool positive = kind == UnaryKind::kLog || kind == UnaryKind::kSqrt;
    size_t bad = 0, checked = 0;
    float first_bad = 0;
    for (int i = -4000; i <= 4000; ++i) {
      const double x = positive ? 0.05 + std::fabs(i) * 5e-3 : i * 5e-3 + 1.25e-3;
      // Kinks: abs at 0, hard_swish at -3 and 3 (the grid steps over them).
      const double h = 1e-5 * std::fabs(x);  // the grid avoids 0
      const double fd = (activation(kind, 0, x + h) - activation(kind, 0, x - h)) / (2 * h);
      const double got = siflow::reference::unary_derivative(kind, 0.0f, static_cast<float>(x));
      // got is f' at float(x), rounded once to float; |x - float(x)| <= 2^-24 |x| moves f' by
      // |f''| 2^-24 |x| (<= 2e-5 for 1/x^2 near 0.05); the quotient's error is below 1e-8.
      const double fx = static_cast<float>(x);
      const double moved = (positive || kind == UnaryKind::kReciprocal)
                               ? std::fabs(x - fx) * 2.0 / (std::fabs(x * x * x))
                               : std::fabs(x - fx) * 2.0;
      ++checked;
      if (!(std::fabs(got - fd) <=
            std::ldexp(std::fabs(fd), -23) + moved + 1e-8 * std::max(1.0, std::fabs(fd))) &&
          !bad++)
        first_bad = static_cast<float>(x);
    }
    INFO("first mismatch at x = " << first_bad);
    CHECK(checked > 8000);
    CHECK(bad == 0);
  }
}

TEST_CASE("the new kinds at their domain edges and kinks (PyTorch's conventions)") {
  using siflow::reference::unary;
  using siflow::reference::unary_derivative;
  CHECK(unary(UnaryKind::kLog, 0, 0.0f) == -INFINITY);
  CHECK(std::isnan(unary(UnaryKind::kLog, 0, -1.0f)));
  CHECK(unary(UnaryKind::kLog, 0, 1.0f) == 0.0f);
  CHECK(unary(UnaryKind::kSqrt, 0, 0.0f) == 0.0f);
  CHECK(unary_derivative(UnaryKind::kSqrt, 0, 0.0f) == INFINITY);
  CHECK(std::isnan(unary(UnaryKind::kSqrt, 0, -1e-30f)));
  CHECK(unary(UnaryKind::kReciprocal, 0, 0.0f) == INFINITY);
  CHECK(unary(UnaryKind::kReciprocal, 0, -0.0f) == -INFINITY);
  const float abs_neg_zero = unary(UnaryKind::kAbs, 0, -0.0f);
  CHECK(abs_neg_zero == 0.0f);
  CHECK_FALSE(std::signbit(abs_neg_zero));
  CHECK(unary_derivative(UnaryKind::kAbs, 0, 0.0f) == 0.0f);
  CHECK(unary_derivative(UnaryKind::kAbs, 0, -2.0f) == -1.0f);
  // hard_swish: 0 up to -3, x from 3; PyTorch's slope: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above.
  CHECK(unary(UnaryKind::kHardSwish, 0, -3.0f) == 0.0f);
  CHECK(unary(UnaryKind::kHardSwish, 0, 3.0f) == 3.0f);
  CHECK(unary(UnaryKind::kHardSwish, 0, 1.0f) == static_cast<float>(4.0 / 6.0));
  CHECK(unary_derivative(UnaryKind::kHardSwish, 0, -3.0f) == -0.5f);
  CHECK(unary_derivative(UnaryKind::kHardSwish, 0, 3.0f) == 1.5f);
  CHECK(unary_derivative(UnaryKind::kHardSwish, 0, -3.0001f) == 0.0f);
  CHECK(unary_derivative(UnaryKind::kHardSwish, 0, 3.0001f) == 1.0f);
  // mish: x for large x, slope 1 there; finite everywhere.
  CHECK(unary(UnaryKind::kMish, 0, 100.0f) == 100.0f);
  CHECK(unary_derivative(UnaryKind::kMish, 0, 100.0f) == 1.0f);
  for (float x : {FLT_MAX, -FLT_MAX, -1000.0f, 1000.0f}) {
    CHECK(std::isfinite(unary(UnaryKind::kMish, 0, x)));
    CHECK(std::isfinite(unary_derivative(UnaryKind::kMish, 0, x)));
  }
}

TEST_CASE("the simd kernels run the new kinds with the reference's bits, on every variant") {
#if defined(SIFLOW_WITH_SIMD)
  const size_t rows = 5, directions = 3;
  const uint32_t width = 37;  // odd: vector tails
  const std::vector<float> x = random_vector(rows * width, 5, -6.0f, 6.0f);
  const std::vector<float> t_in = random_vector(rows * directions * width, 6, -1.0f, 1.0f);
  size_t variants = 0;
  for (siflow::simd::Isa isa : {siflow::simd::Isa::kBaseline, siflow::simd::Isa::kAvx2,
                                siflow::simd::Isa::kAvx512, siflow::simd::Isa::kWasmSimd128}) {
    const siflow::simd::Kernels* k = siflow::simd::kernels_for(isa);
    if (!k) continue;
    ++variants;
    for (UnaryKind kind : kNewKinds) {
      INFO(std::string(k->isa) << " " << std::string(siflow::unary_kind_name(kind)));
      std::vector<float> y(rows * width), ref(rows * width), t(rows * directions * width),
          tref(rows * directions * width);
      k->unary_forward(kind, 0.0f, x.data(), 0, rows, width, y.data());
      k->unary_jvp(kind, 0.0f, x.data(), 0, rows, width, directions, t_in.data(), t.data(),
                   nullptr);
      siflow::reference::unary_forward(kind, 0.0f, x.data(), x.size(), ref.data());
      siflow::reference::unary_jvp(kind, 0.0f, x.data(), rows, width, directions, t_in.data(),
                                   tref.data());
      CHECK(std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(t.data(), tref.data(), t.size() * sizeof(float)) == 0);
    }
  }
  CHECK(variants >= 1);
#else
  MESSAGE("SKIPPED: this build has no simd kernels (SIFLOW_MINIMAL)");
#endif
}

TEST_CASE("models with the new unary kinds load (format 1.4) and a kind past mish is refused") {
  for (UnaryKind kind : kNewKinds) {
    ModelBuilder b(3);
    b.set_output(b.unary(b.x(), kind));
    auto model = expect_loads(b);
    CHECK(model->info().format_minor == 4);
    const NodeCheckResult r =
        check_node(model->data(), 0, random_vector(4 * 3, 7, 0.5f, 3.0f), 4, 2, 8);
    CHECK(r.worst_value <= 1.0);
    CHECK(r.worst_jvp <= 1e-5);
    CHECK(r.worst_vjp <= 1e-7);
  }
  ModelBuilder b(3);
  b.set_output(b.unary(b.x(), static_cast<UnaryKind>(19)));
  expect_refused(b, StatusCode::kInvalidModel, {"node 0 (Unary)", "unknown unary kind 19"});
}

TEST_CASE("log, sqrt and reciprocal at 0 or below make a run report a numerical error") {
  struct Case {
    UnaryKind kind;
    float bad;
  };
  for (Case c : {Case{UnaryKind::kLog, -1.0f}, Case{UnaryKind::kLog, 0.0f},
                 Case{UnaryKind::kSqrt, -1.0f}, Case{UnaryKind::kReciprocal, 0.0f}}) {
    INFO(std::string(siflow::unary_kind_name(c.kind)) << " at " << c.bad);
    ModelBuilder b(2);
    b.set_output(b.unary(b.x(), c.kind));
    auto model = expect_loads(b);
    auto plan = make_plan(*model);
    std::vector<float> y(3 * 2, 2.0f), v(3 * 2), t(3, 0.5f);
    REQUIRE(plan->velocity(3, t.data(), y.data(), v.data()).ok());
    y[2 * 2 + 1] = c.bad;
    const Status s = plan->velocity(3, t.data(), y.data(), v.data());
    INFO(text(s));
    CHECK(s.code() == StatusCode::kNumericalError);
    CHECK(text(s).find("not finite in row 2") != std::string::npos);
  }
}

// ---- Div, Pow, Clip -------------------------------------------------------------------------

TEST_CASE("div: a / b with flat and shape broadcasting, and a / constant") {
  SUBCASE("[B,n] / [B,n]") {
    ModelBuilder b(5);
    const uint32_t d =
        b.fully_connected(b.x(), 5, std::vector<float>(25, 0.1f), std::vector<float>(5, 3.0f));
    b.set_output(b.div(b.x(), d));
    check_output_node(b, 3, 1, -1.0f, 1.0f);
  }
  SUBCASE("[B,n] / [B,1] (RMSNorm's form)") {
    ModelBuilder b(5);
    const uint32_t d = b.add_constant(b.reduce(b.x(), ReduceKind::kL2), {1.0f});
    b.set_output(b.div(b.x(), d));
    check_output_node(b, 3, 2, -1.0f, 1.0f);
  }
  SUBCASE("[B,1] / [B,n]") {
    ModelBuilder b(4);
    const uint32_t d = b.add_constant(b.unary(b.x(), UnaryKind::kAbs), {1.0f, 2.0f, 1.5f, 1.0f});
    b.set_output(b.add(b.x(), b.div(b.t(), d)));
    auto model = expect_loads(b);
    const NodeCheckResult r =
        check_node(model->data(), 2, random_vector(3 * 4, 3, -1.0f, 1.0f), 3, 2, 4);
    CHECK(r.worst_value <= 2.0);
    CHECK(r.worst_jvp <= 1e-5);
    CHECK(r.worst_vjp <= 1e-7);
  }
  SUBCASE("[T,C] / [T,1] by shapes") {
    ModelBuilder b(6);
    b.set_x_shape({2, 3});
    const uint32_t norm = b.add_constant(b.reduce(b.x(), ReduceKind::kL2, 1), {0.5f, 0.5f});
    CHECK(b.shape(norm) == std::vector<uint32_t>{2, 1});
    const uint32_t q = b.div(b.x(), norm);
    CHECK(b.width(q) == 6);
    b.set_output(q);
    auto model = expect_loads(b);
    const auto& s = model->data().tensors[q].shape;
    CHECK(s.rank == 2);
    CHECK(s.dims[0] == 2);
    CHECK(s.dims[1] == 3);
    // Exactly x[t][c] / norm[t] per element.
    const std::vector<float> x = random_vector(3 * 6, 5, -1.0f, 1.0f);
    const auto v = forward_all(model->data(), x, 3);
    for (size_t r = 0; r < 3; ++r)
      for (uint32_t c = 0; c < 6; ++c)
        CHECK(v[q][r * 6 + c] == x[r * 6 + c] / v[norm][r * 2 + c / 3]);
    check_output_node(b, 3, 6, -1.0f, 1.0f);
  }
  SUBCASE("[T,C] / [1,C]-shaped tensor and a [C] constant") {
    ModelBuilder b(6);
    b.set_x_shape({2, 3});
    const uint32_t q = b.div_constant(b.x(), {2.0f, -4.0f, 0.5f});
    b.set_output(q);
    auto model = expect_loads(b);
    const std::vector<float> x = random_vector(2 * 6, 7, -1.0f, 1.0f);
    const auto v = forward_all(model->data(), x, 2);
    const float c[3] = {2.0f, -4.0f, 0.5f};
    for (size_t r = 0; r < 2; ++r)
      for (uint32_t k = 0; k < 6; ++k) CHECK(v[q][r * 6 + k] == x[r * 6 + k] / c[k % 3]);
    check_output_node(b, 2, 8, -1.0f, 1.0f);
  }
}

TEST_CASE("add and mul broadcast by shapes too ([C,1,1] against [C,H,W])") {
  for (bool multiply : {false, true}) {
    ModelBuilder b(12);
    b.set_x_shape({3, 2, 2});
    const uint32_t per_channel =
        b.reduce(b.reduce(b.x(), ReduceKind::kMean, 2), ReduceKind::kSum, 1);
    CHECK(b.shape(per_channel) == std::vector<uint32_t>{3, 1, 1});
    const uint32_t y = multiply ? b.mul(b.x(), per_channel) : b.add(per_channel, b.x());
    b.set_output(y);
    auto model = expect_loads(b);
    const std::vector<float> x = random_vector(2 * 12, 9, -1.0f, 1.0f);
    const auto v = forward_all(model->data(), x, 2);
    for (size_t r = 0; r < 2; ++r)
      for (uint32_t k = 0; k < 12; ++k) {
        const float a = x[r * 12 + k], c = v[per_channel][r * 3 + k / 4];
        CHECK(v[y][r * 12 + k] == (multiply ? a * c : c + a));
      }
    check_output_node(b, 2, 10, -1.0f, 1.0f);
  }
}

TEST_CASE("div refusals name the cause") {
  {
    ModelBuilder b(3);
    b.set_output(b.div_constant(b.x(), {1.0f, 0.0f, 2.0f}));
    expect_refused(b, StatusCode::kInvalidModel, {"node 0 (Div)", "constant divisor[1] is zero"});
  }
  {
    ModelBuilder b(6);
    b.set_x_shape({2, 3});
    const uint32_t f = b.fully_connected(b.x(), 4, std::vector<float>(24, 0.5f));
    b.div(b.x(), f);
    expect_refused(b, StatusCode::kInvalidModel,
                   {"node 1 (Div)", "inputs [2, 3] and [4] cannot broadcast"});
  }
  {
    ModelBuilder b(6);
    b.set_x_shape({2, 3});
    b.div_constant(b.x(), {1.0f, 2.0f});
    expect_refused(b, StatusCode::kInvalidModel,
                   {"node 0 (Div)", "constant [2] cannot broadcast with input [2, 3]"});
  }
  {
    ModelBuilder b(3);
    b.div(b.x(), b.x());
    b.set_output(b.div(b.x(), 99));
    expect_refused(b, StatusCode::kInvalidModel, {"node 1 (Div)", "reads tensor 99"});
  }
}

TEST_CASE("pow: x^p against std::pow, and its JVP and VJP") {
  const std::vector<float> xs = random_vector(4000, 11, -3.0f, 3.0f);
  for (float p : {0.0f, 1.0f, 2.0f, 3.0f, -1.0f, -2.0f, 0.5f, 1.5f, -0.5f, 2.5f, 7.0f}) {
    INFO("p = " << p);
    ModelBuilder b(4);
    b.set_output(b.pow(b.x(), p));
    auto model = expect_loads(b);
    const auto v = forward_all(model->data(), xs, xs.size() / 4);
    double worst = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const double want = std::pow(static_cast<double>(xs[i]), static_cast<double>(p));
      if (std::isnan(want)) {
        CHECK(std::isnan(v[2][i]));  // a negative base with a fractional exponent
        continue;
      }
      worst = std::max(worst, std::fabs(v[2][i] - want) / float_ulp(want));
    }
    CHECK(worst <= 1.0);
    // Derivatives away from 0 (x^-2's and x^0.5's blow up there) on both signs where defined.
    const bool integer = p == std::floor(p);
    check_output_node(b, 3, 12, integer ? -2.0f : 0.3f, 2.0f);
  }
}

TEST_CASE("pow of a negative base with a fractional exponent is a numerical error at run") {
  ModelBuilder b(2);
  b.set_output(b.pow(b.x(), 1.5f));
  auto model = expect_loads(b);
  auto plan = make_plan(*model);
  std::vector<float> y = {1.0f, 2.0f, 3.0f, -4.0f}, v(4), t(2, 0.5f);
  const Status s = plan->velocity(2, t.data(), y.data(), v.data());
  CHECK(s.code() == StatusCode::kNumericalError);
  CHECK(text(s).find("not finite in row 1") != std::string::npos);
  ModelBuilder c(2);
  c.set_output(c.pow(c.x(), INFINITY));
  expect_refused(c, StatusCode::kInvalidModel, {"node 0 (Pow)", "exponent is not finite"});
}

TEST_CASE("clip: values, ReLU6, and the slope 1 inside [low, high] (edges included), 0 outside") {
  ModelBuilder b(8);
  b.set_output(b.clip(b.x(), 0.0f, 6.0f));
  auto model = expect_loads(b);
  const std::vector<float> x = {-1.0f, 0.0f, 0.5f, 6.0f, 6.5f, -0.0f, 3.0f, NAN};
  const auto v = forward_all(model->data(), x, 1);
  const std::vector<float> want = {0.0f, 0.0f, 0.5f, 6.0f, 6.0f, -0.0f, 3.0f, NAN};
  for (size_t i = 0; i < 7; ++i) CHECK(v[2][i] == want[i]);
  CHECK(std::isnan(v[2][7]));
  // Tangents: 1 at -0, 0, 0.5, 6, 3; 0 at -1 and 6.5.
  const ModelData& md = model->data();
  std::vector<float> tin(8, 1.0f), tout(8, NAN), y(8);
  std::vector<float> xv = x;
  float* values[3] = {xv.data(), nullptr, y.data()};
  float* tangents[3] = {tin.data(), nullptr, tout.data()};
  const siflow::ops::FastKernels kernels;
  siflow::ops::op_module(md.nodes[0].op)
      .run(siflow::ops::NodeRun{&md, 0, values, tangents, 1, 1, false, &kernels, nullptr});
  const std::vector<float> slope = {0, 1, 1, 1, 0, 1, 1};
  for (size_t i = 0; i < 7; ++i) CHECK(tout[i] == slope[i]);
  // One-sided clips, and the JVP/VJP checks away from the edges.
  ModelBuilder c(5);
  c.set_output(c.clip(c.clip(c.x(), -0.5f, INFINITY), -INFINITY, 0.25f));
  check_output_node(c, 4, 13, -1.0f, 1.0f);
  ModelBuilder d(3);
  d.set_output(d.clip(d.x(), 1.0f, -1.0f));
  expect_refused(d, StatusCode::kInvalidModel, {"node 0 (Clip)", "low 1 is above high -1"});
  ModelBuilder e(3);
  e.set_output(e.clip(e.x(), NAN, 1.0f));
  expect_refused(e, StatusCode::kInvalidModel, {"node 0 (Clip)", "low or high is NaN"});
}

// ---- Reduce, Softmax ------------------------------------------------------------------------

TEST_CASE("reduce: mean, sum and L2 along every axis of [2, 3, 4], the axis kept as 1") {
  for (ReduceKind kind : {ReduceKind::kMean, ReduceKind::kSum, ReduceKind::kL2})
    for (int axis : {0, 1, 2, -1, -3}) {
      INFO("kind " << static_cast<int>(kind) << " axis " << axis);
      ModelBuilder b(24);
      b.set_x_shape({2, 3, 4});
      const uint32_t r = b.reduce(b.x(), kind, axis);
      b.set_output(b.add(b.x(), r));  // the output is as wide as x
      auto model = expect_loads(b);
      const ModelData& md = model->data();
      const uint32_t a = axis < 0 ? axis + 3 : axis;
      const uint32_t dims[3] = {2, 3, 4};
      CHECK(md.tensors[r].shape.rank == 3);
      for (uint32_t k = 0; k < 3; ++k) CHECK(md.tensors[r].shape.dims[k] == (k == a ? 1 : dims[k]));
      CHECK(md.tensors[r].width == 24 / dims[a]);
      // Against a plain loop in double.
      const std::vector<float> x = random_vector(2 * 24, 14, -2.0f, 2.0f);
      const auto v = forward_all(md, x, 2);
      for (size_t row = 0; row < 2; ++row)
        for (uint32_t i = 0; i < 2; ++i)
          for (uint32_t j = 0; j < 3; ++j)
            for (uint32_t k = 0; k < 4; ++k) {
              const uint32_t at[3] = {i, j, k};
              if (at[a] != 0) continue;
              double acc = 0;
              for (uint32_t e = 0; e < dims[a]; ++e) {
                uint32_t p[3] = {i, j, k};
                p[a] = e;
                const double xv = x[row * 24 + (p[0] * 3 + p[1]) * 4 + p[2]];
                acc += kind == ReduceKind::kL2 ? xv * xv : xv;
              }
              if (kind == ReduceKind::kMean) acc /= dims[a];
              if (kind == ReduceKind::kL2) acc = std::sqrt(acc);
              uint32_t od[3] = {2, 3, 4};
              od[a] = 1;
              const size_t o = (static_cast<size_t>(at[0]) * od[1] + at[1]) * od[2] + at[2];
              CHECK(std::fabs(v[r][row * md.tensors[r].width + o] - acc) <= float_ulp(acc));
            }
      check_output_node(b, 2, 15, -2.0f, 2.0f, r);
    }
}

TEST_CASE("reduce L2 of a zero row is 0 with a zero tangent (no NaN)") {
  ModelBuilder b(4);
  b.set_output(b.add(b.x(), b.reduce(b.x(), ReduceKind::kL2)));
  auto model = expect_loads(b);
  const ModelData& md = model->data();
  std::vector<float> x(4, 0.0f), y(1), tin(4, 1.0f), tout(1, NAN);
  float* values[3] = {x.data(), nullptr, y.data()};
  float* tangents[3] = {tin.data(), nullptr, tout.data()};
  const siflow::ops::FastKernels kernels;
  siflow::ops::op_module(md.nodes[0].op)
      .run(siflow::ops::NodeRun{&md, 0, values, tangents, 1, 1, false, &kernels, nullptr});
  CHECK(y[0] == 0.0f);
  CHECK(tout[0] == 0.0f);
}

TEST_CASE("softmax along each axis sums to one, is stable for large inputs, and differentiates") {
  for (int axis : {-1, 0, 1}) {
    INFO("axis " << axis);
    ModelBuilder b(12);
    b.set_x_shape({3, 4});
    const uint32_t s = b.softmax(b.x(), axis);
    b.set_output(s);
    auto model = expect_loads(b);
    std::vector<float> x = random_vector(2 * 12, 16, -3.0f, 3.0f);
    x[5] = 1000.0f;  // exp(1000) overflows: the max is subtracted first
    x[17] = -1000.0f;
    const auto v = forward_all(model->data(), x, 2);
    const uint32_t a = axis < 0 ? 1 : axis;
    for (size_t r = 0; r < 2; ++r)
      for (uint32_t o = 0; o < (a == 1 ? 3u : 4u); ++o) {
        double sum = 0, m = -INFINITY;
        auto at = [&](uint32_t e) { return r * 12 + (a == 1 ? o * 4 + e : e * 4 + o); };
        const uint32_t n = a == 1 ? 4 : 3;
        for (uint32_t e = 0; e < n; ++e) m = std::max(m, static_cast<double>(x[at(e)]));
        for (uint32_t e = 0; e < n; ++e) sum += std::exp(x[at(e)] - m);
        double total = 0;
        for (uint32_t e = 0; e < n; ++e) {
          const double want = std::exp(x[at(e)] - m) / sum;
          CHECK(std::fabs(v[s][at(e)] - want) <= float_ulp(want));
          total += v[s][at(e)];
        }
        CHECK(std::fabs(total - 1.0) <= 4 * FLT_EPSILON);
      }
    check_output_node(b, 3, 17, -3.0f, 3.0f);
  }
}

TEST_CASE("reduce and softmax refusals name the cause") {
  {
    ModelBuilder b(6);
    b.set_x_shape({2, 3});
    b.set_output(b.softmax(b.x(), 2));
    expect_refused(b, StatusCode::kInvalidModel,
                   {"node 0 (Softmax)", "axis 2 is outside the input's [2, 3]"});
  }
  {
    ModelBuilder b(6);
    b.reduce(b.x(), ReduceKind::kSum, -2);
    expect_refused(b, StatusCode::kInvalidModel,
                   {"node 0 (Reduce)", "axis -2 is outside the input's [6]"});
  }
  {
    ModelBuilder b(6);
    b.reduce(b.x(), static_cast<ReduceKind>(9));
    expect_refused(b, StatusCode::kInvalidModel, {"node 0 (Reduce)", "unknown reduce kind 9"});
  }
  {
    ModelBuilder b(6);
    b.softmax(b.x());
    b.softmax(b.x());
    b.set_output(b.softmax(4));
    expect_refused(b, StatusCode::kInvalidModel, {"node 2 (Softmax)", "reads tensor 4"});
  }
}

// ---- MatMul ---------------------------------------------------------------------------------

TEST_CASE("matmul: [G,M,K] x [G,K,N], transpose_b and scale, against a double loop") {
  // Without Reshape (another module) the shaped operands come from x [G, M, K] itself: x x,
  // x tanh(x)^T (transpose_b), and the product of those two.
  ModelBuilder b(2 * 3 * 3);
  b.set_x_shape({2, 3, 3});
  const uint32_t ab = b.matmul(b.x(), b.x(), false, 0.5f);  // x x
  const uint32_t abt =
      b.matmul(b.x(), b.unary(b.x(), UnaryKind::kTanh), true, 0.75f);  // x tanh(x)^T
  const uint32_t chain = b.matmul(ab, abt, false, 1.0f);
  b.set_output(chain);
  auto model = expect_loads(b);
  const ModelData& md = model->data();
  const std::vector<float> x = random_vector(2 * 18, 18, -1.0f, 1.0f);
  const auto v = forward_all(md, x, 2);
  for (size_t r = 0; r < 2; ++r)
    for (uint32_t g = 0; g < 2; ++g)
      for (uint32_t i = 0; i < 3; ++i)
        for (uint32_t j = 0; j < 3; ++j) {
          double want = 0, want_t = 0, mag = 0;
          for (uint32_t k = 0; k < 3; ++k) {
            const double a = x[r * 18 + g * 9 + i * 3 + k];
            want += a * x[r * 18 + g * 9 + k * 3 + j];
            want_t += a * v[ab + 1][r * 18 + g * 9 + j * 3 + k];  // tanh(x), tensor abt - 1
            mag += std::fabs(a);
          }
          CHECK(std::fabs(v[ab][r * 18 + g * 9 + i * 3 + j] - 0.5 * want) <=
                float_ulp(0.5 * want) + 1e-15 * mag);
          CHECK(std::fabs(v[abt][r * 18 + g * 9 + i * 3 + j] - 0.75 * want_t) <=
                float_ulp(0.75 * want_t) + 1e-15 * mag);
        }
  CHECK(md.tensors[chain].shape.rank == 3);
  for (uint32_t k : {ab, abt, chain}) {
    INFO("tensor " << k);
    const NodeCheckResult res = check_node(md, k - 2, x, 2, 2, 19);
    CHECK(res.worst_value <= 2.0);
    CHECK(res.worst_jvp <= 1e-5);
    CHECK(res.worst_vjp <= 1e-7);
  }
}

TEST_CASE("matmul of non-square rank-2 shapes: [4, 3] x [1, 3]^T") {
  // r = the mean of x [4, 3] over axis 0 is [1, 3]; x r^T is [4, 3] x [1, 3]^T = [4, 1].
  ModelBuilder b(12);
  b.set_x_shape({4, 3});
  const uint32_t r = b.reduce(b.x(), ReduceKind::kMean, 0);
  const uint32_t y = b.matmul(b.x(), r, true, 2.0f);
  CHECK(b.shape(y) == std::vector<uint32_t>{4, 1});
  b.set_output(b.mul(b.x(), y));
  auto model = expect_loads(b);
  const ModelData& md = model->data();
  CHECK(md.tensors[y].width == 4);
  const std::vector<float> x = random_vector(3 * 12, 20, -1.0f, 1.0f);
  const auto v = forward_all(md, x, 3);
  for (size_t row = 0; row < 3; ++row)
    for (uint32_t m = 0; m < 4; ++m) {
      double want = 0;
      for (uint32_t k = 0; k < 3; ++k) want += 2.0 * x[row * 12 + m * 3 + k] * v[r][row * 3 + k];
      CHECK(std::fabs(v[y][row * 4 + m] - want) <= float_ulp(want) + 1e-15);
    }
  const NodeCheckResult res = check_node(md, 1, x, 3, 2, 21);
  CHECK(res.worst_value <= 2.0);
  CHECK(res.worst_jvp <= 1e-5);
  CHECK(res.worst_vjp <= 1e-7);
}

TEST_CASE("matmul refusals name the cause") {
  {
    ModelBuilder b(6);
    b.matmul(b.x(), b.x());
    expect_refused(b, StatusCode::kInvalidModel,
                   {"node 0 (MatMul)", "inputs [6] and [6] must both be"});
  }
  {
    ModelBuilder b(6);
    b.set_x_shape({2, 3});
    b.matmul(b.x(), b.x());
    expect_refused(
        b, StatusCode::kInvalidModel,
        {"node 0 (MatMul)", "inputs [2, 3] and [2, 3] do not multiply", "inner extents 3 and 2"});
  }
  {
    ModelBuilder b(12);
    b.set_x_shape({2, 2, 3});
    const uint32_t r = b.reduce(b.x(), ReduceKind::kSum, 0);  // [1, 2, 3]
    b.matmul(b.x(), r, true);
    expect_refused(b, StatusCode::kInvalidModel,
                   {"node 1 (MatMul)", "(b transposed) do not multiply", "groups 2 and 1"});
  }
  {
    ModelBuilder b(4);
    b.set_x_shape({2, 2});
    b.set_output(b.matmul(b.x(), b.x(), false, NAN));
    expect_refused(b, StatusCode::kInvalidModel, {"node 0 (MatMul)", "scale is not finite"});
  }
}
