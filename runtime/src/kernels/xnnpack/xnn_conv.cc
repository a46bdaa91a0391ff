// SPDX-License-Identifier: Apache-2.0
// Conv2d on XNNPACK's NHWC f32 convolution: operator creation with the weights reordered to
// XNNPACK's layout, the priming setup, the NHWC runs and the layout conversions; see xnn_conv.hpp.
// XNNPACK is initialized (with the counting allocator) by xnn_dense.cc's initialize().
#include "kernels/xnnpack/xnn_conv.hpp"

#include <xnnpack.h>

#include <atomic>
#include <new>

#include "kernels/xnnpack/xnn_dense.hpp"

namespace siflow::xnn {

// ops[2 p] and ops[2 p + 1]: part p's operators with the bias (values) and without (tangents);
// parts 0..parts-1 whole, then (when sliced) parts..2 parts-1 over output channels
// [first[p], first[p + 1]). ops[0] and ops[1] are the layer's operators with one part.
struct ConvLayer {
  xnn_operator_t* ops = nullptr;
  uint32_t count = 0;  // operators in ops
  uint32_t parts = 1;
  bool sliced = false;
  uint32_t* first = nullptr;  // parts + 1 channel offsets when sliced
  ConvShape shape{};
  RowPool* pool = nullptr;
};

namespace {
size_t round16(size_t floats) { return (floats + 15) / 16 * 16; }
}  // namespace

Status create_conv(const ConvShape& s, const float* weight, const float* bias, RowPool* pool,
                   ConvLayer** layer) {
  *layer = nullptr;
  Status st = initialize();
  if (!st.ok()) return st;
  const uint32_t cin_g = s.cin / s.groups, cout_g = s.cout / s.groups;
  const size_t taps = size_t{s.kh} * s.kw, count = size_t{s.cout} * cin_g * taps;
  const uint32_t parts = RowPool::threads_of(pool);
  const bool sliced = parts > 1 && s.groups == 1 && s.cout >= 8 * parts;
  const uint32_t operators = 2 * parts * (sliced ? 2 : 1);
  // XNNPACK's weights: [groups][cout / groups][kh][kw][cin / groups], i.e. [cout][tap][cin_g].
  float* packed = new (std::nothrow) float[count ? count : 1];
  ConvLayer* l = new (std::nothrow) ConvLayer();
  xnn_operator_t* ops = l ? new (std::nothrow) xnn_operator_t[operators]() : nullptr;
  uint32_t* first = sliced && ops ? new (std::nothrow) uint32_t[parts + 1] : nullptr;
  if (!packed || !l || !ops || (sliced && !first)) {
    delete[] packed;
    delete[] ops;
    delete l;
    return Status::error(StatusCode::kOutOfMemory, "cannot allocate an XNNPACK convolution");
  }
  l->ops = ops;
  l->count = operators;
  l->parts = parts;
  l->sliced = sliced;
  l->first = first;
  if (sliced)
    for (uint32_t p = 0; p <= parts; ++p)
      first[p] = p == parts ? s.cout : static_cast<uint32_t>(uint64_t{s.cout} * p / parts / 8 * 8);
  // A transposed conv's weight is [cin][cout / groups][tap]: output o = g cout_g + oo of group g
  // reads input channel g cin_g + j at [(g cin_g + j) cout_g + oo][tap].
  for (uint32_t o = 0; o < s.cout; ++o)
    for (uint32_t j = 0; j < cin_g; ++j) {
      const uint32_t g = o / cout_g, oo = o % cout_g;
      const size_t from =
          s.transposed ? (size_t{g} * cin_g + j) * cout_g + oo : size_t{o} * cin_g + j;
      for (size_t t = 0; t < taps; ++t)
        packed[(size_t{o} * taps + t) * cin_g + j] = weight[from * taps + t];
    }
  l->shape = s;
  l->pool = parts > 1 ? pool : nullptr;
  const float lo = -__builtin_inff(), hi = __builtin_inff();
  // Output channels [c0, c1) of every group (the whole layer: 0 and cout_g).
  auto create = [&](uint32_t c0, uint32_t c1, const float* b, xnn_operator_t* op) {
    const float* w = packed + size_t{c0} * taps * cin_g;
    const float* bb = b ? b + c0 : nullptr;
    if (s.transposed)
      return xnn_create_deconvolution2d_nhwc_f32(
          s.pad_top, s.pad_right, s.pad_bottom, s.pad_left, s.kh, s.kw, s.sh, s.sw, s.dh, s.dw,
          s.groups, cin_g, c1 - c0, s.cin, s.cout, w, bb, lo, hi, 0, op);
    return xnn_create_convolution2d_nhwc_f32(s.pad_top, s.pad_right, s.pad_bottom, s.pad_left, s.kh,
                                             s.kw, s.sh, s.sw, s.dh, s.dw, s.groups, cin_g, c1 - c0,
                                             s.cin, s.cout, w, bb, lo, hi, 0, op);
  };
  xnn_status x = xnn_status_success;
  for (uint32_t p = 0; p < parts && x == xnn_status_success; ++p) {
    x = create(0, cout_g, bias, &ops[2 * p]);
    if (x == xnn_status_success) x = create(0, cout_g, nullptr, &ops[2 * p + 1]);
  }
  for (uint32_t p = 0; sliced && p < parts && x == xnn_status_success; ++p) {
    x = create(first[p], first[p + 1], bias, &ops[2 * (parts + p)]);
    if (x == xnn_status_success)
      x = create(first[p], first[p + 1], nullptr, &ops[2 * (parts + p) + 1]);
  }
  delete[] packed;
  if (x != xnn_status_success) {
    destroy_conv(l);
    return Status::error(
        x == xnn_status_out_of_memory ? StatusCode::kOutOfMemory : StatusCode::kUnsupported,
        "XNNPACK cannot create a %s (%u -> %u channels, kernel %ux%u, groups %u): status %d",
        s.transposed ? "deconvolution" : "convolution", s.cin, s.cout, s.kh, s.kw, s.groups,
        static_cast<int>(x));
  }
  *layer = l;
  return Status();
}

void destroy_conv(ConvLayer* l) {
  if (!l) return;
  for (uint32_t i = 0; i < l->count; ++i)
    if (l->ops[i]) xnn_delete_operator(l->ops[i]);
  delete[] l->ops;
  delete[] l->first;
  delete l;
}

const ConvShape& conv_shape(const ConvLayer* l) { return l->shape; }

size_t conv_scratch_floats(const ConvShape& s, size_t samples) {
  // kExtraReadBytes after each copy (XNNPACK reads past an input; the output's padding keeps the
  // region's end readable too), 64-byte aligned.
  return conv_scratch_output_offset(s, samples) +
         round16(size_t{s.cout} * s.oh * s.ow * samples + 16);
}

namespace {
// The one setup call of a layer's operator for `samples` NHWC samples at `in` and `out`: the
// priming at plan time (which sizes XNNPACK's buffers for the layer's H x W) and every run.
// A deconvolution's output padding ("adjustment") is what the output size exceeds
// (h - 1) sh + dh (kh - 1) + 1 - pads by (ops/conv2d.cc checked the sizes).
xnn_status setup(ConvLayer* l, xnn_operator_t op, size_t samples, const float* in, float* out) {
  const ConvShape& s = l->shape;
  if (s.transposed) {
    const int64_t bh =
        (int64_t{s.h} - 1) * s.sh + int64_t{s.dh} * (s.kh - 1) + 1 - s.pad_top - s.pad_bottom;
    const int64_t bw =
        (int64_t{s.w} - 1) * s.sw + int64_t{s.dw} * (s.kw - 1) + 1 - s.pad_left - s.pad_right;
    if (s.oh < bh || s.ow < bw) return xnn_status_invalid_parameter;
    return xnn_setup_deconvolution2d_nhwc_f32(op, samples, s.h, s.w,
                                              static_cast<uint32_t>(s.oh - bh),
                                              static_cast<uint32_t>(s.ow - bw), in, out, nullptr);
  }
  return xnn_setup_convolution2d_nhwc_f32(op, samples, s.h, s.w, in, out, nullptr);
}

bool run_one(ConvLayer* l, xnn_operator_t op, size_t samples, const float* in, float* out) {
  return setup(l, op, samples, in, out) == xnn_status_success &&
         xnn_run_operator(op, nullptr) == xnn_status_success;
}
}  // namespace

// The least multiply-adds worth a part of its own (about 5 us of XNNPACK's GEMM on one core;
// handing a part to a worker costs a few): a smaller call runs whole on the caller's thread.
constexpr uint64_t kMinPartMacs = uint64_t{1} << 19;

// One part per thread: a share of the samples each when there are at least as many samples as
// parts (and a slice split would not balance better), else a slice of the output channels each;
// one whole run when the call has less than kMinPartMacs per part (the same bits: a part computes
// its outputs as the whole operator does, tested at 1, 2 and 3 threads).
bool run_nhwc(ConvLayer* l, const float* in, size_t samples, float* out, bool tangent,
              uint32_t part) {
  const uint32_t parts = l->parts;
  // Part p's whole operators are ops[2 p] and ops[2 p + 1], the same layer as part 0's.
  if (part != UINT32_MAX)
    return run_one(l, l->ops[2 * (part < parts ? part : 0) + (tangent ? 1 : 0)], samples, in, out);
  const ConvShape& s = l->shape;
  const bool by_samples =
      samples >= parts && (!l->sliced || samples % parts == 0 || samples >= 4 * size_t{parts});
  const uint64_t pixels = s.transposed ? uint64_t{s.h} * s.w : uint64_t{s.oh} * s.ow;
  const uint64_t macs = samples * pixels * s.cin * (s.cout / s.groups) * s.kh * s.kw;
  if (parts == 1 || (!by_samples && !l->sliced) || macs < kMinPartMacs * parts)
    return run_one(l, l->ops[tangent ? 1 : 0], samples, in, out);
  const size_t in_floats = size_t{s.cin} * s.h * s.w, out_floats = size_t{s.cout} * s.oh * s.ow;
  std::atomic<bool> ok{true};
  parallel_rows(l->pool, parts, 1, [&](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      bool done;
      if (by_samples) {
        const size_t s0 = samples * p / parts, s1 = samples * (p + 1) / parts;
        done = s0 == s1 || run_one(l, l->ops[2 * p + (tangent ? 1 : 0)], s1 - s0,
                                   in + s0 * in_floats, out + s0 * out_floats);
      } else {
        done =
            run_one(l, l->ops[2 * (parts + p) + (tangent ? 1 : 0)], samples, in, out + l->first[p]);
      }
      if (!done) ok.store(false, std::memory_order_relaxed);
    }
  });
  return ok.load(std::memory_order_relaxed);
}

