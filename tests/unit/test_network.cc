// SPDX-License-Identifier: Apache-2.0
// The network executor (net/executor.hpp) on ModelBuilder graphs covering every op: velocities
// against an independent double evaluation of the same graph, tangents and exact divergence
// against finite differences, and Hutchinson estimates against the exact trace.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "format/model_data.hpp"
#include "kernels/simd/kernels.hpp"
#include "math/random.hpp"
#include "net/executor.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/activation_formulas.hpp"
#include "support/env_guard.hpp"
#include "support/random_vectors.hpp"
#include "support/requirements.hpp"

namespace {

using siflow::Model;
using siflow::ModelBuilder;
using siflow::Plan;
using siflow::UnaryKind;

using test_support::activation;

using test_support::random_normals;

// A graph written through ModelBuilder and mirrored for a double-precision evaluation.
class TestNet {
 public:
  explicit TestNet(uint32_t dim) : builder_(dim), dim_(dim), widths_{dim, 1} {}

  uint32_t fc(uint32_t in, uint32_t out, uint32_t seed, bool with_bias = true) {
    Node n{Op::kFc, {in}};
    n.w = random_normals(size_t{out} * widths_[in], seed, 1.0 / std::sqrt(double(widths_[in])));
    if (with_bias) n.b = random_normals(out, seed + 7777, 0.3);
    return push(n, out, builder_.fully_connected(in, out, n.w, n.b));
  }
  uint32_t unary(uint32_t in, UnaryKind kind, float alpha = 0.2f) {
    Node n{Op::kUnary, {in}};
    n.kind = kind;
    n.alpha = alpha;
    return push(n, widths_[in], builder_.unary(in, kind, alpha));
  }
  uint32_t concat(const std::vector<uint32_t>& ins) {
    uint32_t w = 0;
    for (uint32_t i : ins) w += widths_[i];
    return push(Node{Op::kConcat, ins}, w, builder_.concat(ins));
  }
  uint32_t add(uint32_t a, uint32_t b) {
    return push(Node{Op::kAdd, {a, b}}, std::max(widths_[a], widths_[b]), builder_.add(a, b));
  }
  uint32_t mul(uint32_t a, uint32_t b) {
    return push(Node{Op::kMul, {a, b}}, std::max(widths_[a], widths_[b]), builder_.mul(a, b));
  }
  uint32_t add_constant(uint32_t a, const std::vector<float>& c) {
    Node n{Op::kAddConstant, {a}};
    n.c = c;
    return push(n, std::max<uint32_t>(widths_[a], c.size()), builder_.add_constant(a, c));
  }
  uint32_t mul_constant(uint32_t a, const std::vector<float>& c) {
    Node n{Op::kMulConstant, {a}};
    n.c = c;
    return push(n, std::max<uint32_t>(widths_[a], c.size()), builder_.mul_constant(a, c));
  }
  uint32_t layer_norm(uint32_t in, uint32_t seed, bool affine, float eps = 1e-5f) {
    Node n{Op::kLayerNorm, {in}};
    if (affine) {
      n.w = random_normals(widths_[in], seed, 1.0);
      n.b = random_normals(widths_[in], seed + 1, 0.5);
    }
    n.eps = eps;
    return push(n, widths_[in], builder_.layer_norm(in, n.w, n.b, eps));
  }
  uint32_t exp(uint32_t in) { return push(Node{Op::kExp, {in}}, widths_[in], builder_.exp(in)); }
  void set_output(uint32_t id) {
    output_ = id;
    builder_.set_output(id);
  }

  std::unique_ptr<Model> load() {
    // Kept for the life of the net: a model loaded in place points into its bytes.
    bytes_.push_back(builder_.finish());
    std::unique_ptr<Model> model;
    const siflow::Status s =
        Model::load(bytes_.back().data(), bytes_.back().size(), siflow::LoadOptions(), &model);
    REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
    return model;
  }

