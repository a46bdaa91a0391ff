// SPDX-License-Identifier: Apache-2.0
// Reference kernels and op modules against double formulas written with std:: functions: every
// activation and its derivative (by central finite differences), fully connected, the layer norm
// module's forward and JVP, the exp module's forward and JVP, and the broadcasting binary modules
// with their tangents (each module run as a one-node graph on the reference kernels).
#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "format/model_data.hpp"
#include "kernels/reference/activation.hpp"
#include "kernels/reference/dense.hpp"
#include "math/elementary.hpp"
#include "ops/op.hpp"
#include "support/activation_formulas.hpp"

namespace ref {

using namespace siflow::reference;
using siflow::detail::ModelData;
using siflow::detail::NodeData;
using siflow::detail::OpKind;
using siflow::detail::TensorData;

// Runs node `n` (output tensor 2, inputs among tensors 0 and 1 of widths w0 and w1) through its
// op module on the reference kernels, with `directions` tangents when t_out is set.
void run_node(NodeData& n, uint32_t w0, uint32_t w1, float* v0, float* v1, float* y, float* t0,
              float* t1, float* t_out, size_t rows, size_t directions) {
  TensorData tensors[3] = {{w0, true, 0, {}}, {w1, t1 != nullptr, 0, {}}, {n.width, true, 1, {}}};
  ModelData md{};
  md.dim = w0;
  md.node_count = 1;
  md.nodes = &n;
  md.tensors = tensors;
  float* values[3] = {v0, v1, y};
  float* tangents[3] = {t0, t1, t_out};
  const siflow::ops::FastKernels kernels;
  const siflow::ops::NodeRun run{&md,   0,        values, tangents, rows, t_out ? directions : 0,
                                 false, &kernels, nullptr};
  siflow::ops::op_module(n.op).run(run);
}

void layer_norm_forward(const float* x, size_t rows, uint32_t width, const float* gamma,
                        const float* beta, float epsilon, float* y) {
  const uint32_t in[1] = {0};
  NodeData n{};
  n.op = OpKind::kLayerNorm;
  n.input_count = 1;
  n.inputs = in;
  n.width = width;
  n.gamma = gamma;
  n.beta = beta;
  n.epsilon = epsilon;
  run_node(n, width, 1, const_cast<float*>(x), nullptr, y, nullptr, nullptr, nullptr, rows, 0);
}

void layer_norm_jvp(const float* x, size_t rows, uint32_t width, const float* gamma, float epsilon,
                    size_t directions, const float* t_in, float* t_out) {
  const uint32_t in[1] = {0};
  NodeData n{};
  n.op = OpKind::kLayerNorm;
  n.input_count = 1;
  n.inputs = in;
  n.width = width;
  n.gamma = gamma;
  n.epsilon = epsilon;
  std::vector<float> y(rows * width);
  run_node(n, width, 1, const_cast<float*>(x), nullptr, y.data(), const_cast<float*>(t_in), nullptr,
           t_out, rows, directions);
}

// y = exp(x) through the exp module; with t_out, also `directions` tangents of t_in.
void exp_node(const float* x, size_t rows, uint32_t width, float* y, const float* t_in = nullptr,
              float* t_out = nullptr, size_t directions = 0) {
  const uint32_t in[1] = {0};
  NodeData n{};
  n.op = OpKind::kExp;
  n.input_count = 1;
  n.inputs = in;
  n.width = width;
  run_node(n, width, 1, const_cast<float*>(x), nullptr, y, const_cast<float*>(t_in), nullptr, t_out,
           rows, directions);
}

NodeData binary_node(bool multiply, uint32_t a_width, const float* b, uint32_t b_width,
                     bool b_rows_shared, const uint32_t* inputs) {
  NodeData n{};
  n.op = multiply ? OpKind::kMul : OpKind::kAdd;
  n.input_count = b_rows_shared ? 1 : 2;
  n.inputs = inputs;
  n.width = a_width > b_width ? a_width : b_width;
  if (b_rows_shared) {
    n.constant = b;
    n.constant_width = b_width;
  }
  return n;
}

void binary_forward(bool multiply, const float* a, uint32_t a_width, const float* b,
                    uint32_t b_width, bool b_rows_shared, size_t rows, float* y) {
  const uint32_t in[2] = {0, 1};
  NodeData n = binary_node(multiply, a_width, b, b_width, b_rows_shared, in);
  run_node(n, a_width, b_width, const_cast<float*>(a), const_cast<float*>(b), y, nullptr, nullptr,
           nullptr, rows, 0);
}

void binary_jvp(bool multiply, const float* a, uint32_t a_width, const float* t_a, const float* b,
                uint32_t b_width, const float* t_b, bool b_rows_shared, size_t rows,
                size_t directions, float* t_out) {
  const uint32_t in[2] = {0, 1};
  NodeData n = binary_node(multiply, a_width, b, b_width, b_rows_shared, in);
  std::vector<float> y(rows * n.width);
  // The module reads tensor 0's tangent when it has one; an operand without a tangent is a
  // tensor whose tangent pointer is null.
  run_node(n, a_width, b_width, const_cast<float*>(a), const_cast<float*>(b), y.data(),
           const_cast<float*>(t_a), b_rows_shared ? nullptr : const_cast<float*>(t_b), t_out, rows,
           directions);
}

}  // namespace ref

