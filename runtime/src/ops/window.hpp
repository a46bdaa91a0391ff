// SPDX-License-Identifier: Apache-2.0
// The window fields shared by the image ops (Conv2d, ConvTranspose2d, Pool2d): reading and
// bounding kernel, strides, pads and dilations from a node, with a message naming the field.
// Every window entry is bounded by kMaxWindowExtent (2^16, docs/format.md) and every image extent
// by Limits::kMaxWidth, so the geometry's arithmetic fits in 64 bits.
#pragma once

#include <cstdint>

#include "format/node_check.hpp"

namespace siflow::ops {

// The largest kernel, stride, pad, dilation and output_padding entry (docs/format.md, "Window
// fields"; the converter's image_ops.MAX_EXTENT). Fixed by the format, independent of
// Limits::kMaxWidth.
constexpr uint32_t kMaxWindowExtent = 65536;

// Reads [a, b] (or [top, left, bottom, right] when count is 4) from `v` into out; an absent or
// empty vector gives `fallback` for every entry. Entries must be in [min, kMaxWindowExtent].
inline Status read_window_field(const NodeCheck& check, const char* field,
                                const flatbuffers::Vector<uint32_t>* v, uint32_t count,
                                uint32_t fallback, uint32_t min, uint32_t* out) {
  if (!v || v->size() == 0) {
    for (uint32_t i = 0; i < count; ++i) out[i] = fallback;
    return Status();
  }
  if (v->size() != count)
    return Status::error(StatusCode::kInvalidModel, "%s: %s has %u values, expected %u",
                         check.where(), field, v->size(), count);
  for (uint32_t i = 0; i < count; ++i) {
    out[i] = v->Get(i);
    if (out[i] < min || out[i] > kMaxWindowExtent)
      return Status::error(StatusCode::kInvalidModel, "%s: %s[%u] = %u is outside [%u, %u]",
                           check.where(), field, i, out[i], min, kMaxWindowExtent);
  }
  return Status();
}

// Kernel (required), strides, pads and dilations of an image op's node into `out`.
inline Status read_window(const NodeCheck& check, const fb::Node& node, detail::NodeData* out) {
  if (!node.kernel() || node.kernel()->size() == 0)
    return Status::error(StatusCode::kInvalidModel, "%s: kernel [kh, kw] is missing",
                         check.where());
  Status s = read_window_field(check, "kernel", node.kernel(), 2, 1, 1, out->kernel);
  if (s.ok()) s = read_window_field(check, "strides", node.strides(), 2, 1, 1, out->strides);
  if (s.ok()) s = read_window_field(check, "pads", node.pads(), 4, 0, 0, out->pads);
  if (s.ok()) s = read_window_field(check, "dilations", node.dilations(), 2, 1, 1, out->dilations);
  return s;
}

// The input's per-sample shape, which must be [C, H, W].
inline Status read_image_input(const NodeCheck& check, detail::NodeData* out) {
  out->in_shape = check.shape_of(out->inputs[0]);
  if (out->in_shape.rank != 3)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: input shape %s is not an image [C, H, W] (give the graph an x_shape "
                         "or reshape first)",
                         check.where(), detail::shape_text(out->in_shape).text);
  return Status();
}

// The number of outputs of a window sliding over `extent` cells padded by lo and hi:
// floor((extent + lo + hi - span) / stride) + 1 with span = dilation (kernel - 1) + 1, or 0 when
// the window does not fit once.
inline uint64_t window_outputs(uint64_t extent, uint64_t lo, uint64_t hi, uint64_t kernel,
                               uint64_t stride, uint64_t dilation) {
  const uint64_t span = dilation * (kernel - 1) + 1, padded = extent + lo + hi;
  return padded < span ? 0 : (padded - span) / stride + 1;
}

// Cout * H * W with each factor at most Limits::kMaxWidth (else kMaxWidth + 1, which
// NodeCheck::output_width refuses).
inline uint64_t image_width(uint64_t c, uint64_t h, uint64_t w) {
  if (c > Limits::kMaxWidth || h > Limits::kMaxWidth || w > Limits::kMaxWidth)
    return uint64_t{Limits::kMaxWidth} + 1;
  return c * h * w;
}

inline detail::Shape image_shape(uint32_t c, uint32_t h, uint32_t w) {
  detail::Shape s;
  s.rank = 3;
  s.dims[0] = c;
  s.dims[1] = h;
  s.dims[2] = w;
  return s;
}

}  // namespace siflow::ops
