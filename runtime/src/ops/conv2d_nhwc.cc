// SPDX-License-Identifier: Apache-2.0
// Conv2d on the simd kernels' NHWC implicit GEMM (kernels/simd/kernels_conv_nhwc.inc), the op
// module's kSimdNhwc kernel: its packed weights (after the NCHW kernel's in NodeData::packed,
// packed at load by conv2d.cc's pack), its scratch and its run. Like a convolution on XNNPACK it
// reads and writes either layout (LayoutForm::kEither): a side the plan laid out NHWC is used in
// place, an NCHW side is converted through the plan's scratch by the simd transpose. Forward with
// the bias, tangents (rows * directions samples) without it. The kernel's units (sample, block of
// output channels, block of pixels) are split over the plan's threads; an output's sum is the
// same whichever unit computes it, so the bits do not depend on the thread count or the block.
// The kSimdWino kernel (Winograd F(2x2, 3x3), kernels/simd/kernels_conv_wino.inc) of 3x3
// stride-1 layers runs the same way: its transformed weights after the NHWC kernel's, its units
// (sample, group of tiles) split into a part per thread of the pool (one without a pool), each
// part on its own workspace in the scratch after the NHWC copies.
#include "ops/op.hpp"
#include "support/layout_conversion.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops {

using detail::NodeData;

bool conv_nhwc_runs(const NodeData& n) {
#if defined(SIFLOW_WITH_SIMD)
  return n.op == detail::OpKind::kConv2d &&
         simd::conv_nhwc_applies(n.groups, n.in_shape.dims[0], n.kernel[0], n.kernel[1]);
#else
  (void)n;
  return false;
#endif
}

// The NCHW kernel's weights (count = cout * cin / groups * kh * kw), then from a 16-float
// boundary the NHWC kernel's.
uint64_t conv_nhwc_packed_offset(const NodeData& n) {
  const uint64_t count =
      uint64_t{n.shape.dims[0]} * (n.in_shape.dims[0] / n.groups) * n.kernel[0] * n.kernel[1];
  return (count + 15) / 16 * 16;
}

bool conv_wino_runs(const NodeData& n) {
#if defined(SIFLOW_WITH_SIMD)
  return n.op == detail::OpKind::kConv2d &&
         simd::conv_wino_applies(n.groups, n.in_shape.dims[0], n.kernel[0], n.kernel[1],
                                 n.strides[0], n.strides[1], n.dilations[0], n.dilations[1]);
#else
  (void)n;
  return false;
#endif
}

uint64_t conv_wino_packed_offset(const NodeData& n) {
#if defined(SIFLOW_WITH_SIMD)
  const uint64_t nhwc =
      simd::conv_nhwc_packed_floats(n.in_shape.dims[0], n.kernel[0] * n.kernel[1], n.shape.dims[0]);
  return conv_nhwc_packed_offset(n) + (nhwc + 15) / 16 * 16;
#else
  (void)n;
  return 0;
#endif
}

namespace {
// Both NHWC copies of `samples` samples: the input, then from a 16-float boundary the output.
size_t scratch_output_offset(const NodeData& n, size_t samples) {
  return (detail::shape_size(n.in_shape) * samples + 15) / 16 * 16;
}
#if defined(SIFLOW_WITH_SIMD)
size_t scratch_work_offset(const NodeData& n, size_t samples) {
  return scratch_output_offset(n, samples) + (size_t{n.width} * samples + 15) / 16 * 16;
}
// The Winograd kernel's units of `samples` samples run in one part per thread of the pool that
// splits the node (at most as many as units), each on a workspace of its own: one thread, one.
simd::ConvWino wino_shape(const NodeData& n, const float* weight) {
  return simd::ConvWino{
      weight,          n.bias,          n.in_shape.dims[0], n.in_shape.dims[1], n.in_shape.dims[2],
      n.shape.dims[0], n.shape.dims[1], n.shape.dims[2],    n.pads[0],          n.pads[1]};
}
size_t wino_parts(const NodeData& n, size_t samples, uint32_t threads) {
  const size_t units = simd::conv_wino_units(wino_shape(n, nullptr), samples);
  return units < threads ? units : threads;
}
#endif
}  // namespace

size_t conv_nhwc_scratch_floats(const detail::ModelData& model, uint32_t i, size_t samples) {
  const NodeData& n = model.nodes[i];
  if (!conv_nhwc_runs(n)) return 0;
  return scratch_output_offset(n, samples) + size_t{n.width} * samples;
}

size_t conv_wino_scratch_floats(const detail::ModelData& model, uint32_t i, size_t samples,
                                uint32_t threads) {
#if defined(SIFLOW_WITH_SIMD)
  const NodeData& n = model.nodes[i];
  if (!conv_wino_runs(n)) return 0;
  return scratch_work_offset(n, samples) +
         wino_parts(n, samples, threads) * simd::conv_wino_work_floats(n.in_shape.dims[0]);
#else
  (void)model, (void)i, (void)samples, (void)threads;
  return 0;
#endif
}