namespace {

using siflow::UnaryKind;

constexpr UnaryKind kAllKinds[] = {
    UnaryKind::kIdentity, UnaryKind::kRelu,     UnaryKind::kLeakyRelu, UnaryKind::kElu,
    UnaryKind::kSelu,     UnaryKind::kTanh,     UnaryKind::kSigmoid,   UnaryKind::kSilu,
    UnaryKind::kGeluErf,  UnaryKind::kGeluTanh, UnaryKind::kSoftplus,  UnaryKind::kSin,
    UnaryKind::kCos};

std::string kind_name(UnaryKind k) {
  static const char* const names[] = {"identity", "relu",    "leaky_relu", "elu",      "selu",
                                      "tanh",     "sigmoid", "silu",       "gelu_erf", "gelu_tanh",
                                      "softplus", "sin",     "cos"};
  return names[static_cast<int>(k)];
}

using test_support::activation;

bool has_kink_at_zero(UnaryKind k) {
  return k == UnaryKind::kRelu || k == UnaryKind::kLeakyRelu || k == UnaryKind::kElu ||
         k == UnaryKind::kSelu;
}

// One float ulp at the magnitude of r (2^-149 in the subnormal range).
double float_ulp(double r) {
  const double a = std::fabs(r);
  if (a < FLT_MIN) return std::ldexp(1.0, -149);
  return std::ldexp(1.0, std::ilogb(a) - 23);
}

// Test points: a dense grid of [-lo, hi] plus random floats, as floats.
std::vector<float> grid_points(float lo, float hi, int n, uint32_t seed) {
  std::vector<float> xs;
  for (int i = 0; i <= n; ++i) xs.push_back(lo + (hi - lo) * (static_cast<float>(i) / n));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int i = 0; i < n; ++i) xs.push_back(u(rng));
  return xs;
}

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}

constexpr float kAlpha = 0.2f;  // leaky relu slope / elu alpha used throughout

}  // namespace

TEST_CASE(
    "every activation is within one float ulp of its double formula (GELU: plus its "
    "cancellation term)") {
  const std::vector<float> xs = grid_points(-40.0f, 40.0f, 200000, 1);
  for (UnaryKind kind : kAllKinds) {
    INFO("kind " << kind_name(kind));
    double worst = 0.0;
    float worst_x = 0.0f;
    for (float x : xs) {
      const double want = activation(kind, static_cast<double>(kAlpha), x);
      const double got = ref::unary(kind, kAlpha, x);
      // The kernel evaluates in double (errors of a few double ulp) and rounds once to float:
      // the result is within one float ulp of the exact value. GELU adds 0.5 x (1 + erf) or
      // 0.5 x (1 + tanh): for x << 0 the sum cancels and keeps the absolute error of erf/tanh
      // near -1 (<= 56 / 3 double ulp, i.e. <= 6.3e-15 / 3.4e-16) times |x| / 2.
      double slack = 0.0;
      if (kind == UnaryKind::kGeluErf) slack = 3.2e-15 * std::fabs(x);
      if (kind == UnaryKind::kGeluTanh) slack = 1.7e-16 * std::fabs(x);
      const double err = std::fabs(got - want) - slack;
      if (err / float_ulp(want) > worst) {
        worst = err / float_ulp(want);
        worst_x = x;
      }
    }
    INFO("worst at x = " << worst_x);
    CHECK(worst <= 1.0);
  }
}

