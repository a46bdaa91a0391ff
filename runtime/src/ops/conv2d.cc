// SPDX-License-Identifier: Apache-2.0
// Conv2d and ConvTranspose2d on per-sample [C, H, W] tensors (NCHW), direct loops on the
// reference kernels. Both relate a "small" side S (the conv's output, the transposed conv's
// input) to a "large" side L by l = s * stride - pad_begin + k * dilation, with the weight laid
// out [C_S][C_L / groups][kh][kw] in both (PyTorch's layouts), so four loops (ops/conv_loops.hpp)
// serve both ops: gather_small (conv forward, transposed conv's dx), gather_large (transposed conv
// forward, conv's dx), the weight and bias gradients. Every output element is one float sum in a
// fixed order (bias, then input channel, kernel row, kernel column), so results are
// bit-reproducible and do not depend on the batch split or the thread count. Convolutions are
// linear: the JVP is the same op without the bias on each direction's tangent; when exact
// divergence reads only the diagonal of a Conv2d that writes the network's output
// (NodeRun::diagonal_first, f32 weights), that JVP computes each direction's diagonal entry alone
// and zeroes the rest. On XNNPACK (ops/conv2d_xnn.cc) both ops run NHWC: Conv2d as XNNPACK's
// convolution, ConvTranspose2d as its deconvolution; on the simd NCHW kernel (ops/conv2d_simd.cc)
// Conv2d directly, ConvTranspose2d as the Conv2d over its spread-out input. Reduced precision
// (docs/math.md): fp16 and int8 weights are decoded to f32 at plan time and run the f32 kernels;
// bf16 follows the dense layers' vdpbf16ps arithmetic along (channel, kernel row, column): a Conv2d
// on the simd kernels as the dense bf16 kernel on im2col rows (run_bf16_gemm), otherwise
// bf16_gather.
#include <cstring>

