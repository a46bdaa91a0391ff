// SPDX-License-Identifier: Apache-2.0
// Reference kernels. Activations are evaluated in double with the runtime's own elementary
// functions and rounded once to float, so they are bit-identical on every platform.
#include "kernels/reference/ops.hpp"

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

}  // namespace

// y[r][o] = sum_i x[r][i] w[o][i] (+ bias[o]): every output is summed in float over i in order
// starting from 0, with the bias added last, whatever the blocking below. Rows are taken
// kRowBlock at a time with their inputs transposed into a small stack buffer, kInputChunk inputs
// at a time, so the kRowBlock independent sums of one output advance together as a few short
// vectors; between chunks the running float sums live in y. Each lane performs exactly the
// scalar loop's multiply and add (no contraction: -ffp-contract=off), so the result is
// bit-identical to `for i: acc += x[i] * w[i]` on every platform. Vector types are used where
// vector float arithmetic is IEEE (x86-64 SSE, AArch64 NEON); elsewhere (ARMv7 NEON flushes
// denormals) the lanes are plain arrays.
namespace {
constexpr size_t kLanes = 4;
constexpr size_t kVectors = 4;
constexpr size_t kRowBlock = kLanes * kVectors;  // 16 rows
constexpr uint32_t kInputChunk = 64;             // 4 KiB of stack for the transposed block
#if defined(__x86_64__) || defined(__aarch64__)
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
inline Lanes load_lanes(const float* p) {
  Lanes v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store_lanes(float* p, Lanes v) { __builtin_memcpy(p, &v, sizeof v); }
#else
struct Lanes {
  float lane[kLanes];
};
inline Lanes load_lanes(const float* p) {
  Lanes v;
  for (size_t b = 0; b < kLanes; ++b) v.lane[b] = p[b];
  return v;
}
inline void store_lanes(float* p, Lanes v) {
  for (size_t b = 0; b < kLanes; ++b) p[b] = v.lane[b];
}
inline Lanes operator*(Lanes a, float s) {
  for (size_t b = 0; b < kLanes; ++b) a.lane[b] *= s;
  return a;
}
inline Lanes& operator+=(Lanes& a, Lanes c) {
  for (size_t b = 0; b < kLanes; ++b) a.lane[b] += c.lane[b];
  return a;
}
#endif
}  // namespace

void fully_connected(const float* x, size_t rows, uint32_t in, const float* w, const float* bias,
                     uint32_t out, float* y) {
  size_t r0 = 0;
  for (; r0 + kRowBlock <= rows; r0 += kRowBlock) {
    float xt[kInputChunk * kRowBlock];
    float sums[kRowBlock];
    float* yb = y + r0 * out;
    for (uint32_t i0 = 0; i0 < in; i0 += kInputChunk) {
      const uint32_t n = in - i0 < kInputChunk ? in - i0 : kInputChunk;
      for (uint32_t i = 0; i < n; ++i)
        for (size_t b = 0; b < kRowBlock; ++b) xt[i * kRowBlock + b] = x[(r0 + b) * in + i0 + i];
      for (uint32_t o = 0; o < out; ++o) {
        const float* wo = w + static_cast<size_t>(o) * in + i0;
        for (size_t b = 0; b < kRowBlock; ++b) sums[b] = i0 == 0 ? 0.0f : yb[b * out + o];
        Lanes a0 = load_lanes(sums), a1 = load_lanes(sums + kLanes);
        Lanes a2 = load_lanes(sums + 2 * kLanes), a3 = load_lanes(sums + 3 * kLanes);
        for (uint32_t i = 0; i < n; ++i) {
          const float wi = wo[i];
          const float* xi = xt + i * kRowBlock;
          a0 += load_lanes(xi) * wi;
          a1 += load_lanes(xi + kLanes) * wi;
          a2 += load_lanes(xi + 2 * kLanes) * wi;
          a3 += load_lanes(xi + 3 * kLanes) * wi;
        }
        store_lanes(sums, a0);
        store_lanes(sums + kLanes, a1);
        store_lanes(sums + 2 * kLanes, a2);
        store_lanes(sums + 3 * kLanes, a3);
        for (size_t b = 0; b < kRowBlock; ++b) yb[b * out + o] = sums[b];
      }
    }
    if (bias)
      for (size_t b = 0; b < kRowBlock; ++b)
        for (uint32_t o = 0; o < out; ++o) yb[b * out + o] = yb[b * out + o] + bias[o];
  }
  for (size_t r = r0; r < rows; ++r) {
    const float* xr = x + r * in;
    float* yr = y + r * out;
    for (uint32_t o = 0; o < out; ++o) {
      const float* wo = w + static_cast<size_t>(o) * in;
      float acc = 0.0f;
      for (uint32_t i = 0; i < in; ++i) acc += xr[i] * wo[i];
      yr[o] = bias ? acc + bias[o] : acc;
    }
  }
}

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

void layer_norm_forward(const float* x, size_t rows, uint32_t width, const float* gamma,
                        const float* beta, float epsilon, float* y) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    float* yr = y + r * width;
    double mean = 0.0, var = 0.0;
    for (uint32_t k = 0; k < width; ++k) mean += xr[k];
    mean /= width;
    for (uint32_t k = 0; k < width; ++k) var += (xr[k] - mean) * (xr[k] - mean);
    var /= width;
    const double inv = 1.0 / math::sqrt(var + epsilon);
    for (uint32_t k = 0; k < width; ++k) {
      double v = (xr[k] - mean) * inv;
      if (gamma) v *= gamma[k];
      if (beta) v += beta[k];
      yr[k] = static_cast<float>(v);
    }
  }
}

