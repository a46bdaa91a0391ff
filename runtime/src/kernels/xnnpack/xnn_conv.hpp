// SPDX-License-Identifier: Apache-2.0
// Conv2d through XNNPACK's NHWC f32 convolution (Debian's libxnnpack-dev, its February 2022 API).
// The runtime's tensors are NCHW per sample, so a layer converts its input to NHWC in the plan's
// scratch, runs XNNPACK there and converts the result back; the conversions are part of the layer
// (the plan's tuning times them). Two operators per layer, like the dense layers: with the bias
// for values, without it for tangents. H x W is fixed per layer: XNNPACK sizes its indirection
// buffer at the first setup for an input size (prime_conv, at plan time), and later setups for
// any batch size make no heap call.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/siflow.hpp"
#include "support/layout_conversion.hpp"
#include "support/parallel.hpp"

namespace siflow::xnn {

// The layer's geometry in the runtime's terms (ops/conv2d.cc): input [cin, h, w], output
// [cout, oh, ow], weight [cout][cin / groups][kh][kw] (PyTorch's layout), pads top/left/bottom/
// right, strides and dilations (height, width). `transposed`: a ConvTranspose2d on XNNPACK's
// deconvolution, weight [cin][cout / groups][kh][kw] (PyTorch's), the pads cropping the output,
// and the output padding whatever oh and ow exceed (h - 1) sh + dh (kh - 1) + 1 - pads by.
struct ConvShape {
  uint32_t cin, h, w, cout, oh, ow, groups, kh, kw;
  uint32_t pad_top, pad_left, pad_bottom, pad_right;
  uint32_t sh, sw, dh, dw;
  bool transposed = false;
};

struct ConvLayer;
// Creates the two operators from the layer's weights (reordered to XNNPACK's [cout][kh][kw]
// [cin / groups] in a temporary buffer; XNNPACK packs its own copy): convolutions, or
// deconvolutions when shape.transposed. kUnsupported when XNNPACK refuses. With a `pool` of T > 1
// threads the layer has T parts that run_nhwc runs on the pool, each its own operators (XNNPACK
// itself runs single-threaded, so the plan's threads are the only ones): T whole operators that
// take a share of the samples each, and, when groups == 1 and cout >= 8 T, T operators over a
// slice of the output channels each (8-channel multiples, writing the NHWC output at its
// channel offset), for fewer samples than threads (batch 1). An output element is the same sum
// in the same order whichever operator computes it, so the bits do not depend on the split.
Status create_conv(const ConvShape& shape, const float* weight, const float* bias, RowPool* pool,
                   ConvLayer** layer);
void destroy_conv(ConvLayer* layer);

// The scratch of a run of `samples` samples: the NHWC input, padded for XNNPACK's reads past it
// (16 floats), then from a 64-byte aligned offset the NHWC output, padded the same way.
inline size_t conv_scratch_output_offset(const ConvShape& s, size_t samples) {
  return (size_t{s.cin} * s.h * s.w * samples + 16 + 15) / 16 * 16;
}
// Floats of scratch a run of `samples` samples needs (both NHWC copies with their padding); a run
// of more samples goes in chunks of `samples`.
size_t conv_scratch_floats(const ConvShape& shape, size_t samples);
// Sets both operators up once on `scratch` (conv_scratch_floats(shape, 1) floats at least), so
// that their size-dependent buffers exist before any run. Allocates (plan time only); the same
// setup call as run_nhwc's.
Status prime_conv(ConvLayer* layer, float* scratch);

// dst[c][r] = src[r][c] for a rows x cols matrix (row strides lds and ldd): the signature of
// simd::Kernels::transpose, the vector kernels the layer's conversions run on.
using Transpose = void (*)(const float* src, size_t lds, size_t rows, size_t cols, float* dst,
                           size_t ldd);
// The portable transpose for builds or callers without the simd kernels: blocks of 8 x 8
// values, the same bits.
void transpose_blocked(const float* src, size_t lds, size_t rows, size_t cols, float* dst,
                       size_t ldd);

// y = conv(x) (+ bias unless `tangent`) for `samples` NCHW samples of x (sample stride
// `x_stride` floats) into y (stride `y_stride`), through `scratch` of
// conv_scratch_floats(shape, chunk) floats, `chunk` samples at a time. The layout conversions
// run on `transpose` (nullptr: transpose_blocked), split by `split(count, fn)` into ranges of
// units of (sample, block of kConvertPixels pixels) (the plan's row pool): pure data movement, so
// the bits do not depend on the split. Fills y with NaN if XNNPACK refuses (it does not for a
// primed layer), so the run reports a numerical error.
// `x_nhwc` / `y_nhwc`: x is already NHWC (read in place: it must be readable 16 bytes past its
// last sample, and x_stride must be the sample's size) / y is written NHWC straight from XNNPACK
// (y_stride the sample's size); those sides need no conversion and no scratch.
// `part` other than UINT32_MAX: run every sample on that part's whole operator, on the calling
// thread (one thread of data-parallel blocks, each on its own part; part < the pool's threads).
template <typename Split>
void run_conv(ConvLayer* layer, const float* x, size_t x_stride, size_t samples, float* y,
              size_t y_stride, float* scratch, size_t chunk, bool tangent, Transpose transpose,
              Split&& split, bool x_nhwc = false, bool y_nhwc = false, uint32_t part = UINT32_MAX);

// The pieces run_conv is made of (xnn_conv.cc).
const ConvShape& conv_shape(const ConvLayer* layer);
bool run_nhwc(ConvLayer* layer, const float* in, size_t samples, float* out, bool tangent,
              uint32_t part = UINT32_MAX);

template <typename Split>
void run_conv(ConvLayer* layer, const float* x, size_t x_stride, size_t samples, float* y,
              size_t y_stride, float* scratch, size_t chunk, bool tangent, Transpose transpose,
              Split&& split, bool x_nhwc, bool y_nhwc, uint32_t part) {
  const ConvShape& s = conv_shape(layer);
  const size_t iplane = size_t{s.h} * s.w, oplane = size_t{s.oh} * s.ow;
  const size_t out_floats = s.cout * oplane;
  const Transpose tr = transpose ? transpose : transpose_blocked;
  if (x_nhwc && y_nhwc) chunk = samples;  // no scratch: one XNNPACK run over every sample
  for (size_t first = 0; first < samples; first += chunk) {
    const size_t n = samples - first < chunk ? samples - first : chunk;
    const float* in = x_nhwc ? x + first * x_stride : scratch;
    float* out = y_nhwc ? y + first * y_stride : scratch + conv_scratch_output_offset(s, chunk);
    if (!x_nhwc) nchw_to_nhwc(tr, x + first * x_stride, x_stride, n, s.cin, iplane, scratch, split);
    if (!run_nhwc(layer, in, n, out, tangent, part)) {
      for (size_t k = 0; k < n; ++k)
        for (size_t i = 0; i < out_floats; ++i) y[(first + k) * y_stride + i] = __builtin_nanf("");
      continue;
    }
    // NHWC -> NCHW, straight into y.
    if (!y_nhwc) nhwc_to_nchw(tr, out, n, s.cout, oplane, y + first * y_stride, y_stride, split);
  }
}

}  // namespace siflow::xnn
