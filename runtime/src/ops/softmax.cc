// SPDX-License-Identifier: Apache-2.0
// Softmax along per-sample `axis` (the last by default): y_k = exp(x_k - m) / sum_j exp(x_j - m)
// with m the largest x_j (no overflow for any finite input), in double with the runtime's exp
// and rounded once (the simd kernels, along the last axis only: the vector exp in float, the sum
// in double; kernels/simd/kernels.hpp states the bound). JVP: t_out = y (t - sum_j y_j t_j). VJP:
// dx = y (dy - sum_j y_j dy_j).
#include "math/elementary.hpp"
#include "ops/axis.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kSoftmax;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  if (!(s = resolve_axis(check, node, out)).ok()) return s;
  out->width = check.width_of(out->inputs[0]);
  return Status();
}

// Calls f(base) for each softmax group of a row: its elements are base + k inner, k < extent.
template <typename F>
void for_groups(const NodeData& n, F&& f) {
  for (uint32_t o = 0; o < n.outer; ++o)
    for (uint32_t i = 0; i < n.inner; ++i) f(static_cast<size_t>(o) * n.extent * n.inner + i);
}

template <typename T>
void softmax_rows(const NodeData& n, const T* x, size_t rows, T* y) {
  for (size_t r = 0; r < rows; ++r)
    for_groups(n, [&](size_t base) {
      const T* xr = x + r * n.width + base;
      T* yr = y + r * n.width + base;
      double m = xr[0];
      for (uint32_t k = 1; k < n.extent; ++k) {
        const double v = xr[static_cast<size_t>(k) * n.inner];
        m = v > m || v != v ? v : m;  // NaN wins, so it reaches the output
      }
      double sum = 0.0;
      for (uint32_t k = 0; k < n.extent; ++k)
        sum += math::exp(xr[static_cast<size_t>(k) * n.inner] - m);
      for (uint32_t k = 0; k < n.extent; ++k) {
        const size_t at = static_cast<size_t>(k) * n.inner;
        yr[at] = static_cast<T>(math::exp(xr[at] - m) / sum);
      }
    });
}

template <typename T>
void forward(const Operands<T>& op) {
  softmax_rows(*op.node, op.values[op.node->inputs[0]], op.rows, op.out);
}

// out = y (d - sum_j y_j d_j) over each group, for one row of y and d.
template <typename T>
void softmax_backward(const NodeData& n, const T* y, const T* d, T* out) {
  for_groups(n, [&](size_t base) {
    double dot = 0.0;
    for (uint32_t k = 0; k < n.extent; ++k) {
      const size_t at = base + static_cast<size_t>(k) * n.inner;
      dot += static_cast<double>(y[at]) * d[at];
    }
    for (uint32_t k = 0; k < n.extent; ++k) {
      const size_t at = base + static_cast<size_t>(k) * n.inner;
      out[at] = static_cast<T>(y[at] * (d[at] - dot));
    }
  });
}

#if defined(SIFLOW_WITH_SIMD)
// Softmax along the last axis (inner = 1: a row is `outer` contiguous groups) on the simd kernels,
// rows (and tangent rows) split over the threads.
void run_simd(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const simd::Kernels& k = *r.kernels->simd;
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const float* x = r.values[a];
  float* y = r.values[id];
  // Over the rows' groups (contiguous, each the same call whichever range holds it), so batch 1
  // uses every thread.
  parallel_rows(r.kernels->pool, r.rows * n.outer, (8192 + n.extent - 1) / n.extent,
                [&](size_t g0, size_t g1) {
                  k.softmax(x + g0 * n.extent, g1 - g0, n.extent, y + g0 * n.extent);
                });
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* ta = r.tangents[a];
  parallel_rows(r.kernels->pool, r.rows * r.directions, 1, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t)
      k.softmax_jvp(y + t / r.directions * n.width, n.outer, n.extent, ta + t * n.width,
                    ty + t * n.width);
  });
}
#endif

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
#if defined(SIFLOW_WITH_SIMD)
  if (kernel_of(r) == NodeKernel::kSimd && n.inner == 1) {
    run_simd(r);
    return;
  }
#endif
  const uint32_t id = r.node + 2, a = n.inputs[0];
  float* y = r.values[id];
  softmax_rows(n, r.values[a], r.rows, y);
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  for (size_t row = 0; row < r.rows; ++row)
    for (size_t p = 0; p < r.directions; ++p) {
      const size_t t = (row * r.directions + p) * n.width;
      softmax_backward(n, y + row * n.width, r.tangents[a] + t, ty + t);
    }
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0];
  if (!g.needs(g.tape, a)) return;
  T* dx = g.target(g.tape, a, op.rows * n.width);
  for (size_t r = 0; r < op.rows; ++r)
    softmax_backward(n, op.out + r * n.width, g.dy + r * n.width, dx + r * n.width);
  g.commit(g.tape, a, op.rows * n.width);
}

}  // namespace

extern const OpModule kSoftmax = {
    "softmax",      detail::OpKind::kSoftmax,
    verify,         kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