TEST_CASE("unary_derivative matches central finite differences of the double formula") {
  const std::vector<float> xs = grid_points(-20.0f, 20.0f, 40000, 2);
  for (UnaryKind kind : kAllKinds) {
    INFO("kind " << kind_name(kind));
    size_t bad = 0;
    float first_bad = 0.0f;
    for (float xf : xs) {
      const double x = xf;
      const double h = 1e-6 * std::max(1.0, std::fabs(x));
      if (has_kink_at_zero(kind) && std::fabs(x) < 4 * h) continue;
      const double a = static_cast<double>(kAlpha);
      const double fd = (activation(kind, a, x + h) - activation(kind, a, x - h)) / (2 * h);
      const double got = ref::unary_derivative(kind, kAlpha, xf);
      // The derivative is rounded once to float (<= 2^-24 relative); the difference quotient
      // has truncation h^2/6 |f'''| <= 1e-10 and cancellation 2^-53 |f| / h <= 1e-10 for
      // |x| <= 20 (|f| <= 21, |f'''| <= 1.5 for these functions), so 1e-9 absolute is ample.
      if (!(std::fabs(got - fd) <= std::ldexp(std::fabs(fd), -23) + 1e-9)) {
        if (!bad++) first_bad = xf;
      }
    }
    INFO("first mismatch at x = " << first_bad);
    CHECK(bad == 0);
  }
}

TEST_CASE("piecewise activations take the left branch's derivative at exactly 0") {
  // x > 0 selects the right branch, so 0 uses the left one: relu 0, leaky alpha, elu alpha e^0,
  // selu lambda * 1.6733 e^0.
  CHECK(ref::unary_derivative(UnaryKind::kRelu, kAlpha, 0.0f) == 0.0f);
  CHECK(ref::unary_derivative(UnaryKind::kLeakyRelu, kAlpha, 0.0f) == kAlpha);
  CHECK(ref::unary_derivative(UnaryKind::kElu, kAlpha, 0.0f) == kAlpha);
  CHECK(ref::unary_derivative(UnaryKind::kSelu, kAlpha, 0.0f) ==
        static_cast<float>(1.0507009873554804934 * 1.6732632423543772848));
  CHECK(ref::unary(UnaryKind::kRelu, kAlpha, 0.0f) == 0.0f);
  CHECK(ref::unary(UnaryKind::kElu, kAlpha, 0.0f) == 0.0f);
}

TEST_CASE("leaky relu and elu use the node's alpha") {
  for (float alpha : {0.01f, 0.3f, 1.0f, 2.5f}) {
    CHECK(ref::unary(UnaryKind::kLeakyRelu, alpha, -2.0f) == -2.0f * alpha);
    CHECK(ref::unary_derivative(UnaryKind::kLeakyRelu, alpha, -2.0f) == alpha);
    CHECK(ref::unary(UnaryKind::kElu, alpha, -2.0f) ==
          static_cast<float>(alpha * std::expm1(-2.0)));
    // elu'(x) = alpha e^x for x <= 0, rounded once to float.
    CHECK(ref::unary_derivative(UnaryKind::kElu, alpha, -2.0f) ==
          doctest::Approx(alpha * std::exp(-2.0)).epsilon(1e-7));
  }
}

TEST_CASE("activations and derivatives stay finite for |x| up to FLT_MAX (sin, cos excluded)") {
  const float xs[] = {1e5f, 1e10f, 1e20f, 1e30f, 1e38f, FLT_MAX};
  for (UnaryKind kind : kAllKinds) {
    if (kind == UnaryKind::kSin || kind == UnaryKind::kCos) continue;
    INFO("kind " << kind_name(kind));
    for (float m : xs) {
      for (float x : {m, -m}) {
        INFO("x = " << x);
        // selu's exact value lambda x exceeds FLT_MAX for x > FLT_MAX / 1.0507: inf is then the
        // correctly rounded result, not an overflow in the evaluation.
        const bool exact_overflows =
            kind == UnaryKind::kSelu && x > 0 && static_cast<double>(x) * 1.0507 > FLT_MAX;
        if (!exact_overflows) CHECK(std::isfinite(ref::unary(kind, kAlpha, x)));
        CHECK(std::isfinite(ref::unary_derivative(kind, kAlpha, x)));
        // And the value is right, not just finite (GELU slack as in the accuracy test).
        if (!exact_overflows) {
          const double want = activation(kind, static_cast<double>(kAlpha), x);
          CHECK(std::fabs(ref::unary(kind, kAlpha, x) - want) <=
                float_ulp(want) + 3.2e-15 * std::fabs(x));
        }
      }
    }
  }
}

