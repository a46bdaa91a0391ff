// SPDX-License-Identifier: Apache-2.0
// Activations in double with std:: functions, written independently of the runtime's kernels:
// the yardstick for the unit tests. GELU(erf) goes through erfc and GELU(tanh) through
// 0.5 (1 + tanh z) = sigmoid(2 z), so neither cancels for negative x. Test-only.
#pragma once

#include <algorithm>
#include <cmath>

#include "siflow/siflow.hpp"

namespace test_support {

inline double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}

inline double activation(siflow::UnaryKind kind, double alpha, double x) {
  using siflow::UnaryKind;
  const double lambda = 1.0507009873554804934193349852946;
  const double selu_alpha = 1.6732632423543772848170429916717;
  switch (kind) {
    case UnaryKind::kIdentity:
      return x;
    case UnaryKind::kRelu:
      return x > 0 ? x : 0.0;
    case UnaryKind::kLeakyRelu:
      return x > 0 ? x : alpha * x;
    case UnaryKind::kElu:
      return x > 0 ? x : alpha * std::expm1(x);
    case UnaryKind::kSelu:
      return lambda * (x > 0 ? x : selu_alpha * std::expm1(x));
    case UnaryKind::kTanh:
      return std::tanh(x);
    case UnaryKind::kSigmoid:
      return sigmoid(x);
    case UnaryKind::kSilu:
      return x * sigmoid(x);
    case UnaryKind::kGeluErf:
      return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case UnaryKind::kGeluTanh:
      return x * sigmoid(2.0 * std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x));
    case UnaryKind::kSoftplus:
      return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
    case UnaryKind::kSin:
      return std::sin(x);
    case UnaryKind::kCos:
      return std::cos(x);
    case UnaryKind::kLog:
      return std::log(x);
    case UnaryKind::kSqrt:
      return std::sqrt(x);
    case UnaryKind::kReciprocal:
      return 1.0 / x;
    case UnaryKind::kAbs:
      return std::fabs(x);
    case UnaryKind::kHardSwish:
      return x * std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case UnaryKind::kMish:
      // tanh(softplus x), softplus via log1p so it keeps its digits for negative x.
      return x * std::tanh(x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)));
  }
  return NAN;
}

}  // namespace test_support