void layer_norm_jvp(const float* x, size_t rows, uint32_t width, const float* gamma, float epsilon,
                    size_t directions, const float* t_in, float* t_out) {
  // With xhat = (x - mean)/s, s = sqrt(var + eps):
  // d y = gamma / s * (dx - mean(dx) - xhat * mean(xhat * dx)).
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    double mean = 0.0, var = 0.0;
    for (uint32_t k = 0; k < width; ++k) mean += xr[k];
    mean /= width;
    for (uint32_t k = 0; k < width; ++k) var += (xr[k] - mean) * (xr[k] - mean);
    var /= width;
    const double inv = 1.0 / math::sqrt(var + epsilon);
    for (size_t p = 0; p < directions; ++p) {
      const float* ti = t_in + (r * directions + p) * width;
      float* to = t_out + (r * directions + p) * width;
      double mean_dx = 0.0, mean_xhat_dx = 0.0;
      for (uint32_t k = 0; k < width; ++k) {
        mean_dx += ti[k];
        mean_xhat_dx += (xr[k] - mean) * inv * ti[k];
      }
      mean_dx /= width;
      mean_xhat_dx /= width;
      for (uint32_t k = 0; k < width; ++k) {
        const double xhat = (xr[k] - mean) * inv;
        double v = inv * (ti[k] - mean_dx - xhat * mean_xhat_dx);
        if (gamma) v *= gamma[k];
        to[k] = static_cast<float>(v);
      }
    }
  }
}

void binary_forward(bool multiply, const float* a, uint32_t a_width, const float* b,
                    uint32_t b_width, bool b_rows_shared, size_t rows, float* y) {
  const uint32_t width = a_width > b_width ? a_width : b_width;
  for (size_t r = 0; r < rows; ++r) {
    const float* ar = a + r * a_width;
    const float* br = b_rows_shared ? b : b + r * b_width;
    float* yr = y + r * width;
    for (uint32_t k = 0; k < width; ++k) {
      const float av = ar[a_width == 1 ? 0 : k];
      const float bv = br[b_width == 1 ? 0 : k];
      yr[k] = multiply ? av * bv : av + bv;
    }
  }
}

void binary_jvp(bool multiply, const float* a, uint32_t a_width, const float* t_a, const float* b,
                uint32_t b_width, const float* t_b, bool b_rows_shared, size_t rows,
                size_t directions, float* t_out) {
  const uint32_t width = a_width > b_width ? a_width : b_width;
  for (size_t r = 0; r < rows; ++r) {
    const float* ar = a + r * a_width;
    const float* br = b_rows_shared ? b : b + r * b_width;
    for (size_t p = 0; p < directions; ++p) {
      const size_t row = r * directions + p;
      float* to = t_out + row * width;
      for (uint32_t k = 0; k < width; ++k) {
        const uint32_t ka = a_width == 1 ? 0 : k, kb = b_width == 1 ? 0 : k;
        const float ta = t_a ? t_a[row * a_width + ka] : 0.0f;
        const float tb = t_b ? t_b[row * b_width + kb] : 0.0f;
        if (!multiply) {
          to[k] = ta + tb;
        } else {
          float v = t_a ? ta * br[kb] : 0.0f;
          if (t_b) v += ar[ka] * tb;
          to[k] = v;
        }
      }
    }
  }
}

}  // namespace siflow::reference
