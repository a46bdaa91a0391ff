// SPDX-License-Identifier: Apache-2.0
// FullyConnected: y = x W^T + b, W [out][in] (PyTorch's nn.Linear layout), b optional.
// JVP: tangents through the same weights without the bias. VJP: dx = dy W, dW = dy^T x,
// db = sum over rows of dy. Runs on the reference GEMM, the simd kernels (weights packed at load,
// the following activation fused into the epilogue when the plan says so) or XNNPACK.
#include <cstring>

#include "kernels/reference/dense.hpp"
#include "math/half.hpp"
#include "math/reduced.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/xnnpack/xnn_dense.hpp"
#endif

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kFullyConnected;
  Status s = check.expect_inputs(*out, 1, 1);
  if (!s.ok()) return s;
  const uint32_t in_width = check.width_of(out->inputs[0]);
  const fb::Weights* w = node.weight();
  if (!w || !w->shape() || w->shape()->size() != 2)
    return Status::error(StatusCode::kInvalidModel, "%s: weight must have shape [out, in]",
                         check.where());
  const uint32_t rows = w->shape()->Get(0), cols = w->shape()->Get(1);
  if (cols != in_width)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: weight shape [%u,%u] does not match input width %u", check.where(),
                         rows, cols, in_width);
  if (!(s = check.output_width(rows, &out->width)).ok()) return s;
  out->shape = detail::flat_shape(out->width);  // a dense layer's output is flat
  if (!(s = check.weights("weight", w, size_t{rows} * cols, true, &out->weight)).ok()) return s;
  return check.weights("bias", node.bias(), rows, false, &out->bias);
}

uint64_t packed_floats(const detail::ModelData& model, uint32_t i) {
#if defined(SIFLOW_WITH_SIMD)
  const NodeData& n = model.nodes[i];
  return simd::packed_floats(model.tensors[n.inputs[0]].width, n.width);
#else
  (void)model, (void)i;
  return 0;
#endif
}

void pack(const detail::ModelData& model, NodeData* n, float* dst) {
#if defined(SIFLOW_WITH_SIMD)
  simd::pack_weights(n->weight, n->bias, model.tensors[n->inputs[0]].width, n->width, dst);
  n->packed = dst;
#else
  (void)model, (void)n, (void)dst;
#endif
}

// Reduced precision (docs/math.md): simd kernels take simd::pack_reduced's panels; the reference
// kernel takes, for bf16, the weights [out][in] as bfloat16 followed (64-byte aligned) by the
// bias with subnormals flushed, and for fp16 and int8 the decoded float weights [out][in] (fp16
// rounds the activations as it reads them).
size_t reference_weight_bytes(Precision precision, size_t count) {
  const size_t bytes = count * (precision == Precision::kBf16 ? 2 : 4);
  return (bytes + 63) / 64 * 64;
}

size_t reduced_bytes(const detail::ModelData& model, uint32_t i, Precision precision,
                     NodeKernel kernel) {
  const NodeData& n = model.nodes[i];
  const uint32_t in = model.tensors[n.inputs[0]].width;
  if (precision == Precision::kFp32) return 0;
#if defined(SIFLOW_WITH_SIMD)
  if (kernel != NodeKernel::kReference) return simd::reduced_bytes(precision, in, n.width);
#else
  (void)kernel;
#endif
  return reference_weight_bytes(precision, size_t{n.width} * in) +
         (precision == Precision::kBf16 ? size_t{n.width} * 4 : 0);
}

void reduce(const detail::ModelData& model, uint32_t i, Precision precision, NodeKernel kernel,
            void* dst) {
  const NodeData& n = model.nodes[i];
  const uint32_t in = model.tensors[n.inputs[0]].width;
  const size_t count = size_t{n.width} * in;
#if defined(SIFLOW_WITH_SIMD)
  if (kernel != NodeKernel::kReference) {
    simd::pack_reduced(precision, n.weight, n.bias, in, n.width, dst);
    return;
  }
#else
  (void)kernel;
#endif
  switch (precision) {
    case Precision::kFp32:
      return;
    case Precision::kBf16: {
      uint16_t* w = static_cast<uint16_t*>(dst);
      for (size_t k = 0; k < count; ++k) w[k] = detail::float_to_bf16(n.weight[k]);
      float* bias = reinterpret_cast<float*>(static_cast<uint8_t*>(dst) +
                                             reference_weight_bytes(precision, count));
      for (uint32_t o = 0; o < n.width; ++o)
        bias[o] = n.bias ? detail::flush_subnormal(n.bias[o]) : 0.0f;
      return;
    }
    case Precision::kFp16: {
      float* w = static_cast<float*>(dst);
      for (size_t k = 0; k < count; ++k)
        w[k] = detail::half_to_float(detail::float_to_half(n.weight[k]));
      return;
    }
    case Precision::kInt8: {
      float* w = static_cast<float*>(dst);
      for (uint32_t o = 0; o < n.width; ++o) {
        const float* row = n.weight + size_t{o} * in;
        const float scale = detail::int8_scale(row, in);
        for (uint32_t c = 0; c < in; ++c)
          w[size_t{o} * in + c] = scale * static_cast<float>(detail::int8_quantize(row[c], scale));
      }
      return;
    }
  }
}

