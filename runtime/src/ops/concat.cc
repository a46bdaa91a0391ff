// SPDX-License-Identifier: Apache-2.0
// Concat: the inputs side by side along the feature axis, in input order. JVP: the inputs'
// tangents side by side (zeros for an input without one). VJP: each input gets its columns of
// dy. Copies only, split over the threads by (row, input).
#include <cstring>

#include "ops/op.hpp"
#include "support/parallel.hpp"

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

// Each (row, input) pair is one copy, the pairs split over the threads (a copy moves the same
// bytes whichever thread runs it); so is each (tangent row, input) pair. One memcpy per pair: at
// batch 1 that is one pass over each input.
void run(const NodeRun& r) {
  const detail::ModelData& model = *r.model;
  const NodeData& n = model.nodes[r.node];
  const uint32_t id = r.node + 2, inputs = n.input_count;
  float* y = r.values[id];
  float* ty = r.directions ? r.tangents[id] : nullptr;
  const size_t trows = r.rows * r.directions;
  // Column of each input in the output (the inputs are at most Limits::kMaxNodeInputs).
  uint32_t col[Limits::kMaxNodeInputs];
  uint32_t at = 0;
  for (uint32_t k = 0; k < inputs; ++k) {
    col[k] = at;
    at += model.tensors[n.inputs[k]].width;
  }
  const size_t grain = n.width ? (size_t{16384} * inputs + n.width - 1) / n.width : 1;
  parallel_rows(r.kernels->pool, r.rows * inputs, grain, [&](size_t u0, size_t u1) {
    for (size_t u = u0; u < u1; ++u) {
      const size_t row = u / inputs;
      const uint32_t k = static_cast<uint32_t>(u % inputs), in = n.inputs[k];
      const uint32_t w = model.tensors[in].width;
      std::memcpy(y + row * n.width + col[k], r.values[in] + row * w, w * sizeof(float));
    }
  });
  if (!ty) return;
  parallel_rows(r.kernels->pool, trows * inputs, grain, [&](size_t u0, size_t u1) {
    for (size_t u = u0; u < u1; ++u) {
      const size_t row = u / inputs;
      const uint32_t k = static_cast<uint32_t>(u % inputs), in = n.inputs[k];
      const uint32_t w = model.tensors[in].width;
      const float* t_in = r.tangents[in];
      float* dst = ty + row * n.width + col[k];
      if (t_in)
        std::memcpy(dst, t_in + row * w, w * sizeof(float));
      else
        std::memset(dst, 0, w * sizeof(float));
    }
  });
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