#include "math/half.hpp"
#include "math/reduced.hpp"
#include "ops/conv_loops.hpp"
#include "ops/op.hpp"
#include "ops/window.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops {
namespace {

using conv::bias_gradient;
using conv::gather_large;
using conv::gather_small;
using conv::Geometry;
using conv::geometry;
using conv::weight_count;
using conv::weight_gradient;
using detail::NodeData;

// bf16 (docs/math.md, "Reduced precision"): every output is one bf16 dot product, as a dense
// bf16 layer computes it, of the weights [c_out][k] and the input's im2col column, k running
// over (input channel of the group, kernel row, kernel column) in that order: the bias (flushed)
// or +0 first, then the pairs (2p, 2p + 1) of k, the odd element's product first, each step
// bf16_dot_step; a tap outside the input (padding; for the transposed conv, a tap landing
// between samples) reads +0, and an odd k pairs its last element with 0 * 0. `w` holds the bf16
// weights as floats laid out [output channel][k] (reduce() reorders the transposed conv's).
// Per output pixel the column is gathered (rounded to bf16) kBf16Chunk values at a time into a
// stack buffer, and each output channel of the group continues its sum over the chunk.
constexpr uint32_t kBf16Chunk = 512;  // even: pairs never straddle chunks

template <bool kTransposed>
void bf16_gather(const Geometry& g, const float* w, const float* bias, const float* in,
                 float* out) {
  const uint32_t csg = g.cs / g.groups, clg = g.cl / g.groups;
  const uint32_t taps = g.kh * g.kw;
  // The gathered side's channels per group and the output side's.
  const uint32_t cin_g = kTransposed ? csg : clg, cout_g = kTransposed ? clg : csg;
  const uint32_t oh = kTransposed ? g.hl : g.hs, ow = kTransposed ? g.wl : g.ws;
  const uint32_t ih = kTransposed ? g.hs : g.hl, iw = kTransposed ? g.ws : g.wl;
  const size_t k_total = size_t{cin_g} * taps, iplane = size_t{ih} * iw, oplane = size_t{oh} * ow;
  float column[kBf16Chunk + 1];
  for (uint32_t group = 0; group < g.groups; ++group) {
    const float* ig = in + size_t{group} * cin_g * iplane;
    for (uint32_t oy = 0; oy < oh; ++oy)
      for (uint32_t ox = 0; ox < ow; ++ox) {
        for (size_t k0 = 0; k0 < k_total; k0 += kBf16Chunk) {
          const uint32_t n =
              static_cast<uint32_t>(k_total - k0 < kBf16Chunk ? k_total - k0 : kBf16Chunk);
          for (uint32_t kk = 0; kk < n; ++kk) {
            const size_t k = k0 + kk;
            const uint32_t i = static_cast<uint32_t>(k / taps), t = static_cast<uint32_t>(k % taps);
            const uint32_t ky = t / g.kw, kx = t % g.kw;
            int64_t iy, ix;
            bool inside;
            if (!kTransposed) {
              iy = int64_t{oy} * g.sh - g.pt + int64_t{ky} * g.dh;
              ix = int64_t{ox} * g.sw - g.pl + int64_t{kx} * g.dw;
              inside = iy >= 0 && iy < ih && ix >= 0 && ix < iw;
            } else {
              const int64_t ny = int64_t{oy} + g.pt - int64_t{ky} * g.dh;
              const int64_t nx = int64_t{ox} + g.pl - int64_t{kx} * g.dw;
              inside = ny >= 0 && nx >= 0 && ny % g.sh == 0 && nx % g.sw == 0 && ny / g.sh < ih &&
                       nx / g.sw < iw;
              iy = ny / g.sh, ix = nx / g.sw;
            }
            column[kk] =
                inside
                    ? detail::bf16_to_float(detail::float_to_bf16(
                          ig[i * iplane + static_cast<size_t>(iy) * iw + static_cast<size_t>(ix)]))
                    : 0.0f;
          }
          const uint32_t pairs = n / 2;
          const bool odd = n % 2 != 0;  // only in the last chunk
          for (uint32_t o = 0; o < cout_g; ++o) {
            const uint32_t oc = group * cout_g + o;
            float* y = out + oc * oplane + size_t{oy} * ow + ox;
            const float* wr = w + size_t{oc} * k_total + k0;
            float acc = k0 != 0 ? *y : bias ? bias[oc] : 0.0f;
            for (uint32_t p = 0; p < pairs; ++p) {
              acc = detail::bf16_dot_step_fast(acc, column[2 * p + 1], wr[2 * p + 1]);
              acc = detail::bf16_dot_step_fast(acc, column[2 * p], wr[2 * p]);
            }
            if (odd) {
              acc = detail::bf16_dot_step_fast(acc, 0.0f, 0.0f);
              acc = detail::bf16_dot_step_fast(acc, column[n - 1], wr[n - 1]);
            }
            *y = acc;
          }
        }
      }
  }
}

inline float bf16_value(float v) { return detail::bf16_to_float(detail::float_to_bf16(v)); }

// A bf16 Conv2d on the simd kernels runs the dense bf16 GEMM (run_bf16_gemm): per group, its
// weights [c_out of the group][k] packed by simd::pack_reduced, groups one after the other,
// each 64-byte aligned.
#if defined(SIFLOW_WITH_SIMD)
bool bf16_gemm(bool transposed, Precision precision, NodeKernel kernel) {
  return !transposed && precision == Precision::kBf16 && kernel == NodeKernel::kSimd;
}
size_t group_bytes(const Geometry& g) {
  const uint32_t k_total = g.cl / g.groups * g.kh * g.kw;
  return (simd::reduced_bytes(Precision::kBf16, k_total, g.cs / g.groups) + 63) / 64 * 64;
}
#endif

// The plan's converted weights (reduced_weights.hpp), in the file's layout: fp16 and int8 the
// decoded f32 weights; bf16 the bf16 weights as floats, then (64-byte aligned) the output
// channels' biases with subnormals flushed. Int8 scales are per output channel: the small side's
// channel for a conv (a contiguous weight row), the large side's for a transposed conv.
template <bool kTransposed>
size_t reduced_bytes(const detail::ModelData& model, uint32_t i, Precision precision,
                     NodeKernel kernel) {
  const NodeData& n = model.nodes[i];
  if (precision == Precision::kFp32) return 0;
  const Geometry g = geometry(n, kTransposed);
#if defined(SIFLOW_WITH_SIMD)
  if (bf16_gemm(kTransposed, precision, kernel)) return group_bytes(g) * g.groups;
#else
  (void)kernel;
#endif
  const size_t weights = (weight_count(g) * 4 + 63) / 64 * 64;
  const uint32_t outputs = kTransposed ? g.cl : g.cs;
  return weights + (precision == Precision::kBf16 ? size_t{outputs} * 4 : 0);
}

template <bool kTransposed>
void reduce(const detail::ModelData& model, uint32_t i, Precision precision, NodeKernel kernel,
            void* dst) {
  const NodeData& n = model.nodes[i];
  const Geometry g = geometry(n, kTransposed);
  const size_t count = weight_count(g), taps = size_t{g.kh} * g.kw;
  const uint32_t clg = g.cl / g.groups, csg = g.cs / g.groups;
#if defined(SIFLOW_WITH_SIMD)
  if (bf16_gemm(kTransposed, precision, kernel)) {
    // The conv's weight rows [c_out][k] are the dense layer's [out][in]; a group's are contiguous.
    const uint32_t k_total = static_cast<uint32_t>(clg * taps);
    for (uint32_t group = 0; group < g.groups; ++group)
      simd::pack_reduced(precision, n.weight + size_t{group} * csg * k_total,
                         n.bias ? n.bias + size_t{group} * csg : nullptr, k_total, csg,
                         static_cast<uint8_t*>(dst) + group * group_bytes(g));
    return;
  }
#else
  (void)kernel;
#endif
  float* w = static_cast<float*>(dst);
  // A Conv2d on the simd kernels takes its weights transposed per group (simd::Conv): element
  // (output channel o, term kk) of the decoded fp16 or int8 weights goes to at(o, kk).
  const size_t row = size_t{clg} * taps;
  const bool transposed_rows = !kTransposed && kernel == NodeKernel::kSimd;
  auto at = [&](size_t o, size_t kk) {
    return transposed_rows ? (o / csg * row + kk) * csg + o % csg : o * row + kk;
  };
  // A ConvTranspose2d on the simd kernels reads its decoded weights as the flipped Conv2d's
  // (conv_transposed_simd_index, ops/conv2d_simd.cc); on the reference loops in the file's
  // layout.
  const bool flipped = kTransposed && kernel == NodeKernel::kSimd;
  auto at_file = [&](size_t f) { return flipped ? conv_transposed_simd_index(n, f) : f; };
  switch (precision) {
    case Precision::kFp32:
      return;
    case Precision::kBf16: {
      if (!kTransposed) {
        for (size_t k = 0; k < count; ++k) w[k] = bf16_value(n.weight[k]);
      } else {
        // [output channel][k]: output channel cl's k = (input channel of its group, tap).
        const size_t k_total = size_t{csg} * taps;
        for (uint32_t cl = 0; cl < g.cl; ++cl)
          for (uint32_t i = 0; i < csg; ++i)
            for (size_t t = 0; t < taps; ++t)
              w[cl * k_total + i * taps + t] =
                  bf16_value(n.weight[(size_t{cl / clg * csg + i} * clg + cl % clg) * taps + t]);
      }
      float* bias =
          reinterpret_cast<float*>(static_cast<uint8_t*>(dst) + (count * 4 + 63) / 64 * 64);
      const uint32_t outputs = kTransposed ? g.cl : g.cs;
      for (uint32_t o = 0; o < outputs; ++o)
        bias[o] = n.bias ? detail::flush_subnormal(n.bias[o]) : 0.0f;
      return;
    }
    case Precision::kFp16:
      for (size_t k = 0; k < count; ++k)
        w[kTransposed ? at_file(k) : at(k / row, k % row)] =
            detail::half_to_float(detail::float_to_half(n.weight[k]));
      return;
    case Precision::kInt8:
      if (!kTransposed) {
        for (uint32_t o = 0; o < g.cs; ++o) {
          const float* src = n.weight + o * row;
          const float scale = detail::int8_scale(src, static_cast<uint32_t>(row));
          for (size_t k = 0; k < row; ++k)
            w[at(o, k)] = scale * static_cast<float>(detail::int8_quantize(src[k], scale));
        }
        return;
      }
      // Output channel cl's weights are `taps`-long runs, one per small-side channel of its
      // group; max over runs of int8_scale is int8_scale of them all (x / 127 is monotone).
      for (uint32_t cl = 0; cl < g.cl; ++cl) {
        const uint32_t group = cl / clg, j = cl % clg;
        float scale = 0.0f;
        for (uint32_t k = 0; k < csg; ++k) {
          const float s = detail::int8_scale(n.weight + (size_t{group * csg + k} * clg + j) * taps,
                                             static_cast<uint32_t>(taps));
          scale = s > scale ? s : scale;
        }
        for (uint32_t k = 0; k < csg; ++k) {
          const size_t at = (size_t{group * csg + k} * clg + j) * taps;
          for (size_t t = 0; t < taps; ++t)
            w[at_file(at + t)] =
                scale * static_cast<float>(detail::int8_quantize(n.weight[at + t], scale));
        }
      }
      return;
  }
}

// Reduction length (input channels per group times taps) or output channels per group,
// whichever is smaller: the plan's narrow-layer rule.
template <bool kTransposed>
uint32_t reduced_extent(const detail::ModelData& model, uint32_t i) {
  const Geometry g = geometry(model.nodes[i], kTransposed);
  const uint32_t in = (kTransposed ? g.cs : g.cl) / g.groups * g.kh * g.kw;
  const uint32_t out = (kTransposed ? g.cl : g.cs) / g.groups;
  return in < out ? in : out;
}

// One op's forward (with bias) or tangent map (without) on one sample: conv gathers the small
// side from the large one, the transposed conv the large side from the small one.
template <bool kTransposed, typename T>
void apply(const Geometry& g, const T* w, const T* bias, const T* in, T* out) {
  if (kTransposed)
    gather_large(g, w, bias, in, out);
  else
    gather_small(g, w, bias, in, out);
}

template <bool kTransposed>
Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = kTransposed ? detail::OpKind::kConvTranspose2d : detail::OpKind::kConv2d;
  Status s = check.expect_inputs(*out, 1, 1);
  if (s.ok()) s = read_image_input(check, out);
  if (s.ok()) s = read_window(check, node, out);
  if (!s.ok()) return s;
  uint32_t output_padding[2] = {0, 0};
  if (kTransposed) {
    s = read_window_field(check, "output_padding", node.output_padding(), 2, 0, 0, output_padding);
    if (!s.ok()) return s;
    for (int a = 0; a < 2; ++a)
      if (output_padding[a] >= out->strides[a] && output_padding[a] >= out->dilations[a])
        return Status::error(StatusCode::kInvalidModel,
                             "%s: output_padding[%d] = %u must be smaller than the stride (%u) "
                             "or the dilation (%u)",
                             check.where(), a, output_padding[a], out->strides[a],
                             out->dilations[a]);
  } else if (node.output_padding() && node.output_padding()->size() != 0) {
    return Status::error(StatusCode::kInvalidModel,
                         "%s: output_padding is a ConvTranspose2d field; a Conv2d does not read "
                         "it",
                         check.where());
  }
  const uint32_t cin = out->in_shape.dims[0], h = out->in_shape.dims[1], wd = out->in_shape.dims[2];
  out->groups = node.groups();
  if (out->groups == 0 || cin % out->groups != 0)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: groups = %u does not divide the %u input channels", check.where(),
                         out->groups, cin);
  const fb::Weights* w = node.weight();
  if (!w || !w->shape() || w->shape()->size() != 4)
    return Status::error(StatusCode::kInvalidModel,
                         kTransposed ? "%s: weight must have shape [Cin, Cout/groups, kh, kw]"
                                     : "%s: weight must have shape [Cout, Cin/groups, kh, kw]",
                         check.where());
  const uint32_t w0 = w->shape()->Get(0), w1 = w->shape()->Get(1), w2 = w->shape()->Get(2),
                 w3 = w->shape()->Get(3);
  // Conv: [Cout, Cin/g, kh, kw]; transposed: [Cin, Cout/g, kh, kw].
  const uint32_t expect0 = kTransposed ? cin : w0, expect1 = kTransposed ? w1 : cin / out->groups;
  if (w0 != expect0 || w1 != expect1 || w2 != out->kernel[0] || w3 != out->kernel[1] || w1 == 0 ||
      w0 == 0)
    return Status::error(StatusCode::kInvalidModel,
                         kTransposed ? "%s: weight shape [%u, %u, %u, %u] does not match [Cin = "
                                       "%u, Cout/groups, kh = %u, kw = %u]"
                                     : "%s: weight shape [%u, %u, %u, %u] does not match [Cout, "
                                       "Cin/groups = %u, kh = %u, kw = %u]",
                         check.where(), w0, w1, w2, w3, kTransposed ? expect0 : expect1,
                         out->kernel[0], out->kernel[1]);
  uint64_t cout, oh, ow;
  if (kTransposed) {
    cout = uint64_t{w1} * out->groups;
    // (H - 1) s - pad_begin - pad_end + d (k - 1) + output_padding + 1, in signed 64 bits (every
    // term is at most 2^32 by read_window).
    const int64_t oh_s = (int64_t{h} - 1) * out->strides[0] - out->pads[0] - out->pads[2] +
                         int64_t{out->dilations[0]} * (out->kernel[0] - 1) + output_padding[0] + 1;
    const int64_t ow_s = (int64_t{wd} - 1) * out->strides[1] - out->pads[1] - out->pads[3] +
                         int64_t{out->dilations[1]} * (out->kernel[1] - 1) + output_padding[1] + 1;
    oh = oh_s > 0 ? static_cast<uint64_t>(oh_s) : 0;
    ow = ow_s > 0 ? static_cast<uint64_t>(ow_s) : 0;
  } else {
    cout = w0;
    if (cout % out->groups != 0)
      return Status::error(StatusCode::kInvalidModel,
                           "%s: groups = %u does not divide the %llu output channels",
                           check.where(), out->groups, static_cast<unsigned long long>(cout));
    oh = window_outputs(h, out->pads[0], out->pads[2], out->kernel[0], out->strides[0],
                        out->dilations[0]);
    ow = window_outputs(wd, out->pads[1], out->pads[3], out->kernel[1], out->strides[1],
                        out->dilations[1]);
  }
  if (oh == 0 || ow == 0)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: the output of input %s with kernel [%u, %u], strides [%u, %u], pads "
                         "[%u, %u, %u, %u], dilations [%u, %u] would be empty",
                         check.where(), detail::shape_text(out->in_shape).text, out->kernel[0],
                         out->kernel[1], out->strides[0], out->strides[1], out->pads[0],
                         out->pads[1], out->pads[2], out->pads[3], out->dilations[0],
                         out->dilations[1]);
  if (!(s = check.output_width(image_width(cout, oh, ow), &out->width)).ok()) return s;
  out->shape = image_shape(static_cast<uint32_t>(cout), static_cast<uint32_t>(oh),
                           static_cast<uint32_t>(ow));
  // Channels are at most kMaxWidth (2^17) and kernel extents kMaxWindowExtent (2^16), so the
  // two partial products fit in 64 bits; their product may not, and is refused before use.
  const uint64_t channels = uint64_t{w0} * w1, taps = uint64_t{w2} * w3;
  if (taps != 0 && channels > UINT64_MAX / taps)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: weight shape [%u, %u, %u, %u] holds more values than a file can",
                         check.where(), w0, w1, w2, w3);
  const uint64_t count = channels * taps;
  if (!(s = check.weights("weight", w, count, true, &out->weight)).ok()) return s;
  return check.weights("bias", node.bias(), static_cast<size_t>(cout), false, &out->bias);
}