// Regression test (this was a bug, now fixed): math::sin/cos return values far outside
// [-1, 1] for |x| >~ 1e19 (unary(kSin, 1e20f) = -2.5e36, unary(kSin, 1e30f) = inf), so a sin or
// cos activation overflows on large but finite inputs, and so do their derivatives.
TEST_CASE(
    "sin and cos activations stay in [-1, 1] with finite derivatives for |x| up to FLT_MAX ") {
  size_t bad = 0;
  for (UnaryKind kind : {UnaryKind::kSin, UnaryKind::kCos}) {
    for (float m : {1e5f, 1e10f, 1e16f, 1e20f, 1e30f, 1e38f, FLT_MAX}) {
      for (float x : {m, -m}) {
        const float y = ref::unary(kind, kAlpha, x), d = ref::unary_derivative(kind, kAlpha, x);
        if (!(std::fabs(y) <= 1.0f) || !(std::fabs(d) <= 1.0f)) {
          ++bad;
          MESSAGE(kind_name(kind) << "(" << x << ") = " << y << ", derivative " << d);
        }
      }
    }
  }
  CHECK(bad == 0);
}

TEST_CASE("unary_forward applies unary elementwise and unary_jvp scales each direction by f'") {
  const size_t rows = 3, directions = 2;
  const uint32_t width = 5;
  const std::vector<float> x = random_vector(rows * width, 3, 2.0f);
  const std::vector<float> t_in = random_vector(rows * directions * width, 4);
  for (UnaryKind kind : kAllKinds) {
    INFO("kind " << kind_name(kind));
    std::vector<float> y(rows * width), t_out(rows * directions * width, NAN);
    ref::unary_forward(kind, kAlpha, x.data(), x.size(), y.data());
    ref::unary_jvp(kind, kAlpha, x.data(), rows, width, directions, t_in.data(), t_out.data());
    for (size_t i = 0; i < x.size(); ++i) CHECK(y[i] == ref::unary(kind, kAlpha, x[i]));
    for (size_t r = 0; r < rows; ++r)
      for (size_t p = 0; p < directions; ++p)
        for (uint32_t k = 0; k < width; ++k) {
          const size_t i = (r * directions + p) * width + k;
          // Tangent row r*P+p holds direction p of row r; the factor is f' at x[r][k].
          CHECK(t_out[i] == ref::unary_derivative(kind, kAlpha, x[r * width + k]) * t_in[i]);
        }
  }
}

TEST_CASE("fully_connected matches a double loop within the float summation bound") {
  const size_t rows = 6;
  const uint32_t in = 37, out = 11;
  const std::vector<float> x = random_vector(rows * in, 5, 3.0f);
  const std::vector<float> w = random_vector(out * in, 6);
  const std::vector<float> bias = random_vector(out, 7, 5.0f);
  for (bool with_bias : {true, false}) {
    INFO("bias " << with_bias);
    std::vector<float> y(rows * out);
    ref::fully_connected(x.data(), rows, in, w.data(), with_bias ? bias.data() : nullptr, out,
                         y.data());
    for (size_t r = 0; r < rows; ++r)
      for (uint32_t o = 0; o < out; ++o) {
        double want = with_bias ? bias[o] : 0.0, magnitude = with_bias ? std::fabs(bias[o]) : 0.0;
        for (uint32_t i = 0; i < in; ++i) {
          want += static_cast<double>(x[r * in + i]) * w[o * in + i];
          magnitude += std::fabs(static_cast<double>(x[r * in + i]) * w[o * in + i]);
        }
        // Recursive float summation of in products plus the bias: |error| <= (in + 1) u
        // sum |terms| (u = 2^-24) to first order (Higham, Sec. 3.1).
        CHECK(std::fabs(y[r * out + o] - want) <= (in + 1) * std::ldexp(magnitude, -24));
      }
  }
}

