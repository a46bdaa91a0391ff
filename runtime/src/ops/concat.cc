// SPDX-License-Identifier: Apache-2.0
// Concat: the inputs side by side along the feature axis, in input order. JVP: the inputs'
// tangents side by side (zeros for an input without one). VJP: each input gets its columns of
// dy. Copies only; runs on the caller's thread.
#include <cstring>

#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node&, NodeData* out) {
  out->op = detail::OpKind::kConcat;
  Status s = check.expect_inputs(*out, 1, Limits::kMaxNodeInputs);
  if (!s.ok()) return s;
  uint64_t total = 0;
  for (uint32_t i = 0; i < out->input_count; ++i) total += check.width_of(out->inputs[i]);
  if (total > Limits::kMaxWidth)
    return Status::error(StatusCode::kInvalidModel, "%s: output width %llu exceeds %u",
                         check.where(), static_cast<unsigned long long>(total), Limits::kMaxWidth);
  out->width = static_cast<uint32_t>(total);
  return Status();
}

void run(const NodeRun& r) {
  const detail::ModelData& model = *r.model;
  const NodeData& n = model.nodes[r.node];
  const uint32_t id = r.node + 2;
  float* y = r.values[id];
  float* ty = r.directions ? r.tangents[id] : nullptr;
  const size_t trows = r.rows * r.directions;
  uint32_t col = 0;
  for (uint32_t k = 0; k < n.input_count; ++k) {
    const uint32_t in = n.inputs[k];
    const uint32_t w = model.tensors[in].width;
    for (size_t row = 0; row < r.rows; ++row)
      std::memcpy(y + row * n.width + col, r.values[in] + row * w, w * sizeof(float));
    if (ty) {
      const float* t_in = r.tangents[in];
      for (size_t row = 0; row < trows; ++row) {
        float* dst = ty + row * n.width + col;
        if (t_in)
          std::memcpy(dst, t_in + row * w, w * sizeof(float));
        else
          std::memset(dst, 0, w * sizeof(float));
      }
    }
    col += w;
  }
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  uint32_t offset = 0;
  for (uint32_t k = 0; k < n.input_count; ++k) {
    const uint32_t in = n.inputs[k], iw = op.widths[in];
    for (size_t r = 0; r < op.rows; ++r)
      std::memcpy(op.out + r * n.width + offset, op.values[in] + r * iw, iw * sizeof(T));
    offset += iw;
  }
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  uint32_t offset = 0;
  for (uint32_t k = 0; k < n.input_count; ++k) {
    const uint32_t in = n.inputs[k], iw = op.widths[in];
    if (g.needs(g.tape, in)) {
      T* dx = g.target(g.tape, in, op.rows * iw);
      for (size_t r = 0; r < op.rows; ++r)
        std::memcpy(dx + r * iw, g.dy + r * n.width + offset, iw * sizeof(T));
      g.commit(g.tape, in, op.rows * iw);
    }
    offset += iw;
  }
}

}  // namespace

extern const OpModule kConcat = {
    "concat",       detail::OpKind::kConcat,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
