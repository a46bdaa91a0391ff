// SPDX-License-Identifier: Apache-2.0
// Exp: y = exp(x) elementwise, in double with the runtime's own exp and rounded once (the same
// bits on every platform). JVP: t_out = exp(x) t. VJP: dx = dy exp(x). A value above float's
// range (x > 88.72) is inf, which a run reports as a numerical error naming the row and time.
#include "math/elementary.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node&, NodeData* out) {
  out->op = detail::OpKind::kExp;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  out->width = check.width_of(out->inputs[0]);
  return Status();
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const T* x = op.values[n.inputs[0]];
  for (size_t i = 0; i < op.rows * n.width; ++i) op.out[i] = static_cast<T>(math::exp(x[i]));
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const float* x = r.values[a];
  float* y = r.values[id];
  // Values on fixed chunk boundaries (each computed on its own: any split gives the same bits).
  parallel_values(r.kernels->pool, r.rows * n.width, 4, [&](size_t v0, size_t v1) {
    for (size_t i = v0; i < v1; ++i) y[i] = static_cast<float>(math::exp(x[i]));
  });
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  // The derivative of exp is exp: the rounded value y, shared by every direction.
  const float* ta = r.tangents[a];
  for (size_t row = 0; row < r.rows; ++row)
    for (size_t p = 0; p < r.directions; ++p) {
      const size_t t = (row * r.directions + p) * n.width;
      for (uint32_t k = 0; k < n.width; ++k) ty[t + k] = y[row * n.width + k] * ta[t + k];
    }
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0];
  if (!g.needs(g.tape, a)) return;
  const size_t count = op.rows * n.width;
  T* dx = g.target(g.tape, a, count);
  for (size_t i = 0; i < count; ++i) dx[i] = g.dy[i] * op.out[i];
  g.commit(g.tape, a, count);
}

}  // namespace

extern const OpModule kExp = {
    "exp",          detail::OpKind::kExp,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