  // v(t, x) in double, node by node.
  std::vector<double> eval(double t, const std::vector<double>& x) const {
    std::vector<std::vector<double>> v = {x, {t}};
    for (const Node& n : nodes_) {
      const uint32_t width = widths_[v.size()];
      std::vector<double> y(width, 0.0);
      const std::vector<double>& a = v[n.in[0]];
      auto at = [](const std::vector<double>& u, uint32_t k) {
        return u.size() == 1 ? u[0] : u[k];
      };
      auto cat = [](const std::vector<float>& u, uint32_t k) {
        return static_cast<double>(u.size() == 1 ? u[0] : u[k]);
      };
      switch (n.op) {
        case Op::kFc:
          for (uint32_t o = 0; o < width; ++o) {
            double s = n.b.empty() ? 0.0 : n.b[o];
            for (size_t i = 0; i < a.size(); ++i) s += double(n.w[o * a.size() + i]) * a[i];
            y[o] = s;
          }
          break;
        case Op::kUnary:
          for (uint32_t k = 0; k < width; ++k) y[k] = activation(n.kind, n.alpha, a[k]);
          break;
        case Op::kConcat:
          y.clear();
          for (uint32_t i : n.in) y.insert(y.end(), v[i].begin(), v[i].end());
          break;
        case Op::kAdd:
        case Op::kMul:
          for (uint32_t k = 0; k < width; ++k)
            y[k] = n.op == Op::kAdd ? at(a, k) + at(v[n.in[1]], k) : at(a, k) * at(v[n.in[1]], k);
          break;
        case Op::kAddConstant:
        case Op::kMulConstant:
          for (uint32_t k = 0; k < width; ++k)
            y[k] = n.op == Op::kAddConstant ? at(a, k) + cat(n.c, k) : at(a, k) * cat(n.c, k);
          break;
        case Op::kLayerNorm: {
          double mean = 0, var = 0;
          for (double u : a) mean += u;
          mean /= width;
          for (double u : a) var += (u - mean) * (u - mean);
          var /= width;
          for (uint32_t k = 0; k < width; ++k) {
            y[k] = (a[k] - mean) / std::sqrt(var + n.eps);
            if (!n.w.empty()) y[k] = y[k] * n.w[k] + n.b[k];
          }
          break;
        }
        case Op::kExp:
          for (uint32_t k = 0; k < width; ++k) y[k] = std::exp(a[k]);
          break;
      }
      v.push_back(y);
    }
    return v[output_];
  }

  uint32_t dim() const { return dim_; }

 private:
  enum class Op { kFc, kUnary, kConcat, kAdd, kMul, kAddConstant, kMulConstant, kLayerNorm, kExp };
  struct Node {
    Node(Op o, std::vector<uint32_t> inputs) : op(o), in(std::move(inputs)) {}
    Op op;
    std::vector<uint32_t> in;
    std::vector<float> w, b, c;
    UnaryKind kind = UnaryKind::kIdentity;
    float alpha = 0.2f;
    float eps = 1e-5f;
  };
  uint32_t push(const Node& n, uint32_t width, uint32_t builder_id) {
    nodes_.push_back(n);
    widths_.push_back(width);
    REQUIRE(builder_id == widths_.size() - 1);  // the mirror and the builder agree on ids
    output_ = builder_id;
    return builder_id;
  }

