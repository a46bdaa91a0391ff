// SPDX-License-Identifier: Apache-2.0
// Reduce: the mean, sum or L2 norm sqrt(sum x^2) along per-sample `axis`, which the output keeps
// with size 1 ([T, C] along the last axis gives [T, 1]; a flat [n] gives [1], the [B, 1] that
// Div broadcasts for RMSNorm and F.normalize). Accumulated in double and rounded once.
// JVP: the mean or sum of the tangents; L2: sum(x t) / y, and 0 where y = 0 (the norm has no
// derivative there; PyTorch's gradient is 0 too). VJP: dx = dy / n, dy, or dy x / y (0 at y = 0).
#include "math/elementary.hpp"
#include "ops/axis.hpp"
#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kReduce;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  if (node.reduce() > fb::ReduceKind::MAX)
    return Status::error(StatusCode::kInvalidModel, "%s: unknown reduce kind %d", check.where(),
                         static_cast<int>(node.reduce()));
  out->reduce = static_cast<uint8_t>(node.reduce());
  if (!(s = resolve_axis(check, node, out)).ok()) return s;
  // The output: the input's shape with the axis at size 1.
  const detail::Shape in = out->shape;
  const int32_t rank = static_cast<int32_t>(in.rank);
  const int32_t axis = node.axis() < 0 ? node.axis() + rank : node.axis();
  out->shape.dims[axis] = 1;
  out->width = out->outer * out->inner;
  return Status();
}

bool is_l2(const NodeData& n) { return n.reduce == static_cast<uint8_t>(fb::ReduceKind::L2); }

template <typename T>
void reduce_rows(const NodeData& n, const T* x, size_t rows, T* y) {
  const uint32_t in_width = n.outer * n.extent * n.inner;
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t o = 0; o < n.outer; ++o)
      for (uint32_t i = 0; i < n.inner; ++i) {
        const T* xr = x + r * in_width + static_cast<size_t>(o) * n.extent * n.inner + i;
        double acc = 0.0;
        for (uint32_t k = 0; k < n.extent; ++k) {
          const double v = xr[static_cast<size_t>(k) * n.inner];
          acc += is_l2(n) ? v * v : v;
        }
        if (n.reduce == static_cast<uint8_t>(fb::ReduceKind::Mean)) acc /= n.extent;
        if (is_l2(n)) acc = math::sqrt(acc);
        y[r * n.width + static_cast<size_t>(o) * n.inner + i] = static_cast<T>(acc);
      }
}

template <typename T>
void forward(const Operands<T>& op) {
  reduce_rows(*op.node, op.values[op.node->inputs[0]], op.rows, op.out);
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const float* x = r.values[a];
  float* y = r.values[id];
  reduce_rows(n, x, r.rows, y);
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* ta = r.tangents[a];
  const uint32_t in_width = n.outer * n.extent * n.inner;
  for (size_t row = 0; row < r.rows; ++row)
    for (size_t p = 0; p < r.directions; ++p)
      for (uint32_t o = 0; o < n.outer; ++o)
        for (uint32_t i = 0; i < n.inner; ++i) {
          const size_t base = static_cast<size_t>(o) * n.extent * n.inner + i;
          const float* xr = x + row * in_width + base;
          const float* tr = ta + (row * r.directions + p) * in_width + base;
          const size_t out = static_cast<size_t>(o) * n.inner + i;
          double acc = 0.0;
          for (uint32_t k = 0; k < n.extent; ++k) {
            const size_t at = static_cast<size_t>(k) * n.inner;
            acc += is_l2(n) ? static_cast<double>(xr[at]) * tr[at] : tr[at];
          }
          if (n.reduce == static_cast<uint8_t>(fb::ReduceKind::Mean)) acc /= n.extent;
          if (is_l2(n)) {
            const double norm = y[row * n.width + out];
            acc = norm > 0.0 ? acc / norm : 0.0;
          }
          ty[(row * r.directions + p) * n.width + out] = static_cast<float>(acc);
        }
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0];
  if (!g.needs(g.tape, a)) return;
  const T* x = op.values[a];
  const uint32_t in_width = n.outer * n.extent * n.inner;
  T* dx = g.target(g.tape, a, op.rows * in_width);
  for (size_t r = 0; r < op.rows; ++r)
    for (uint32_t o = 0; o < n.outer; ++o)
      for (uint32_t k = 0; k < n.extent; ++k)
        for (uint32_t i = 0; i < n.inner; ++i) {
          const size_t out = r * n.width + static_cast<size_t>(o) * n.inner + i;
          const size_t at = r * in_width + (static_cast<size_t>(o) * n.extent + k) * n.inner + i;
          T d = g.dy[out];
          if (n.reduce == static_cast<uint8_t>(fb::ReduceKind::Mean)) d /= static_cast<T>(n.extent);
          if (is_l2(n)) d = op.out[out] > T(0) ? d * x[at] / op.out[out] : T(0);
          dx[at] = d;
        }
  g.commit(g.tape, a, op.rows * in_width);
}

}  // namespace

extern const OpModule kReduce = {
    "reduce",       detail::OpKind::kReduce,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
