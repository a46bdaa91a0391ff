// SPDX-License-Identifier: Apache-2.0
// LayerNorm over the feature axis: y = gamma * xhat + beta, xhat = (x - mean) / s,
// s = sqrt(var + epsilon), gamma and beta optional [width]. Row statistics in double.
// JVP: dy = gamma / s * (dx - mean(dx) - xhat * mean(xhat * dx)).
// VJP: dgamma = sum_r dy xhat, dbeta = sum_r dy, dx = (h - mean(h) - xhat mean(h xhat)) / s with
// h = dy gamma. Cheap next to dense layers: runs on the caller's thread.
#include "math/elementary.hpp"
#include "ops/op.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kLayerNorm;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  out->width = check.width_of(out->inputs[0]);
  if (!(out->epsilon > 0.0f) || !math::is_finite(out->epsilon))
    return Status::error(StatusCode::kInvalidModel, "%s: epsilon %g must be positive",
                         check.where(), static_cast<double>(out->epsilon));
  if (!(s = check.weights("gamma", node.gamma(), out->width, false, &out->gamma)).ok()) return s;
  return check.weights("beta", node.beta(), out->width, false, &out->beta);
}

// The mean of a row and 1 / sqrt(variance + epsilon), in double.
template <typename T>
void row_moments(const T* x, uint32_t width, double epsilon, double* mean, double* inv) {
  double m = 0.0, var = 0.0;
  for (uint32_t c = 0; c < width; ++c) m += x[c];
  m /= width;
  for (uint32_t c = 0; c < width; ++c) var += (x[c] - m) * (x[c] - m);
  var /= width;
  *mean = m;
  *inv = 1.0 / math::sqrt(var + epsilon);
}

template <typename T>
void forward_rows(const T* x, size_t rows, uint32_t width, const T* gamma, const T* beta,
                  float epsilon, T* y) {
  for (size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * width;
    double mean, inv;
    row_moments(xr, width, epsilon, &mean, &inv);
    for (uint32_t k = 0; k < width; ++k) {
      double v = (xr[k] - mean) * inv;
      if (gamma) v *= gamma[k];
      if (beta) v += beta[k];
      y[r * width + k] = static_cast<T>(v);
    }
  }
}

void jvp_rows(const float* x, size_t rows, uint32_t width, const float* gamma, float epsilon,
              size_t directions, const float* t_in, float* t_out) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    double mean, inv;
    row_moments(xr, width, epsilon, &mean, &inv);
    for (size_t p = 0; p < directions; ++p) {
      const float* ti = t_in + (r * directions + p) * width;
      float* to = t_out + (r * directions + p) * width;
      double mean_dx = 0.0, mean_xhat_dx = 0.0;
      for (uint32_t k = 0; k < width; ++k) {
        mean_dx += ti[k];
        mean_xhat_dx += (xr[k] - mean) * inv * ti[k];
      }
      mean_dx /= width;
      mean_xhat_dx /= width;
      for (uint32_t k = 0; k < width; ++k) {
        const double xhat = (xr[k] - mean) * inv;
        double v = inv * (ti[k] - mean_dx - xhat * mean_xhat_dx);
        if (gamma) v *= gamma[k];
        to[k] = static_cast<float>(v);
      }
    }
  }
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  forward_rows(r.values[a], r.rows, n.width, n.gamma, n.beta, n.epsilon, r.values[id]);
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (ty)
    jvp_rows(r.values[a], r.rows, n.width, n.gamma, n.epsilon, r.directions, r.tangents[a], ty);
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  forward_rows(op.values[n.inputs[0]], op.rows, n.width, op.gamma, op.beta, n.epsilon, op.out);
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t in0 = n.inputs[0], width = n.width;
  const T* a = op.values[in0];
  T* dx = g.needs(g.tape, in0) ? g.target(g.tape, in0, op.rows * width) : nullptr;
  for (size_t r = 0; r < op.rows; ++r) {
    const T* xr = a + r * width;
    const T* dyr = g.dy + r * width;
    double mean, inv;
    row_moments(xr, width, n.epsilon, &mean, &inv);
    double mean_h = 0.0, mean_hx = 0.0;
    for (uint32_t c = 0; c < width; ++c) {
      const double xhat = (xr[c] - mean) * inv;
      const double h = op.gamma ? dyr[c] * static_cast<double>(op.gamma[c]) : dyr[c];
      mean_h += h;
      mean_hx += h * xhat;
      if (g.d_gamma) g.d_gamma[c] += static_cast<T>(dyr[c] * xhat);
      if (g.d_beta) g.d_beta[c] += dyr[c];
    }
    mean_h /= width;
    mean_hx /= width;
    if (dx)
      for (uint32_t c = 0; c < width; ++c) {
        const double xhat = (xr[c] - mean) * inv;
        const double h = op.gamma ? dyr[c] * static_cast<double>(op.gamma[c]) : dyr[c];
        dx[r * width + c] = static_cast<T>((h - mean_h - xhat * mean_hx) * inv);
      }
  }
  if (dx) g.commit(g.tape, in0, op.rows * width);
}

}  // namespace

extern const OpModule kLayerNorm = {
    "layer_norm",   detail::OpKind::kLayerNorm,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