  ModelBuilder builder_;
  uint32_t dim_;
  std::vector<uint32_t> widths_;
  std::vector<Node> nodes_;
  uint32_t output_ = 0;
  std::deque<std::vector<uint8_t>> bytes_;
};

// A network with every op: Fourier time features t * freqs -> sin/cos, concat with x and t,
// fully connected, layer norm, activations, a residual add, [B,1] * [B,n] products both ways,
// an x-by-x product and constant add/mul.
TestNet full_network(uint32_t dim) {
  TestNet n(dim);
  const uint32_t freqs = n.mul_constant(ModelBuilder::t(), {1.0f, 2.0f, 4.0f, 8.0f});
  const uint32_t fsin = n.unary(freqs, UnaryKind::kSin);
  const uint32_t fcos = n.unary(freqs, UnaryKind::kCos);
  const uint32_t in = n.concat({ModelBuilder::x(), fsin, fcos, ModelBuilder::t()});
  const uint32_t h0 = n.fc(in, 16, 1);
  const uint32_t h1 = n.unary(n.layer_norm(h0, 2, true), UnaryKind::kSilu);
  const uint32_t h2 = n.unary(n.fc(h1, 16, 3), UnaryKind::kGeluErf);
  const uint32_t res = n.add(h1, h2);                                      // residual block
  const uint32_t gate = n.add_constant(ModelBuilder::t(), {0.5f});         // [B,1], no tangent
  const uint32_t g1 = n.mul(res, gate);                                    // [B,n] * [B,1]
  const uint32_t g2 = n.mul(gate, n.unary(g1, UnaryKind::kTanh));          // [B,1] * [B,n]
  const uint32_t time_feat = n.fc(n.concat({fsin, fcos}), 16, 4);          // no tangent
  const uint32_t mixed = n.add(g2, time_feat);                             // tangent + none
  const uint32_t sq = n.mul(mixed, n.unary(mixed, UnaryKind::kSoftplus));  // both tangents
  const uint32_t scaled = n.mul_constant(sq, random_normals(16, 5, 1.0));
  const uint32_t shifted = n.add_constant(scaled, random_normals(16, 6, 0.5));
  const uint32_t ln = n.layer_norm(shifted, 7, false);
  n.set_output(n.fc(ln, dim, 8));
  return n;
}

// A small net using Exp (format 1.1), kept apart from full_network so the every-op models and
// their golden bits stay format 1.0: exp of a hidden layer with a tangent, exp of a time
// feature without one, and their product, so the exp JVP meets the product rule.
TestNet exp_network(uint32_t dim) {
  TestNet n(dim);
  const uint32_t h = n.fc(n.concat({ModelBuilder::x(), ModelBuilder::t()}), 8, 90);
  const uint32_t e = n.exp(n.unary(h, UnaryKind::kTanh));                 // in (e^-1, e)
  const uint32_t et = n.exp(n.mul_constant(ModelBuilder::t(), {-1.5f}));  // [B,1], no tangent
  const uint32_t g = n.mul(e, et);
  n.set_output(n.fc(n.add(g, n.exp(n.fc(ModelBuilder::x(), 8, 91))), dim, 92));
  return n;
}

// Private buffers for run_network, laid out as NetBuffers documents.
struct Buffers {
  Buffers(const siflow::detail::ModelData& md, size_t rows, size_t directions)
      : values(md.node_count + 2), tangents(md.node_count + 2) {
    net.directions = directions;
    for (uint32_t id = 1; id < md.node_count + 2; ++id)
      values[id].assign(rows * md.tensors[id].width, NAN);
    tangents[0].assign(rows * directions * md.dim, NAN);
    for (uint32_t id = 2; id < md.node_count + 2; ++id)
      if (md.tensors[id].depends_on_x)
        tangents[id].assign(rows * directions * md.tensors[id].width, NAN);
    for (uint32_t id = 0; id < md.node_count + 2; ++id) {
      value_ptrs.push_back(values[id].empty() ? nullptr : values[id].data());
      tangent_ptrs.push_back(tangents[id].empty() ? nullptr : tangents[id].data());
    }
    net.values = value_ptrs.data();
    net.tangents = tangent_ptrs.data();
  }
  std::vector<std::vector<float>> values, tangents;
  std::vector<float*> value_ptrs, tangent_ptrs;
  siflow::NetBuffers net;
};

std::vector<float> random_points(size_t rows, uint32_t dim, uint32_t seed) {
  return random_normals(rows * dim, seed, 1.0);
}

// Central-difference Jacobian J[k][p] = d v_k / d x_p of the double evaluation.
std::vector<double> fd_jacobian(const TestNet& net, double t, const float* x) {
  const uint32_t d = net.dim();
  std::vector<double> jac(d * d);
  const double h = 1e-5;
  for (uint32_t p = 0; p < d; ++p) {
    std::vector<double> plus(x, x + d), minus(x, x + d);
    plus[p] += h;
    minus[p] -= h;
    const std::vector<double> vp = net.eval(t, plus), vm = net.eval(t, minus);
    for (uint32_t k = 0; k < d; ++k) jac[k * d + p] = (vp[k] - vm[k]) / (2 * h);
  }
  return jac;
}

}  // namespace

TEST_CASE("Plan::velocity of a network with every op matches a double evaluation") {
  const uint32_t dim = 3;
  TestNet net = full_network(dim);
  auto model = net.load();
  siflow::PlanOptions po;
  po.max_batch = 5;  // 17 rows stream through 4 chunks
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
  const size_t n = 17;
  const std::vector<float> y = random_points(n, dim, 10);
  std::vector<float> t(n), v(n * dim);
  for (size_t r = 0; r < n; ++r) t[r] = static_cast<float>(r) / (n - 1);
  const siflow::Status s = plan->velocity(n, t.data(), y.data(), v.data());
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  double worst = 0.0;
  for (size_t r = 0; r < n; ++r) {
    const std::vector<double> want =
        net.eval(t[r], std::vector<double>(y.begin() + r * dim, y.begin() + (r + 1) * dim));
    for (uint32_t k = 0; k < dim; ++k)
      worst =
          std::max(worst, std::fabs(v[r * dim + k] - want[k]) / std::max(1.0, std::fabs(want[k])));
  }
  MESSAGE("max relative velocity error " << worst);
  // Float activations carry 2^-24 (6e-8) relative rounding per op; through ~20 ops of fan-in
  // <= 26 with O(1) weights and two layer norms the error stays below 1e-6 of the O(1) scale
  // (measured 2.4e-7); 5e-6 still flags any wrong op, which errs by >= 1e-3.
  CHECK(worst <= 5e-6);
}

