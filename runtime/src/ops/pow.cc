// SPDX-License-Identifier: Apache-2.0
// Pow: y = x^p elementwise for a constant exponent p (Node.exponent), in double with the
// runtime's own exp and log and rounded once. x > 0: exp(p log x); x = 0: 0 for p > 0, 1 for
// p = 0, inf for p < 0; x < 0: (-1)^p |x|^p when p is an integer, else NaN (as C's pow and
// PyTorch), which a run reports as a numerical error naming the row. p = 1, 2, 0.5 and -1 are
// x, x x, sqrt x and 1 / x exactly. JVP: t_out = p x^(p-1) t. VJP: dx = dy p x^(p-1).
#include "math/elementary.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kPow;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  out->exponent = node.exponent();
  if (!math::is_finite(out->exponent))
    return Status::error(StatusCode::kInvalidModel, "%s: exponent is not finite", check.where());
  out->width = check.width_of(out->inputs[0]);
  return Status();
}

bool is_integer(double p) {
  // |p| >= 2^52 is an integer in double; below, p equals its truncation.
  if (p >= 4503599627370496.0 || p <= -4503599627370496.0) return true;
  return static_cast<double>(static_cast<int64_t>(p)) == p;
}

bool is_odd(double p) {
  if (p >= 9007199254740992.0 || p <= -9007199254740992.0) return false;  // even beyond 2^53
  return (static_cast<int64_t>(p) & 1) != 0;
}

double power(double x, double p) {
  if (p == 1.0) return x;
  if (p == 2.0) return x * x;
  if (p == 0.0) return 1.0;  // also for x = 0, inf and NaN, as C's pow
  if (x != x) return x;
  if (p == 0.5) return math::sqrt(x);  // NaN below 0
  if (p == -1.0) return 1.0 / x;
  if (x == 0.0) return p > 0 ? 0.0 : __builtin_huge_val();
  if (x > 0.0) return math::exp(p * math::log(x));
  if (!is_integer(p)) return __builtin_nan("");
  const double m = math::exp(p * math::log(-x));
  return is_odd(p) ? -m : m;
}

// d x^p / dx = p x^(p-1) (0 for p = 0).
double slope(double x, double p) { return p == 0.0 ? 0.0 : p * power(x, p - 1.0); }

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const T* x = op.values[n.inputs[0]];
  for (size_t i = 0; i < op.rows * n.width; ++i)
    op.out[i] = static_cast<T>(power(x[i], n.exponent));
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const float* x = r.values[a];
  float* y = r.values[id];
  // Values on fixed chunk boundaries (each computed on its own: any split gives the same bits).
  parallel_values(r.kernels->pool, r.rows * n.width, 4, [&](size_t v0, size_t v1) {
    for (size_t i = v0; i < v1; ++i) y[i] = static_cast<float>(power(x[i], n.exponent));
  });
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* ta = r.tangents[a];
  for (size_t row = 0; row < r.rows; ++row)
    for (uint32_t k = 0; k < n.width; ++k) {
      const float d = static_cast<float>(slope(x[row * n.width + k], n.exponent));
      for (size_t p = 0; p < r.directions; ++p) {
        const size_t t = (row * r.directions + p) * n.width + k;
        ty[t] = d * ta[t];
      }
    }
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0];
  if (!g.needs(g.tape, a)) return;
  const T* x = op.values[a];
  const size_t count = op.rows * n.width;
  T* dx = g.target(g.tape, a, count);
  for (size_t i = 0; i < count; ++i) dx[i] = g.dy[i] * static_cast<T>(slope(x[i], n.exponent));
  g.commit(g.tape, a, count);
}

}  // namespace

extern const OpModule kPow = {
    "pow",          detail::OpKind::kPow,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
