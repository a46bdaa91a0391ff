// SPDX-License-Identifier: Apache-2.0
// MatMul between two activations, per sample: a [G, M, K] times b [G, K, N] (b stored [G, N, K]
// with transpose_b), times the constant `scale`, giving [G, M, N]; rank-2 operands are G = 1
// ([M, K] x [K, N] -> [M, N]). Attention's Q K^T (transpose_b, scale 1/sqrt(d)) and A V, with
// the heads as G. Each output is accumulated in double and rounded once (on the simd kernels: one
// float FMA chain, then the scale).
// JVP: scale (t_a b + a t_b). VJP: da = scale dy b^T, db = scale a^T dy.
#include "math/elementary.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops {
namespace {

using detail::NodeData;
using detail::Shape;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kMatMul;
  Status s = check.expect_inputs(*out, 2, 2);
  if (!s.ok()) return s;
  const Shape a = check.shape_of(out->inputs[0]), b = check.shape_of(out->inputs[1]);
  if (a.rank < 2 || a.rank != b.rank)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: inputs %s and %s must both be [M, K] x [K, N] or [G, M, K] x "
                         "[G, K, N]",
                         check.where(), detail::shape_text(a).text, detail::shape_text(b).text);
  const uint32_t o = a.rank - 2;  // first matrix axis
  out->transpose_b = node.transpose_b();
  out->mm_g = a.rank == 3 ? a.dims[0] : 1;
  out->mm_m = a.dims[o];
  out->mm_k = a.dims[o + 1];
  out->mm_n = out->transpose_b ? b.dims[o] : b.dims[o + 1];
  const uint32_t bk = out->transpose_b ? b.dims[o + 1] : b.dims[o];
  const uint32_t bg = b.rank == 3 ? b.dims[0] : 1;
  if (bg != out->mm_g || bk != out->mm_k)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: inputs %s and %s%s do not multiply (groups %u and %u, inner "
                         "extents %u and %u)",
                         check.where(), detail::shape_text(a).text, detail::shape_text(b).text,
                         out->transpose_b ? " (b transposed)" : "", out->mm_g, bg, out->mm_k, bk);
  out->scale = node.scale();
  if (!math::is_finite(out->scale))
    return Status::error(StatusCode::kInvalidModel, "%s: scale is not finite", check.where());
  out->shape = a;
  out->shape.dims[o + 1] = out->mm_n;
  return check.output_width(static_cast<uint64_t>(out->mm_g) * out->mm_m * out->mm_n, &out->width);
}

// b[g, k, n] of one sample's b, stored [G, K, N] or [G, N, K].
template <typename T>
inline T b_at(const NodeData& n, const T* b, uint32_t g, uint32_t k, uint32_t j) {
  return n.transpose_b ? b[(static_cast<size_t>(g) * n.mm_n + j) * n.mm_k + k]
                       : b[(static_cast<size_t>(g) * n.mm_k + k) * n.mm_n + j];
}

// y = scale a b for one sample; with add, y += (the tangent form uses two products).
template <typename T, typename U>
double dot(const NodeData& n, const T* a, const U* b, uint32_t g, uint32_t m, uint32_t j) {
  double acc = 0.0;
  const T* ar = a + (static_cast<size_t>(g) * n.mm_m + m) * n.mm_k;
  for (uint32_t k = 0; k < n.mm_k; ++k) acc += static_cast<double>(ar[k]) * b_at(n, b, g, k, j);
  return acc;
}

template <typename T>
void matmul_rows(const NodeData& n, const T* a, uint32_t a_width, const T* b, uint32_t b_width,
                 size_t rows, T* y) {
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t g = 0; g < n.mm_g; ++g)
      for (uint32_t m = 0; m < n.mm_m; ++m)
        for (uint32_t j = 0; j < n.mm_n; ++j)
          y[r * n.width + (static_cast<size_t>(g) * n.mm_m + m) * n.mm_n + j] =
              static_cast<T>(n.scale * dot(n, a + r * a_width, b + r * b_width, g, m, j));
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const uint32_t ia = n.inputs[0], ib = n.inputs[1];
  matmul_rows(n, op.values[ia], op.widths[ia], op.values[ib], op.widths[ib], op.rows, op.out);
}