// The f32 weights of a Conv2d for the simd kernels, packed when the model loads
// (ModelData::packed_block, counted in its packed bytes) beside the file's weights, which the
// reference kernels and the gradients read: transposed per group for the NCHW kernel
// (simd::Conv), then, for a layer the NHWC kernel runs (conv2d_nhwc.cc), its blocks
// (simd::pack_conv_nhwc) from conv_nhwc_packed_offset, then, for a 3x3 stride-1 layer the
// Winograd kernel runs, its transformed weights (simd::pack_conv_wino, 16 / 9 of the NHWC
// kernel's) from conv_wino_packed_offset.
uint64_t packed_floats(const detail::ModelData& model, uint32_t i) {
#if defined(SIFLOW_WITH_SIMD)
  const NodeData& n = model.nodes[i];
  if (!conv_nhwc_runs(n)) return weight_count(geometry(n, false));
  if (conv_wino_runs(n))
    return conv_wino_packed_offset(n) +
           simd::conv_wino_packed_floats(n.in_shape.dims[0], n.shape.dims[0]);
  return conv_nhwc_packed_offset(n) + simd::conv_nhwc_packed_floats(n.in_shape.dims[0],
                                                                    n.kernel[0] * n.kernel[1],
                                                                    n.shape.dims[0]);
#else
  (void)model, (void)i;
  return 0;
#endif
}

