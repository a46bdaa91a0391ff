// SPDX-License-Identifier: Apache-2.0
// Graph execution. Each node reads tensors with smaller ids (the loader proved it), so one pass
// in node order computes everything. Dense layers and activations run on the kernels the plan
// chose per node, over row ranges on the plan's threads; the other ops are cheap and run on the
// caller's thread with the reference kernels.
#include "net/executor.hpp"

#include <cstring>

#include "kernels/reference/ops.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/xnnpack/xnn_dense.hpp"
#endif

namespace siflow {

using detail::ModelData;
using detail::NodeData;
using detail::OpKind;

namespace {

// Rows a thread's range is a multiple of: whole GEMM tiles of every simd variant (8, 6, 2 rows).
constexpr size_t kGrain = 24;

// Rows run on the pool (or inline), through `fn(r0, r1)`.
template <typename Fn>
void rows_on(const NetKernels& k, size_t rows, const Fn& fn) {
  parallel_rows(k.pool, rows, kGrain, fn);
}

void fully_connected(const ModelData& model, const NetBuffers& b, uint32_t i, size_t rows,
                     size_t directions, bool identity_seeds) {
  const NodeData& n = model.nodes[i];
  const NetKernels& k = b.kernels;
  const uint32_t id = i + 2, a = n.inputs[0];
  const uint32_t in = model.tensors[a].width;
  const float* x = b.values[a];
  float* y = b.values[id];
  float* ty = directions ? b.tangents[id] : nullptr;
  const float* ta = directions ? b.tangents[a] : nullptr;
  const size_t trows = rows * directions;
  const NodeKernel kernel = k.node ? k.node[i] : NodeKernel::kReference;
  if (kernel == NodeKernel::kReference) {
    rows_on(k, rows, [&](size_t r0, size_t r1) {
      reference::fully_connected(x + r0 * in, r1 - r0, in, n.weight, n.bias, n.width,
                                 y + r0 * n.width);
    });
    // Tangents go through the same weights without the bias.
    if (ty)
      rows_on(k, trows, [&](size_t r0, size_t r1) {
        reference::fully_connected(ta + r0 * in, r1 - r0, in, n.weight, nullptr, n.width,
                                   ty + r0 * n.width);
      });
    return;
  }
#if defined(SIFLOW_WITH_SIMD)
  const bool from_columns = ty && identity_seeds && k.seed_column[a] >= 0;
#if defined(SIFLOW_WITH_XNNPACK)
  if (kernel == NodeKernel::kXnnpack) {
    xnn::run_dense(k.xnn, i, x, rows, y, false);
    if (ty && !from_columns) xnn::run_dense(k.xnn, i, ta, trows, ty, true);
  } else
#endif
  {
    // simd: the activation of a fused following Unary node runs in the epilogue; its input
    // (this node's output) is still written when tangents need it.
    const bool fused = k.fused[i];
    const NodeData* next = fused ? &model.nodes[i + 1] : nullptr;
    simd::Dense d{n.packed,
                  in,
                  n.width,
                  true,
                  fused ? next->unary : UnaryKind::kIdentity,
                  fused ? next->alpha : 0.0f};
    float* post = fused ? b.values[id + 1] : nullptr;
    float* pre = !fused || directions ? y : nullptr;
    rows_on(k, rows, [&](size_t r0, size_t r1) { k.simd->dense(d, x, r0, r1, pre, post); });
    if (ty && !from_columns) {
      const simd::Dense dt{n.packed, in, n.width, false, UnaryKind::kIdentity, 0.0f};
      rows_on(k, trows, [&](size_t r0, size_t r1) { k.simd->dense(dt, ta, r0, r1, ty, nullptr); });
    }
  }
  if (from_columns) {
    // The tangent of direction p is column (c + p) of W, the same for every row: no multiply.
    const uint32_t c = static_cast<uint32_t>(k.seed_column[a]);
    for (size_t p = 0; p < directions; ++p)
      for (uint32_t o = 0; o < n.width; ++o) ty[p * n.width + o] = n.weight[size_t{o} * in + c + p];
    const size_t block = directions * n.width;
    for (size_t r = 1; r < rows; ++r) std::memcpy(ty + r * block, ty, block * sizeof(float));
  }
#else
  (void)identity_seeds;
#endif
}

void unary(const ModelData& model, const NetBuffers& b, uint32_t i, size_t rows,
           size_t directions) {
  const NodeData& n = model.nodes[i];
  const NetKernels& k = b.kernels;
  const uint32_t id = i + 2, a = n.inputs[0];
  const float* x = b.values[a];
  float* y = b.values[id];
  const NodeKernel kernel = k.node ? k.node[i] : NodeKernel::kReference;
  const bool in_epilogue = i > 0 && k.fused && k.fused[i - 1];
  if (kernel == NodeKernel::kReference) {
    rows_on(k, rows, [&](size_t r0, size_t r1) {
      reference::unary_forward(n.unary, n.alpha, x + r0 * n.width, (r1 - r0) * n.width,
                               y + r0 * n.width);
    });
    if (directions && b.tangents[id])
      rows_on(k, rows, [&](size_t r0, size_t r1) {
        const size_t skip = r0 * directions * n.width;
        reference::unary_jvp(n.unary, n.alpha, x + r0 * n.width, r1 - r0, n.width, directions,
                             b.tangents[a] + skip, b.tangents[id] + skip);
      });
    return;
  }
#if defined(SIFLOW_WITH_SIMD)
  if (!in_epilogue)
    rows_on(k, rows, [&](size_t r0, size_t r1) {
      k.simd->unary_forward(n.unary, n.alpha, x, r0, r1, n.width, y);
    });
  if (directions && b.tangents[id])
    rows_on(k, rows, [&](size_t r0, size_t r1) {
      k.simd->unary_jvp(n.unary, n.alpha, x, r0, r1, n.width, directions, b.tangents[a],
                        b.tangents[id]);
    });
#else
  (void)in_epilogue;
#endif
}

}  // namespace

void find_seed_columns(const ModelData& model, int32_t* seed_column) {
  seed_column[0] = 0;
  seed_column[1] = -1;
  for (uint32_t i = 0; i < model.node_count; ++i) {
    const NodeData& n = model.nodes[i];
    int32_t column = -1;
    if (n.op == OpKind::kConcat) {
      uint32_t col = 0, with_tangent = 0;
      for (uint32_t j = 0; j < n.input_count; ++j) {
        const uint32_t in = n.inputs[j];
        if (model.tensors[in].depends_on_x) {
          ++with_tangent;
          column = seed_column[in] < 0 ? -1 : static_cast<int32_t>(col) + seed_column[in];
        }
        col += model.tensors[in].width;
      }
      if (with_tangent != 1) column = -1;
    }
    seed_column[i + 2] = column;
  }
}

void run_network(const ModelData& model, const NetBuffers& buffers, const float* x, size_t rows,
                 size_t directions, bool identity_seeds) {
  float** values = buffers.values;
  float** tangents = buffers.tangents;
  values[0] = const_cast<float*>(x);  // read only: no node writes tensor 0
  const size_t trows = rows * directions;
  for (uint32_t i = 0; i < model.node_count; ++i) {
    const NodeData& n = model.nodes[i];
    const uint32_t id = i + 2;
    float* y = values[id];
    float* ty = directions ? tangents[id] : nullptr;
    const uint32_t a = n.input_count ? n.inputs[0] : 0;
    const uint32_t a_width = model.tensors[a].width;
    const float* ta = directions ? tangents[a] : nullptr;
    switch (n.op) {
      case OpKind::kFullyConnected:
        fully_connected(model, buffers, i, rows, directions, identity_seeds);
        break;
      case OpKind::kUnary:
        unary(model, buffers, i, rows, directions);
        break;
      case OpKind::kConcat: {
        uint32_t col = 0;
        for (uint32_t k = 0; k < n.input_count; ++k) {
          const uint32_t in = n.inputs[k];
          const uint32_t w = model.tensors[in].width;
          for (size_t r = 0; r < rows; ++r)
            std::memcpy(y + r * n.width + col, values[in] + r * w, w * sizeof(float));
          if (ty) {
            const float* t_in = tangents[in];
            for (size_t r = 0; r < trows; ++r) {
              float* dst = ty + r * n.width + col;
              if (t_in)
                std::memcpy(dst, t_in + r * w, w * sizeof(float));
              else
                std::memset(dst, 0, w * sizeof(float));
            }
          }
          col += w;
        }
        break;
      }
      case OpKind::kAdd:
      case OpKind::kMul: {
        const bool multiply = n.op == OpKind::kMul;
        const bool shared = n.constant != nullptr;
        const float* b = shared ? n.constant : values[n.inputs[1]];
        const uint32_t b_width = shared ? n.constant_width : model.tensors[n.inputs[1]].width;
        const float* tb = (!shared && directions) ? tangents[n.inputs[1]] : nullptr;
        reference::binary_forward(multiply, values[a], a_width, b, b_width, shared, rows, y);
        if (ty)
          reference::binary_jvp(multiply, values[a], a_width, ta, b, b_width, tb, shared, rows,
                                directions, ty);
        break;
      }
      case OpKind::kLayerNorm:
        reference::layer_norm_forward(values[a], rows, n.width, n.gamma, n.beta, n.epsilon, y);
        if (ty)
          reference::layer_norm_jvp(values[a], rows, n.width, n.gamma, n.epsilon, directions, ta,
                                    ty);
        break;
    }
  }
}

void exact_divergence(const float* t_out, size_t rows, uint32_t dim, double* div) {
  for (size_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (uint32_t p = 0; p < dim; ++p) sum += t_out[(r * dim + p) * dim + p];
    div[r] = sum;
  }
}

void hutchinson_divergence(const float* z, const float* t_out, size_t rows, uint32_t dim,
                           size_t probes, double* div) {
  for (size_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (size_t p = 0; p < probes; ++p) {
      const size_t base = (r * probes + p) * dim;
      for (uint32_t k = 0; k < dim; ++k) sum += static_cast<double>(z[base + k]) * t_out[base + k];
    }
    div[r] = sum / static_cast<double>(probes);
  }
}

void fill_identity_seeds(float* seeds, size_t rows, uint32_t dim) {
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t p = 0; p < dim; ++p)
      for (uint32_t k = 0; k < dim; ++k) seeds[(r * dim + p) * dim + k] = p == k ? 1.0f : 0.0f;
}

}  // namespace siflow