TEST_CASE("every activation inside a network: velocity matches the double evaluation") {
  const uint32_t dim = 2;
  for (int k = 0; k <= 12; ++k) {
    const UnaryKind kind = static_cast<UnaryKind>(k);
    INFO("unary kind " << k);
    TestNet net(dim);
    net.set_output(net.fc(net.unary(net.fc(ModelBuilder::x(), 8, 20 + k), kind), dim, 40 + k));
    auto model = net.load();
    std::unique_ptr<Plan> plan;
    REQUIRE(Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
    const size_t n = 32;
    const std::vector<float> y = random_points(n, dim, 60 + k);
    std::vector<float> t(n, 0.25f), v(n * dim);
    REQUIRE(plan->velocity(n, t.data(), y.data(), v.data()).ok());
    double worst = 0.0;
    for (size_t r = 0; r < n; ++r) {
      const std::vector<double> want =
          net.eval(0.25, std::vector<double>(y.begin() + r * dim, y.begin() + (r + 1) * dim));
      for (uint32_t c = 0; c < dim; ++c)
        worst = std::max(worst,
                         std::fabs(v[r * dim + c] - want[c]) / std::max(1.0, std::fabs(want[c])));
    }
    // Three float layers (fan-in <= 8): a few 2^-24 relative; 2e-6 catches a wrong activation.
    CHECK(worst <= 2e-6);
  }
}

TEST_CASE(
    "tangents from identity seeds are the Jacobian: every column matches finite "
    "differences") {
  const uint32_t dim = 3;
  TestNet net = full_network(dim);
  auto model = net.load();
  const auto& md = model->data();
  const size_t rows = 4;
  Buffers buf(md, rows, dim);
  const std::vector<float> x = random_points(rows, dim, 11);
  for (size_t r = 0; r < rows; ++r) buf.values[1][r] = 0.2f * static_cast<float>(r + 1);
  siflow::fill_identity_seeds(buf.tangents[0].data(), rows, dim);
  siflow::run_network(md, buf.net, x.data(), rows, dim);
  const float* t_out = buf.tangent_ptrs[md.output];
  REQUIRE(t_out != nullptr);
  double worst = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    const std::vector<double> jac = fd_jacobian(net, buf.values[1][r], x.data() + r * dim);
    for (uint32_t p = 0; p < dim; ++p)
      for (uint32_t k = 0; k < dim; ++k)
        worst = std::max(worst, std::fabs(t_out[(r * dim + p) * dim + k] - jac[k * dim + p]) /
                                    std::max(1.0, std::fabs(jac[k * dim + p])));
  }
  MESSAGE("max Jacobian error " << worst);
  // Float JVP vs double central differences (h = 1e-5: truncation ~1e-10, cancellation ~1e-11):
  // float rounding dominates as in the velocity test; measured 3.6e-8, bound 1e-6.
  CHECK(worst <= 1e-6);
}

TEST_CASE("exact divergence equals the finite-difference trace of the double evaluation") {
  const uint32_t dim = 4;
  TestNet net = full_network(dim);
  auto model = net.load();
  const auto& md = model->data();
  const size_t rows = 6;
  Buffers buf(md, rows, dim);
  const std::vector<float> x = random_points(rows, dim, 12);
  for (size_t r = 0; r < rows; ++r) buf.values[1][r] = 0.15f * static_cast<float>(r);
  siflow::fill_identity_seeds(buf.tangents[0].data(), rows, dim);
  siflow::run_network(md, buf.net, x.data(), rows, dim);
  std::vector<double> div(rows);
  siflow::exact_divergence(buf.tangent_ptrs[md.output], rows, dim, div.data());
  for (size_t r = 0; r < rows; ++r) {
    const std::vector<double> jac = fd_jacobian(net, buf.values[1][r], x.data() + r * dim);
    double trace = 0.0, size = 0.0;
    for (uint32_t k = 0; k < dim; ++k) {
      trace += jac[k * dim + k];
      size += std::fabs(jac[k * dim + k]);
    }
    // The sum of dim float Jacobian entries, each within 1e-6 of max(1, |J_kk|) (see above).
    CHECK(std::fabs(div[r] - trace) <= 1e-6 * (dim + size));
  }
}

TEST_CASE("fill_identity_seeds writes e_p into tangent row r * dim + p") {
  const size_t rows = 3;
  const uint32_t dim = 5;
  std::vector<float> seeds(rows * dim * dim, NAN);
  siflow::fill_identity_seeds(seeds.data(), rows, dim);
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t p = 0; p < dim; ++p)
      for (uint32_t k = 0; k < dim; ++k)
        CHECK(seeds[(r * dim + p) * dim + k] == (p == k ? 1.0f : 0.0f));
}

TEST_CASE("tensors computed from t alone are marked independent of x and get no tangent") {
  TestNet net = full_network(2);
  auto model = net.load();
  const auto& md = model->data();
  // Ids: 2 = t * freqs, 3 = sin, 4 = cos (from t only); 5 = concat with x (depends on x).
  CHECK(md.tensors[0].depends_on_x);
  CHECK_FALSE(md.tensors[1].depends_on_x);
  CHECK_FALSE(md.tensors[2].depends_on_x);
  CHECK_FALSE(md.tensors[3].depends_on_x);
  CHECK_FALSE(md.tensors[4].depends_on_x);
  CHECK(md.tensors[5].depends_on_x);
  CHECK(md.tensors[md.output].depends_on_x);
}