void pack(const detail::ModelData& model, NodeData* n, float* dst) {
  (void)model;
#if defined(SIFLOW_WITH_SIMD)
  const Geometry g = geometry(*n, false);
  simd::conv_weights_transposed(n->weight, g.cs, g.groups, size_t{g.cl / g.groups} * g.kh * g.kw,
                                dst);
  if (conv_nhwc_runs(*n))
    simd::pack_conv_nhwc(n->weight, g.cl, g.kh * g.kw, g.cs, dst + conv_nhwc_packed_offset(*n));
  if (conv_wino_runs(*n))
    simd::pack_conv_wino(n->weight, g.cl, g.cs, dst + conv_wino_packed_offset(*n));
  n->packed = dst;
#else
  (void)n, (void)dst;
#endif
}

// kSimdNhwc and kSimdWino run the layers conv2d_nhwc.cc packed weights for; a ConvTranspose2d
// runs on kSimd where conv2d_simd.cc's spread-out input stays small.
bool runs_on(const NodeData& n, NodeKernel kernel) {
  if (n.op == detail::OpKind::kConvTranspose2d)
    return kernel != NodeKernel::kSimd || conv_transposed_simd_runs(n);
  if (kernel == NodeKernel::kSimdWino) return conv_wino_runs(n);
  return kernel != NodeKernel::kSimdNhwc || conv_nhwc_runs(n);
}

