// SPDX-License-Identifier: Apache-2.0
// Reverse mode (VJP) of every op, of the whole interpolant loss and of the learned interpolant's
// coefficients, checked against central finite differences in double; and the float training
// path (simd GEMMs) against the double reference.
#include <cmath>
#include <functional>
#include <vector>

#include "doctest/doctest.h"
#include "kernels/simd/kernels.hpp"
#include "math/interpolant.hpp"
#include "support/random_vectors.hpp"
#include "train/dense.hpp"
#include "train/graph.hpp"
#include "train/path.hpp"
#include "train/tape.hpp"

namespace siflow::train {
namespace {

using detail::OpKind;

// Central differences in double with h = 1e-6 have truncation error ~h^2 |f'''| ~ 1e-12 and
// rounding error ~eps |f| / h ~ 1e-10 for the O(1) values here, so an analytic gradient that is
// right agrees to ~1e-8 relative; a wrong rule (a missing term, a transposed index) is off by O(1).
constexpr double kStep = 1e-6;
constexpr double kTolerance = 1e-6;

std::vector<double> random_doubles(size_t n, uint64_t seed, double scale = 1.0) {
  const std::vector<float> f = test_support::random_normals(n, static_cast<uint32_t>(seed), 1.0);
  std::vector<double> d(n);
  for (size_t i = 0; i < n; ++i) d[i] = scale * f[i];
  return d;
}

// Inputs away from 0 (|x| >= 0.05), so finite differences never straddle the kink of ReLU-like
// activations.
void push_from_zero(std::vector<double>* v) {
  for (double& x : *v)
    if (std::fabs(x) < 0.05) x = x < 0 ? x - 0.05 : x + 0.05;
}

// L = sum_i c_i y_i over the graph's output for fixed inputs; checks dL/dparams and dL/dx from
// the tape against central differences of L.
void check_graph_gradient(const Graph& g, size_t rows, uint64_t seed) {
  const uint32_t dim = g.dim();
  std::vector<double> params = random_doubles(g.parameter_count(), seed);
  std::vector<double> x = random_doubles(rows * dim, seed + 1);
  push_from_zero(&x);
  std::vector<double> t = random_doubles(rows, seed + 2, 0.5);
  push_from_zero(&t);
  const size_t out_count = rows * g.width(g.output());
  const std::vector<double> c = random_doubles(out_count, seed + 3);
  Tape<double> tape(g, rows);
  auto loss = [&](const std::vector<double>& p, const std::vector<double>& xv) {
    std::copy(xv.begin(), xv.end(), tape.x());
    std::copy(t.begin(), t.end(), tape.t());
    tape.forward(p.data(), rows);
    double l = 0.0;
    for (size_t i = 0; i < out_count; ++i) l += c[i] * tape.output()[i];
    return l;
  };
  loss(params, x);
  std::vector<double> d_params(params.size());
  tape.backward(params.data(), c.data(), rows, d_params.data(), true);
  const std::vector<double> d_x(tape.d_x(), tape.d_x() + rows * dim);
  // Central differences of the loss in each entry of `values` (the parameters or x) against the
  // tape's gradient.
  double worst = 0.0;
  auto compare = [&](std::vector<double>* values, const std::vector<double>& grad,
                     const char* what) {
    for (size_t i = 0; i < values->size(); ++i) {
      const double v = (*values)[i];
      (*values)[i] = v + kStep;
      const double up = loss(params, x);
      (*values)[i] = v - kStep;
      const double down = loss(params, x);
      (*values)[i] = v;
      const double fd = (up - down) / (2 * kStep);
      const double err = std::fabs(fd - grad[i]) / std::fmax(1.0, std::fabs(fd));
      worst = std::fmax(worst, err);
      if (err > kTolerance) FAIL_CHECK(what << "[" << i << "]: tape " << grad[i] << ", FD " << fd);
    }
  };
  compare(&params, d_params, "parameter");
  compare(&x, d_x, "x");
  CHECK(worst <= kTolerance);
}

TEST_CASE("VJP of fully connected (with and without bias) matches finite differences") {
  Graph g(4);
  g.set_output(g.fully_connected(g.fully_connected(Graph::x(), 5, true), 3, false));
  check_graph_gradient(g, 3, 10);
}

TEST_CASE("VJP of every activation matches finite differences") {
  for (int k = 0; k <= static_cast<int>(UnaryKind::kCos); ++k) {
    const UnaryKind kind = static_cast<UnaryKind>(k);
    CAPTURE(unary_kind_name(kind));
    Graph g(3);
    // alpha 0.3 exercises leaky ReLU's slope and ELU's alpha with a value that is not 1.
    g.set_output(g.unary(g.fully_connected(Graph::x(), 4), kind, 0.3f));
    check_graph_gradient(g, 4, 20 + k);
  }
}

TEST_CASE("VJP of concat routes each input its own columns") {
  Graph g(3);
  const uint32_t h = g.fully_connected(Graph::x(), 2);
  g.set_output(g.fully_connected(g.concat({h, Graph::t(), Graph::x()}), 2));
  check_graph_gradient(g, 3, 40);
}

TEST_CASE("VJP of add and mul, with [B,1] broadcasting on either side, matches FD") {
  for (bool multiply : {false, true}) {
    CAPTURE(multiply);
    Graph g(3);
    const uint32_t a = g.fully_connected(Graph::x(), 4);
    const uint32_t b = g.fully_connected(Graph::x(), 4);
    const uint32_t s = g.fully_connected(Graph::x(), 1);  // [B,1]
    const uint32_t full = multiply ? g.mul(a, b) : g.add(a, b);
    const uint32_t left = multiply ? g.mul(s, full) : g.add(s, full);
    const uint32_t right = multiply ? g.mul(left, Graph::t()) : g.add(left, Graph::t());
    g.set_output(right);
    check_graph_gradient(g, 3, 50 + multiply);
  }
}

TEST_CASE("VJP of add and mul by a constant operand matches FD") {
  Graph g(3);
  const uint32_t a = g.add_constant(g.fully_connected(Graph::x(), 3), {0.5f, -1.0f, 2.0f});
  const uint32_t b = g.mul_constant(a, {1.5f, -0.25f, 3.0f});
  // t [B,1] times a [1,K] constant: the time-feature pattern.
  const uint32_t f = g.unary(g.mul_constant(Graph::t(), {3.14f, 6.28f}), UnaryKind::kSin);
  g.set_output(g.concat({b, f}));
  check_graph_gradient(g, 3, 60);
}

TEST_CASE("VJP of layer norm, with and without affine parameters, matches FD") {
  for (bool affine : {false, true}) {
    CAPTURE(affine);
    Graph g(4);
    g.set_output(g.fully_connected(g.layer_norm(g.fully_connected(Graph::x(), 6), affine), 2));
    check_graph_gradient(g, 3, 70 + affine);
  }
}

TEST_CASE("VJP of exp matches finite differences, alone and inside a product") {
  // The random unit-scale parameters make fully connected outputs of size ~3; tanh keeps each
  // exp's input in (-1, 1) so the loss stays O(10) and central differences stay accurate.
  Graph g(3);
  const uint32_t e = g.exp(g.unary(g.fully_connected(Graph::x(), 4), UnaryKind::kTanh));
  // exp of a [B,1] time feature scaling exp of a tensor: the exp VJP meets the product rule,
  // and x reaches the output through exp twice (two contributions to one gradient).
  const uint32_t et = g.exp(g.mul_constant(Graph::t(), {-0.7f}));
  const uint32_t inner = g.unary(g.fully_connected(e, 4), UnaryKind::kTanh);
  const uint32_t both = g.mul(g.exp(inner), et);
  g.set_output(g.fully_connected(g.add(both, e), 2));
  check_graph_gradient(g, 3, 75);
}

TEST_CASE("VJP of reshape, transpose and slice (layout ops) matches finite differences") {
  Graph g(12);                                                  // x as [3, 4]
  const uint32_t tr = g.transpose(Graph::x(), {3, 4}, {1, 0});  // [4, 3]
  const uint32_t s = g.slice(tr, {4, 3}, -1, 1, 3);             // [4, 2]
  const uint32_t r = g.reshape(g.fully_connected(Graph::x(), 6), {2, 3});
  const uint32_t first = g.slice(r, {2, 3}, 0, 0, 1);  // [1, 3]
  // x reaches the output through all three ops, and through a Reshape of itself.
  g.set_output(g.fully_connected(
      g.concat({g.reshape(s, {8}), g.unary(g.reshape(first, {3}), UnaryKind::kTanh),
                g.reshape(Graph::x(), {12})}),
      5));
  check_graph_gradient(g, 3, 80);
}

TEST_CASE("float exp VJP on the reference path agrees with the double tape") {
  Graph g(2);
  g.set_output(g.fully_connected(g.exp(g.fully_connected(Graph::x(), 5)), 2));
  const size_t rows = 6;
  const std::vector<double> p = random_doubles(g.parameter_count(), 76, 0.5);
  const std::vector<double> x = random_doubles(rows * 2, 77);
  const std::vector<double> dv = random_doubles(rows * 2, 78);
  Tape<double> ref(g, rows);
  Tape<float> fast(g, rows);
  for (size_t i = 0; i < rows * 2; ++i) {
    ref.x()[i] = x[i];
    fast.x()[i] = static_cast<float>(x[i]);
  }
  for (size_t r = 0; r < rows; ++r) ref.t()[r] = fast.t()[r] = 0.5f;
  const std::vector<float> pf(p.begin(), p.end()), dvf(dv.begin(), dv.end());
  const std::vector<double> pr(pf.begin(), pf.end()), dvr(dvf.begin(), dvf.end());
  ref.forward(pr.data(), rows);
  fast.forward(pf.data(), rows);
  std::vector<double> gd(p.size());
  std::vector<float> gf(p.size());
  ref.backward(pr.data(), dvr.data(), rows, gd.data(), true);
  fast.backward(pf.data(), dvf.data(), rows, gf.data(), true);
  // Float sums of at most 6 rows x 5 terms of O(1) values: a few 2^-24 relative of the largest
  // gradient; 1e-5 flags a wrong rule, which is off by O(1).
  double scale = 0.0;
  for (double v : gd) scale = std::fmax(scale, std::fabs(v));
  for (size_t i = 0; i < p.size(); ++i) CHECK(std::fabs(gf[i] - gd[i]) <= 1e-5 * scale);
  for (size_t i = 0; i < rows * 2; ++i)
    CHECK(std::fabs(fast.d_x()[i] - ref.d_x()[i]) <=
          1e-5 * std::fmax(1.0, std::fabs(ref.d_x()[i])));
}

TEST_CASE("VJP of the training MLP with Fourier time features matches FD") {
  const Graph g = make_mlp(2, {6, 5}, UnaryKind::kSilu, 2);
  check_graph_gradient(g, 4, 80);
}

// The interpolant loss G = mean_r |v_r|^2 - 2 u_r . v_r of a batch as a function of the net's
// parameters and of the learned coefficients (alpha, beta), with x0, x1, t fixed.
struct LossProblem {
  Graph graph = make_mlp(2, {8, 8}, UnaryKind::kTanh, 1);
  size_t rows = 5;
  uint32_t terms = 2;
  std::vector<double> x0 = random_doubles(rows * 2, 90), x1 = random_doubles(rows * 2, 91, 2.0);
  std::vector<double> t = {0.1, 0.3, 0.5, 0.7, 0.95};
  std::vector<double> params = random_doubles(graph.parameter_count(), 92, 0.5);
  std::vector<double> alpha = {0.2, -0.1}, beta = {-0.3, 0.05};
  Tape<double> tape{graph, rows};
  std::vector<double> u = std::vector<double>(rows * 2);