TEST_CASE(
    "Plan::velocity on the shared arena is bit-identical to run_network on private "
    "buffers") {
  // The plan packs buffers by lifetime; a live buffer overwritten early would change results.
  const uint32_t dim = 3;
  TestNet net = full_network(dim);
  auto model = net.load();
  const size_t rows = 7;
  const std::vector<float> x = random_points(rows, dim, 13);
  std::vector<float> t(rows, 0.4f), v(rows * dim);
  std::unique_ptr<Plan> plan;
  siflow::PlanOptions po;
  po.max_batch = rows;
  po.backend = siflow::Backend::kReference;  // the kernels of the private run below
  REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
  REQUIRE(plan->velocity(rows, t.data(), x.data(), v.data()).ok());
  Buffers buf(model->data(), rows, 0);
  for (size_t r = 0; r < rows; ++r) buf.values[1][r] = 0.4f;
  siflow::run_network(model->data(), buf.net, x.data(), rows, 0);
  CHECK(std::memcmp(v.data(), buf.value_ptrs[model->data().output], v.size() * sizeof(float)) == 0);
}

namespace {

// Per-probe estimates z_p . (J z_p) for one row, with K probes filled as the plan fills them
// (probe k of sample i from blocks k * ceil(d/4) of stream 1), plus the runtime's mean.
struct HutchinsonRun {
  std::vector<double> estimates;
  double runtime_mean = 0.0;
  double exact = 0.0;
};

HutchinsonRun run_hutchinson(TestNet& net, siflow::ProbeKind kind, size_t probes) {
  auto model = net.load();
  const auto& md = model->data();
  const uint32_t dim = md.dim;
  const std::vector<float> x = random_points(1, dim, 14);
  HutchinsonRun run;
  {
    Buffers exact(md, 1, dim);
    exact.values[1][0] = 0.5f;
    siflow::fill_identity_seeds(exact.tangents[0].data(), 1, dim);
    siflow::run_network(md, exact.net, x.data(), 1, dim);
    siflow::exact_divergence(exact.tangent_ptrs[md.output], 1, dim, &run.exact);
  }
  Buffers buf(md, 1, probes);
  buf.values[1][0] = 0.5f;
  float* z = buf.tangents[0].data();
  const uint32_t blocks = siflow::blocks_per_vector(dim);
  for (uint32_t k = 0; k < probes; ++k) {
    if (kind == siflow::ProbeKind::kRademacher)
      siflow::fill_signs(99, 0, siflow::kStreamProbe, k * blocks, z + k * dim, dim);
    else
      siflow::fill_normals(99, 0, siflow::kStreamProbe, k * blocks, z + k * dim, dim);
  }
  siflow::run_network(md, buf.net, x.data(), 1, probes);
  const float* t_out = buf.tangent_ptrs[md.output];
  for (size_t k = 0; k < probes; ++k) {
    double e = 0.0;
    for (uint32_t c = 0; c < dim; ++c) e += double(z[k * dim + c]) * t_out[k * dim + c];
    run.estimates.push_back(e);
  }
  siflow::hutchinson_divergence(z, t_out, 1, dim, probes, &run.runtime_mean);
  return run;
}

void check_unbiased(const HutchinsonRun& run) {
  const double n = static_cast<double>(run.estimates.size());
  double mean = 0.0, var = 0.0;
  for (double e : run.estimates) mean += e;
  mean /= n;
  for (double e : run.estimates) var += (e - mean) * (e - mean);
  var /= n - 1;
  const double se = std::sqrt(var / n);
  MESSAGE("exact " << run.exact << ", Hutchinson mean " << mean << " +- " << se);
  // The runtime's estimate is the plain mean of the per-probe products (summed in double).
  CHECK(run.runtime_mean == doctest::Approx(mean).epsilon(1e-12));
  // Unbiased: the mean of n estimates lies within 5 standard errors of the trace (false failure
  // chance < 1e-6), plus the float Jacobian's own error (1e-6 relative, see above).
  CHECK(std::fabs(mean - run.exact) <= 5 * se + 1e-6 * (1 + std::fabs(run.exact)));
  // The estimator has real variance here, so the check above has teeth.
  CHECK(se > 1e-4);
}

}  // namespace

TEST_CASE("Hutchinson with Rademacher probes converges to the exact divergence") {
  TestNet net = full_network(5);
  check_unbiased(run_hutchinson(net, siflow::ProbeKind::kRademacher, 4000));
}

TEST_CASE("Hutchinson with Gaussian probes converges to the exact divergence") {
  TestNet net = full_network(5);
  check_unbiased(run_hutchinson(net, siflow::ProbeKind::kGaussian, 4000));
}

