// SPDX-License-Identifier: Apache-2.0
// Resize of per-sample [C, H, W] tensors to the node's `shape` [C, OH, OW], per channel:
// nearest takes source cell floor(o * in / out) (exact integer arithmetic; PyTorch's
// F.interpolate(mode='nearest') and ONNX Resize 'asymmetric'/'floor' for integer factors);
// bilinear uses half-pixel centres without corner alignment as PyTorch's
// F.interpolate(mode='bilinear', align_corners=False) / nn.Upsample: src = max((o + 0.5) in / out
// - 0.5, 0), neighbours floor(src) and the next one clamped to the edge, weights in double, the
// result rounded once. Both are linear in x: the JVP applies the same map to each tangent and the
// VJP its transpose. The simd kernels (kernels_resize.inc) give nearest's bits and bilinear in
// float.
#include <cstring>

#include "ops/op.hpp"
#include "ops/window.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kResize;
  Status s = check.expect_inputs(*out, 1, 1);
  if (s.ok()) s = read_image_input(check, out);
  if (!s.ok()) return s;
  if (node.resize() != fb::ResizeMode::Nearest && node.resize() != fb::ResizeMode::Bilinear)
    return Status::error(StatusCode::kInvalidModel, "%s: unknown resize mode %d", check.where(),
                         static_cast<int>(node.resize()));
  out->resize = static_cast<uint8_t>(node.resize());
  const auto* shape = node.shape();
  if (!shape || shape->size() != 3)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: shape must give the output size [C, OH, OW]", check.where());
  const uint32_t c = shape->Get(0), oh = shape->Get(1), ow = shape->Get(2);
  if (c != out->in_shape.dims[0])
    return Status::error(StatusCode::kInvalidModel,
                         "%s: output shape [%u, %u, %u] changes the channel count of input %s",
                         check.where(), c, oh, ow, detail::shape_text(out->in_shape).text);
  if (oh == 0 || ow == 0)
    return Status::error(StatusCode::kInvalidModel, "%s: output shape [%u, %u, %u] is empty",
                         check.where(), c, oh, ow);
  if (!(s = check.output_width(image_width(c, oh, ow), &out->width)).ok()) return s;
  out->shape = image_shape(c, oh, ow);
  return Status();
}

// One axis of the map: output o reads inputs i0 and i1 with weights 1 - f and f (nearest: f =
// 0, i1 = i0).
struct Tap {
  uint32_t i0, i1;
  double f;
};

Tap tap(bool bilinear, uint32_t o, uint32_t in, uint32_t out) {
  if (!bilinear) {
    const uint32_t i = static_cast<uint32_t>(uint64_t{o} * in / out);
    return Tap{i, i, 0.0};
  }
  double src = (o + 0.5) * (static_cast<double>(in) / out) - 0.5;
  if (src < 0.0) src = 0.0;
  uint32_t i0 = static_cast<uint32_t>(src);  // src >= 0: truncation is floor
  if (i0 > in - 1) i0 = in - 1;
  const uint32_t i1 = i0 + 1 < in ? i0 + 1 : i0;
  return Tap{i0, i1, src - i0};
}

// Calls fn(output index, input index, weight) for the (up to four) taps of every output of one
// sample.
template <typename Fn>
void for_taps(const NodeData& n, const Fn& fn) {
  const bool bilinear = n.resize == static_cast<uint8_t>(fb::ResizeMode::Bilinear);
  const uint32_t c = n.in_shape.dims[0], h = n.in_shape.dims[1], w = n.in_shape.dims[2];
  const uint32_t oh = n.shape.dims[1], ow = n.shape.dims[2];
  for (uint32_t ch = 0; ch < c; ++ch)
    for (uint32_t oy = 0; oy < oh; ++oy) {
      const Tap ty = tap(bilinear, oy, h, oh);
      for (uint32_t ox = 0; ox < ow; ++ox) {
        const Tap tx = tap(bilinear, ox, w, ow);
        const size_t o = (size_t{ch} * oh + oy) * ow + ox, base = size_t{ch} * h * w;
        fn(o, base + size_t{ty.i0} * w + tx.i0, (1.0 - ty.f) * (1.0 - tx.f));
        if (!bilinear) continue;
        fn(o, base + size_t{ty.i0} * w + tx.i1, (1.0 - ty.f) * tx.f);
        fn(o, base + size_t{ty.i1} * w + tx.i0, ty.f * (1.0 - tx.f));
        fn(o, base + size_t{ty.i1} * w + tx.i1, ty.f * tx.f);
      }
    }
}

// y = R x for one sample, each output summed in double (taps in a fixed order) and rounded once.
template <typename T>
void apply(const NodeData& n, const T* x, T* y) {
  double acc = 0.0;
  size_t current = 0;
  for_taps(n, [&](size_t o, size_t i, double wgt) {
    if (o != current) {
      y[current] = static_cast<T>(acc);
      acc = 0.0;
      current = o;
    }
    acc += wgt * x[i];
  });
  y[current] = static_cast<T>(acc);
}

