// SPDX-License-Identifier: Apache-2.0
// GroupNorm over a per-sample [C, ...] tensor: the C channels in `groups` equal groups, each
// group (its channels and every position, one contiguous block in NCHW) normalised by its own
// mean and 1 / sqrt(var + epsilon), then y = gamma[c] xhat + beta[c] (gamma, beta optional [C]).
// Statistics in double. The JVP differentiates the normalisation itself (the statistics move
// with the tangent): t_out = gamma / s (t - mean(t) - xhat mean(xhat t)) per group.
// VJP: dgamma = sum dy xhat, dbeta = sum dy, dx = (h - mean(h) - xhat mean(h xhat)) / s, h = dy
// gamma.
#include "math/elementary.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kGroupNorm;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  out->width = check.width_of(out->inputs[0]);
  out->in_shape = check.shape_of(out->inputs[0]);
  out->shape = out->in_shape;
  const uint32_t channels = out->in_shape.dims[0];
  out->groups = node.groups();
  if (out->groups == 0 || channels % out->groups != 0)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: groups = %u does not divide the %u channels of input shape %s",
                         check.where(), out->groups, channels,
                         detail::shape_text(out->in_shape).text);
  if (!(out->epsilon > 0.0f) || !math::is_finite(out->epsilon))
    return Status::error(StatusCode::kInvalidModel, "%s: epsilon %g must be positive",
                         check.where(), static_cast<double>(out->epsilon));
  if (!(s = check.weights("gamma", node.gamma(), channels, false, &out->gamma)).ok()) return s;
  return check.weights("beta", node.beta(), channels, false, &out->beta);
}

// Geometry of one row: `groups` blocks of `block` values, each of block / plane channels.
struct Blocks {
  uint32_t groups, block, plane;
};

Blocks blocks_of(const NodeData& n) {
  const uint32_t plane = n.width / n.in_shape.dims[0];
  return Blocks{n.groups, n.width / n.groups, plane};
}

// The mean of a block and 1 / sqrt(variance + epsilon), in double.
template <typename T>
void moments(const T* x, uint32_t count, double epsilon, double* mean, double* inv) {
  double m = 0.0, var = 0.0;
  for (uint32_t k = 0; k < count; ++k) m += x[k];
  m /= count;
  for (uint32_t k = 0; k < count; ++k) var += (x[k] - m) * (x[k] - m);
  var /= count;
  *mean = m;
  *inv = 1.0 / math::sqrt(var + epsilon);
}

template <typename T>
void forward_rows(const NodeData& n, const T* x, size_t rows, const T* gamma, const T* beta, T* y) {
  const Blocks b = blocks_of(n);
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t g = 0; g < b.groups; ++g) {
      const size_t base = r * n.width + size_t{g} * b.block;
      double mean, inv;
      moments(x + base, b.block, n.epsilon, &mean, &inv);
      for (uint32_t k = 0; k < b.block; ++k) {
        const uint32_t c = (g * b.block + k) / b.plane;
        double v = (x[base + k] - mean) * inv;
        if (gamma) v *= gamma[c];
        if (beta) v += beta[c];
        y[base + k] = static_cast<T>(v);
      }
    }
}

void jvp_rows(const NodeData& n, const float* x, size_t r0, size_t r1, size_t directions,
              const float* t_in, float* t_out) {
  const Blocks b = blocks_of(n);
  for (size_t r = r0; r < r1; ++r)
    for (uint32_t g = 0; g < b.groups; ++g) {
      const size_t off = size_t{g} * b.block;
      const float* xb = x + r * n.width + off;
      double mean, inv;
      moments(xb, b.block, n.epsilon, &mean, &inv);
      for (size_t p = 0; p < directions; ++p) {
        const float* ti = t_in + (r * directions + p) * n.width + off;
        float* to = t_out + (r * directions + p) * n.width + off;
        double mean_t = 0.0, mean_xt = 0.0;
        for (uint32_t k = 0; k < b.block; ++k) {
          mean_t += ti[k];
          mean_xt += (xb[k] - mean) * inv * ti[k];
        }
        mean_t /= b.block;
        mean_xt /= b.block;
        for (uint32_t k = 0; k < b.block; ++k) {
          const double xhat = (xb[k] - mean) * inv;
          double v = inv * (ti[k] - mean_t - xhat * mean_xt);
          if (n.gamma) v *= n.gamma[(off + k) / b.plane];
          to[k] = static_cast<float>(v);
        }
      }
    }
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const float* x = r.values[a];
  float* y = r.values[id];
  parallel_rows(r.kernels->pool, r.rows, 1, [&](size_t r0, size_t r1) {
    forward_rows(n, x + r0 * n.width, r1 - r0, n.gamma, n.beta, y + r0 * n.width);
  });
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* ta = r.tangents[a];
  parallel_rows(r.kernels->pool, r.rows, 1,
                [&](size_t r0, size_t r1) { jvp_rows(n, x, r0, r1, r.directions, ta, ty); });
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  forward_rows(n, op.values[n.inputs[0]], op.rows, op.gamma, op.beta, op.out);
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t in0 = n.inputs[0], width = n.width;
  const Blocks b = blocks_of(n);
  const T* a = op.values[in0];
  T* dx = g.needs(g.tape, in0) ? g.target(g.tape, in0, op.rows * width) : nullptr;
  for (size_t r = 0; r < op.rows; ++r)
    for (uint32_t grp = 0; grp < b.groups; ++grp) {
      const size_t off = size_t{grp} * b.block, base = r * width + off;
      const T* xb = a + base;
      const T* dyb = g.dy + base;
      double mean, inv;
      moments(xb, b.block, n.epsilon, &mean, &inv);
      double mean_h = 0.0, mean_hx = 0.0;
      for (uint32_t k = 0; k < b.block; ++k) {
        const uint32_t c = static_cast<uint32_t>((off + k) / b.plane);
        const double xhat = (xb[k] - mean) * inv;
        const double h = op.gamma ? dyb[k] * static_cast<double>(op.gamma[c]) : dyb[k];
        mean_h += h;
        mean_hx += h * xhat;
        if (g.d_gamma) g.d_gamma[c] += static_cast<T>(dyb[k] * xhat);
        if (g.d_beta) g.d_beta[c] += dyb[k];
      }
      mean_h /= b.block;
      mean_hx /= b.block;
      if (dx)
        for (uint32_t k = 0; k < b.block; ++k) {
          const uint32_t c = static_cast<uint32_t>((off + k) / b.plane);
          const double xhat = (xb[k] - mean) * inv;
          const double h = op.gamma ? dyb[k] * static_cast<double>(op.gamma[c]) : dyb[k];
          dx[base + k] = static_cast<T>((h - mean_h - xhat * mean_hx) * inv);
        }
    }
  if (dx) g.commit(g.tape, in0, op.rows * width);
}

}  // namespace

extern const OpModule kGroupNorm = {
    "group_norm",   detail::OpKind::kGroupNorm,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
