// SPDX-License-Identifier: Apache-2.0
// Slice: keeps [start, end) of one per-sample axis (Node.axis, negative counts from the end), as
// torch's chunk/split and ONNX Slice/Split do, without a selection matrix. Linear: the JVP slices
// each tangent direction; the VJP scatters dy into zeros. Copies only.
#include <cstring>

#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;
using detail::Shape;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kSlice;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  const Shape in = check.shape_of(out->inputs[0]);
  const int32_t axis = node.axis();
  const int64_t resolved = axis < 0 ? int64_t{axis} + in.rank : int64_t{axis};
  if (resolved < 0 || resolved >= in.rank)
    return Status::error(StatusCode::kInvalidModel, "%s: axis %d is outside the input %s",
                         check.where(), axis, detail::shape_text(in).text);
  const uint32_t a = static_cast<uint32_t>(resolved);
  if (node.start() >= node.end() || node.end() > in.dims[a])
    return Status::error(StatusCode::kInvalidModel,
                         "%s: range [%u, %u) on axis %u is empty or outside the input %s",
                         check.where(), node.start(), node.end(), a, detail::shape_text(in).text);
  out->axis = a;
  out->start = node.start();
  out->end = node.end();
  Shape result = in;
  result.dims[a] = node.end() - node.start();
  out->shape = result;
  out->width = static_cast<uint32_t>(detail::shape_size(result));
  return Status();
}

// The copy pattern: `outer` blocks, each taking `take` contiguous values at `skip` from a block
// of `block` input values.
struct Pattern {
  size_t outer, block, skip, take;
};

Pattern pattern_of(const NodeData& n, uint32_t in_width) {
  size_t outer = 1, inner = 1;
  for (uint32_t i = 0; i < n.axis; ++i) outer *= n.shape.dims[i];
  for (uint32_t i = n.axis + 1; i < n.shape.rank; ++i) inner *= n.shape.dims[i];
  return Pattern{outer, in_width / outer, n.start * inner, (n.end - n.start) * inner};
}

template <typename T>
void slice_rows(const Pattern& p, size_t rows, uint32_t in_width, const T* x, T* y) {
  const size_t out_width = p.outer * p.take;
  for (size_t r = 0; r < rows; ++r)
    for (size_t o = 0; o < p.outer; ++o)
      std::memcpy(y + r * out_width + o * p.take, x + r * in_width + o * p.block + p.skip,
                  p.take * sizeof(T));
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in_width = r.model->tensors[a].width;
  const Pattern p = pattern_of(n, in_width);
  slice_rows(p, r.rows, in_width, r.values[a], r.values[id]);
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const size_t trows = r.rows * r.directions;
  if (r.tangents[a])
    slice_rows(p, trows, in_width, r.tangents[a], ty);
  else
    std::memset(ty, 0, trows * n.width * sizeof(float));
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0];
  slice_rows(pattern_of(n, op.widths[a]), op.rows, op.widths[a], op.values[a], op.out);
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0];
  if (!g.needs(g.tape, a)) return;
  const uint32_t in_width = op.widths[a];
  const size_t count = op.rows * in_width;
  T* dx = g.target(g.tape, a, count);
  const Pattern p = pattern_of(n, in_width);
  for (size_t i = 0; i < count; ++i) dx[i] = T(0);
  for (size_t r = 0; r < op.rows; ++r)
    for (size_t o = 0; o < p.outer; ++o)
      std::memcpy(dx + r * in_width + o * p.block + p.skip, g.dy + r * n.width + o * p.take,
                  p.take * sizeof(T));
  g.commit(g.tape, a, count);
}

}  // namespace

extern const OpModule kSlice = {
    "slice",        detail::OpKind::kSlice,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
