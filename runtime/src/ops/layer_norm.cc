// SPDX-License-Identifier: Apache-2.0
// LayerNorm over the feature axis: y = gamma * xhat + beta, xhat = (x - mean) / s,
// s = sqrt(var + epsilon), gamma and beta optional [width]: GroupNorm with one group of one-value
// channels, on ops/normalization.hpp's arithmetic (row statistics in double).
#include "math/elementary.hpp"
#include "ops/normalization.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kLayerNorm;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  out->width = check.width_of(out->inputs[0]);
  if (!(out->epsilon > 0.0f) || !math::is_finite(out->epsilon))
    return Status::error(StatusCode::kInvalidModel, "%s: epsilon %g must be positive",
                         check.where(), static_cast<double>(out->epsilon));
  if (!(s = check.weights("gamma", node.gamma(), out->width, false, &out->gamma)).ok()) return s;
  return check.weights("beta", node.beta(), out->width, false, &out->beta);
}

// One group of `width` channels, each one value wide.
normalization::Blocks blocks_of(const NodeData& n) {
  return normalization::Blocks{n.width, 1, n.width, 1};
}

void run(const NodeRun& r) { normalization::run(r, blocks_of(r.model->nodes[r.node])); }

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  normalization::forward_rows(blocks_of(n), n.epsilon, op.values[n.inputs[0]], op.rows, op.gamma,
                              op.beta, op.out);
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  normalization::vjp_rows(blocks_of(*op.node), op.node->epsilon, op, g);
}

}  // namespace

extern const OpModule kLayerNorm = {
    "layer_norm",   detail::OpKind::kLayerNorm,
    verify,         kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