// The reference kernel on reduced weights: forward, then tangents without the bias.
void run_reference_reduced(const NodeRun& r, const void* reduced) {
  const detail::ModelData& model = *r.model;
  const NodeData& n = model.nodes[r.node];
  const FastKernels& k = *r.kernels;
  const uint32_t id = r.node + 2, a = n.inputs[0], in = model.tensors[a].width;
  const size_t count = size_t{n.width} * in;
  const bool bf16 = k.precision == Precision::kBf16;
  const float* bias =
      bf16 ? reinterpret_cast<const float*>(static_cast<const uint8_t*>(reduced) +
                                            reference_weight_bytes(k.precision, count))
           : n.bias;
  auto dense = [&](const float* x, size_t rows, bool with_bias, float* y) {
    parallel_rows(k.pool, rows, kRowGrain, [&](size_t r0, size_t r1) {
      if (bf16)
        reference::fully_connected_bf16(
            x + r0 * in, r1 - r0, in, static_cast<const uint16_t*>(reduced),
            with_bias && n.bias ? bias : nullptr, n.width, y + r0 * n.width);
      else if (k.precision == Precision::kFp16)
        reference::fully_connected_fp16(x + r0 * in, r1 - r0, in,
                                        static_cast<const float*>(reduced),
                                        with_bias ? bias : nullptr, n.width, y + r0 * n.width);
      else
        reference::fully_connected(x + r0 * in, r1 - r0, in, static_cast<const float*>(reduced),
                                   with_bias ? bias : nullptr, n.width, y + r0 * n.width);
    });
  };
  dense(r.values[a], r.rows, true, r.values[id]);
  if (r.directions) dense(r.tangents[a], r.rows * r.directions, false, r.tangents[id]);
}

void run(const NodeRun& r) {
  const detail::ModelData& model = *r.model;
  const NodeData& n = model.nodes[r.node];
  const FastKernels& k = *r.kernels;
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = model.tensors[a].width;
  const float* x = r.values[a];
  float* y = r.values[id];
  float* ty = r.directions ? r.tangents[id] : nullptr;
  const float* ta = r.directions ? r.tangents[a] : nullptr;
  const size_t trows = r.rows * r.directions;
  const NodeKernel kernel = kernel_of(r);
  const void* reduced = k.reduced ? k.reduced[r.node] : nullptr;
  if (reduced && kernel == NodeKernel::kReference) {
    run_reference_reduced(r, reduced);
    return;
  }
  if (kernel == NodeKernel::kReference) {
    parallel_rows(k.pool, r.rows, kRowGrain, [&](size_t r0, size_t r1) {
      reference::fully_connected(x + r0 * in, r1 - r0, in, n.weight, n.bias, n.width,
                                 y + r0 * n.width);
    });
    // Tangents go through the same weights without the bias.
    if (ty)
      parallel_rows(k.pool, trows, kRowGrain, [&](size_t r0, size_t r1) {
        reference::fully_connected(ta + r0 * in, r1 - r0, in, n.weight, nullptr, n.width,
                                   ty + r0 * n.width);
      });
    return;
  }
#if defined(SIFLOW_WITH_SIMD)
  const bool from_columns = ty && r.identity_seeds && k.seed_column[a] >= 0 && !reduced;
#if defined(SIFLOW_WITH_XNNPACK)
  if (kernel == NodeKernel::kXnnpack) {
    xnn::run_dense(k.xnn[r.node], x, r.rows, y, false);
    if (ty && !from_columns) xnn::run_dense(k.xnn[r.node], ta, trows, ty, true);
  } else
#endif
  {
    // simd: the activation of a fused following Unary node runs in the epilogue; its input
    // (this node's output) is still written when tangents need it.
    const bool fused = k.fused[r.node];
    const NodeData* next = fused ? &model.nodes[r.node + 1] : nullptr;
    const simd::Dense d{n.packed,
                        in,
                        n.width,
                        true,
                        fused ? next->unary : UnaryKind::kIdentity,
                        fused ? next->alpha : 0.0f};
    float* post = fused ? r.values[id + 1] : nullptr;
    float* pre = !fused || r.directions ? y : nullptr;
    if (reduced) {
      const simd::DenseReduced dr{k.precision, reduced, in,      n.width,
                                  true,        d.act,   d.alpha, k.reduced_rows};
      parallel_rows(k.pool, r.rows, kRowGrain,
                    [&](size_t r0, size_t r1) { k.simd->dense_reduced(dr, x, r0, r1, pre, post); });
      if (ty) {
        const simd::DenseReduced dt{
            k.precision, reduced, in, n.width, false, UnaryKind::kIdentity, 0.0f, k.reduced_rows};
        parallel_rows(k.pool, trows, kRowGrain, [&](size_t r0, size_t r1) {
          k.simd->dense_reduced(dt, ta, r0, r1, ty, nullptr);
        });
      }
      return;
    }
    parallel_rows(k.pool, r.rows, kRowGrain,
                  [&](size_t r0, size_t r1) { k.simd->dense(d, x, r0, r1, pre, post); });
    if (ty && !from_columns) {
      const simd::Dense dt{n.packed, in, n.width, false, UnaryKind::kIdentity, 0.0f};
      parallel_rows(k.pool, trows, kRowGrain,
                    [&](size_t r0, size_t r1) { k.simd->dense(dt, ta, r0, r1, ty, nullptr); });
    }
  }
  if (from_columns) {
    // The tangent of direction p is column (c + p) of W, the same for every row: no multiply.
    const uint32_t c = static_cast<uint32_t>(k.seed_column[a]);
    for (size_t p = 0; p < r.directions; ++p)
      for (uint32_t o = 0; o < n.width; ++o) ty[p * n.width + o] = n.weight[size_t{o} * in + c + p];
    const size_t block = r.directions * n.width;
    for (size_t row = 1; row < r.rows; ++row)
      std::memcpy(ty + row * block, ty, block * sizeof(float));
  }
#endif
}

