// SPDX-License-Identifier: Apache-2.0
// Conv2d and ConvTranspose2d on the simd NCHW convolution kernel (NodeKernel::kSimd,
// kernels_conv.inc; conv2d.cc holds the ops' module and reference loops). A Conv2d runs on it
// directly. A ConvTranspose2d runs as the Conv2d that computes it: each sample's input spread out
// in the plan's scratch, input pixel (y, x) at (y sh + dh (kh - 1) - pt, x sw + dw (kw - 1) - pl)
// of a zeroed plane of (OH + dh (kh - 1)) x (OW + dw (kw - 1)) values (a pixel the padding crops
// falls outside), then the kernel with stride 1, no padding, the same dilation and groups, and
// each kernel flipped in both directions and transposed per group. Every output then sums exactly
// the transposed formula's taps (the spread zeros add nothing), at stride^2 times the formula's
// multiply-adds but on the register-blocked kernel. Both JVPs are the same layer without the bias
// on each tangent sample. Units (sample, group, pixel block) are split over the threads, at least
// kMinParallelMacs multiply-adds a range (a small conv, such as the one-channel ends of a small
// net at batch 1, runs inline rather than wait for a worker); a unit's outputs do not depend on
// the split.
#include <cstring>

#include "ops/conv_loops.hpp"
#include "ops/op.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::ops {

using conv::Geometry;
using conv::geometry;
using conv::weight_count;
using detail::NodeData;

size_t conv_transposed_simd_index(const NodeData& node, size_t f) {
  const Geometry g = geometry(node, true);
  const size_t taps = size_t{g.kh} * g.kw;
  const uint32_t csg = g.cs / g.groups, clg = g.cl / g.groups;
  const size_t t = f % taps, rest = f / taps;
  const uint32_t o = static_cast<uint32_t>(rest % clg), c = static_cast<uint32_t>(rest / clg);
  const uint32_t ky = static_cast<uint32_t>(t / g.kw), kx = static_cast<uint32_t>(t % g.kw);
  const size_t kk = size_t{c % csg} * taps + size_t{g.kh - 1 - ky} * g.kw + (g.kw - 1 - kx);
  return (size_t{c / csg} * csg * taps + kk) * clg + o;
}

namespace {
#if defined(SIFLOW_WITH_SIMD)
// The kernel's units over `samples` samples of `sample_macs` multiply-adds each, and the units a
// range of the pool takes at least.
size_t conv_grain(const simd::Kernels& k, const simd::Conv& c, uint64_t sample_macs, size_t samples,
                  size_t* units) {
  *units = k.conv_units(c, samples);
  const uint64_t unit_macs = *units ? sample_macs * samples / *units + 1 : 1;
  return static_cast<size_t>((kMinParallelMacs + unit_macs - 1) / unit_macs);
}

// The samples a run spreads out at a time: as many as fit kChunkFloats (at least one, at most
// kChunkSamples), never more than the call has; the scratch holds one chunk.
constexpr size_t kChunkFloats = size_t{1} << 16;
constexpr size_t kChunkSamples = 16;
// One sample's spread-out input: the small side's channels on the large side's plane grown by
// the kernel's dilated reach less one.
size_t spread_floats(const Geometry& g) {
  return size_t{g.cs} * (g.hl + size_t{g.dh} * (g.kh - 1)) * (g.wl + size_t{g.dw} * (g.kw - 1));
}
size_t chunk_samples(const Geometry& g, size_t samples) {
  const size_t one = spread_floats(g);
  size_t chunk = one ? kChunkFloats / one : 1;
  chunk = chunk < 1 ? 1 : chunk > kChunkSamples ? kChunkSamples : chunk;
  return chunk < samples ? chunk : samples;
}
#endif
}  // namespace

bool conv_transposed_simd_runs(const NodeData& node) {
#if defined(SIFLOW_WITH_SIMD)
  // The spread-out plane must stay near the layer's own size: the kernel's reach within the
  // output on both axes, and one sample's spread input at most 16 times the layer's input and
  // output together (a file's window entries reach 2^16, and a wide reach or a large stride would
  // otherwise ask for a vast scratch). 64-bit: every factor is at most 2^32.
  const Geometry g = geometry(node, true);
  const uint64_t reach_h = uint64_t{g.dh} * (g.kh - 1), reach_w = uint64_t{g.dw} * (g.kw - 1);
  if (reach_h > g.hl || reach_w > g.wl) return false;
  const uint64_t spread = uint64_t{g.cs} * (g.hl + reach_h) * (g.wl + reach_w);
  const uint64_t own = uint64_t{g.cs} * g.hs * g.ws + uint64_t{g.cl} * g.hl * g.wl;
  return spread <= 16 * own;
#else
  (void)node;
  return false;
#endif
}

uint64_t conv_transposed_packed_floats(const detail::ModelData& model, uint32_t i) {
#if defined(SIFLOW_WITH_SIMD)
  if (!conv_transposed_simd_runs(model.nodes[i])) return 0;
  return weight_count(geometry(model.nodes[i], true));
#else
  (void)model, (void)i;
  return 0;
#endif
}

void conv_transposed_pack(const detail::ModelData& model, NodeData* n, float* dst) {
  (void)model;
#if defined(SIFLOW_WITH_SIMD)
  if (!conv_transposed_simd_runs(*n)) return;
  const size_t count = weight_count(geometry(*n, true));
  for (size_t f = 0; f < count; ++f) dst[conv_transposed_simd_index(*n, f)] = n->weight[f];
  n->packed = dst;
#else
  (void)n, (void)dst;
#endif
}

