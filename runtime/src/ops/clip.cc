// SPDX-License-Identifier: Apache-2.0
// Clip: y = min(max(x, low), high) elementwise (PyTorch's clamp; ReLU6 is Clip(0, 6)); low or
// high may be -inf / inf (one-sided), low <= high. NaN stays NaN. JVP: t_out = t where
// low <= x <= high and 0 outside: at the edges the slope is 1, as PyTorch's clamp gradient.
// VJP: dx = dy on the same set.
#include "math/elementary.hpp"
#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kClip;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  out->low = node.low();
  out->high = node.high();
  if (out->low != out->low || out->high != out->high)
    return Status::error(StatusCode::kInvalidModel, "%s: low or high is NaN", check.where());
  if (!(out->low <= out->high))
    return Status::error(StatusCode::kInvalidModel, "%s: low %g is above high %g", check.where(),
                         static_cast<double>(out->low), static_cast<double>(out->high));
  out->width = check.width_of(out->inputs[0]);
  return Status();
}

template <typename T>
T clip(T x, T low, T high) {
  if (x != x) return x;
  return x < low ? low : x > high ? high : x;
}

template <typename T>
bool inside(T x, float low, float high) {
  return x >= static_cast<T>(low) && x <= static_cast<T>(high);
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const T* x = op.values[n.inputs[0]];
  for (size_t i = 0; i < op.rows * n.width; ++i)
    op.out[i] = clip<T>(x[i], static_cast<T>(n.low), static_cast<T>(n.high));
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const float* x = r.values[a];
  float* y = r.values[id];
  for (size_t i = 0; i < r.rows * n.width; ++i) y[i] = clip(x[i], n.low, n.high);
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* ta = r.tangents[a];
  for (size_t row = 0; row < r.rows; ++row)
    for (uint32_t k = 0; k < n.width; ++k) {
      const bool pass = inside(x[row * n.width + k], n.low, n.high);
      for (size_t p = 0; p < r.directions; ++p) {
        const size_t t = (row * r.directions + p) * n.width + k;
        ty[t] = pass ? ta[t] : 0.0f;
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
  for (size_t i = 0; i < count; ++i) dx[i] = inside(x[i], n.low, n.high) ? g.dy[i] : T(0);
  g.commit(g.tape, a, count);
}

}  // namespace

extern const OpModule kClip = {
    "clip",         detail::OpKind::kClip,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
