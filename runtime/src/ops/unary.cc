// SPDX-License-Identifier: Apache-2.0
// Unary: y = f(x) elementwise, f one of the activations of UnaryKind (the reference values are
// computed in double and rounded once, kernels/reference/activation.hpp). JVP: t_out = f'(x) t.
// VJP: dx = dy f'(x). Runs on the reference or the simd kernels; after a dense layer the plan may
// run it in that layer's epilogue, and then the node computes only tangents.
#include <cstdio>

#include "kernels/reference/activation.hpp"
#include "math/elementary.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kUnary;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  if (node.unary() > fb::UnaryKind::MAX)
    return Status::error(StatusCode::kInvalidModel, "%s: unknown unary kind %d", check.where(),
                         static_cast<int>(node.unary()));
  // Kinds the schema names but this runtime does not compute yet (UnaryKind ends at kMish).
  if (static_cast<unsigned>(node.unary()) > static_cast<unsigned>(UnaryKind::kMish))
    return Status::error(StatusCode::kUnsupported,
                         "%s: unary kind %s is not supported by this runtime", check.where(),
                         fb::EnumNameUnaryKind(node.unary()));
  out->unary = static_cast<UnaryKind>(node.unary());
  if (!math::is_finite(out->alpha))
    return Status::error(StatusCode::kInvalidModel, "%s: alpha is not finite", check.where());
  out->width = check.width_of(out->inputs[0]);
  return Status();
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const FastKernels& k = *r.kernels;
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const float* x = r.values[a];
  float* y = r.values[id];
  const bool tangents = r.directions && r.tangents[id];
  // Values split on fixed chunk boundaries (parallel_values), tangents by rows; every value is
  // computed lane by lane, the same whichever range holds it.
  const size_t t_work = size_t{n.width} * (1 + r.directions);
  const size_t t_grain = kMinParallelValues > t_work ? kMinParallelValues / t_work : 1;
  if (kernel_of(r) == NodeKernel::kReference) {
    parallel_values(k.pool, r.rows * n.width, 4, [&](size_t v0, size_t v1) {
      reference::unary_forward(n.unary, n.alpha, x + v0, v1 - v0, y + v0);
    });
    if (tangents)
      parallel_rows(k.pool, r.rows, t_grain, [&](size_t r0, size_t r1) {
        const size_t skip = r0 * r.directions * n.width;
        reference::unary_jvp(n.unary, n.alpha, x + r0 * n.width, r1 - r0, n.width, r.directions,
                             r.tangents[a] + skip, r.tangents[id] + skip);
      });
    return;
  }
#if defined(SIFLOW_WITH_SIMD)
  const bool in_epilogue = r.node > 0 && k.fused && k.fused[r.node - 1];
  // With tangents the JVP's pass writes the values too (same bits; SiLU's sigmoid once).
  if (!in_epilogue && !tangents)
    parallel_values(k.pool, r.rows * n.width, 1, [&](size_t v0, size_t v1) {
      k.simd->unary_forward(n.unary, n.alpha, x + v0, 0, v1 - v0, 1, y + v0);
    });
  if (tangents)
    parallel_rows(k.pool, r.rows, t_grain, [&](size_t r0, size_t r1) {
      k.simd->unary_jvp(n.unary, n.alpha, x, r0, r1, n.width, r.directions, r.tangents[a],
                        r.tangents[id], in_epilogue ? nullptr : y);
    });
#endif
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const T* x = op.values[n.inputs[0]];
  for (size_t i = 0; i < op.rows * n.width; ++i)
    op.out[i] = static_cast<T>(reference::unary_value(n.unary, n.alpha, x[i]));
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0];
  if (!g.needs(g.tape, a)) return;
  const T* x = op.values[a];
  const size_t count = op.rows * n.width;
  T* dx = g.target(g.tape, a, count);
  for (size_t i = 0; i < count; ++i)
    dx[i] = g.dy[i] * static_cast<T>(reference::unary_slope(n.unary, n.alpha, x[i]));
  g.commit(g.tape, a, count);
}

const char* label(const NodeData& n) {
  // "unary:<kind>", from the one table of names (support/names.cc), made once per kind.
  static char labels[static_cast<size_t>(UnaryKind::kMish) + 1][32];
  static const bool filled = [] {
    for (unsigned k = 0; k <= static_cast<unsigned>(UnaryKind::kMish); ++k)
      std::snprintf(labels[k], sizeof labels[k], "unary:%s",
                    unary_kind_name(static_cast<UnaryKind>(k)));
    return true;
  }();
  (void)filled;
  return labels[static_cast<unsigned>(n.unary)];
}

// Elementwise: any layout, shared by the input and the output.
LayoutForm layout_form(const detail::ModelData&, uint32_t, NodeKernel) {
  return LayoutForm::kShared;
}

}  // namespace

extern const OpModule kUnary = {
    "unary",        detail::OpKind::kUnary,
    verify,         kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
    label,          nullptr,
    nullptr,        false,
    nullptr,        nullptr,
    layout_form,
};

}  // namespace siflow::ops