TEST_CASE("Rademacher probe variance is the sum over i < j of (J_ij + J_ji)^2") {
  // For z with independent +-1 entries, z.Jz = tr J + sum_{i<j} z_i z_j (J_ij + J_ji) with
  // uncorrelated unit-variance products, so Var = sum_{i<j} (J_ij + J_ji)^2; the sample
  // variance of 20000 estimates has relative standard error ~ sqrt(kurtosis / n) < 3%, so 15%
  // is a 5-sigma bound.
  TestNet net = full_network(4);
  const HutchinsonRun run = run_hutchinson(net, siflow::ProbeKind::kRademacher, 20000);
  const std::vector<float> x = random_points(1, 4, 14);
  const std::vector<double> jac = fd_jacobian(net, 0.5, x.data());
  double want = 0.0;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      if (i != j)
        want += 0.5 * (jac[i * 4 + j] + jac[j * 4 + i]) * (jac[i * 4 + j] + jac[j * 4 + i]);
  double mean = 0.0, var = 0.0;
  for (double e : run.estimates) mean += e;
  mean /= run.estimates.size();
  for (double e : run.estimates) var += (e - mean) * (e - mean);
  var /= run.estimates.size() - 1;
  MESSAGE("Rademacher variance " << var << ", theory " << want);
  CHECK(var == doctest::Approx(want).epsilon(0.15));
}

TEST_CASE("Plan::log_prob with Hutchinson probes averages to the exact log_prob over seeds") {
  // The state integration does not depend on the probes and l is linear in the per-probe
  // estimates, so each seed's log p is an unbiased estimate of the exact one; 80 seeds of 16
  // probes give a mean within 5 standard errors (plus float rounding, 1e-6 relative).
  const uint32_t dim = 3;
  TestNet net = full_network(dim);
  auto model = net.load();
  const std::vector<float> x = random_points(2, dim, 15);
  siflow::PlanOptions po;
  po.divergence = siflow::DivergenceMode::kExact;
  po.max_probes = 16;
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
  siflow::LogProbOptions lp;
  lp.ode.steps = 8;
  double exact[2];
  REQUIRE(plan->log_prob(2, x.data(), lp, exact).ok());
  lp.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lp.divergence.probes = 16;
  for (siflow::ProbeKind kind : {siflow::ProbeKind::kRademacher, siflow::ProbeKind::kGaussian}) {
    lp.divergence.probe = kind;
    std::vector<double> runs[2];
    for (uint64_t seed = 0; seed < 80; ++seed) {
      lp.divergence.seed = seed;
      double logp[2];
      REQUIRE(plan->log_prob(2, x.data(), lp, logp).ok());
      runs[0].push_back(logp[0]);
      runs[1].push_back(logp[1]);
    }
    for (int r = 0; r < 2; ++r) {
      double mean = 0.0, var = 0.0;
      for (double v : runs[r]) mean += v;
      mean /= runs[r].size();
      for (double v : runs[r]) var += (v - mean) * (v - mean);
      var /= runs[r].size() - 1;
      const double se = std::sqrt(var / runs[r].size());
      INFO("probe kind " << int(kind) << ", row " << r << ": exact " << exact[r] << ", mean "
                         << mean << " +- " << se);
      CHECK(se > 0.0);  // the estimates do vary with the seed
      CHECK(std::fabs(mean - exact[r]) <= 5 * se + 1e-6 * (1 + std::fabs(exact[r])));
    }
  }
}

namespace {

// Velocity, sample with exact log p, and Hutchinson log_prob of the every-op network on one
// plan configuration.
struct PlanRun {
  std::vector<float> v, samples;
  std::vector<double> logp, hutch;
};

PlanRun run_plan(const Model& model, siflow::Backend backend, uint32_t threads, size_t n) {
  const uint32_t dim = model.info().dim;
  siflow::PlanOptions po;
  po.max_batch = 64;  // more rows than a tile and than a thread's share
  po.max_probes = 2;
  po.backend = backend;
  po.threads = threads;
  std::unique_ptr<Plan> plan;
  const siflow::Status created = Plan::create(model, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(created.ok(), std::string(created.message()));
  PlanRun r;
  r.v.resize(n * dim);
  r.samples.resize(n * dim);
  r.logp.resize(n);
  r.hutch.resize(n);
  const std::vector<float> y = random_points(n, dim, 21);
  std::vector<float> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<float>(i) / n;
  REQUIRE(plan->velocity(n, t.data(), y.data(), r.v.data()).ok());
  siflow::SampleOptions so;
  so.seed = 5;
  so.ode.steps = 8;
  REQUIRE(plan->sample(n, so, r.samples.data(), r.logp.data()).ok());
  siflow::LogProbOptions lp;
  lp.ode.steps = 8;
  lp.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lp.divergence.probes = 2;
  REQUIRE(plan->log_prob(n, r.samples.data(), lp, r.hutch.data()).ok());
  return r;
}

template <typename T>
double max_abs_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst;
}

// Runs `f` once per simd variant this CPU has, with SIFLOW_SIMD_ISA naming it.
template <typename F>
void for_each_isa(F&& f) {
  const test_support::EnvGuard guard("SIFLOW_SIMD_ISA");
  for (const char* isa : {"avx512", "avx2", "sse2", "neon", "wasm_simd128", "generic"}) {
    guard.set(isa);
    const siflow::simd::Kernels* k = nullptr;
    if (!siflow::simd::select(&k).ok()) continue;
    f(isa);
  }
}

}  // namespace