#if defined(SIFLOW_WITH_SIMD)
// A bf16 Conv2d as the dense bf16 layer (docs/math.md, "Reduced precision"): per sample and
// group, the im2col matrix (a row per output pixel, k in the definition's order, +0 for taps
// outside the input) goes through dense_reduced with the group's packed weights, which gives
// bf16_gather's bits (each output is the same bf16 dot product of its weight row and its
// column). The rows, their bf16 pairs and the sums [pixel][c_out of the group] live in the
// plan's bf16 buffer (conv_bf16_words); pixel blocks are split over the threads.
void run_bf16_gemm(const NodeRun& r, const Geometry& g, const void* packed) {
  const NodeData& n = r.model->nodes[r.node];
  const simd::Kernels& k = *r.kernels->simd;
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  const uint32_t clg = g.cl / g.groups, csg = g.cs / g.groups, taps = g.kh * g.kw;
  const uint32_t k_total = clg * taps;
  const size_t oplane = size_t{g.hs} * g.ws, lplane = size_t{g.hl} * g.wl;
  const size_t words = simd::bf16_rows_words(k_total);
  uint32_t* x_bf16 = r.kernels->reduced_rows;
  float* cols = reinterpret_cast<float*>(x_bf16 + oplane * words);
  float* sums = cols + oplane * k_total;
  const size_t bytes = group_bytes(g);
  auto sample = [&](const float* x, bool with_bias, float* y) {
    for (uint32_t group = 0; group < g.groups; ++group) {
      const float* xg = x + size_t{group} * clg * lplane;
      const simd::DenseReduced d{Precision::kBf16,
                                 static_cast<const uint8_t*>(packed) + group * bytes,
                                 k_total,
                                 csg,
                                 with_bias && n.bias != nullptr,
                                 UnaryKind::kIdentity,
                                 0.0f,
                                 x_bf16};
      parallel_rows(r.kernels->pool, oplane, 16, [&](size_t p0, size_t p1) {
        for (size_t p = p0; p < p1; ++p) {
          const uint32_t sy = static_cast<uint32_t>(p / g.ws), sx = static_cast<uint32_t>(p % g.ws);
          float* col = cols + p * k_total;
          for (uint32_t j = 0; j < clg; ++j)
            for (uint32_t ky = 0; ky < g.kh; ++ky) {
              const int64_t ly = int64_t{sy} * g.sh - g.pt + int64_t{ky} * g.dh;
              float* c = col + (size_t{j} * g.kh + ky) * g.kw;
              if (ly < 0 || ly >= g.hl) {
                for (uint32_t kx = 0; kx < g.kw; ++kx) c[kx] = 0.0f;
                continue;
              }
              const float* lrow = xg + j * lplane + static_cast<size_t>(ly) * g.wl;
              for (uint32_t kx = 0; kx < g.kw; ++kx) {
                const int64_t lx = int64_t{sx} * g.sw - g.pl + int64_t{kx} * g.dw;
                c[kx] = lx < 0 || lx >= g.wl ? 0.0f : lrow[lx];
              }
            }
        }
        k.dense_reduced(d, cols, p0, p1, nullptr, sums);
        for (uint32_t o = 0; o < csg; ++o) {
          float* yo = y + (size_t{group} * csg + o) * oplane;
          for (size_t p = p0; p < p1; ++p) yo[p] = sums[p * csg + o];
        }
      });
    }
  };
  for (size_t row = 0; row < r.rows; ++row)
    sample(r.values[a] + row * in, true, r.values[id] + row * width);
  if (!r.directions || !r.tangents[id]) return;
  for (size_t t = 0; t < r.rows * r.directions; ++t)
    sample(r.tangents[a] + t * in, false, r.tangents[id] + t * width);
}
#endif