size_t conv_transposed_scratch_floats(const detail::ModelData& model, uint32_t i, size_t rows,
                                      size_t directions) {
#if defined(SIFLOW_WITH_SIMD)
  if (!conv_transposed_simd_runs(model.nodes[i])) return 0;
  const Geometry g = geometry(model.nodes[i], true);
  const size_t samples = rows * (directions > 1 ? directions : 1);
  return chunk_samples(g, samples) * spread_floats(g);
#else
  (void)model, (void)i, (void)rows, (void)directions;
  return 0;
#endif
}

void run_conv_simd(const NodeRun& r, const float* weight) {
#if defined(SIFLOW_WITH_SIMD)
  const NodeData& n = r.model->nodes[r.node];
  const Geometry g = geometry(n, false);
  const simd::Kernels& k = *r.kernels->simd;
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  simd::Conv c{weight, n.bias, g.cl, g.hl, g.wl, g.cs, g.hs, g.ws, g.groups,
               g.kh,   g.kw,   g.sh, g.sw, g.dh, g.dw, g.pt, g.pl};
  const uint64_t sample_macs = uint64_t{g.hs} * g.ws * g.cs * (g.cl / g.groups) * g.kh * g.kw;
  auto pass = [&](const float* x, float* y, size_t samples) {
    size_t units = 0;
    const size_t grain = conv_grain(k, c, sample_macs, samples, &units);
    parallel_rows(r.kernels->pool, units, grain,
                  [&](size_t u0, size_t u1) { k.conv2d(c, x, in, y, width, u0, u1); });
  };
  pass(r.values[a], r.values[id], r.rows);
  if (!r.directions || !r.tangents[id]) return;
  c.bias = nullptr;
  pass(r.tangents[a], r.tangents[id], r.rows * r.directions);
#else
  (void)r, (void)weight;
#endif
}

void run_conv_transposed_simd(const NodeRun& r) {
#if defined(SIFLOW_WITH_SIMD)
  const NodeData& n = r.model->nodes[r.node];
  const Geometry g = geometry(n, true);
  const simd::Kernels& k = *r.kernels->simd;
  // fp16 and int8: the weights decoded at plan time, in the same flipped layout.
  const void* reduced = r.kernels->reduced ? r.kernels->reduced[r.node] : nullptr;
  const float* weight = reduced ? static_cast<const float*>(reduced) : n.packed;
  const uint32_t id = r.node + 2, a = n.inputs[0];
  const uint32_t in = r.model->tensors[a].width, width = n.width;
  const uint32_t reach_h = g.dh * (g.kh - 1), reach_w = g.dw * (g.kw - 1);
  const uint32_t hb = g.hl + reach_h, wb = g.wl + reach_w;
  const size_t plane = size_t{hb} * wb, splane = size_t{g.hs} * g.ws, one = spread_floats(g);
  simd::Conv c{weight, n.bias, g.cs, hb, wb,   g.cl, g.hl, g.wl, g.groups,
               g.kh,   g.kw,   1,    1,  g.dh, g.dw, 0,    0};
  const uint64_t sample_macs = uint64_t{g.hl} * g.wl * g.cl * (g.cs / g.groups) * g.kh * g.kw;
  // Chunks of samples: their (sample, channel) planes spread out, then their conv units.
  auto pass = [&](const float* x, float* y, size_t samples) {
    const size_t chunk = chunk_samples(g, samples);
    for (size_t s0 = 0; s0 < samples; s0 += chunk) {
      const size_t count = samples - s0 < chunk ? samples - s0 : chunk;
      parallel_rows(r.kernels->pool, count * g.cs, 4, [&](size_t p0, size_t p1) {
        for (size_t p = p0; p < p1; ++p) {
          const size_t sample = p / g.cs, ch = p % g.cs;
          float* dst = r.scratch + sample * one + ch * plane;
          std::memset(dst, 0, plane * sizeof(float));
          const float* src = x + (s0 + sample) * in + ch * splane;
          for (uint32_t sy = 0; sy < g.hs; ++sy) {
            const int64_t by = int64_t{sy} * g.sh + reach_h - g.pt;
            if (by < 0 || by >= hb) continue;
            float* row = dst + static_cast<size_t>(by) * wb;
            for (uint32_t sx = 0; sx < g.ws; ++sx) {
              const int64_t bx = int64_t{sx} * g.sw + reach_w - g.pl;
              if (bx >= 0 && bx < wb) row[bx] = src[size_t{sy} * g.ws + sx];
            }
          }
        }
      });
      size_t units = 0;
      const size_t grain = conv_grain(k, c, sample_macs, count, &units);
      float* yc = y + s0 * width;
      parallel_rows(r.kernels->pool, units, grain,
                    [&](size_t u0, size_t u1) { k.conv2d(c, r.scratch, one, yc, width, u0, u1); });
    }
  };
  pass(r.values[a], r.values[id], r.rows);
  if (!r.directions || !r.tangents[id]) return;
  c.bias = nullptr;
  pass(r.tangents[a], r.tangents[id], r.rows * r.directions);
#else
  (void)r;
#endif
}

}  // namespace siflow::ops