TEST_CASE("simd and reference backends agree on every call for a network with every op") {
  TestNet net = full_network(3);
  auto model = net.load();
  const size_t n = 67;
  const PlanRun ref = run_plan(*model, siflow::Backend::kReference, 1, n);
  for_each_isa([&](const char* isa) {
    const PlanRun simd = run_plan(*model, siflow::Backend::kSimd, 1, n);
    INFO("simd variant " << std::string(isa));
    // Float roundings of O(1) values in a different order, plus the vector activations' error:
    // measured at most 1e-6 for velocities, samples and log p (8 RK4 steps); 1e-5 leaves room
    // for other CPUs while a wrong kernel errs by orders of magnitude more.
    CHECK(max_abs_diff(simd.v, ref.v) <= 1e-5);
    CHECK(max_abs_diff(simd.samples, ref.samples) <= 1e-5);
    CHECK(max_abs_diff(simd.logp, ref.logp) <= 1e-5);
    CHECK(max_abs_diff(simd.hutch, ref.hutch) <= 1e-5);
    MESSAGE(std::string(isa) << ": velocity " << max_abs_diff(simd.v, ref.v) << ", samples "
                             << max_abs_diff(simd.samples, ref.samples) << ", log p "
                             << max_abs_diff(simd.logp, ref.logp) << ", Hutchinson "
                             << max_abs_diff(simd.hutch, ref.hutch));
  });
}

TEST_CASE("the xnnpack backend, and auto with tuning, agree with the reference" *
          SIFLOW_NEEDS_XNNPACK) {
  TestNet net = full_network(3);
  auto model = net.load();
  siflow::PlanOptions probe;
  probe.backend = siflow::Backend::kXnnpack;
  std::unique_ptr<Plan> plan;
  const siflow::Status s = Plan::create(*model, probe, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), s.message());
  // Every dense layer not reading x directly runs on XNNPACK; the others (and activations) on
  // simd.
  const siflow::detail::ModelData& md = model->data();
  for (uint32_t i = 0; i < md.node_count; ++i) {
    const std::string kernel = plan->node_kernel(i);
    if (md.nodes[i].op == siflow::detail::OpKind::kFullyConnected && md.nodes[i].inputs[0] != 0)
      CHECK(kernel == "xnnpack");
    else if (md.nodes[i].op == siflow::detail::OpKind::kUnary)
      CHECK(kernel.rfind("simd/", 0) == 0);
  }
  const size_t n = 67;
  const PlanRun ref = run_plan(*model, siflow::Backend::kReference, 1, n);
  const PlanRun xnn = run_plan(*model, siflow::Backend::kXnnpack, 1, n);
  // The bounds and reasons of the simd comparison above.
  CHECK(max_abs_diff(xnn.v, ref.v) <= 1e-5);
  CHECK(max_abs_diff(xnn.samples, ref.samples) <= 1e-5);
  CHECK(max_abs_diff(xnn.logp, ref.logp) <= 1e-5);
  CHECK(max_abs_diff(xnn.hutch, ref.hutch) <= 1e-5);
  MESSAGE("xnnpack: velocity " << max_abs_diff(xnn.v, ref.v) << ", log p "
                               << max_abs_diff(xnn.logp, ref.logp));
  siflow::PlanOptions tuned;
  tuned.tune = true;
  tuned.max_batch = 64;
  REQUIRE(Plan::create(*model, tuned, nullptr, 0, &plan).ok());
  for (uint32_t i = 0; i < md.node_count; ++i) {
    const std::string kernel = plan->node_kernel(i);
    if (md.nodes[i].op == siflow::detail::OpKind::kFullyConnected)
      CHECK((kernel == "xnnpack" || kernel.rfind("simd/", 0) == 0));
  }
  const std::vector<float> y = random_points(n, 3, 21);
  std::vector<float> t(n, 0.3f), v(n * 3);
  REQUIRE(plan->velocity(n, t.data(), y.data(), v.data()).ok());
  std::vector<float> v_ref(n * 3);
  siflow::PlanOptions reference;
  reference.backend = siflow::Backend::kReference;
  REQUIRE(Plan::create(*model, reference, nullptr, 0, &plan).ok());
  REQUIRE(plan->velocity(n, t.data(), y.data(), v_ref.data()).ok());
  CHECK(max_abs_diff(v, v_ref) <= 1e-5);
}

