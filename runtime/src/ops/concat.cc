// SPDX-License-Identifier: Apache-2.0
// Concat: the inputs side by side along the feature axis, in input order. JVP: the inputs'
// tangents side by side (zeros for an input without one). VJP: each input gets its columns of
// dy. Copies only, split over the threads by (row, input). On NHWC rows (a plan's layout), each
// pixel's channels side by side.
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
void run_nhwc(const NodeRun& r);

void run(const NodeRun& r) {
  if (is_nhwc(r, r.node + 2)) {
    run_nhwc(r);
    return;
  }
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

// On NHWC rows (the plan's layout; inputs [C_k, H, W] of one H x W): each pixel's output is
// its inputs' C_k values side by side. Copies only, split over rows.
void run_nhwc(const NodeRun& r) {
  const detail::ModelData& model = *r.model;
  const NodeData& n = model.nodes[r.node];
  const uint32_t id = r.node + 2, inputs = n.input_count;
  const detail::Shape& s0 = model.tensors[n.inputs[0]].shape;
  const size_t pixels = size_t{s0.dims[1]} * s0.dims[2];
  const uint32_t channels = n.width / static_cast<uint32_t>(pixels);
  auto rows = [&](float* const* tensors, float* out, size_t r0, size_t r1, size_t per_row) {
    for (size_t t = r0; t < r1; ++t) {
      uint32_t at = 0;
      for (uint32_t k = 0; k < inputs; ++k) {
        const uint32_t in = n.inputs[k], c = model.tensors[in].shape.dims[0];
        const float* src = tensors[in] ? tensors[in] + t * pixels * c : nullptr;
        float* dst = out + t * n.width + at;
        for (size_t p = 0; p < pixels; ++p) {
          if (src)
            std::memcpy(dst + p * channels, src + p * c, c * sizeof(float));
          else
            std::memset(dst + p * channels, 0, c * sizeof(float));
        }
        at += c;
      }
    }
    (void)per_row;
  };
  parallel_rows(r.kernels->pool, r.rows, 1,
                [&](size_t r0, size_t r1) { rows(r.values, r.values[id], r0, r1, 1); });
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  parallel_rows(r.kernels->pool, r.rows * r.directions, 1,
                [&](size_t r0, size_t r1) { rows(r.tangents, ty, r0, r1, 1); });
}

// NHWC rows when every input is [C_k, H, W] of one H x W > 1.
LayoutForm layout_form(const detail::ModelData& model, uint32_t node, NodeKernel) {
  return image_shape_of(model, node + 2).rank == 3 ? LayoutForm::kShared : LayoutForm::kNchw;
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

detail::Shape image_shape_of(const detail::ModelData& model, uint32_t tensor) {
  const detail::Shape& own = model.tensors[tensor].shape;
  if (own.rank == 3 || tensor < 2) return own.rank == 3 ? own : detail::Shape();
  const NodeData& n = model.nodes[tensor - 2];
  if (n.op != detail::OpKind::kConcat) return detail::Shape();
  detail::Shape out;
  uint32_t channels = 0;
  for (uint32_t k = 0; k < n.input_count; ++k) {
    const detail::Shape& s = model.tensors[n.inputs[k]].shape;
    if (s.rank != 3 || (k > 0 && (s.dims[1] != out.dims[1] || s.dims[2] != out.dims[2])))
      return detail::Shape();
    out.dims[1] = s.dims[1];
    out.dims[2] = s.dims[2];
    channels += s.dims[0];
  }
  if (size_t{out.dims[1]} * out.dims[2] <= 1) return detail::Shape();
  out.rank = 3;
  out.dims[0] = channels;
  return out;
}

extern const OpModule kConcat = {
    "concat",       detail::OpKind::kConcat,
    verify,         kernel_bit(NodeKernel::kReference),
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
