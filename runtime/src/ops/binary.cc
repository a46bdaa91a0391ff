// SPDX-License-Identifier: Apache-2.0
// Add, Mul and Div: a + b, a * b and a / b elementwise, b a second tensor or a constant [1, n].
// Broadcasting: operands of equal width pair elementwise, and a [B, 1] or [1, n] operand spreads
// over [B, n] (the flat rule); otherwise (format 1.4) the per-sample shapes broadcast as NumPy's
// do, aligned from the last axis, a size-1 axis spreading over the other's ([T, 1] against
// [T, C], [C, 1, 1] against [C, H, W], a constant [C] against [T, C]).
// JVP: the sum, product and quotient rules. VJP: da = dy (* b, / b), db = dy (* a, * -a / b^2),
// summed over the elements an operand was spread over. Div by a constant refuses a zero in it;
// by a tensor, a zero gives inf or NaN, which a run reports as a numerical error.
// The simd kernels (kernels_binary.inc) run the forms that occur in image nets (equal shapes,
// a per-channel [C, 1, 1] or [C] operand, a scalar, a constant row shared by every sample) with
// the reference's bits (the JVP's two-rounding cases aside, kernels.hpp), split over samples and,
// within a sample, over units of one channel's values, so batch 1 uses every thread.
#include "ops/op.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops {
namespace {

using detail::NodeData;
using detail::OpKind;
using detail::Shape;

// NumPy broadcasting of two per-sample shapes into out (dims, strides); false when they do not.
bool broadcast(const Shape& a, const Shape& b, NodeData* out) {
  const uint32_t rank = a.rank > b.rank ? a.rank : b.rank;
  uint32_t ad[3], bd[3];
  for (uint32_t k = 0; k < rank; ++k) {
    // Right-aligned: axis k of the output is axis k - (rank - r) of an operand of rank r.
    ad[k] = k + a.rank >= rank ? a.dims[k + a.rank - rank] : 1;
    bd[k] = k + b.rank >= rank ? b.dims[k + b.rank - rank] : 1;
    if (ad[k] != bd[k] && ad[k] != 1 && bd[k] != 1) return false;
    out->bcast_dims[k] = ad[k] > bd[k] ? ad[k] : bd[k];
  }
  uint32_t as = 1, bs = 1;
  for (uint32_t k = rank; k-- > 0;) {
    out->a_stride[k] = ad[k] == 1 ? 0 : as;
    out->b_stride[k] = bd[k] == 1 ? 0 : bs;
    as *= ad[k];
    bs *= bd[k];
  }
  out->bcast_rank = rank;
  return true;
}

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out, OpKind kind) {
  out->op = kind;
  out->bcast_rank = 0;
  const fb::Weights* c = node.constant();
  Status s;
  const uint32_t a_width = out->input_count ? check.width_of(out->inputs[0]) : 0;
  uint32_t b_width = 0;
  Shape b_shape;
  if (c) {
    if (!(s = check.expect_inputs(*out, 1, 1)).ok()) return s.prefix("with a constant operand");
    const auto* shape = c->shape();
    const size_t n = NodeCheck::value_count(*c);
    if (shape && !(shape->size() == 1 && shape->Get(0) == n) &&
        !(shape->size() == 2 && shape->Get(0) == 1 && shape->Get(1) == n))
      return Status::error(StatusCode::kInvalidModel,
                           "%s: constant shape must be [n] or [1, n] with n = %zu values",
                           check.where(), n);
    if (n == 0 || n > Limits::kMaxWidth)
      return Status::error(StatusCode::kInvalidModel, "%s: constant has %zu values, expected 1..%u",
                           check.where(), n, Limits::kMaxWidth);
    if (!(s = check.weights("constant", c, n, true, &out->constant)).ok()) return s;
    b_width = out->constant_width = static_cast<uint32_t>(n);
    b_shape = detail::flat_shape(b_width);
    if (kind == OpKind::kDiv)
      for (uint32_t i = 0; i < b_width; ++i)
        if (out->constant[i] == 0.0f)
          return Status::error(StatusCode::kInvalidModel, "%s: constant divisor[%u] is zero",
                               check.where(), i);
  } else {
    if (!(s = check.expect_inputs(*out, 2, 2)).ok()) return s;
    b_width = check.width_of(out->inputs[1]);
    b_shape = check.shape_of(out->inputs[1]);
  }
  // The flat rule (format 1.0): equal widths, a [B, 1] operand, or a constant against [B, 1].
  if (a_width == b_width || a_width == 1 || (!c && b_width == 1)) {
    out->width = a_width > b_width ? a_width : b_width;
    return Status();
  }
  // The shape rule (format 1.4); a one-value constant against a wider tensor stays refused.
  const Shape a_shape = check.shape_of(out->inputs[0]);
  const bool flat = a_shape.rank <= 1 && b_shape.rank <= 1;
  if ((c && b_width == 1) || !broadcast(a_shape, b_shape, out)) {
    if (c && flat)
      return Status::error(StatusCode::kInvalidModel,
                           "%s: constant [1,%u] cannot broadcast with input [B,%u] (only "
                           "[1,n] with [B,n] or [B,1])",
                           check.where(), b_width, a_width);
    if (c)
      return Status::error(StatusCode::kInvalidModel,
                           "%s: constant [%u] cannot broadcast with input %s (only equal "
                           "widths, [1,n] with [B,1], or shapes that broadcast from the last axis)",
                           check.where(), b_width, detail::shape_text(a_shape).text);
    if (flat)
      return Status::error(StatusCode::kInvalidModel,
                           "%s: inputs [B,%u] and [B,%u] cannot broadcast (only [B,1] "
                           "against [B,n])",
                           check.where(), a_width, b_width);
    return Status::error(StatusCode::kInvalidModel,
                         "%s: inputs %s and %s cannot broadcast (only equal widths, [B,1] "
                         "against [B,n], or shapes that broadcast from the last axis)",
                         check.where(), detail::shape_text(a_shape).text,
                         detail::shape_text(b_shape).text);
  }
  uint64_t width = 1;
  out->shape.rank = out->bcast_rank;
  for (uint32_t k = 0; k < out->bcast_rank; ++k) {
    out->shape.dims[k] = out->bcast_dims[k];
    width *= out->bcast_dims[k];
  }
  return check.output_width(width, &out->width);
}