namespace {

// 2 and 3 worker threads on `backend` against one thread: the same bits.
void check_worker_threads_bits(siflow::Backend backend) {
  TestNet net = full_network(3);
  auto model = net.load();
  const size_t n = 67;
  const PlanRun one = run_plan(*model, backend, 1, n);
  for (uint32_t threads : {2u, 3u}) {
    const PlanRun many = run_plan(*model, backend, threads, n);
    INFO(siflow::backend_name(backend) << ", " << threads << " threads");
    CHECK(many.v == one.v);
    CHECK(many.samples == one.samples);
    CHECK(many.logp == one.logp);
    CHECK(many.hutch == one.hutch);
  }
}

}  // namespace

TEST_CASE("worker threads give the bits of one thread (reference, simd)" * SIFLOW_NEEDS_POOL) {
  for (siflow::Backend backend : {siflow::Backend::kReference, siflow::Backend::kSimd})
    check_worker_threads_bits(backend);
}

TEST_CASE("worker threads give the bits of one thread (xnnpack)" * SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  check_worker_threads_bits(siflow::Backend::kXnnpack);
}

TEST_CASE("a network using Exp: velocity, Jacobian and exact divergence match the double net") {
  const uint32_t dim = 3;
  TestNet net = exp_network(dim);
  auto model = net.load();
  CHECK(model->info().format_minor == 1);  // written as the lowest version that has Exp
  const auto& md = model->data();
  const size_t rows = 5;
  const std::vector<float> x = random_points(rows, dim, 93);
  // Velocity through Plan against the double evaluation.
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  std::vector<float> t(rows), v(rows * dim);
  for (size_t r = 0; r < rows; ++r) t[r] = 0.2f * static_cast<float>(r);
  REQUIRE(plan->velocity(rows, t.data(), x.data(), v.data()).ok());
  double worst_v = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    const std::vector<double> want =
        net.eval(t[r], std::vector<double>(x.begin() + r * dim, x.begin() + (r + 1) * dim));
    for (uint32_t k = 0; k < dim; ++k)
      worst_v = std::max(worst_v,
                         std::fabs(v[r * dim + k] - want[k]) / std::max(1.0, std::fabs(want[k])));
  }
  // Six float layers (fan-in <= 8, exp values up to e^3): a few 2^-24 relative of O(10)
  // values; 2e-6 still flags a wrong exp (or a missing one), which errs by O(1).
  MESSAGE("exp net: max relative velocity error " << worst_v);
  CHECK(worst_v <= 2e-6);
  // Identity-seeded tangents against the finite-difference Jacobian, then their trace.
  Buffers buf(md, rows, dim);
  for (size_t r = 0; r < rows; ++r) buf.values[1][r] = t[r];
  siflow::fill_identity_seeds(buf.tangents[0].data(), rows, dim);
  siflow::run_network(md, buf.net, x.data(), rows, dim);
  std::vector<double> div(rows);
  siflow::exact_divergence(buf.tangent_ptrs[md.output], rows, dim, div.data());
  double worst_j = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    const std::vector<double> jac = fd_jacobian(net, buf.values[1][r], x.data() + r * dim);
    double trace = 0.0, size = 0.0;
    for (uint32_t p = 0; p < dim; ++p)
      for (uint32_t k = 0; k < dim; ++k)
        worst_j = std::max(worst_j, std::fabs(buf.tangent_ptrs[md.output][(r * dim + p) * dim + k] -
                                              jac[k * dim + p]) /
                                        std::max(1.0, std::fabs(jac[k * dim + p])));
    for (uint32_t k = 0; k < dim; ++k) {
      trace += jac[k * dim + k];
      size += std::fabs(jac[k * dim + k]);
    }
    CHECK(std::fabs(div[r] - trace) <= 1e-6 * (dim + size));
  }
  MESSAGE("exp net: max Jacobian error " << worst_j);
  CHECK(worst_j <= 1e-6);
}

TEST_CASE("an overflowing Exp is a numerical error in velocity and sample, never inf output") {
  // v = exp(x + 100): e^100 is beyond float's range (e^88.72), so every row overflows.
  ModelBuilder b(1);
  b.set_output(b.exp(b.add_constant(ModelBuilder::x(), {100.0f})));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  const float t[3] = {0.5f, 0.5f, 0.5f}, y[3] = {-50.0f, -20.0f, 0.0f};  // rows 0, 1 stay finite
  float v[3] = {0.0f, 0.0f, 0.0f};
  siflow::Status s = plan->velocity(3, t, y, v);
  INFO("velocity: " << std::string(s.message()));
  CHECK(s.code() == siflow::StatusCode::kNumericalError);
  CHECK(std::string(s.message()).find("not finite in row 2") != std::string::npos);
  for (float u : v) CHECK(std::isfinite(u));  // nothing infinite reached the caller
  std::vector<float> x(4, 0.0f);
  siflow::SampleOptions so;
  so.seed = 7;
  s = plan->sample(4, so, x.data(), nullptr);
  INFO("sample: " << std::string(s.message()));
  CHECK(s.code() == siflow::StatusCode::kNumericalError);
  CHECK(std::string(s.message()).find("not finite") != std::string::npos);
}