TEST_CASE("fully_connected sums in input order: bit-identical to a sequential float loop") {
  const size_t rows = 4;
  const uint32_t in = 64, out = 9;
  const std::vector<float> x = random_vector(rows * in, 8, 10.0f);
  const std::vector<float> w = random_vector(out * in, 9);
  const std::vector<float> bias = random_vector(out, 10);
  std::vector<float> y(rows * out);
  ref::fully_connected(x.data(), rows, in, w.data(), bias.data(), out, y.data());
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t o = 0; o < out; ++o) {
      volatile float acc = 0.0f;  // volatile: one rounding per operation, as documented
      for (uint32_t i = 0; i < in; ++i) {
        volatile float p = x[r * in + i] * w[o * in + i];
        acc = acc + p;
      }
      CHECK(y[r * out + o] == acc + bias[o]);
    }
}

namespace {

// Layer norm of one row in double: (x - mean) / sqrt(var + eps) * gamma + beta.
std::vector<double> layer_norm_double(const std::vector<double>& x, const float* gamma,
                                      const float* beta, double eps) {
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= x.size();
  for (double v : x) var += (v - mean) * (v - mean);
  var /= x.size();
  std::vector<double> y(x.size());
  for (size_t k = 0; k < x.size(); ++k) {
    y[k] = (x[k] - mean) / std::sqrt(var + eps);
    if (gamma) y[k] *= gamma[k];
    if (beta) y[k] += beta[k];
  }
  return y;
}

}  // namespace

TEST_CASE("layer_norm_forward matches the double formula, with and without gamma/beta") {
  const size_t rows = 5;
  const uint32_t width = 13;
  std::vector<float> x = random_vector(rows * width, 11, 4.0f);
  for (uint32_t k = 0; k < width; ++k) x[4 * width + k] = 2.5f;  // a constant row: var = 0
  const std::vector<float> gamma = random_vector(width, 12), beta = random_vector(width, 13);
  for (int affine = 0; affine < 2; ++affine) {
    INFO("affine " << affine);
    const float* g = affine ? gamma.data() : nullptr;
    const float* b = affine ? beta.data() : nullptr;
    for (float eps : {1e-5f, 0.5f}) {
      std::vector<float> y(rows * width);
      ref::layer_norm_forward(x.data(), rows, width, g, b, eps, y.data());
      for (size_t r = 0; r < rows; ++r) {
        const std::vector<double> row(x.begin() + r * width, x.begin() + (r + 1) * width);
        const std::vector<double> want = layer_norm_double(row, g, b, eps);
        for (uint32_t k = 0; k < width; ++k) {
          // Computed in double and rounded once: one float ulp, plus double rounding of
          // x gamma + beta (1e-15 of the terms' size) when the two nearly cancel.
          const double scale = std::fabs(want[k]) + (b ? std::fabs(b[k]) : 0.0);
          CHECK(std::fabs(y[r * width + k] - want[k]) <= float_ulp(want[k]) + 1e-15 * scale);
        }
      }
    }
  }
}

TEST_CASE("layer_norm_jvp matches central finite differences of the double layer norm") {
  const size_t rows = 3, directions = 4;
  const uint32_t width = 9;
  const std::vector<float> x = random_vector(rows * width, 14, 2.0f);
  const std::vector<float> t_in = random_vector(rows * directions * width, 15);
  const std::vector<float> gamma = random_vector(width, 16);
  for (int affine = 0; affine < 2; ++affine) {
    INFO("affine " << affine);
    const float* g = affine ? gamma.data() : nullptr;
    const float eps = 1e-3f;
    std::vector<float> t_out(rows * directions * width);
    ref::layer_norm_jvp(x.data(), rows, width, g, eps, directions, t_in.data(), t_out.data());
    for (size_t r = 0; r < rows; ++r)
      for (size_t p = 0; p < directions; ++p) {
        const float* dir = t_in.data() + (r * directions + p) * width;
        const double h = 1e-6;
        std::vector<double> plus(width), minus(width);
        for (uint32_t k = 0; k < width; ++k) {
          plus[k] = x[r * width + k] + h * dir[k];
          minus[k] = x[r * width + k] - h * dir[k];
        }
        const std::vector<double> yp = layer_norm_double(plus, g, nullptr, eps);
        const std::vector<double> ym = layer_norm_double(minus, g, nullptr, eps);
        for (uint32_t k = 0; k < width; ++k) {
          const double fd = (yp[k] - ym[k]) / (2 * h);
          const double got = t_out[(r * directions + p) * width + k];
          // Rounded once to float (2^-24 relative, 1e-7 for these O(1) values); the quotient's
          // truncation (h^2 |y'''| ~ 1e-12) and cancellation (1e-16 / 1e-6) stay below 1e-9.
          CHECK(std::fabs(got - fd) <= std::ldexp(std::fabs(fd), -23) + 1e-8);
        }
      }
  }
}