#if defined(SIFLOW_WITH_SIMD)
// Samples (and tangent samples) split over the threads; the JVP scale (t_a b + a t_b) is one
// kernel call per tangent sample.
void run_simd(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const simd::Kernels& k = *r.kernels->simd;
  const uint32_t id = r.node + 2, ia = n.inputs[0], ib = n.inputs[1];
  const uint32_t aw = r.model->tensors[ia].width, bw = r.model->tensors[ib].width;
  const simd::MatMul mm{n.mm_g, n.mm_m, n.mm_k, n.mm_n, n.transpose_b, n.scale};
  const float* a = r.values[ia];
  const float* b = r.values[ib];
  float* y = r.values[id];
  // The forward over (sample, head, output row) units, so batch 1 uses every thread: the
  // kernel computes an output row by the same code whichever call holds it.
  const size_t head_rows = size_t{n.mm_g} * n.mm_m, row_work = size_t{n.mm_k} * n.mm_n;
  const size_t ha = size_t{n.mm_m} * n.mm_k, hb = size_t{n.mm_k} * n.mm_n;
  parallel_rows(r.kernels->pool, r.rows * head_rows, (65536 + row_work - 1) / (row_work + 1),
                [&](size_t u0, size_t u1) {
                  for (size_t u = u0; u < u1;) {
                    const size_t s = u / head_rows, rest = u % head_rows;
                    const size_t g = rest / n.mm_m, m0 = rest % n.mm_m;
                    const size_t m1 = n.mm_m - m0 < u1 - u ? n.mm_m : m0 + (u1 - u);
                    simd::MatMul part = mm;
                    part.g = 1;
                    part.m = static_cast<uint32_t>(m1 - m0);
                    k.matmul(part, a + s * aw + g * ha + m0 * n.mm_k, b + s * bw + g * hb, nullptr,
                             nullptr, y + s * n.width + (g * n.mm_m + m0) * n.mm_n);
                    u += m1 - m0;
                  }
                });
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* ta = r.tangents[ia];
  const float* tb = r.tangents[ib];
  parallel_rows(r.kernels->pool, r.rows * r.directions, 1, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) {
      const size_t s = t / r.directions;
      k.matmul(mm, ta ? ta + t * aw : nullptr, b + s * bw, tb ? a + s * aw : nullptr,
               tb ? tb + t * bw : nullptr, ty + t * n.width);
    }
  });
}
#endif

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
#if defined(SIFLOW_WITH_SIMD)
  if (kernel_of(r) == NodeKernel::kSimd) {
    run_simd(r);
    return;
  }
#endif
  const uint32_t id = r.node + 2, ia = n.inputs[0], ib = n.inputs[1];
  const uint32_t aw = r.model->tensors[ia].width, bw = r.model->tensors[ib].width;
  const float* a = r.values[ia];
  const float* b = r.values[ib];
  matmul_rows(n, a, aw, b, bw, r.rows, r.values[id]);
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* ta = r.tangents[ia];
  const float* tb = r.tangents[ib];
  for (size_t row = 0; row < r.rows; ++row)
    for (size_t p = 0; p < r.directions; ++p) {
      const size_t t = row * r.directions + p;
      for (uint32_t g = 0; g < n.mm_g; ++g)
        for (uint32_t m = 0; m < n.mm_m; ++m)
          for (uint32_t j = 0; j < n.mm_n; ++j) {
            double acc = 0.0;
            if (ta) acc += dot(n, ta + t * aw, b + row * bw, g, m, j);
            if (tb) acc += dot(n, a + row * aw, tb + t * bw, g, m, j);
            ty[t * n.width + (static_cast<size_t>(g) * n.mm_m + m) * n.mm_n + j] =
                static_cast<float>(n.scale * acc);
          }
    }
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t ia = n.inputs[0], ib = n.inputs[1];
  const uint32_t aw = op.widths[ia], bw = op.widths[ib];
  const T* a = op.values[ia];
  const T* b = op.values[ib];
  const T* dy = g.dy;
  auto dy_at = [&](size_t r, uint32_t gi, uint32_t m, uint32_t j) {
    return dy[r * n.width + (static_cast<size_t>(gi) * n.mm_m + m) * n.mm_n + j];
  };
  if (g.needs(g.tape, ia)) {
    T* da = g.target(g.tape, ia, op.rows * aw);
    for (size_t r = 0; r < op.rows; ++r)
      for (uint32_t gi = 0; gi < n.mm_g; ++gi)
        for (uint32_t m = 0; m < n.mm_m; ++m)
          for (uint32_t k = 0; k < n.mm_k; ++k) {
            T acc = 0;
            for (uint32_t j = 0; j < n.mm_n; ++j)
              acc += dy_at(r, gi, m, j) * b_at(n, b + r * bw, gi, k, j);
            da[r * aw + (static_cast<size_t>(gi) * n.mm_m + m) * n.mm_k + k] =
                static_cast<T>(n.scale) * acc;
          }
    g.commit(g.tape, ia, op.rows * aw);
  }
  if (g.needs(g.tape, ib)) {
    T* db = g.target(g.tape, ib, op.rows * bw);
    for (size_t r = 0; r < op.rows; ++r)
      for (uint32_t gi = 0; gi < n.mm_g; ++gi)
        for (uint32_t k = 0; k < n.mm_k; ++k)
          for (uint32_t j = 0; j < n.mm_n; ++j) {
            T acc = 0;
            for (uint32_t m = 0; m < n.mm_m; ++m)
              acc += a[r * aw + (static_cast<size_t>(gi) * n.mm_m + m) * n.mm_k + k] *
                     dy_at(r, gi, m, j);
            const size_t at = n.transpose_b ? (static_cast<size_t>(gi) * n.mm_n + j) * n.mm_k + k
                                            : (static_cast<size_t>(gi) * n.mm_k + k) * n.mm_n + j;
            db[r * bw + at] = static_cast<T>(n.scale) * acc;
          }
    g.commit(g.tape, ib, op.rows * bw);
  }
}

uint64_t flops(const detail::ModelData& model, uint32_t i) {
  const detail::NodeData& n = model.nodes[i];
  return 2 * uint64_t(n.mm_g) * n.mm_m * n.mm_k * n.mm_n;
}

}  // namespace

extern const OpModule kMatMul = {
    "matmul",       detail::OpKind::kMatMul,
    verify,         kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
    nullptr,        nullptr,
    nullptr,        false,
    nullptr,        nullptr,
    nullptr,        flops,
};

}  // namespace siflow::ops
