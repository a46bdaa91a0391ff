// SPDX-License-Identifier: Apache-2.0
// The normalisation GroupNorm and LayerNorm share (LayerNorm is one group whose channels are one
// value wide): the reference forward, JVP and VJP (statistics in double) and the node run that
// puts rows on the simd kernel (kernels/simd/kernels_norm.inc) when the plan chose it.
#pragma once

#include "math/elementary.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops::normalization {

// Geometry of one row of `width` values: `groups` blocks of `block` values, a channel (one gamma
// and beta) being `plane` consecutive values.
struct Blocks {
  uint32_t width, groups, block, plane;
};

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

// y = gamma[c] (x - mean) / s + beta[c] per block, rounded once from double.
template <typename T>
void forward_rows(const Blocks& b, float epsilon, const T* x, size_t rows, const T* gamma,
                  const T* beta, T* y) {
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t g = 0; g < b.groups; ++g) {
      const size_t base = r * b.width + size_t{g} * b.block;
      double mean, inv;
      moments(x + base, b.block, epsilon, &mean, &inv);
      for (uint32_t k = 0; k < b.block; ++k) {
        const uint32_t c = (g * b.block + k) / b.plane;
        double v = (x[base + k] - mean) * inv;
        if (gamma) v *= gamma[c];
        if (beta) v += beta[c];
        y[base + k] = static_cast<T>(v);
      }
    }
}

// t_out = gamma / s (t - mean(t) - xhat mean(xhat t)) per block, for rows [r0, r1).
inline void jvp_rows(const Blocks& b, float epsilon, const float* gamma, const float* x, size_t r0,
                     size_t r1, size_t directions, const float* t_in, float* t_out) {
  for (size_t r = r0; r < r1; ++r)
    for (uint32_t g = 0; g < b.groups; ++g) {
      const size_t off = size_t{g} * b.block;
      const float* xb = x + r * b.width + off;
      double mean, inv;
      moments(xb, b.block, epsilon, &mean, &inv);
      for (size_t p = 0; p < directions; ++p) {
        const float* ti = t_in + (r * directions + p) * b.width + off;
        float* to = t_out + (r * directions + p) * b.width + off;
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
          if (gamma) v *= gamma[(off + k) / b.plane];
          to[k] = static_cast<float>(v);
        }
      }
    }
}

// dgamma += sum dy xhat, dbeta += sum dy, dx = (h - mean(h) - xhat mean(h xhat)) / s with
// h = dy gamma.
template <typename T>
void vjp_rows(const Blocks& b, float epsilon, const Operands<T>& op, const Gradients<T>& g) {
  const uint32_t in0 = op.node->inputs[0];
  const T* a = op.values[in0];
  T* dx = g.needs(g.tape, in0) ? g.target(g.tape, in0, op.rows * b.width) : nullptr;
  for (size_t r = 0; r < op.rows; ++r)
    for (uint32_t grp = 0; grp < b.groups; ++grp) {
      const size_t off = size_t{grp} * b.block, base = r * b.width + off;
      const T* xb = a + base;
      const T* dyb = g.dy + base;
      double mean, inv;
      moments(xb, b.block, epsilon, &mean, &inv);
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
  if (dx) g.commit(g.tape, in0, op.rows * b.width);
}

// The node's forward and, with run.directions, its JVP, split over the threads (a row's outputs
// do not depend on the split): rows on the reference kernels, (row, part of the groups) units on
// the simd kernels. `nhwc`: the rows are NHWC (GroupNorm in a plan that laid its tensors out so;
// simd kernels only).
inline void run(const NodeRun& r, const Blocks& b, bool nhwc = false) {
  (void)nhwc;  // only the simd kernels have NHWC forms (a build without them never plans NHWC)
  const detail::NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const float* x = r.values[a];
  float* y = r.values[id];
  float* ty = r.directions ? r.tangents[id] : nullptr;
  const float* ta = ty ? r.tangents[a] : nullptr;
#if defined(SIFLOW_WITH_SIMD)
  if (kernel_of(r) == NodeKernel::kSimd) {
    const simd::Kernels& k = *r.kernels->simd;
    const simd::Norm norm{n.gamma, n.beta, b.width, b.groups, b.plane, n.epsilon, 0, 0};
    // (row, part) units, a part being norm_groups_per_part groups (NHWC: whole vectors of
    // channels), so batch 1 and small blocks use every thread: a group's outputs are the same
    // bits whichever call covers it. Ranges hold at least kMinParallelValues values' work.
    const uint32_t per_part = simd::norm_groups_per_part(norm, nhwc);
    const size_t parts = (b.groups + per_part - 1) / per_part;
    auto over_parts = [&](size_t work_per_value, const auto& fn) {
      const size_t unit_work = (size_t{b.width} / parts) * work_per_value;
      parallel_rows(r.kernels->pool, r.rows * parts,
                    (kMinParallelValues + unit_work - 1) / unit_work, [&](size_t u0, size_t u1) {
                      for (size_t u = u0; u < u1;) {
                        const size_t row = u / parts, p0 = u % parts;
                        if (p0 == 0 && u1 - u >= parts) {  // whole rows
                          const size_t count = (u1 - u) / parts;
                          fn(row, row + count, 0u, b.groups);
                          u += count * parts;
                          continue;
                        }
                        const size_t p1 = parts - p0 < u1 - u ? parts : p0 + (u1 - u);
                        const uint32_t g1 = static_cast<uint32_t>(p1 * per_part);
                        fn(row, row + 1, static_cast<uint32_t>(p0 * per_part),
                           g1 < b.groups ? g1 : b.groups);
                        u += p1 - p0;
                      }
                    });
    };
    over_parts(1, [&](size_t r0, size_t r1, uint32_t g0, uint32_t g1) {
      simd::Norm part = norm;
      part.g0 = g0;
      part.g1 = g1;
      if (nhwc)
        k.norm_forward_nhwc(part, x, r0, r1, y);
      else
        k.norm_forward(part, x, r0, r1, y);
    });
    if (ty)
      over_parts(1 + r.directions, [&](size_t r0, size_t r1, uint32_t g0, uint32_t g1) {
        simd::Norm part = norm;
        part.g0 = g0;
        part.g1 = g1;
        if (nhwc)
          k.norm_jvp_nhwc(part, x, r0, r1, r.directions, ta, ty);
        else
          k.norm_jvp(part, x, r0, r1, r.directions, ta, ty);
      });
    return;
  }
#endif
  parallel_rows(r.kernels->pool, r.rows, 1, [&](size_t r0, size_t r1) {
    forward_rows(b, n.epsilon, x + r0 * b.width, r1 - r0, n.gamma, n.beta, y + r0 * b.width);
  });
  if (ty)
    parallel_rows(r.kernels->pool, r.rows, 1, [&](size_t r0, size_t r1) {
      jvp_rows(b, n.epsilon, n.gamma, x, r0, r1, r.directions, ta, ty);
    });
}

}  // namespace siflow::ops::normalization