Status verify_add(NodeCheck& check, const fb::Node& node, NodeData* out) {
  return verify(check, node, out, OpKind::kAdd);
}
Status verify_mul(NodeCheck& check, const fb::Node& node, NodeData* out) {
  return verify(check, node, out, OpKind::kMul);
}
Status verify_div(NodeCheck& check, const fb::Node& node, NodeData* out) {
  return verify(check, node, out, OpKind::kDiv);
}

// Where output column c reads operand a (stride a_stride) or b, within its row.
inline uint32_t operand_col(const NodeData& n, const uint32_t* stride, uint32_t width, uint32_t c) {
  if (n.bcast_rank == 0) return width == 1 ? 0 : c;
  uint32_t at = 0;
  for (uint32_t k = n.bcast_rank; k-- > 0;) {
    at += (c % n.bcast_dims[k]) * stride[k];
    c /= n.bcast_dims[k];
  }
  return at;
}

// The second operand: the constant [1, n] shared by all rows, or tensor inputs[1].
template <typename T>
struct Second {
  const T* values;      // [rows, width] (nullptr for a constant)
  const float* shared;  // the constant, or nullptr
  uint32_t width;
  T at(size_t r, uint32_t k) const {  // k: the operand's own column
    return shared ? static_cast<T>(shared[k]) : values[r * width + k];
  }
};

template <typename T>
Second<T> second(const NodeData& n, const uint32_t* widths, const T* const* values) {
  if (n.constant) return {nullptr, n.constant, n.constant_width};
  return {values[n.inputs[1]], nullptr, widths[n.inputs[1]]};
}

template <typename T>
T combine(OpKind op, T a, T b) {
  return op == OpKind::kMul ? a * b : op == OpKind::kDiv ? a / b : a + b;
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const uint32_t aw = op.widths[n.inputs[0]];
  const T* a = op.values[n.inputs[0]];
  const Second<T> b = second(n, op.widths, op.values);
  for (size_t r = 0; r < op.rows; ++r)
    for (uint32_t c = 0; c < n.width; ++c) {
      const T av = a[r * aw + operand_col(n, n.a_stride, aw, c)];
      const T bv = b.at(r, operand_col(n, n.b_stride, b.width, c));
      op.out[r * n.width + c] = combine(n.op, av, bv);
    }
}

