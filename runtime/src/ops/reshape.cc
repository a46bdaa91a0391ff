// SPDX-License-Identifier: Apache-2.0
// Reshape: the input's values read with another per-sample shape (Node.shape, rank 1 to 3, the
// same number of values). Free in a plan: the output aliases the input's buffer and tangents
// (OpModule::aliases_input), so run() copies only when a caller gave it separate buffers.
#include <cstring>

#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kReshape;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  const uint32_t in = check.width_of(out->inputs[0]);
  const auto* shape = node.shape();
  if (!shape || shape->size() == 0)
    return Status::error(StatusCode::kInvalidModel, "%s: has no shape (Reshape needs one)",
                         check.where());
  if (shape->size() > 3)
    return Status::error(StatusCode::kInvalidModel, "%s: shape has rank %u, the limit is 3",
                         check.where(), shape->size());
  uint64_t n = 1;
  detail::Shape result;
  result.rank = shape->size();
  for (uint32_t i = 0; i < result.rank; ++i) {
    const uint32_t e = shape->Get(i);
    if (e == 0)
      return Status::error(StatusCode::kInvalidModel, "%s: shape has extent 0 on axis %u",
                           check.where(), i);
    n *= e;  // n <= in <= 2^17 before, e < 2^32: no overflow in 64 bits
    if (n > in) break;
    result.dims[i] = e;
  }
  if (n != in) {
    char shown[64];
    std::snprintf(shown, sizeof shown, "[");
    for (uint32_t i = 0; i < shape->size(); ++i)
      std::snprintf(shown + std::strlen(shown), sizeof shown - std::strlen(shown),
                    i ? ", %u" : "%u", shape->Get(i));
    std::snprintf(shown + std::strlen(shown), sizeof shown - std::strlen(shown), "]");
    return Status::error(StatusCode::kInvalidModel,
                         "%s: shape %s does not hold the input's %u values per sample (input "
                         "shape %s)",
                         check.where(), shown, in,
                         detail::shape_text(check.shape_of(out->inputs[0])).text);
  }
  out->width = in;
  out->shape = result;
  return Status();
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  // In a plan the executor bound the output to the input (bind_aliases): nothing to do.
  if (r.values[id] != r.values[a])
    std::memcpy(r.values[id], r.values[a], r.rows * n.width * sizeof(float));
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty || ty == r.tangents[a]) return;
  const size_t count = r.rows * r.directions * n.width;
  if (r.tangents[a])
    std::memcpy(ty, r.tangents[a], count * sizeof(float));
  else
    std::memset(ty, 0, count * sizeof(float));
}

template <typename T>
void forward(const Operands<T>& op) {
  std::memcpy(op.out, op.values[op.node->inputs[0]], op.rows * op.node->width * sizeof(T));
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const uint32_t a = op.node->inputs[0];
  if (!g.needs(g.tape, a)) return;
  const size_t count = op.rows * op.node->width;
  T* dx = g.target(g.tape, a, count);
  std::memcpy(dx, g.dy, count * sizeof(T));
  g.commit(g.tape, a, count);
}

// An image read as the same image (a Concat's flat [sum C x H x W] as [sum C, H, W]) keeps
// its layout; other reshapes read NCHW order.
LayoutForm layout_form(const detail::ModelData& model, uint32_t node, NodeKernel) {
  const detail::Shape in = image_shape_of(model, model.nodes[node].inputs[0]);
  const detail::Shape& out = model.tensors[node + 2].shape;
  if (in.rank != 3 || out.rank != 3) return LayoutForm::kNchw;
  for (uint32_t k = 0; k < 3; ++k)
    if (in.dims[k] != out.dims[k]) return LayoutForm::kNchw;
  return LayoutForm::kShared;
}

}  // namespace

extern const OpModule kReshape = {
    "reshape",      detail::OpKind::kReshape,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
    nullptr,        nullptr,
    nullptr,        true,
    nullptr,        nullptr,
    layout_form,
};

}  // namespace siflow::ops