// Exact divergence reads only the diagonal of the network output's tangents
// (NodeRun::diagonal_first): for an output conv, tangent sample t (direction p = t % directions)
// gets output element diagonal_first + p summed as gather_small sums it (the same float terms in
// the same order, so the reference kernel's bits), and zeros elsewhere: d times fewer terms than
// the whole tangent. f32 weights in the file's layout.
void diagonal_tangents(const NodeRun& r, const Geometry& g) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  const uint32_t csg = g.cs / g.groups, clg = g.cl / g.groups;
  const size_t taps = size_t{g.kh} * g.kw, lplane = size_t{g.hl} * g.wl;
  const size_t oplane = size_t{g.hs} * g.ws;
  const float* tx = r.tangents[a];
  float* ty = r.tangents[id];
  parallel_rows(r.kernels->pool, r.rows * r.directions, 64, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) {
      float* y = ty + t * width;
      std::memset(y, 0, width * sizeof(float));
      const size_t e = r.diagonal_first + t % r.directions;
      if (e >= width) continue;
      const uint32_t cs = static_cast<uint32_t>(e / oplane);
      const uint32_t sy = static_cast<uint32_t>(e % oplane / g.ws);
      const uint32_t sx = static_cast<uint32_t>(e % g.ws);
      const float* wc = n.weight + size_t{cs} * clg * taps;
      const float* lg = tx + t * in + size_t{cs / csg} * clg * lplane;
      y[e] = gather_point(g, wc, lg, sy, sx, 0.0f);
    }
  });
}