// Tangents over `directions`: t_a or t_b is nullptr for an operand without one. y is the
// forward's output (Div's quotient).
void jvp(const NodeData& n, const float* a, uint32_t a_width, const float* t_a,
         const Second<float>& b, const float* t_b, const float* y, size_t rows, size_t directions,
         float* t_out) {
  const uint32_t width = n.width;
  for (size_t r = 0; r < rows; ++r) {
    const float* ar = a + r * a_width;
    for (size_t p = 0; p < directions; ++p) {
      const size_t row = r * directions + p;
      float* to = t_out + row * width;
      for (uint32_t k = 0; k < width; ++k) {
        const uint32_t ka = operand_col(n, n.a_stride, a_width, k);
        const uint32_t kb = operand_col(n, n.b_stride, b.width, k);
        const float ta = t_a ? t_a[row * a_width + ka] : 0.0f;
        const float tb = t_b ? t_b[row * b.width + kb] : 0.0f;
        if (n.op == OpKind::kAdd) {
          to[k] = ta + tb;
        } else if (n.op == OpKind::kMul) {
          float v = t_a ? ta * b.at(r, kb) : 0.0f;
          if (t_b) v += ar[ka] * tb;
          to[k] = v;
        } else {
          // d(a / b) = (da - (a / b) db) / b.
          const float q = y[r * width + k];
          to[k] = (t_b ? ta - q * tb : ta) / b.at(r, kb);
        }
      }
    }
  }
}

#if defined(SIFLOW_WITH_SIMD)
// The node as one sample of simd::Binary: a split of the output axes into outer ones and inner
// ones such that each operand is, on each side, either the output's extent (it varies) or
// broadcast (one value); false when no split fits (those nodes stay on the reference loops).
bool simd_form(const NodeData& n, uint32_t aw, uint32_t bw, simd::Binary* out) {
  *out = {};
  out->op = n.op == OpKind::kMul   ? simd::BinaryOp::kMul
            : n.op == OpKind::kDiv ? simd::BinaryOp::kDiv
                                   : simd::BinaryOp::kAdd;
  if (n.bcast_rank == 0) {  // the flat rule: equal widths, or a one-value operand
    *out = {out->op,
            1,
            n.width,
            0,
            aw == 1 && n.width > 1 ? 0u : 1u,
            0,
            bw == 1 && n.width > 1 ? 0u : 1u};
    return true;
  }
  const uint32_t rank = n.bcast_rank;
  for (uint32_t split = 0; split <= rank; ++split) {
    uint32_t outer = 1, inner = 1;
    for (uint32_t k = 0; k < rank; ++k) (k < split ? outer : inner) *= n.bcast_dims[k];
    // Per operand and side: 1 varies, 0 broadcast, 2 both (every axis there has extent 1).
    uint32_t side[2][2];
    bool fits = true;
    for (int op = 0; op < 2 && fits; ++op) {
      const uint32_t* stride = op == 0 ? n.a_stride : n.b_stride;
      for (int part = 0; part < 2 && fits; ++part) {
        uint32_t kind = 2;
        for (uint32_t k = part == 0 ? 0 : split; k < (part == 0 ? split : rank); ++k) {
          if (n.bcast_dims[k] == 1) continue;
          const uint32_t v = stride[k] != 0 ? 1 : 0;
          if (kind == 2) kind = v;
          if (kind != v) fits = false;
        }
        side[op][part] = kind;
      }
    }
    if (!fits) continue;
    uint32_t stride[2][2];  // [operand][outer, inner]
    for (int op = 0; op < 2; ++op) {
      const bool varies_inner = side[op][1] != 0, varies_outer = side[op][0] != 0;
      stride[op][1] = varies_inner ? 1 : 0;
      stride[op][0] = varies_outer ? (varies_inner ? inner : 1) : 0;
    }
    *out = {out->op, outer, inner, stride[0][0], stride[0][1], stride[1][0], stride[1][1]};
    return true;
  }
  return false;
}