TEST_CASE("exp forward is the runtime's double exp rounded once, within 1/2 ulp of std::exp") {
  // Dense grid over the finite range, random points, and edges: 0, -0, tiny, underflow to
  // subnormals and to 0, the largest finite result, overflow to inf, NaN.
  std::vector<float> x = grid_points(-110.0f, 88.7f, 4000, 21);
  for (float e : {0.0f, -0.0f, 1e-30f, -1e-30f, 1.0f, -1.0f, -87.5f, -100.0f, -103.9f, -200.0f,
                  88.72f, 88.73f, 89.0f, 1000.0f, FLT_MAX, -FLT_MAX, NAN})
    x.push_back(e);
  const uint32_t width = 7;
  while (x.size() % width) x.push_back(0.5f);
  const size_t rows = x.size() / width;
  std::vector<float> y(x.size());
  ref::exp_node(x.data(), rows, width, y.data());
  double worst_ulps = 0.0;
  size_t overflowed = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("x = " << x[i]);
    if (std::isnan(x[i])) {
      CHECK(std::isnan(y[i]));
      continue;
    }
    // Bit-exact: the runtime's exp in double, rounded once to float.
    const float own = static_cast<float>(siflow::math::exp(static_cast<double>(x[i])));
    CHECK(std::memcmp(&y[i], &own, sizeof own) == 0);
    const double want = std::exp(static_cast<double>(x[i]));
    if (want > FLT_MAX) {
      // Beyond float's range (x > 88.72): inf, which a run reports as a numerical error.
      CHECK(std::isinf(y[i]));
      ++overflowed;
      continue;
    }
    // Rounding a double within 5 double ulps of exp(x) to float: 1/2 float ulp, plus the
    // double error (1e-15 relative) when the exact value sits next to a rounding boundary.
    const double err = std::fabs(y[i] - want);
    CHECK(err <= 0.5 * float_ulp(want) + 1e-15 * want);
    worst_ulps = std::max(worst_ulps, err / float_ulp(want));
  }
  CHECK(overflowed == 4);  // 88.73, 89, 1000, FLT_MAX; 88.72 is below ln FLT_MAX = 88.7228
  MESSAGE("exp: worst error " << worst_ulps << " float ulp against std::exp");
}

TEST_CASE("exp JVP is exp(x) times each direction, matching central differences in double") {
  const size_t rows = 4, directions = 3;
  const uint32_t width = 11;
  const std::vector<float> x = random_vector(rows * width, 22, 3.0f);
  const std::vector<float> t_in = random_vector(rows * directions * width, 23);
  std::vector<float> y(rows * width), t_out(rows * directions * width, NAN);
  ref::exp_node(x.data(), rows, width, y.data(), t_in.data(), t_out.data(), directions);
  for (size_t r = 0; r < rows; ++r)
    for (size_t p = 0; p < directions; ++p)
      for (uint32_t k = 0; k < width; ++k) {
        const size_t ti = (r * directions + p) * width + k;
        const double xk = x[r * width + k], d = t_in[ti], h = 1e-6;
        const double fd = (std::exp(xk + h * d) - std::exp(xk - h * d)) / (2 * h);
        // The module multiplies the rounded value y by the direction in float: two roundings
        // (2^-23 relative); the quotient's truncation (h^2 e^x / 6) and cancellation
        // (1e-16 e^x / 1e-6) stay below 1e-9 relative.
        CHECK(std::fabs(t_out[ti] - fd) <= std::ldexp(std::fabs(fd), -22) + 1e-9 * std::exp(xk));
        // And exactly the float product of the forward value and the direction.
        CHECK(t_out[ti] == y[r * width + k] * t_in[ti]);
      }
}

namespace {

struct BinaryCase {
  const char* name;
  bool multiply;
  uint32_t a_width, b_width;
  bool b_shared;  // b is a constant [1, b_width]
  bool a_has_tangent, b_has_tangent;
};

const BinaryCase kBinaryCases[] = {
    {"[B,n] + [B,n]", false, 6, 6, false, true, true},
    {"[B,n] * [B,n]", true, 6, 6, false, true, true},
    {"[B,1] * [B,n]", true, 1, 6, false, true, true},
    {"[B,n] * [B,1]", true, 6, 1, false, true, true},
    {"[B,1] + [B,n]", false, 1, 6, false, true, true},
    {"[B,n] * [B,n] (b without tangent)", true, 6, 6, false, true, false},
    {"[B,n] * [B,n] (a without tangent)", true, 6, 6, false, false, true},
    {"[B,n] + constant [1,n]", false, 6, 6, true, true, false},
    {"[B,n] * constant [1,n]", true, 6, 6, true, true, false},
    {"[B,1] * constant [1,n]", true, 1, 6, true, true, false},
    {"[B,1] + constant [1,n]", false, 1, 6, true, true, false},
};

}  // namespace