// Nearest on NHWC rows (a plan's layout, plan/layout_choice.cc), output rows [oy0, oy1): each
// output pixel copies its source pixel's C values, the reference's source cells, so the
// reference's bits.
void nearest_nhwc(const NodeData& n, const float* x, float* y, uint32_t oy0, uint32_t oy1) {
  const uint32_t c = n.in_shape.dims[0], h = n.in_shape.dims[1], w = n.in_shape.dims[2];
  const uint32_t oh = n.shape.dims[1], ow = n.shape.dims[2];
  for (uint32_t oy = oy0; oy < oy1; ++oy) {
    const uint32_t sy = tap(false, oy, h, oh).i0;
    for (uint32_t ox = 0; ox < ow; ++ox) {
      const uint32_t sx = tap(false, ox, w, ow).i0;
      std::memcpy(y + (size_t{oy} * ow + ox) * c, x + (size_t{sy} * w + sx) * c, c * sizeof(float));
    }
  }
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  const float* x = r.values[a];
  float* y = r.values[id];
  float* ty = r.directions ? r.tangents[id] : nullptr;
  const float* ta = ty ? r.tangents[a] : nullptr;
  if (is_nhwc(r, id)) {  // nearest only (layout_form)
    // Over (sample, output row) units, so batch 1 uses every thread (pure copies).
    const uint32_t oh = n.shape.dims[1];
    const size_t row_values = width / oh;  // ow x C, at least 1
    const size_t grain = (kMinParallelValues + row_values - 1) / row_values;
    auto over_rows = [&](const float* from, float* to, size_t samples) {
      parallel_rows(r.kernels->pool, samples * oh, grain, [&](size_t u0, size_t u1) {
        for (size_t u = u0; u < u1;) {
          const size_t s = u / oh, oy0 = u % oh;
          const size_t oy1 = oh - oy0 < u1 - u ? oh : oy0 + (u1 - u);
          nearest_nhwc(n, from + s * in, to + s * width, static_cast<uint32_t>(oy0),
                       static_cast<uint32_t>(oy1));
          u += oy1 - oy0;
        }
      });
    };
    over_rows(x, y, r.rows);
    if (ty) over_rows(ta, ty, r.rows * r.directions);
    return;
  }
#if defined(SIFLOW_WITH_SIMD)
  if (kernel_of(r) == NodeKernel::kSimd) {
    const simd::Kernels& k = *r.kernels->simd;
    const simd::Resize rs{
        n.in_shape.dims[0], n.in_shape.dims[1],
        n.in_shape.dims[2], n.shape.dims[1],
        n.shape.dims[2],    n.resize == static_cast<uint8_t>(fb::ResizeMode::Bilinear)};
    // Over (row, channel) units, so batch 1 uses every thread: a channel is the same code on
    // the same values whichever range holds it.
    const size_t plane = size_t{rs.h} * rs.w, oplane = size_t{rs.oh} * rs.ow;
    parallel_rows(r.kernels->pool, r.rows * rs.c, (8192 + oplane - 1) / oplane,
                  [&](size_t u0, size_t u1) {
                    for (size_t u = u0; u < u1;) {
                      const size_t row = u / rs.c, c0 = u % rs.c;
                      const size_t c1 = rs.c - c0 < u1 - u ? rs.c : c0 + (u1 - u);
                      simd::Resize part = rs;
                      part.c = static_cast<uint32_t>(c1 - c0);
                      k.resize(part, x + row * in + c0 * plane, y + row * width + c0 * oplane);
                      u += c1 - c0;
                    }
                  });
    if (ty)
      parallel_rows(r.kernels->pool, r.rows * r.directions, 1, [&](size_t r0, size_t r1) {
        for (size_t t = r0; t < r1; ++t) k.resize(rs, ta + t * in, ty + t * width);
      });
    return;
  }
#endif
  parallel_rows(r.kernels->pool, r.rows, 1, [&](size_t r0, size_t r1) {
    for (size_t row = r0; row < r1; ++row) apply(n, x + row * in, y + row * width);
  });
  if (!ty) return;
  parallel_rows(r.kernels->pool, r.rows * r.directions, 1, [&](size_t r0, size_t r1) {
    for (size_t k = r0; k < r1; ++k) apply(n, ta + k * in, ty + k * width);
  });
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const uint32_t in = op.widths[n.inputs[0]];
  for (size_t row = 0; row < op.rows; ++row)
    apply(n, op.values[n.inputs[0]] + row * in, op.out + row * n.width);
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& g) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0], in = op.widths[a];
  if (!g.needs(g.tape, a)) return;
  T* dx = g.target(g.tape, a, op.rows * in);
  for (size_t k = 0; k < op.rows * in; ++k) dx[k] = T(0);
  for (size_t row = 0; row < op.rows; ++row) {
    const T* dy = g.dy + row * n.width;
    T* d = dx + row * in;
    for_taps(n, [&](size_t o, size_t i, double wgt) { d[i] += static_cast<T>(wgt * dy[o]); });
  }
  g.commit(g.tape, a, op.rows * in);
}

// Nearest runs on NHWC rows too (input and output in one layout), on either kernel.
LayoutForm layout_form(const detail::ModelData& model, uint32_t node, NodeKernel) {
  return model.nodes[node].resize == static_cast<uint8_t>(fb::ResizeMode::Nearest)
             ? LayoutForm::kShared
             : LayoutForm::kNchw;
}

}  // namespace

extern const OpModule kResize = {
    "resize",       detail::OpKind::kResize,
    verify,         kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
    nullptr,        nullptr,
    nullptr,        false,
    nullptr,        nullptr,
    layout_form,
};

}  // namespace siflow::ops
