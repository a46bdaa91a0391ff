// SPDX-License-Identifier: Apache-2.0
// Reference activations: evaluated in double with the runtime's own elementary functions and
// rounded once to float, so they are bit-identical on every platform.
#include "kernels/reference/activation.hpp"

#include "math/elementary.hpp"

namespace siflow::reference {
namespace {

constexpr double kSeluLambda = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluCubic = 0.044715;

double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + math::exp(-x));
  const double e = math::exp(x);
  return e / (1.0 + e);
}

// Mish's tanh(softplus(x)) without cancellation: with e = exp(x) and n = e (e + 2),
// tanh(log(1 + e)) = n / (n + 2) and 1 - tanh^2 = 4 (n + 1) / (n + 2)^2. Above x = 30 the tanh is
// 1 to within 1e-26 (and n would overflow past x = 354), so it is 1 there.
constexpr double kMishFlat = 30.0;
double mish_tanh(double x, double* one_minus_square) {
  if (x > kMishFlat) {
    *one_minus_square = 0.0;
    return 1.0;
  }
  const double e = math::exp(x), n = e * (e + 2.0);
  *one_minus_square = 4.0 * (n + 1.0) / ((n + 2.0) * (n + 2.0));
  return n / (n + 2.0);
}

}  // namespace

double unary_value(UnaryKind kind, double alpha, double x) {
  double y = x;
  switch (kind) {
    case UnaryKind::kIdentity:
      return x;
    case UnaryKind::kRelu:
      return x > 0.0 ? x : 0.0;
    case UnaryKind::kLeakyRelu:
      return x > 0.0 ? x : alpha * x;
    case UnaryKind::kElu:
      y = x > 0 ? x : alpha * math::expm1(x);
      break;
    case UnaryKind::kSelu:
      y = kSeluLambda * (x > 0 ? x : kSeluAlpha * math::expm1(x));
      break;
    case UnaryKind::kTanh:
      y = math::tanh(x);
      break;
    case UnaryKind::kSigmoid:
      y = sigmoid(x);
      break;
    case UnaryKind::kSilu:
      y = x * sigmoid(x);
      break;
    case UnaryKind::kGeluErf:
      y = 0.5 * x * (1.0 + math::erf(x * kSqrtHalf));
      break;
    case UnaryKind::kGeluTanh:
      y = 0.5 * x * (1.0 + math::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x)));
      break;
    case UnaryKind::kSoftplus:
      y = x > 0 ? x + math::log1p(math::exp(-x)) : math::log1p(math::exp(x));
      break;
    case UnaryKind::kSin:
      y = math::sin(x);
      break;
    case UnaryKind::kCos:
      y = math::cos(x);
      break;
    case UnaryKind::kLog:
      y = math::log(x);  // -inf at 0, NaN below
      break;
    case UnaryKind::kSqrt:
      y = math::sqrt(x);  // NaN below 0
      break;
    case UnaryKind::kReciprocal:
      y = 1.0 / x;  // +-inf at +-0
      break;
    case UnaryKind::kAbs:
      y = x < 0.0 ? -x : x + 0.0;  // + 0.0: |-0| = +0
      break;
    case UnaryKind::kHardSwish:
      // x relu6(x + 3) / 6, as PyTorch: 0 at and below -3, x at and above 3.
      y = x <= -3.0 ? 0.0 : x >= 3.0 ? x : x * (x + 3.0) / 6.0;
      break;
    case UnaryKind::kMish: {
      double unused;
      y = x * mish_tanh(x, &unused);
      break;
    }
  }
  return y;
}

double unary_slope(UnaryKind kind, double alpha, double x) {
  double d = 1.0;
  switch (kind) {
    case UnaryKind::kIdentity:
      return 1.0;
    case UnaryKind::kRelu:
      return x > 0.0 ? 1.0 : 0.0;
    case UnaryKind::kLeakyRelu:
      return x > 0.0 ? 1.0 : alpha;
    case UnaryKind::kElu:
      d = x > 0 ? 1.0 : alpha * math::exp(x);
      break;
    case UnaryKind::kSelu:
      d = kSeluLambda * (x > 0 ? 1.0 : kSeluAlpha * math::exp(x));
      break;
    case UnaryKind::kTanh: {
      const double th = math::tanh(x);
      d = 1.0 - th * th;
      break;
    }
    case UnaryKind::kSigmoid:
    case UnaryKind::kSoftplus: {
      const double s = sigmoid(x);
      d = kind == UnaryKind::kSigmoid ? s * (1.0 - s) : s;
      break;
    }
    case UnaryKind::kSilu: {
      const double s = sigmoid(x);
      d = s * (1.0 + x * (1.0 - s));
      break;
    }
    case UnaryKind::kGeluErf:
      d = 0.5 * (1.0 + math::erf(x * kSqrtHalf)) + x * kInvSqrt2Pi * math::exp(-0.5 * x * x);
      break;
    case UnaryKind::kGeluTanh: {
      const double th = math::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
      d = 0.5 * (1.0 + th) +
          0.5 * x * (1.0 - th * th) * kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * x * x);
      break;
    }
    case UnaryKind::kSin:
      d = math::cos(x);
      break;
    case UnaryKind::kCos:
      d = -math::sin(x);
      break;
    case UnaryKind::kLog:
      d = 1.0 / x;
      break;
    case UnaryKind::kSqrt:
      d = 0.5 / math::sqrt(x);  // inf at 0
      break;
    case UnaryKind::kReciprocal:
      d = -1.0 / (x * x);
      break;
    case UnaryKind::kAbs:
      d = x > 0.0 ? 1.0 : x < 0.0 ? -1.0 : 0.0;  // 0 at 0, as PyTorch
      break;
    case UnaryKind::kHardSwish:
      // PyTorch's: 0 below -3, (2x + 3) / 6 on [-3, 3], 1 above 3.
      d = x < -3.0 ? 0.0 : x <= 3.0 ? (2.0 * x + 3.0) / 6.0 : 1.0;
      break;
    case UnaryKind::kMish: {
      double sech2;
      const double th = mish_tanh(x, &sech2);
      d = x > kMishFlat ? 1.0 : th + x * sech2 * sigmoid(x);
      break;
    }
  }
  return d;
}

// The float kernels round the double value once. For ReLU and leaky ReLU this equals float
// arithmetic: a float times a float is exact in double.
float unary(UnaryKind kind, float alpha, float x) {
  return static_cast<float>(unary_value(kind, alpha, x));
}

float unary_derivative(UnaryKind kind, float alpha, float x) {
  return static_cast<float>(unary_slope(kind, alpha, x));
}

void unary_forward(UnaryKind kind, float alpha, const float* x, size_t n, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = unary(kind, alpha, x[i]);
}

void unary_jvp(UnaryKind kind, float alpha, const float* x, size_t rows, uint32_t width,
               size_t directions, const float* t_in, float* t_out) {
  for (size_t r = 0; r < rows; ++r) {
    for (uint32_t k = 0; k < width; ++k) {
      const float d = unary_derivative(kind, alpha, x[r * width + k]);
      for (size_t p = 0; p < directions; ++p) {
        const size_t i = (r * directions + p) * width + k;
        t_out[i] = d * t_in[i];
      }
    }
  }
}

}  // namespace siflow::reference
