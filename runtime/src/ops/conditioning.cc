// SPDX-License-Identifier: Apache-2.0
// The conditioning ops (format 1.4): LabelInput (no inputs; each row's class label as a [B, 1]
// float tensor), CondInput (no inputs; each row's condition vector, width from the node's shape,
// optional null vector in `constant`) and Embedding (rows of a [classes, E] table selected by a
// LabelInput tensor). None depends on x, so none has a tangent. The plan fills the labels and
// conditions of a run (NodeRun::labels/cond) after checking them; Embedding's VJP goes into its
// table.
#include <cstring>

#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;
using detail::OpKind;

// Labels travel as floats: every label below 2^24 is exact.
constexpr uint32_t kMaxClasses = 1u << 24;

Status verify_label(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = OpKind::kLabelInput;
  Status s = check.expect_inputs(*out, 0, 0);
  if (!s.ok()) return s;
  const uint32_t classes = node.classes();
  if (classes == 0 || classes > kMaxClasses)
    return Status::error(StatusCode::kInvalidModel, "%s: classes %u is outside [1, %u]",
                         check.where(), classes, kMaxClasses);
  const int32_t null_label = node.null_label();
  if (null_label < -1 || null_label >= static_cast<int64_t>(classes))
    return Status::error(StatusCode::kInvalidModel,
                         "%s: null label %d is neither -1 (none) nor a label in [0, %u)",
                         check.where(), null_label, classes);
  out->classes = classes;
  out->null_label = null_label;
  out->width = 1;
  out->shape = detail::flat_shape(1);
  return Status();
}

Status verify_cond(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = OpKind::kCondInput;
  Status s = check.expect_inputs(*out, 0, 0);
  if (!s.ok()) return s;
  const auto* shape = node.shape();
  if (!shape || shape->size() == 0 || shape->size() > 3)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: needs its condition's shape (rank 1 to 3), got rank %u",
                         check.where(), shape ? shape->size() : 0);
  uint64_t width = 1;
  detail::Shape sh;
  sh.rank = shape->size();
  for (uint32_t i = 0; i < sh.rank; ++i) {
    sh.dims[i] = shape->Get(i);
    width *= sh.dims[i];
    if (sh.dims[i] == 0 || width > Limits::kMaxWidth)
      return Status::error(StatusCode::kInvalidModel,
                           "%s: condition shape dimension %u is %u (the width must be in [1, %u])",
                           check.where(), i, sh.dims[i], Limits::kMaxWidth);
  }
  if (!(s = check.output_width(width, &out->width)).ok()) return s;
  out->shape = sh;
  // The null vector classifier-free guidance uses, when the model has one.
  if (!(s = check.weights("constant", node.constant(), out->width, false, &out->constant)).ok())
    return s;
  out->constant_width = out->constant ? out->width : 0;
  return Status();
}

Status verify_embedding(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = OpKind::kEmbedding;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  const NodeData* label = check.node_of(out->inputs[0]);
  if (!label || label->op != OpKind::kLabelInput)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: its input (tensor %u) is not a LabelInput; an embedding selects "
                         "rows by class label",
                         check.where(), out->inputs[0]);
  const fb::Weights* w = node.weight();
  if (!w || !w->shape() || w->shape()->size() != 2)
    return Status::error(StatusCode::kInvalidModel, "%s: weight must have shape [classes, width]",
                         check.where());
  const uint32_t rows = w->shape()->Get(0), cols = w->shape()->Get(1);
  if (node.classes() != rows || rows != label->classes)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: classes %u, weight rows %u and the LabelInput's classes %u differ",
                         check.where(), node.classes(), rows, label->classes);
  if (!(s = check.output_width(cols, &out->width)).ok()) return s;
  out->classes = rows;
  out->shape = detail::flat_shape(out->width);
  return check.weights("weight", w, size_t{rows} * cols, true, &out->weight);
}