#if defined(SIFLOW_WITH_SIMD)
namespace {

// The layout conversions of `samples` samples (support/layout_conversion.hpp) on the simd
// transpose, split over the pool.
void to_nhwc(const NodeRun& r, const float* x, size_t ldx, size_t samples, uint32_t channels,
             size_t plane, float* dst) {
  nchw_to_nhwc(r.kernels->simd->transpose, x, ldx, samples, channels, plane, dst,
               [&](size_t count, auto&& fn) { parallel_rows(r.kernels->pool, count, 1, fn); });
}
void to_nchw(const NodeRun& r, const float* src, size_t samples, uint32_t channels, size_t plane,
             float* y, size_t ldy) {
  nhwc_to_nchw(r.kernels->simd->transpose, src, samples, channels, plane, y, ldy,
               [&](size_t count, auto&& fn) { parallel_rows(r.kernels->pool, count, 1, fn); });
}

// One pass (values or tangents) over `samples` samples of x (stride in) into y (stride width).
// A tensor with one channel or one pixel is the same memory in both layouts: not converted.
// conv(xin, ldx, yout) runs the convolution on NHWC samples.
template <typename Conv>
void pass(const NodeRun& r, const float* x, size_t in, float* y, size_t width, size_t samples,
          bool x_nhwc, bool y_nhwc, const Conv& conv) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t cin = n.in_shape.dims[0], cout = n.shape.dims[0];
  const size_t iplane = size_t{n.in_shape.dims[1]} * n.in_shape.dims[2];
  const size_t oplane = size_t{n.shape.dims[1]} * n.shape.dims[2];
  x_nhwc = x_nhwc || cin == 1 || iplane == 1;
  y_nhwc = y_nhwc || cout == 1 || oplane == 1;
  const float* xin = x;
  if (!x_nhwc) {
    to_nhwc(r, x, in, samples, cin, iplane, r.scratch);
    xin = r.scratch;
  }
  float* yout = y_nhwc ? y : r.scratch + scratch_output_offset(n, samples);
  conv(xin, x_nhwc ? in : detail::shape_size(n.in_shape), yout);
  if (!y_nhwc) to_nchw(r, yout, samples, cout, oplane, y, width);
}

void pass_nhwc(const NodeRun& r, const simd::ConvNhwc& c, const float* x, size_t in, float* y,
               size_t width, size_t samples, bool x_nhwc, bool y_nhwc) {
  const simd::Kernels& k = *r.kernels->simd;
  pass(r, x, in, y, width, samples, x_nhwc, y_nhwc, [&](const float* xin, size_t ldx, float* yout) {
    parallel_rows(r.kernels->pool, k.conv_nhwc_units(c, samples), 1,
                  [&](size_t u0, size_t u1) { k.conv2d_nhwc(c, xin, ldx, yout, width, u0, u1); });
  });
}

// Part p of the Winograd kernel's units runs units [units p / parts, units (p + 1) / parts) on
// workspace p (a thread runs whole parts).
void pass_wino(const NodeRun& r, const simd::ConvWino& c, const float* x, size_t in, float* y,
               size_t width, size_t samples, bool x_nhwc, bool y_nhwc) {
  const NodeData& n = r.model->nodes[r.node];
  const simd::Kernels& k = *r.kernels->simd;
  const uint32_t threads = RowPool::threads_of(r.kernels->pool);
  const size_t units = simd::conv_wino_units(c, samples), parts = wino_parts(n, samples, threads);
  float* work = r.scratch + scratch_work_offset(n, samples);
  const size_t work_floats = simd::conv_wino_work_floats(c.cin);
  pass(r, x, in, y, width, samples, x_nhwc, y_nhwc, [&](const float* xin, size_t ldx, float* yout) {
    parallel_rows(r.kernels->pool, parts, 1, [&](size_t p0, size_t p1) {
      for (size_t p = p0; p < p1; ++p)
        k.conv2d_wino(c, xin, ldx, yout, width, work + p * work_floats, units * p / parts,
                      units * (p + 1) / parts);
    });
  });
}

}  // namespace

void run_conv_nhwc(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  simd::ConvNhwc c{n.packed + conv_nhwc_packed_offset(n),
                   n.bias,
                   n.in_shape.dims[0],
                   n.in_shape.dims[1],
                   n.in_shape.dims[2],
                   n.shape.dims[0],
                   n.shape.dims[1],
                   n.shape.dims[2],
                   n.kernel[0],
                   n.kernel[1],
                   n.strides[0],
                   n.strides[1],
                   n.dilations[0],
                   n.dilations[1],
                   n.pads[0],
                   n.pads[1]};
  const bool x_nhwc = is_nhwc(r, a), y_nhwc = is_nhwc(r, id);
  pass_nhwc(r, c, r.values[a], in, r.values[id], width, r.rows, x_nhwc, y_nhwc);
  if (!r.directions || !r.tangents[id]) return;
  c.bias = nullptr;
  pass_nhwc(r, c, r.tangents[a], in, r.tangents[id], width, r.rows * r.directions, x_nhwc, y_nhwc);
}

void run_conv_wino(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  simd::ConvWino c = wino_shape(n, n.packed + conv_wino_packed_offset(n));
  const bool x_nhwc = is_nhwc(r, a), y_nhwc = is_nhwc(r, id);
  pass_wino(r, c, r.values[a], in, r.values[id], width, r.rows, x_nhwc, y_nhwc);
  if (!r.directions || !r.tangents[id]) return;
  c.bias = nullptr;  // the tangents of a linear map
  pass_wino(r, c, r.tangents[a], in, r.tangents[id], width, r.rows * r.directions, x_nhwc, y_nhwc);
}
#else
void run_conv_nhwc(const NodeRun& r) { (void)r; }
void run_conv_wino(const NodeRun& r) { (void)r; }
#endif

}  // namespace siflow::ops
