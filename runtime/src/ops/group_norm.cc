// SPDX-License-Identifier: Apache-2.0
// GroupNorm over a per-sample [C, ...] tensor: the C channels in `groups` equal groups, each
// group (its channels and every position, one contiguous block in NCHW) normalised by its own
// mean and 1 / sqrt(var + epsilon), then y = gamma[c] xhat + beta[c] (gamma, beta optional [C]).
// The JVP differentiates the normalisation itself (the statistics move with the tangent). The
// arithmetic, shared with LayerNorm, is ops/normalization.hpp's.
#include "math/elementary.hpp"
#include "ops/normalization.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kGroupNorm;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  out->width = check.width_of(out->inputs[0]);
  out->in_shape = check.shape_of(out->inputs[0]);
  out->shape = out->in_shape;
  const uint32_t channels = out->in_shape.dims[0];
  out->groups = node.groups();
  if (out->groups == 0 || channels % out->groups != 0)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: groups = %u does not divide the %u channels of input shape %s",
                         check.where(), out->groups, channels,
                         detail::shape_text(out->in_shape).text);
  if (!(out->epsilon > 0.0f) || !math::is_finite(out->epsilon))
    return Status::error(StatusCode::kInvalidModel, "%s: epsilon %g must be positive",
                         check.where(), static_cast<double>(out->epsilon));
  if (!(s = check.weights("gamma", node.gamma(), channels, false, &out->gamma)).ok()) return s;
  return check.weights("beta", node.beta(), channels, false, &out->beta);
}

normalization::Blocks blocks_of(const NodeData& n) {
  const uint32_t plane = n.width / n.in_shape.dims[0];
  return normalization::Blocks{n.width, n.groups, n.width / n.groups, plane};
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  normalization::run(r, blocks_of(n), is_nhwc(r, n.inputs[0]));
}

// NHWC rows on the simd kernels (their NHWC form; up to simd::kNhwcMaxChannels channels).
LayoutForm layout_form(const detail::ModelData& model, uint32_t node, NodeKernel kernel) {
#if defined(SIFLOW_WITH_SIMD)
  const NodeData& n = model.nodes[node];
  if (kernel == NodeKernel::kSimd && n.in_shape.rank == 3 &&
      n.in_shape.dims[0] <= simd::kNhwcMaxChannels)
    return LayoutForm::kShared;
#else
  (void)model, (void)node, (void)kernel;
#endif
  return LayoutForm::kNchw;
}

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

extern const OpModule kGroupNorm = {
    "group_norm",   detail::OpKind::kGroupNorm,
    verify,         kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
    nullptr,        nullptr,
    nullptr,        false,
    nullptr,        nullptr,
    layout_form,
};

}  // namespace siflow::ops