  double loss(const std::vector<double>& p, const std::vector<double>& a,
              const std::vector<double>& b) {
    const detail::InterpolantData path{InterpolantKind::kLearnedFourier, terms, a.data(), b.data()};
    for (size_t r = 0; r < rows; ++r) {
      const InterpolantValues iv = evaluate_interpolant(path, t[r]);
      tape.t()[r] = t[r];
      for (size_t k = 0; k < 2; ++k) {
        tape.x()[r * 2 + k] = iv.a * x0[r * 2 + k] + iv.b * x1[r * 2 + k];
        u[r * 2 + k] = iv.a_dot * x0[r * 2 + k] + iv.b_dot * x1[r * 2 + k];
      }
    }
    tape.forward(p.data(), rows);
    double g = 0.0;
    for (size_t i = 0; i < rows * 2; ++i) {
      const double v = tape.output()[i];
      g += v * v - 2.0 * u[i] * v;
    }
    return g / rows;
  }
};

TEST_CASE("the gradient of the whole interpolant loss matches FD for every parameter") {
  LossProblem p;
  p.loss(p.params, p.alpha, p.beta);
  std::vector<double> dv(p.rows * 2), d_params(p.params.size());
  for (size_t i = 0; i < dv.size(); ++i) dv[i] = 2.0 * (p.tape.output()[i] - p.u[i]) / p.rows;
  p.tape.backward(p.params.data(), dv.data(), p.rows, d_params.data(), false);
  for (size_t i = 0; i < p.params.size(); ++i) {
    std::vector<double> q = p.params;
    q[i] += kStep;
    const double up = p.loss(q, p.alpha, p.beta);
    q[i] = p.params[i] - kStep;
    const double down = p.loss(q, p.alpha, p.beta);
    const double fd = (up - down) / (2 * kStep);
    CHECK(std::fabs(fd - d_params[i]) <= kTolerance * std::fmax(1.0, std::fabs(fd)));
  }
}

TEST_CASE("the gradient of G with respect to the Fourier coefficients matches FD") {
  LossProblem p;
  p.loss(p.params, p.alpha, p.beta);
  std::vector<double> dv(p.rows * 2), d_params(p.params.size()), grad(2 * p.terms);
  const std::vector<double> v(p.tape.output(), p.tape.output() + p.rows * 2);
  for (size_t i = 0; i < dv.size(); ++i) dv[i] = 2.0 * (v[i] - p.u[i]) / p.rows;
  p.tape.backward(p.params.data(), dv.data(), p.rows, d_params.data(), true);
  path_gradient<double>(p.rows, 2, p.terms, p.t.data(), p.x0.data(), p.x1.data(), v.data(),
                        p.tape.d_x(), grad.data());
  for (uint32_t m = 0; m < 2 * p.terms; ++m) {
    CAPTURE(m);
    std::vector<double> a = p.alpha, b = p.beta;
    double& c = m < p.terms ? a[m] : b[m - p.terms];
    const double c0 = c;
    c = c0 + kStep;
    const double up = p.loss(p.params, a, b);
    c = c0 - kStep;
    const double down = p.loss(p.params, a, b);
    const double fd = (up - down) / (2 * kStep);
    CHECK(std::fabs(fd - grad[m]) <= kTolerance * std::fmax(1.0, std::fabs(fd)));
  }
}

TEST_CASE("the path penalty and its gradient match FD, and vanish on trig") {
  const std::vector<double> zero(3, 0.0);
  std::vector<double> grad(6, 0.0);
  const detail::InterpolantData trig{InterpolantKind::kLearnedFourier, 3, zero.data(), zero.data()};
  CHECK(path_penalty(trig, 10.0, grad.data()) == 0.0);  // a^2 + b^2 = 1 on trig
  // Coefficients that pull a and b towards 0 together in mid-path.
  std::vector<double> alpha = {-0.6, 0.1, 0.0}, beta = {-0.7, 0.0, 0.1};
  std::fill(grad.begin(), grad.end(), 0.0);
  const detail::InterpolantData path{InterpolantKind::kLearnedFourier, 3, alpha.data(),
                                     beta.data()};
  const double p0 = path_penalty(path, 10.0, grad.data());
  REQUIRE(p0 > 0.0);
  for (uint32_t m = 0; m < 6; ++m) {
    std::vector<double> a = alpha, b = beta, scratch(6);
    double& c = m < 3 ? a[m] : b[m - 3];
    const double c0 = c;
    c = c0 + kStep;
    const detail::InterpolantData up{InterpolantKind::kLearnedFourier, 3, a.data(), b.data()};
    const double pu = path_penalty(up, 10.0, scratch.data());
    c = c0 - kStep;
    const double pd = path_penalty(up, 10.0, scratch.data());
    // The penalty adds -dP into grad (grad holds the gradient of G - P).
    CHECK(std::fabs(-(pu - pd) / (2 * kStep) - grad[m]) <= 1e-6);
  }
}

#ifdef SIFLOW_WITH_SIMD
// The float path on the simd GEMMs against the double reference on the same inputs: relative
// error of float arithmetic summed over <= 256 terms, ~1e-5 (2^-24 * sqrt(256) * a few).
TEST_CASE("float training gradients on the simd kernels agree with the double reference") {
  const simd::Kernels* kernels = nullptr;
  REQUIRE(simd::select(&kernels).ok());
  DenseOps dense(kernels, nullptr);
  const Graph g = make_mlp(3, {64, 40, 33}, UnaryKind::kSilu, 2);
  const size_t rows = 37;  // not a multiple of any tile height
  const std::vector<double> p = random_doubles(g.parameter_count(), 100, 0.2);
  const std::vector<double> x = random_doubles(rows * 3, 101);
  const std::vector<double> t = random_doubles(rows, 102, 0.3);
  const std::vector<double> dv = random_doubles(rows * 3, 103);
  Tape<double> ref(g, rows);
  Tape<float> fast(g, rows, &dense);
  std::copy(x.begin(), x.end(), ref.x());
  std::copy(t.begin(), t.end(), ref.t());
  std::copy(x.begin(), x.end(), fast.x());
  std::copy(t.begin(), t.end(), fast.t());
  const std::vector<float> pf(p.begin(), p.end()), dvf(dv.begin(), dv.end());
  ref.forward(p.data(), rows);
  fast.forward(pf.data(), rows);
  for (size_t i = 0; i < rows * 3; ++i)
    CHECK(std::fabs(fast.output()[i] - ref.output()[i]) <=
          2e-5 * std::fmax(1.0, std::fabs(ref.output()[i])));
  std::vector<double> gd(p.size());
  std::vector<float> gf(p.size());
  ref.backward(p.data(), dv.data(), rows, gd.data(), true);
  fast.backward(pf.data(), dvf.data(), rows, gf.data(), true);
  // (Plain comparisons, not fmax reductions: GCC 12 for AArch64 fails to compile the latter.)
  double scale = 0.0;
  for (double v : gd)
    if (std::fabs(v) > scale) scale = std::fabs(v);
  for (size_t i = 0; i < p.size(); ++i) CHECK(std::fabs(gf[i] - gd[i]) <= 2e-5 * scale);
  for (size_t i = 0; i < rows * 3; ++i)
    CHECK(std::fabs(fast.d_x()[i] - ref.d_x()[i]) <=
          2e-5 * std::fmax(1.0, std::fabs(ref.d_x()[i])));
}
#endif

}  // namespace
}  // namespace siflow::train