template <bool kTransposed>
void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  const Geometry g = geometry(n, kTransposed);
  const void* reduced = r.kernels && r.kernels->reduced ? r.kernels->reduced[r.node] : nullptr;
  if (!kTransposed && !reduced && r.tangents && r.tangents[id] && output_diagonal(r)) {
    NodeRun values = r;  // the forward on the node's kernel, then the diagonal tangents
    values.directions = 0;
    run<false>(values);
    diagonal_tangents(r, g);
    return;
  }
  const bool bf16 = reduced && r.kernels->precision == Precision::kBf16;
  // fp16 and int8: the f32 kernels on the decoded weights.
  const float* weight = reduced ? static_cast<const float*>(reduced) : n.weight;
  if (!kTransposed && kernel_of(r) == NodeKernel::kSimdNhwc) {
    run_conv_nhwc(r);  // conv2d_nhwc.cc (f32 only: the plan puts no reduced layer there)
    return;
  }
  if (!kTransposed && kernel_of(r) == NodeKernel::kSimdWino) {
    run_conv_wino(r);  // conv2d_nhwc.cc (f32 only, like kSimdNhwc)
    return;
  }
#if defined(SIFLOW_WITH_XNNPACK)
  if (kernel_of(r) == NodeKernel::kXnnpack) {
    run_conv_xnn(r);  // conv2d_xnn.cc, both ops
    return;
  }
#endif
#if defined(SIFLOW_WITH_SIMD)
  if (!kTransposed && kernel_of(r) == NodeKernel::kSimd) {
    if (bf16)
      run_bf16_gemm(r, g, reduced);
    else                                              // both transposed per group (pack, reduce)
      run_conv_simd(r, reduced ? weight : n.packed);  // ops/conv2d_simd.cc
    return;
  }
  // A bf16 ConvTranspose2d keeps the reference loops (the plan names it so).
  if (kTransposed && kernel_of(r) == NodeKernel::kSimd && !bf16) {
    run_conv_transposed_simd(r);  // ops/conv2d_simd.cc
    return;
  }
#endif
  const float* bias = bf16 && n.bias
                          ? reinterpret_cast<const float*>(static_cast<const uint8_t*>(reduced) +
                                                           (weight_count(g) * 4 + 63) / 64 * 64)
                          : n.bias;
  auto one = [&](const float* x, const float* b, float* y) {
    if (bf16)
      bf16_gather<kTransposed>(g, weight, b, x, y);
    else
      apply<kTransposed, float>(g, weight, b, x, y);
  };
  const float* x = r.values[a];
  float* y = r.values[id];
  parallel_rows(r.kernels->pool, r.rows, 1, [&](size_t r0, size_t r1) {
    for (size_t row = r0; row < r1; ++row) one(x + row * in, bias, y + row * width);
  });
  float* ty = r.directions ? r.tangents[id] : nullptr;
  if (!ty) return;
  const float* ta = r.tangents[a];
  parallel_rows(r.kernels->pool, r.rows * r.directions, 1, [&](size_t r0, size_t r1) {
    for (size_t k = r0; k < r1; ++k) one(ta + k * in, nullptr, ty + k * width);
  });
}