void forward_f32(const Operands<float>& op) {
  const NodeData& n = *op.node;
  reference::fully_connected(op.values[n.inputs[0]], op.rows, op.widths[n.inputs[0]], op.weight,
                             op.bias, n.width, op.out);
}

void forward_f64(const Operands<double>& op) {
  const NodeData& n = *op.node;
  const uint32_t in = op.widths[n.inputs[0]];
  const double* a = op.values[n.inputs[0]];
  for (size_t r = 0; r < op.rows; ++r)
    for (uint32_t o = 0; o < n.width; ++o) {
      double acc = 0;
      for (uint32_t i = 0; i < in; ++i) acc += a[r * in + i] * op.weight[size_t{o} * in + i];
      op.out[r * n.width + o] = op.bias ? acc + op.bias[o] : acc;
    }
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0], in = op.widths[a], width = n.width;
  const T* x = op.values[a];
  const T* dy = g.dy;
  for (uint32_t o = 0; o < width; ++o) {
    for (uint32_t i = 0; i < in; ++i) {
      T acc = 0;
      for (size_t r = 0; r < op.rows; ++r) acc += dy[r * width + o] * x[r * in + i];
      g.d_weight[size_t{o} * in + i] = acc;
    }
    if (g.d_bias) {
      T acc = 0;
      for (size_t r = 0; r < op.rows; ++r) acc += dy[r * width + o];
      g.d_bias[o] = acc;
    }
  }
  if (g.needs(g.tape, a)) {
    T* dx = g.target(g.tape, a, op.rows * in);
    for (size_t r = 0; r < op.rows; ++r)
      for (uint32_t i = 0; i < in; ++i) {
        T acc = 0;
        for (uint32_t o = 0; o < width; ++o)
          acc += dy[r * width + o] * op.weight[size_t{o} * in + i];
        dx[r * in + i] = acc;
      }
    g.commit(g.tape, a, op.rows * in);
  }
}

uint64_t flops(const detail::ModelData& model, uint32_t i) {
  const detail::NodeData& n = model.nodes[i];
  return 2 * uint64_t(model.tensors[n.inputs[0]].width) * n.width;
}

}  // namespace

extern const OpModule kFullyConnected = {
    "fully_connected",
    detail::OpKind::kFullyConnected,
    verify,
    kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd) |
        kernel_bit(NodeKernel::kXnnpack),
    nullptr,
    packed_floats,
    pack,
    run,
    forward_f32,
    forward_f64,
    vjp<float>,
    vjp<double>,
    nullptr,
    reduced_bytes,
    reduce,
    false,
    nullptr,
    nullptr,
    nullptr,
    flops,
};

}  // namespace siflow::ops