void run_label(const NodeRun& r) {
  float* y = r.values[r.node + 2];
  const NodeData& n = r.model->nodes[r.node];
  // The plan always provides labels for a model with a LabelInput (checked before running).
  for (size_t row = 0; row < r.rows; ++row)
    y[row] = r.labels ? r.labels[row] : static_cast<float>(n.null_label < 0 ? 0 : n.null_label);
}

void run_cond(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  float* y = r.values[r.node + 2];
  if (r.cond)
    std::memcpy(y, r.cond, r.rows * n.width * sizeof(float));
  else
    std::memset(y, 0, r.rows * n.width * sizeof(float));
}

// Row `label` of the table, or zeros for a value that is not a label (never produced by a
// LabelInput the plan filled; kept so a bad value cannot read outside the table).
template <typename T>
void embed(const NodeData& n, const T* labels, size_t rows, T* y) {
  for (size_t row = 0; row < rows; ++row) {
    const T l = labels[row];
    T* out = y + row * n.width;
    if (!(l >= 0) || !(l < static_cast<T>(n.classes))) {
      for (uint32_t k = 0; k < n.width; ++k) out[k] = T(0);
      continue;
    }
    const float* w = n.weight + static_cast<size_t>(l) * n.width;
    for (uint32_t k = 0; k < n.width; ++k) out[k] = static_cast<T>(w[k]);
  }
}

void run_embedding(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  embed<float>(n, r.values[n.inputs[0]], r.rows, r.values[r.node + 2]);
}

// Training: the label and condition tensors are the caller's (the tape's buffers hold them); the
// forward leaves them as written.
template <typename T>
void forward_input(const Operands<T>&) {}
template <typename T>
void vjp_input(const Operands<T>&, const Gradients<T>&) {}

template <typename T>
void forward_embedding(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const T* labels = op.values[n.inputs[0]];
  for (size_t row = 0; row < op.rows; ++row) {
    const T l = labels[row];
    T* out = op.out + row * n.width;
    const bool ok = l >= 0 && l < static_cast<T>(n.classes);
    for (uint32_t k = 0; k < n.width; ++k)
      out[k] = ok ? op.weight[static_cast<size_t>(l) * n.width + k] : T(0);
  }
}

// d_weight[label] += dy of every row with that label (written whole: zero first).
template <typename T>
void vjp_embedding(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  if (!g.d_weight) return;
  const T* labels = op.values[n.inputs[0]];
  for (size_t i = 0; i < size_t{n.classes} * n.width; ++i) g.d_weight[i] = T(0);
  for (size_t row = 0; row < op.rows; ++row) {
    const T l = labels[row];
    if (!(l >= 0) || !(l < static_cast<T>(n.classes))) continue;
    T* d = g.d_weight + static_cast<size_t>(l) * n.width;
    for (uint32_t k = 0; k < n.width; ++k) d[k] += g.dy[row * n.width + k];
  }
}

}  // namespace

extern const OpModule kLabelInput = {
    "label_input",
    OpKind::kLabelInput,
    verify_label,
    kernel_bit(NodeKernel::kReference),
    nullptr,
    nullptr,
    nullptr,
    run_label,
    forward_input<float>,
    forward_input<double>,
    vjp_input<float>,
    vjp_input<double>,
};

extern const OpModule kCondInput = {
    "cond_input",
    OpKind::kCondInput,
    verify_cond,
    kernel_bit(NodeKernel::kReference),
    nullptr,
    nullptr,
    nullptr,
    run_cond,
    forward_input<float>,
    forward_input<double>,
    vjp_input<float>,
    vjp_input<double>,
};

extern const OpModule kEmbedding = {
    "embedding",
    OpKind::kEmbedding,
    verify_embedding,
    kernel_bit(NodeKernel::kReference),
    nullptr,
    nullptr,
    nullptr,
    run_embedding,
    forward_embedding<float>,
    forward_embedding<double>,
    vjp_embedding<float>,
    vjp_embedding<double>,
};

}  // namespace siflow::ops