TEST_CASE("binary_forward broadcasts [B,1] and constant [1,n] operands exactly") {
  const size_t rows = 4;
  for (const BinaryCase& c : kBinaryCases) {
    INFO(c.name);
    const uint32_t width = std::max(c.a_width, c.b_width);
    const std::vector<float> a = random_vector(rows * c.a_width, 17, 3.0f);
    const std::vector<float> b = random_vector((c.b_shared ? 1 : rows) * c.b_width, 18, 3.0f);
    std::vector<float> y(rows * width, NAN);
    ref::binary_forward(c.multiply, a.data(), c.a_width, b.data(), c.b_width, c.b_shared, rows,
                        y.data());
    for (size_t r = 0; r < rows; ++r)
      for (uint32_t k = 0; k < width; ++k) {
        const float av = a[r * c.a_width + (c.a_width == 1 ? 0 : k)];
        const float bv = b[(c.b_shared ? 0 : r * c.b_width) + (c.b_width == 1 ? 0 : k)];
        // One float operation per element: the result is exactly the rounded sum/product.
        CHECK(y[r * width + k] == (c.multiply ? av * bv : av + bv));
      }
  }
}

TEST_CASE("binary_jvp applies the sum and product rules with broadcasting, per direction") {
  const size_t rows = 3, directions = 2;
  for (const BinaryCase& c : kBinaryCases) {
    INFO(c.name);
    const uint32_t width = std::max(c.a_width, c.b_width);
    const std::vector<float> a = random_vector(rows * c.a_width, 19, 2.0f);
    const std::vector<float> b = random_vector((c.b_shared ? 1 : rows) * c.b_width, 20, 2.0f);
    const std::vector<float> ta = random_vector(rows * directions * c.a_width, 21);
    const std::vector<float> tb = random_vector(rows * directions * c.b_width, 22);
    std::vector<float> t_out(rows * directions * width, NAN);
    ref::binary_jvp(c.multiply, a.data(), c.a_width, c.a_has_tangent ? ta.data() : nullptr,
                    b.data(), c.b_width, c.b_has_tangent ? tb.data() : nullptr, c.b_shared, rows,
                    directions, t_out.data());
    for (size_t r = 0; r < rows; ++r)
      for (size_t p = 0; p < directions; ++p)
        for (uint32_t k = 0; k < width; ++k) {
          const size_t row = r * directions + p;
          const uint32_t ka = c.a_width == 1 ? 0 : k, kb = c.b_width == 1 ? 0 : k;
          const double av = a[r * c.a_width + ka];
          const double bv = b[(c.b_shared ? 0 : r * c.b_width) + kb];
          const double dta = c.a_has_tangent ? ta[row * c.a_width + ka] : 0.0;
          const double dtb = c.b_has_tangent ? tb[row * c.b_width + kb] : 0.0;
          const double want = c.multiply ? dta * bv + av * dtb : dta + dtb;
          const double size = c.multiply ? std::fabs(dta * bv) + std::fabs(av * dtb)
                                         : std::fabs(dta) + std::fabs(dtb);
          // At most two float products and one sum, each rounded: 3 u of the terms' size.
          CHECK(std::fabs(t_out[row * width + k] - want) <= 3 * std::ldexp(size, -24));
        }
  }
}

TEST_CASE("binary_jvp with no tangent on either side gives zero tangents") {
  const size_t rows = 2, directions = 3;
  const std::vector<float> a = random_vector(rows * 4, 23), b = random_vector(rows * 4, 24);
  for (bool multiply : {false, true}) {
    std::vector<float> t_out(rows * directions * 4, NAN);
    ref::binary_jvp(multiply, a.data(), 4, nullptr, b.data(), 4, nullptr, false, rows, directions,
                    t_out.data());
    for (float v : t_out) CHECK(v == 0.0f);
  }
}