// The node's broadcast over NHWC rows: the axes reordered (H, W, C) and each operand's strides
// those of its NHWC layout. An operand of the node (an image tensor of the same layout, or one
// with C = 1 or H x W = 1, the same memory in both) is addressed right; false for a node whose
// output is not [C, H, W] under the shape rule.
bool nhwc_node(const NodeData& n, NodeData* out) {
  if (n.bcast_rank != 3) return false;
  *out = n;
  const uint32_t order[3] = {1, 2, 0};  // NHWC axis k is NCHW axis order[k]
  for (int op = 0; op < 2; ++op) {
    const uint32_t* from = op == 0 ? n.a_stride : n.b_stride;
    uint32_t* to = op == 0 ? out->a_stride : out->b_stride;
    uint32_t d[3];  // the operand's extent per NCHW axis
    for (uint32_t k = 0; k < 3; ++k) d[k] = from[k] != 0 ? n.bcast_dims[k] : 1;
    const uint32_t stride[3] = {d[0] > 1 ? 1u : 0u, d[1] > 1 ? d[2] * d[0] : 0u,
                                d[2] > 1 ? d[0] : 0u};  // per NCHW axis, in NHWC memory
    for (uint32_t k = 0; k < 3; ++k) to[k] = stride[order[k]];
  }
  for (uint32_t k = 0; k < 3; ++k) out->bcast_dims[k] = n.bcast_dims[order[k]];
  return true;
}

// Calls fn(row, u0, u1) over rows x units, split between the pool's threads in ranges of whole
// units (so a sample's units can go to different threads); ranges hold at least ~4096 values.
template <typename Fn>
void over_units(RowPool* pool, size_t rows, const simd::Binary& bin, const Fn& fn) {
  const size_t units = simd::binary_units(bin);
  const uint32_t per_unit = bin.inner < simd::kBinaryChunk ? bin.inner : simd::kBinaryChunk;
  const size_t grain = (16384 + per_unit - 1) / per_unit;
  parallel_rows(pool, rows * units, grain, [&](size_t g0, size_t g1) {
    for (size_t g = g0; g < g1;) {
      const size_t row = g / units, u0 = g % units;
      const size_t u1 = units - u0 < g1 - g ? units : u0 + (g1 - g);
      fn(row, u0, u1);
      g += u1 - u0;
    }
  });
}
#endif

void run(const NodeRun& r) {
  const detail::ModelData& model = *r.model;
  const NodeData& n = model.nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const Second<float> b =
      n.constant ? Second<float>{nullptr, n.constant, n.constant_width}
                 : Second<float>{r.values[n.inputs[1]], nullptr, model.tensors[n.inputs[1]].width};
  const uint32_t aw = model.tensors[a].width;
  const float* av = r.values[a];
  float* y = r.values[id];
#if defined(SIFLOW_WITH_SIMD)
  simd::Binary bin;
  NodeData nhwc;  // the node over NHWC rows, when the plan laid its output out so
  const bool in_nhwc = n.bcast_rank != 0 && is_nhwc(r, id) && nhwc_node(n, &nhwc);
  if (kernel_of(r) == NodeKernel::kSimd && simd_form(in_nhwc ? nhwc : n, aw, b.width, &bin)) {
    const simd::Kernels& k = *r.kernels->simd;
    const size_t b_row = n.constant ? 0 : b.width;
    const float* bv = n.constant ? n.constant : b.values;
    over_units(r.kernels->pool, r.rows, bin, [&](size_t row, size_t u0, size_t u1) {
      k.binary(bin, av + row * aw, bv + row * b_row, y + row * n.width, u0, u1);
    });
    float* ty = r.directions ? r.tangents[id] : nullptr;
    if (!ty) return;
    const float* ta = r.tangents[a];
    const float* tb = n.constant ? nullptr : r.tangents[n.inputs[1]];
    const size_t p = r.directions;
    over_units(r.kernels->pool, r.rows * p, bin, [&](size_t t, size_t u0, size_t u1) {
      const size_t row = t / p;
      k.binary_jvp(bin, av + row * aw, bv + row * b_row, y + row * n.width,
                   ta ? ta + t * aw : nullptr, tb ? tb + t * b.width : nullptr, ty + t * n.width,
                   u0, u1);
    });
    return;
  }
#endif
  for (size_t row = 0; row < r.rows; ++row)
    for (uint32_t c = 0; c < n.width; ++c) {
      const float x = av[row * aw + operand_col(n, n.a_stride, aw, c)];
      const float z = b.at(row, operand_col(n, n.b_stride, b.width, c));
      y[row * n.width + c] = combine(n.op, x, z);
    }
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* tb = (!n.constant) ? r.tangents[n.inputs[1]] : nullptr;
  jvp(n, av, aw, r.tangents[a], b, tb, y, r.rows, r.directions, ty);
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t in0 = n.inputs[0], aw = op.widths[in0], width = n.width;
  const T* a = op.values[in0];
  const T* dy = g.dy;
  const Second<T> b = second(n, op.widths, op.values);
  // Each operand's gradient: the sum of its output elements' terms, in output order.
  if (g.needs(g.tape, in0)) {
    T* da = g.target(g.tape, in0, op.rows * aw);
    for (size_t i = 0; i < op.rows * aw; ++i) da[i] = 0;
    for (size_t r = 0; r < op.rows; ++r)
      for (uint32_t c = 0; c < width; ++c) {
        const T d = dy[r * width + c];
        const T bv = b.at(r, operand_col(n, n.b_stride, b.width, c));
        da[r * aw + operand_col(n, n.a_stride, aw, c)] += n.op == OpKind::kMul   ? d * bv
                                                          : n.op == OpKind::kDiv ? d / bv
                                                                                 : d;
      }
    g.commit(g.tape, in0, op.rows * aw);
  }
  if (n.constant || !g.needs(g.tape, n.inputs[1])) return;
  const uint32_t in1 = n.inputs[1], bw = b.width;
  T* db = g.target(g.tape, in1, op.rows * bw);
  for (size_t i = 0; i < op.rows * bw; ++i) db[i] = 0;
  for (size_t r = 0; r < op.rows; ++r)
    for (uint32_t c = 0; c < width; ++c) {
      const T d = dy[r * width + c];
      const uint32_t kb = operand_col(n, n.b_stride, bw, c);
      const T av = a[r * aw + operand_col(n, n.a_stride, aw, c)];
      T term = d;
      if (n.op == OpKind::kMul) term = d * av;
      if (n.op == OpKind::kDiv) {
        const T bv = b.at(r, kb);
        term = -d * (av / bv) / bv;
      }
      db[r * bw + kb] += term;
    }
  g.commit(g.tape, in1, op.rows * bw);
}

