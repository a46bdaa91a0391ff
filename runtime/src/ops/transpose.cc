// SPDX-License-Identifier: Apache-2.0
// Transpose: permutes the per-sample axes (rank 1 to 3; Node.perm: output axis i is input axis
// perm[i]), e.g. [C, H, W] -> [H, W, C] with perm [1, 2, 0]. Linear, so the JVP transposes each
// tangent direction the same way and the VJP applies the inverse permutation. Copies only.
#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;
using detail::Shape;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kTranspose;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  const Shape in = check.shape_of(out->inputs[0]);
  const auto* perm = node.perm();
  const uint32_t given = perm ? perm->size() : 0;
  if (given != in.rank)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: perm has %u axes, but the input %s has rank %u", check.where(), given,
                         detail::shape_text(in).text, in.rank);
  bool seen[3] = {false, false, false};
  Shape result;
  result.rank = in.rank;
  for (uint32_t i = 0; i < in.rank; ++i) {
    const uint32_t p = perm->Get(i);
    if (p >= in.rank || seen[p])
      return Status::error(StatusCode::kInvalidModel,
                           "%s: perm is not a permutation of the input's %u axes (entry %u is %u)",
                           check.where(), in.rank, i, p);
    seen[p] = true;
    out->perm[i] = p;
    result.dims[i] = in.dims[p];
  }
  out->width = check.width_of(out->inputs[0]);
  out->shape = result;
  return Status();
}

// The input's shape padded to rank 3 (leading 1s) with the permutation moved along, so one
// triple loop serves every rank.
struct Walk {
  uint32_t dims[3];   // output extents
  size_t strides[3];  // input stride of each output axis
};

Walk make_walk(const NodeData& n, const Shape& in) {
  size_t stride[3] = {1, 1, 1};
  for (int a = static_cast<int>(in.rank) - 2; a >= 0; --a)
    stride[a] = stride[a + 1] * in.dims[a + 1];
  Walk w{{1, 1, 1}, {0, 0, 0}};
  const uint32_t pad = 3 - in.rank;
  for (uint32_t i = 0; i < in.rank; ++i) {
    w.dims[pad + i] = in.dims[n.perm[i]];
    w.strides[pad + i] = stride[n.perm[i]];
  }
  return w;
}

// Permutes `rows` samples of `width` values from x to y (forward), or back (inverse: y holds
// the output layout and x receives the input layout).
template <typename T>
void permute(const Walk& w, size_t rows, uint32_t width, const T* x, T* y, bool inverse) {
  for (size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * width;
    T* yr = y + r * width;
    size_t o = 0;
    for (uint32_t i = 0; i < w.dims[0]; ++i)
      for (uint32_t j = 0; j < w.dims[1]; ++j) {
        const size_t base = i * w.strides[0] + j * w.strides[1];
        for (uint32_t k = 0; k < w.dims[2]; ++k, ++o) {
          const size_t at = base + k * w.strides[2];
          if (inverse)
            yr[at] = xr[o];
          else
            yr[o] = xr[at];
        }
      }
  }
}

// The input's shape from the output's and perm (the training tape has no model's tensors).
Shape input_of(const NodeData& n) {
  Shape in;
  in.rank = n.shape.rank;
  for (uint32_t i = 0; i < n.shape.rank; ++i) in.dims[n.perm[i]] = n.shape.dims[i];
  return in;
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const Walk w = make_walk(n, input_of(n));
  permute(w, r.rows, n.width, r.values[a], r.values[id], false);
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const size_t trows = r.rows * r.directions;
  if (r.tangents[a])
    permute(w, trows, n.width, r.tangents[a], ty, false);
  else
    for (size_t i = 0; i < trows * n.width; ++i) ty[i] = 0.0f;
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  permute(make_walk(n, input_of(n)), op.rows, n.width, op.values[n.inputs[0]], op.out, false);
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0];
  if (!g.needs(g.tape, a)) return;
  const size_t count = op.rows * n.width;
  T* dx = g.target(g.tape, a, count);
  permute(make_walk(n, input_of(n)), op.rows, n.width, g.dy, dx, true);
  g.commit(g.tape, a, count);
}

}  // namespace

extern const OpModule kTranspose = {
    "transpose",    detail::OpKind::kTranspose,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
