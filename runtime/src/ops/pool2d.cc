// SPDX-License-Identifier: Apache-2.0
// Pool2d over per-sample [C, H, W] tensors: average or max over kernel/strides/pads windows (max
// also with dilations), per channel. Average sums the window's input cells in double and divides
// by their count, or by kh * kw with count_include_pad (padded cells count as zeros); it is
// linear, so its JVP is the same average of the tangent. Max takes the largest input cell of the
// window, the first one in scan order (kernel row, then column) on ties, and a NaN once seen;
// its JVP is the tangent of that element (a subgradient at ties), its VJP sends dy there.
// verify() refuses a window lying entirely in the padding, so every window has a cell.
#include "ops/op.hpp"
#include "ops/window.hpp"
#include "support/parallel.hpp"

namespace siflow::ops {
namespace {

using detail::NodeData;

Status verify(NodeCheck& check, const fb::Node& node, NodeData* out) {
  out->op = detail::OpKind::kPool2d;
  Status s = check.expect_inputs(*out, 1, 1);
  if (s.ok()) s = read_image_input(check, out);
  if (s.ok()) s = read_window(check, node, out);
  if (!s.ok()) return s;
  if (node.pool() != fb::PoolKind::Average && node.pool() != fb::PoolKind::Max)
    return Status::error(StatusCode::kInvalidModel, "%s: unknown pool kind %d", check.where(),
                         static_cast<int>(node.pool()));
  out->pool = static_cast<uint8_t>(node.pool());
  out->count_include_pad = node.count_include_pad();
  const bool max = node.pool() == fb::PoolKind::Max;
  if (!max && (out->dilations[0] != 1 || out->dilations[1] != 1))
    return Status::error(StatusCode::kInvalidModel,
                         "%s: dilations [%u, %u] apply to max pooling only", check.where(),
                         out->dilations[0], out->dilations[1]);
  if (max && out->count_include_pad)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: count_include_pad applies to average pooling only", check.where());
  const uint32_t c = out->in_shape.dims[0], h = out->in_shape.dims[1], w = out->in_shape.dims[2];
  const uint64_t oh = window_outputs(h, out->pads[0], out->pads[2], out->kernel[0], out->strides[0],
                                     out->dilations[0]);
  const uint64_t ow = window_outputs(w, out->pads[1], out->pads[3], out->kernel[1], out->strides[1],
                                     out->dilations[1]);
  if (oh == 0 || ow == 0)
    return Status::error(StatusCode::kInvalidModel,
                         "%s: the output of input %s with kernel [%u, %u], strides [%u, %u], pads "
                         "[%u, %u, %u, %u] would be empty",
                         check.where(), detail::shape_text(out->in_shape).text, out->kernel[0],
                         out->kernel[1], out->strides[0], out->strides[1], out->pads[0],
                         out->pads[1], out->pads[2], out->pads[3]);
  if (!(s = check.output_width(image_width(c, oh, ow), &out->width)).ok()) return s;
  out->shape = image_shape(c, static_cast<uint32_t>(oh), static_cast<uint32_t>(ow));
  // Every window must hold an input cell (else its average or maximum is undefined): one O(1)
  // check per output row and column, so the work is bounded by the output width.
  const struct {
    uint64_t outputs, extent;
    uint32_t kernel, stride, dilation, pad;
    const char* axis;
  } axes[2] = {{oh, h, out->kernel[0], out->strides[0], out->dilations[0], out->pads[0], "row"},
               {ow, w, out->kernel[1], out->strides[1], out->dilations[1], out->pads[1], "column"}};
  for (const auto& ax : axes)
    for (uint64_t o = 0; o < ax.outputs; ++o) {
      // The first tap at or past cell 0 (k0), in O(1): the window holds a cell iff that tap
      // exists and lies before the end.
      const int64_t start = static_cast<int64_t>(o * ax.stride) - ax.pad;
      const int64_t k0 = start >= 0 ? 0 : (-start + ax.dilation - 1) / ax.dilation;
      const bool any = k0 < ax.kernel && start + k0 * ax.dilation < static_cast<int64_t>(ax.extent);
      if (!any)
        return Status::error(StatusCode::kInvalidModel,
                             "%s: the window of output %s %llu lies entirely in the padding",
                             check.where(), ax.axis, static_cast<unsigned long long>(o));
    }
  return Status();
}

struct Geometry {
  uint32_t c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl;
  bool include_pad;
};

Geometry geometry(const NodeData& n) {
  return Geometry{n.in_shape.dims[0], n.in_shape.dims[1], n.in_shape.dims[2], n.shape.dims[1],
                  n.shape.dims[2],    n.kernel[0],        n.kernel[1],        n.strides[0],
                  n.strides[1],       n.dilations[0],     n.dilations[1],     n.pads[0],
                  n.pads[1],          n.count_include_pad};
}

// Calls fn(input index) for every input cell of window (c, oy, ox) in scan order (kernel row,
// then column); returns the number of cells.
template <typename Fn>
uint32_t visit_window(const Geometry& g, uint32_t c, uint32_t oy, uint32_t ox, const Fn& fn) {
  uint32_t cells = 0;
  for (uint32_t ky = 0; ky < g.kh; ++ky) {
    const int64_t iy = int64_t{oy} * g.sh - g.pt + int64_t{ky} * g.dh;
    if (iy < 0 || iy >= g.h) continue;
    for (uint32_t kx = 0; kx < g.kw; ++kx) {
      const int64_t ix = int64_t{ox} * g.sw - g.pl + int64_t{kx} * g.dw;
      if (ix < 0 || ix >= g.w) continue;
      fn((size_t{c} * g.h + static_cast<size_t>(iy)) * g.w + static_cast<size_t>(ix));
      ++cells;
    }
  }
  return cells;
}

// Calls fn(output index, input index) for every input cell of every window of one sample, the
// cells of a window in scan order; done(output index, cell count) after each window.
template <typename Fn, typename Done>
void for_windows(const Geometry& g, const Fn& fn, const Done& done) {
  for (uint32_t c = 0; c < g.c; ++c)
    for (uint32_t oy = 0; oy < g.oh; ++oy)
      for (uint32_t ox = 0; ox < g.ow; ++ox) {
        const size_t o = (size_t{c} * g.oh + oy) * g.ow + ox;
        done(o, visit_window(g, c, oy, ox, [&](size_t i) { fn(o, i); }));
      }
}

double divisor(const Geometry& g, uint32_t cells) {
  return g.include_pad ? static_cast<double>(g.kh) * g.kw : static_cast<double>(cells);
}

// Average of one sample (x) into y.
template <typename T>
void average(const Geometry& g, const T* x, T* y) {
  double acc = 0.0;
  for_windows(
      g, [&](size_t, size_t i) { acc += x[i]; },
      [&](size_t o, uint32_t cells) {
        y[o] = static_cast<T>(acc / divisor(g, cells));
        acc = 0.0;
      });
}

// The input index of each window's maximum of one sample, through fn(output, input).
template <typename T, typename Fn>
void argmax(const Geometry& g, const T* x, const Fn& fn) {
  size_t best = 0;
  bool first = true;
  for_windows(
      g,
      [&](size_t, size_t i) {
        if (first) {
          best = i;
          first = false;
        } else if (x[best] == x[best] && !(x[i] <= x[best])) {
          best = i;  // larger, or the first NaN
        }
      },
      [&](size_t o, uint32_t) {
        fn(o, best);
        first = true;
      });
}

void run(const NodeRun& r) {
  const NodeData& n = r.model->nodes[r.node];
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  const Geometry g = geometry(n);
  const float* x = r.values[a];
  float* y = r.values[id];
  float* ty = r.directions ? r.tangents[id] : nullptr;
  const float* ta = ty ? r.tangents[a] : nullptr;
  const size_t dirs = r.directions;
  parallel_rows(r.kernels->pool, r.rows, 1, [&](size_t r0, size_t r1) {
    for (size_t row = r0; row < r1; ++row) {
      const float* xr = x + row * in;
      float* yr = y + row * width;
      if (n.pool == static_cast<uint8_t>(fb::PoolKind::Max)) {
        argmax(g, xr, [&](size_t o, size_t i) {
          yr[o] = xr[i];
          for (size_t p = 0; p < (ty ? dirs : 0); ++p)
            ty[(row * dirs + p) * width + o] = ta[(row * dirs + p) * in + i];
        });
      } else {
        average(g, xr, yr);
        for (size_t p = 0; p < (ty ? dirs : 0); ++p)
          average(g, ta + (row * dirs + p) * in, ty + (row * dirs + p) * width);
      }
    }
  });
}

template <typename T>
void forward(const Operands<T>& op) {
  const NodeData& n = *op.node;
  const uint32_t in = op.widths[n.inputs[0]];
  const Geometry g = geometry(n);
  const T* x = op.values[n.inputs[0]];
  for (size_t row = 0; row < op.rows; ++row) {
    const T* xr = x + row * in;
    T* yr = op.out + row * n.width;
    if (n.pool == static_cast<uint8_t>(fb::PoolKind::Max))
      argmax(g, xr, [&](size_t o, size_t i) { yr[o] = xr[i]; });
    else
      average(g, xr, yr);
  }
}

template <typename T>
void vjp(const Operands<T>& op, const Gradients<T>& grad) {
  const NodeData& n = *op.node;
  const uint32_t a = n.inputs[0], in = op.widths[a];
  if (!grad.needs(grad.tape, a)) return;
  const Geometry g = geometry(n);
  T* dx = grad.target(grad.tape, a, op.rows * in);
  for (size_t k = 0; k < op.rows * in; ++k) dx[k] = T(0);
  for (size_t row = 0; row < op.rows; ++row) {
    T* dxr = dx + row * in;
    const T* dyr = grad.dy + row * n.width;
    if (n.pool == static_cast<uint8_t>(fb::PoolKind::Max)) {
      argmax(g, op.values[a] + row * in, [&](size_t o, size_t i) { dxr[i] += dyr[o]; });
    } else {
      // The cells of each window get dy / divisor: counted first, then scattered.
      for (uint32_t c = 0; c < g.c; ++c)
        for (uint32_t oy = 0; oy < g.oh; ++oy)
          for (uint32_t ox = 0; ox < g.ow; ++ox) {
            const uint32_t cells = visit_window(g, c, oy, ox, [](size_t) {});
            const T share =
                static_cast<T>(dyr[(size_t{c} * g.oh + oy) * g.ow + ox] / divisor(g, cells));
            visit_window(g, c, oy, ox, [&](size_t i) { dxr[i] += share; });
          }
    }
  }
  grad.commit(grad.tape, a, op.rows * in);
}

}  // namespace

extern const OpModule kPool2d = {
    "pool2d",       detail::OpKind::kPool2d,
    verify,         kernel_bit(NodeKernel::kReference),
    nullptr,        nullptr,
    nullptr,        run,
    forward<float>, forward<double>,
    vjp<float>,     vjp<double>,
};

}  // namespace siflow::ops