Status prime_conv(ConvLayer* l, float* scratch) {
  float* out = scratch + conv_scratch_output_offset(l->shape, 1);
  for (uint32_t i = 0; i < l->count; ++i) {
    const uint32_t part = i / 2;
    const bool slice = part >= l->parts;
    const xnn_operator_t op = l->ops[i];
    const xnn_status x = setup(l, op, 1, scratch, slice ? out + l->first[part - l->parts] : out);
    if (x != xnn_status_success)
      return Status::error(
          x == xnn_status_out_of_memory ? StatusCode::kOutOfMemory : StatusCode::kUnsupported,
          "XNNPACK cannot set up a convolution on a %ux%u input: status %d", l->shape.h, l->shape.w,
          static_cast<int>(x));
  }
  return Status();
}

// Tiles of 8 x 8: each reads 8 runs of 8 source values and writes 8 runs of 8; the compiler may
// vectorize the inner copies, and the edges are the same loop with shorter bounds.
void transpose_blocked(const float* src, size_t lds, size_t rows, size_t cols, float* dst,
                       size_t ldd) {
  for (size_t r0 = 0; r0 < rows; r0 += 8) {
    const size_t r1 = rows - r0 < 8 ? rows : r0 + 8;
    for (size_t c0 = 0; c0 < cols; c0 += 8) {
      const size_t c1 = cols - c0 < 8 ? cols : c0 + 8;
      for (size_t c = c0; c < c1; ++c)
        for (size_t r = r0; r < r1; ++r) dst[c * ldd + r] = src[r * lds + c];
    }
  }
}

}  // namespace siflow::xnn
