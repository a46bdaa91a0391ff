// SPDX-License-Identifier: Apache-2.0
// Conv2d and ConvTranspose2d on XNNPACK (kernels/xnnpack/xnn_conv.hpp), the op modules' XNNPACK
// kernel: the node's geometry in XNNPACK's terms, the scratch the plan reserves for it, and the
// run. Kept apart from conv2d.cc so the XNNPACK dependency stays in one small file.
#include "ops/op.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/simd/kernels.hpp"
#include "kernels/xnnpack/xnn_conv.hpp"
#endif

namespace siflow::ops {

using detail::NodeData;

#if defined(SIFLOW_WITH_XNNPACK)
xnn::ConvShape conv_xnn_shape(const NodeData& n) {
  // pads are {top, left, bottom, right}; strides and dilations {height, width}.
  return xnn::ConvShape{
      n.in_shape.dims[0], n.in_shape.dims[1], n.in_shape.dims[2],
      n.shape.dims[0],    n.shape.dims[1],    n.shape.dims[2],
      n.groups,           n.kernel[0],        n.kernel[1],
      n.pads[0],          n.pads[1],          n.pads[2],
      n.pads[3],          n.strides[0],       n.strides[1],
      n.dilations[0],     n.dilations[1],     n.op == detail::OpKind::kConvTranspose2d};
}

// Every sample of the call converted to NHWC in the plan's scratch (conv_xnn_scratch_floats,
// sized for every sample of a call), unless the plan laid the input out NHWC already, the forward
// with the bias, then the tangents (rows * directions samples) through the operator without it;
// the output converted back to NCHW unless the plan laid it out NHWC. The conversions run on the
// simd kernels' transpose, split into blocks of pixels over the row pool; XNNPACK itself runs
// single-threaded, the layer's per-thread parts on the same pool (xnn_conv.hpp).
void run_conv_xnn(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const FastKernels& k = *r.kernels;
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  xnn::ConvLayer* layer = k.xnn_conv[r.node];
  const xnn::Transpose transpose = k.simd ? k.simd->transpose : nullptr;
  auto split = [&](size_t count, auto&& fn) { parallel_rows(k.pool, count, 1, fn); };
  // A side the plan laid out NHWC (plan/layout_choice.cc) is read or written in place.
  const bool x_nhwc = is_nhwc(r, a), y_nhwc = is_nhwc(r, id);
  xnn::run_conv(layer, r.values[a], in, r.rows, r.values[id], width, r.scratch, r.rows, false,
                transpose, split, x_nhwc, y_nhwc, k.part);
  if (!r.directions || !r.tangents[id]) return;
  const size_t samples = r.rows * r.directions;
  xnn::run_conv(layer, r.tangents[a], in, samples, r.tangents[id], width, r.scratch, samples, true,
                transpose, split, x_nhwc, y_nhwc, k.part);
}
#endif

LayoutForm conv_layout_form(const detail::ModelData& model, uint32_t node, NodeKernel kernel) {
  (void)model, (void)node;
  return kernel == NodeKernel::kXnnpack || kernel == NodeKernel::kSimdNhwc ||
                 kernel == NodeKernel::kSimdWino
             ? LayoutForm::kEither
             : LayoutForm::kNchw;
}

size_t conv_xnn_scratch_floats(const detail::ModelData& model, uint32_t i, size_t samples) {
#if defined(SIFLOW_WITH_XNNPACK)
  const NodeData& n = model.nodes[i];
  if (n.op != detail::OpKind::kConv2d && n.op != detail::OpKind::kConvTranspose2d) return 0;
  return xnn::conv_scratch_floats(conv_xnn_shape(n), samples);
#else
  (void)model, (void)i, (void)samples;
  return 0;
#endif
}

}  // namespace siflow::ops
