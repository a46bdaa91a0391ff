// SPDX-License-Identifier: Apache-2.0
// The reference loops of Conv2d and ConvTranspose2d (conv2d.cc's op module): the geometry of a
// node as a "small" side S and a "large" side L, and the four loops that serve both ops
// (gather_small, gather_large, the weight and bias gradients). Templates on the number type
// (float at run time, double for the checks and the trainer's gradient tests).
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/model_data.hpp"

namespace siflow::ops::conv {

using detail::NodeData;

struct Geometry {
  uint32_t cs, hs, ws;  // small side
  uint32_t cl, hl, wl;  // large side
  uint32_t groups, kh, kw, sh, sw, dh, dw, pt, pl;
};

inline Geometry geometry(const NodeData& n, bool transposed) {
  const detail::Shape& s = transposed ? n.in_shape : n.shape;
  const detail::Shape& l = transposed ? n.shape : n.in_shape;
  return Geometry{s.dims[0],    s.dims[1],      s.dims[2],      l.dims[0],   l.dims[1],
                  l.dims[2],    n.groups,       n.kernel[0],    n.kernel[1], n.strides[0],
                  n.strides[1], n.dilations[0], n.dilations[1], n.pads[0],   n.pads[1]};
}

// Weights of the node: [C_S][C_L / groups][kh][kw] in both ops.
inline size_t weight_count(const Geometry& g) {
  return size_t{g.cs} * (g.cl / g.groups) * g.kh * g.kw;
}

// One element S[cs][sy][sx] of gather_small: acc plus the sum over (j, ky, kx) of
// W[cs][j][ky][kx] L[group(cs) * C_L/g + j][ly][lx], in that order; wc is W[cs] and lg the first
// L channel of cs's group. Every caller that must give gather_small's bits sums through here.
template <typename T>
T gather_point(const Geometry& g, const T* wc, const T* lg, uint32_t sy, uint32_t sx, T acc) {
  const uint32_t clg = g.cl / g.groups;
  const size_t taps = size_t{g.kh} * g.kw, lplane = size_t{g.hl} * g.wl;
  for (uint32_t j = 0; j < clg; ++j)
    for (uint32_t ky = 0; ky < g.kh; ++ky) {
      const int64_t ly = int64_t{sy} * g.sh - g.pt + int64_t{ky} * g.dh;
      if (ly < 0 || ly >= g.hl) continue;
      const T* lrow = lg + j * lplane + static_cast<size_t>(ly) * g.wl;
      const T* wrow = wc + j * taps + size_t{ky} * g.kw;
      for (uint32_t kx = 0; kx < g.kw; ++kx) {
        const int64_t lx = int64_t{sx} * g.sw - g.pl + int64_t{kx} * g.dw;
        if (lx < 0 || lx >= g.wl) continue;
        acc += wrow[kx] * lrow[lx];
      }
    }
  return acc;
}

// S[cs][sy][sx] = bias[cs] + sum_{j, ky, kx} W[cs][j][ky][kx] L[group(cs) * C_L/g + j][ly][lx].
template <typename T>
void gather_small(const Geometry& g, const T* w, const T* bias, const T* l, T* s) {
  const uint32_t csg = g.cs / g.groups, clg = g.cl / g.groups;
  const size_t taps = size_t{g.kh} * g.kw, lplane = size_t{g.hl} * g.wl;
  for (uint32_t cs = 0; cs < g.cs; ++cs) {
    const T* wc = w + size_t{cs} * clg * taps;
    const T* lg = l + size_t{cs / csg} * clg * lplane;
    for (uint32_t sy = 0; sy < g.hs; ++sy)
      for (uint32_t sx = 0; sx < g.ws; ++sx)
        s[(size_t{cs} * g.hs + sy) * g.ws + sx] =
            gather_point(g, wc, lg, sy, sx, bias ? bias[cs] : T(0));
  }
}

// L[cl][ly][lx] = bias[cl] + the sum over every (cs in cl's group, ky, kx) whose tap lands on
// (ly, lx) of W[cs][cl mod C_L/g][ky][kx] S[cs][sy][sx]: the transpose of gather_small.
template <typename T>
void gather_large(const Geometry& g, const T* w, const T* bias, const T* s, T* l) {
  const uint32_t csg = g.cs / g.groups, clg = g.cl / g.groups;
  const size_t taps = size_t{g.kh} * g.kw, splane = size_t{g.hs} * g.ws;
  for (uint32_t cl = 0; cl < g.cl; ++cl) {
    const uint32_t group = cl / clg, j = cl % clg;
    for (uint32_t ly = 0; ly < g.hl; ++ly)
      for (uint32_t lx = 0; lx < g.wl; ++lx) {
        T acc = bias ? bias[cl] : T(0);
        for (uint32_t i = 0; i < csg; ++i) {
          const uint32_t cs = group * csg + i;
          const T* sc = s + cs * splane;
          const T* wj = w + (size_t{cs} * clg + j) * taps;
          for (uint32_t ky = 0; ky < g.kh; ++ky) {
            const int64_t ny = int64_t{ly} + g.pt - int64_t{ky} * g.dh;
            if (ny < 0 || ny % g.sh != 0 || ny / g.sh >= g.hs) continue;
            const size_t sy = static_cast<size_t>(ny / g.sh);
            for (uint32_t kx = 0; kx < g.kw; ++kx) {
              const int64_t nx = int64_t{lx} + g.pl - int64_t{kx} * g.dw;
              if (nx < 0 || nx % g.sw != 0 || nx / g.sw >= g.ws) continue;
              acc += wj[size_t{ky} * g.kw + kx] * sc[sy * g.ws + static_cast<size_t>(nx / g.sw)];
            }
          }
        }
        l[(size_t{cl} * g.hl + ly) * g.wl + lx] = acc;
      }
  }
}

// dW[cs][j][ky][kx] += sum over rows and (sy, sx) of S[cs][sy][sx] L[group * C_L/g + j][ly][lx].
template <typename T>
void weight_gradient(const Geometry& g, const T* s, const T* l, size_t rows, T* dw) {
  const uint32_t csg = g.cs / g.groups, clg = g.cl / g.groups;
  const size_t splane = size_t{g.hs} * g.ws, lplane = size_t{g.hl} * g.wl;
  const size_t swidth = g.cs * splane, lwidth = g.cl * lplane;
  for (uint32_t cs = 0; cs < g.cs; ++cs)
    for (uint32_t j = 0; j < clg; ++j)
      for (uint32_t ky = 0; ky < g.kh; ++ky)
        for (uint32_t kx = 0; kx < g.kw; ++kx) {
          T acc = 0;
          for (size_t r = 0; r < rows; ++r) {
            const T* sc = s + r * swidth + cs * splane;
            const T* lc = l + r * lwidth + (size_t{cs / csg} * clg + j) * lplane;
            for (uint32_t sy = 0; sy < g.hs; ++sy) {
              const int64_t ly = int64_t{sy} * g.sh - g.pt + int64_t{ky} * g.dh;
              if (ly < 0 || ly >= g.hl) continue;
              for (uint32_t sx = 0; sx < g.ws; ++sx) {
                const int64_t lx = int64_t{sx} * g.sw - g.pl + int64_t{kx} * g.dw;
                if (lx < 0 || lx >= g.wl) continue;
                acc += sc[size_t{sy} * g.ws + sx] * lc[static_cast<size_t>(ly) * g.wl + lx];
              }
            }
          }
          dw[((size_t{cs} * clg + j) * g.kh + ky) * g.kw + kx] += acc;
        }
}

// db[c] += sum over rows and positions of dy[c]: dy is [rows][channels][plane].
template <typename T>
void bias_gradient(const T* dy, size_t rows, uint32_t channels, size_t plane, T* db) {
  for (uint32_t c = 0; c < channels; ++c) {
    T acc = 0;
    for (size_t r = 0; r < rows; ++r)
      for (size_t k = 0; k < plane; ++k) acc += dy[(r * channels + c) * plane + k];
    db[c] += acc;
  }
}

}  // namespace siflow::ops::conv