template <bool kTransposed, typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const uint32_t in = op.widths[n.inputs[0]];
  const Geometry g = geometry(n, kTransposed);
  const T* x = op.values[n.inputs[0]];
  for (size_t row = 0; row < op.rows; ++row)
    apply<kTransposed>(g, op.weight, op.bias, x + row * in, op.out + row * n.width);
}

template <bool kTransposed, typename T>
void vjp(const Operands<T>& op, const Gradients<T>& grad) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0], in = op.widths[a];
  const Geometry g = geometry(n, kTransposed);
  const T* x = op.values[a];
  // The conv's x is its large side and dy its small side; the transposed conv's the reverse.
  if (grad.d_weight) {
    if (kTransposed)
      weight_gradient(g, x, grad.dy, op.rows, grad.d_weight);
    else
      weight_gradient(g, grad.dy, x, op.rows, grad.d_weight);
  }
  if (grad.d_bias) {
    const detail::Shape& s = n.shape;
    bias_gradient(grad.dy, op.rows, s.dims[0], size_t{s.dims[1]} * s.dims[2], grad.d_bias);
  }
  if (!grad.needs(grad.tape, a)) return;
  T* dx = grad.target(grad.tape, a, op.rows * in);
  for (size_t row = 0; row < op.rows; ++row) {
    if (kTransposed)
      gather_small<T>(g, op.weight, nullptr, grad.dy + row * n.width, dx + row * in);
    else
      gather_large<T>(g, op.weight, nullptr, grad.dy + row * n.width, dx + row * in);
  }
  grad.commit(grad.tape, a, op.rows * in);
}

}  // namespace

size_t conv_bf16_words(const detail::ModelData& model, uint32_t i) {
#if defined(SIFLOW_WITH_SIMD)
  const NodeData& n = model.nodes[i];
  if (n.op != detail::OpKind::kConv2d) return 0;
  const Geometry g = geometry(n, false);
  const uint32_t k_total = g.cl / g.groups * g.kh * g.kw;
  return size_t{g.hs} * g.ws * (simd::bf16_rows_words(k_total) + k_total + g.cs / g.groups);
#else
  (void)model, (void)i;
  return 0;
#endif
}

// Multiply-adds per row, times 2: a convolution's every output reads (input channels per group)
// x kh x kw inputs; a transposed one's every input element feeds (output channels per group) x
// kh x kw outputs.
template <bool Transposed>
uint64_t flops(const detail::ModelData& model, uint32_t i) {
  const detail::NodeData& n = model.nodes[i];
  const uint64_t taps = uint64_t(n.kernel[0]) * n.kernel[1];
  if (Transposed) return 2 * detail::shape_size(n.in_shape) * (n.shape.dims[0] / n.groups) * taps;
  return 2 * uint64_t(n.width) * (n.in_shape.dims[0] / n.groups) * taps;
}

extern const OpModule kConv2d = {
    "conv2d",
    detail::OpKind::kConv2d,
    verify<false>,
    kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd) |
        kernel_bit(NodeKernel::kXnnpack) | kernel_bit(NodeKernel::kSimdNhwc) |
        kernel_bit(NodeKernel::kSimdWino),
    nullptr,
    packed_floats,
    pack,
    run<false>,
    forward<false, float>,
    forward<false, double>,
    vjp<false, float>,
    vjp<false, double>,
    nullptr,
    reduced_bytes<false>,
    reduce<false>,
    false,
    reduced_extent<false>,
    runs_on,
    conv_layout_form,
    flops<false>,
};

extern const OpModule kConvTranspose2d = {
    "conv_transpose2d",
    detail::OpKind::kConvTranspose2d,
    verify<true>,
    kernel_bit(NodeKernel::kReference) | kernel_bit(NodeKernel::kSimd) |
        kernel_bit(NodeKernel::kXnnpack),
    conv_transposed_scratch_floats,
    conv_transposed_packed_floats,
    conv_transposed_pack,
    run<true>,
    forward<true, float>,
    forward<true, double>,
    vjp<true, float>,
    vjp<true, double>,
    nullptr,
    reduced_bytes<true>,
    reduce<true>,
    false,
    reduced_extent<true>,
    runs_on,
    conv_layout_form,
    flops<true>,
};

}  // namespace siflow::ops