// The simd kernels run only the broadcasts simd_form finds; the reference runs every node.
bool runs_on(const NodeData& node, NodeKernel kernel) {
  if (kernel != NodeKernel::kSimd) return true;
#if defined(SIFLOW_WITH_SIMD)
  simd::Binary bin;
  return simd_form(node, node.width, node.width, &bin);
#else
  (void)node;
  return false;
#endif
}

// Equal widths (or a one-value operand) pair values whatever their layout; a shape-rule broadcast
// runs on NHWC rows on the simd kernels when its NHWC form is one of theirs.
LayoutForm layout_form(const detail::ModelData& model, uint32_t node, NodeKernel kernel) {
  const NodeData& n = model.nodes[node];
  if (n.bcast_rank == 0) {
    // The flat rule pairs values in memory order: every operand must be one value or have the
    // output's shape (then both are in the one layout).
    const detail::Shape& out = model.tensors[node + 2].shape;
    // A constant operand of many values (add_constant with a [C*H*W] constant) is stored NCHW.
    if (n.constant && n.constant_width > 1) return LayoutForm::kNchw;
    for (uint32_t j = 0; j < n.input_count; ++j) {
      const detail::TensorData& t = model.tensors[n.inputs[j]];
      if (t.width == 1) continue;
      if (t.shape.rank != out.rank) return LayoutForm::kNchw;
      for (uint32_t k = 0; k < out.rank; ++k)
        if (t.shape.dims[k] != out.dims[k]) return LayoutForm::kNchw;
    }
    return LayoutForm::kShared;
  }
#if defined(SIFLOW_WITH_SIMD)
  NodeData form;
  simd::Binary bin;
  if (kernel == NodeKernel::kSimd && nhwc_node(n, &form) && simd_form(form, n.width, n.width, &bin))
    return LayoutForm::kShared;
#else
  (void)kernel;
#endif
  return LayoutForm::kNchw;
}

}  // namespace

extern const OpModule kAdd = {
    "add",          OpKind::kAdd,
    verify_add,     kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
    nullptr,        nullptr,
    nullptr,        false,
    nullptr,        runs_on,
    layout_form,
};

extern const OpModule kMul = {
    "mul",          OpKind::kMul,
    verify_mul,     kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
    nullptr,        nullptr,
    nullptr,        false,
    nullptr,        runs_on,
    layout_form,
};

extern const OpModule kDiv = {
    "div",          OpKind::kDiv,
    verify_div,     kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
    nullptr,        nullptr,
    nullptr,        false,
    nullptr,        runs_on,
    layout_form,
};

}  // namespace siflow::ops
