// SPDX-License-Identifier: Apache-2.0
// The simd backend: the project's own vector kernels for dense layers (register-blocked GEMM on
// weights packed at load, with a fused bias + activation epilogue) and for activations and their
// tangents. The same source is compiled once per instruction set (AVX-512, AVX2+FMA and SSE2 on
// x86-64, NEON on AArch64 and ARMv7, SIMD128 in WebAssembly, plain vector code elsewhere);
// select() picks the best the CPU runs, once, at plan time. Results differ from the reference
// backend by rounding (FMA, summation order, polynomial activations) within the tolerances stated
// in docs/architecture.md; they do not depend on how rows are split between threads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/siflow.hpp"

namespace siflow::simd {

// Packed weights: output columns in panels of kPanel; panel j holds, for each input i, the
// weights w[j*kPanel .. j*kPanel+kPanel-1][i] contiguously (zero beyond `out`), followed by the
// panel's bias (zero when the layer has none). 64-byte aligned.
constexpr uint32_t kPanel = 16;
uint64_t packed_floats(uint32_t in, uint32_t out);
void pack_weights(const float* w, const float* bias, uint32_t in, uint32_t out, float* packed);
// Packs the transpose of a row-major matrix m [rows][cols] as the weights of a layer with
// in = rows and out = cols (no bias): panel j, input i holds m[i][16 j .. 16 j + 15], a
// contiguous copy. Training multiplies by W^T and by activations this way every step.
void pack_transposed(const float* m, uint32_t rows, uint32_t cols, float* packed);

struct Dense {
  const float* packed;  // pack_weights layout
  uint32_t in, out;
  bool add_bias;  // forward passes add the bias; tangent passes do not
  // Epilogue: y = act(x W^T + b). kIdentity writes only `pre`; otherwise `pre` (nullable) gets
  // the value before the activation and `post` the activation.
  UnaryKind act;
  float alpha;
};

// The most rows of k one gemm_tn call takes: both operands' chunks stay in L2.
constexpr size_t kTnMaxK = 256;
// Floats pack_tn writes for k rows and n columns in strips of `strip` columns.
size_t tn_packed_floats(size_t k, uint32_t n, uint32_t strip);
// Rows [0, k) of b [k][n] (row stride ldb) as strips of `strip` columns, each [k][strip]
// contiguous, zero beyond n; with ones_column, a column n of ones follows (so that a^T b also
// yields a's column sums: training's bias gradient), and tn_packed_floats needs n + 1.
void pack_tn(const float* b, size_t ldb, size_t k, uint32_t n, uint32_t strip, float* packed,
             bool ones_column = false);

// Reduced-precision dense layers (docs/math.md, "Reduced precision"), packed at plan time by
// pack_reduced in panels of kPanel outputs, each panel 64-byte aligned:
//  - kBf16: a 64-byte header first ({min, max} biased exponent of the nonzero weights as two
//    int32), then per panel, for each pair p of inputs (2p, 2p+1), kPanel uint32 holding output
//    c's two weights as bfloat16 (input 2p in the low half, zero past `in` and `out`), then the
//    panel's bias as kPanel floats with subnormals flushed;
//  - kFp16: per panel, kPanel IEEE halves per input, then the bias;
//  - kInt8: per panel, kPanel int8 per input, then kPanel float scales, then the bias.
// kFp32 packs nothing here (Dense and pack_weights).
size_t reduced_bytes(Precision precision, uint32_t in, uint32_t out);
void pack_reduced(Precision precision, const float* w, const float* bias, uint32_t in, uint32_t out,
                  void* packed);
// pack_reduced's kBf16 layout for the transpose of a row-major matrix m [rows][cols], as the
// weights of a layer with in = rows and out = cols and no bias (reduced_bytes(kBf16, rows, cols)
// bytes): pair p of panel j holds m[2p][16 j + c] (low half) and m[2p + 1][16 j + c] (high half),
// two contiguous rows of m interleaved. Training multiplies by W^T and by activations this way.
void pack_bf16_transposed(const float* m, uint32_t rows, uint32_t cols, void* packed);
// The activation buffer dense_reduced needs per row of `in` inputs, in uint32 words: for kBf16
// one per pair of inputs and one for the row's exponent range; for kFp16 one float per input (the
// row rounded to halves; the FMLAL variant stores the halves themselves in its first half);
// nothing for the weight-only kInt8.
inline size_t bf16_rows_words(uint32_t in) { return (size_t{in} + 1) / 2 + 1; }
inline size_t reduced_rows_words(Precision precision, uint32_t in) {
  return precision == Precision::kBf16   ? bf16_rows_words(in)
         : precision == Precision::kFp16 ? size_t{in}
                                         : 0;
}

struct DenseReduced {
  Precision precision;
  const void* packed;  // pack_reduced layout
  uint32_t in, out;
  bool add_bias;
  UnaryKind act;  // as Dense
  float alpha;
  // kBf16 and kFp16: the rows' activations in the layer's format, reduced_rows_words(precision,
  // in) uint32 per row (the kernel writes rows [r0, r1) only, so threads on different rows share
  // it).
  uint32_t* x_rows;
};

// One Conv2d layer on NCHW samples ([C][H][W] each). weight: per group, the group's weights
// transposed to [k][cout / groups] (k = (input channel of the group, kernel row, kernel column)),
// groups one after the other: conv_weights_transposed() of PyTorch's [cout][cin / groups][kh][kw]
// (the same array for a depthwise conv). The kernel packs the input's im2col columns as it goes,
// on its stack. bias is nullable (tangent passes have none).
struct Conv {
  const float* weight;
  const float* bias;
  uint32_t cin, h, w, cout, oh, ow, groups, kh, kw, sh, sw, dh, dw, pt, pl;
};
// dst[g][kk][o] = w[g * cog + o][kk] for the `groups` groups of cog = cout / groups rows of k.
inline void conv_weights_transposed(const float* w, uint32_t cout, uint32_t groups, size_t k,
                                    float* dst) {
  const uint32_t cog = cout / groups;
  for (uint32_t g = 0; g < groups; ++g)
    for (size_t kk = 0; kk < k; ++kk)
      for (uint32_t o = 0; o < cog; ++o)
        dst[(size_t{g} * k + kk) * cog + o] = w[(size_t{g} * cog + o) * k + kk];
}
// One Conv2d layer (groups 1) on NHWC samples ([H][W][C] each) as an implicit GEMM
// (kernels_conv_nhwc.inc). weight: pack_conv_nhwc's layout, blocks of kConvNhwcBlock output
// channels (the last one as wide as its channels rounded up to 16), each [kh * kw taps][cin]
// [block width] (zero past cout); bias nullable (tangent passes have none). conv_nhwc_applies says
// which layers it runs: kernels up to kConvNhwcMaxTaps taps and inputs up to kConvNhwcMaxCin
// channels (a tap in the padding reads a row of that many zeros).
constexpr uint32_t kConvNhwcBlock = 64;
constexpr uint32_t kConvNhwcMaxCin = 1024;
constexpr uint32_t kConvNhwcMaxTaps = 49;
struct ConvNhwc {
  const float* weight;
  const float* bias;
  uint32_t cin, h, w, cout, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl;
};
inline bool conv_nhwc_applies(uint32_t groups, uint32_t cin, uint32_t kh, uint32_t kw) {
  return groups == 1 && cin <= kConvNhwcMaxCin && size_t{kh} * kw <= kConvNhwcMaxTaps;
}
// Columns of block b (output channels b * kConvNhwcBlock and on): kConvNhwcBlock, or for the
// last block its channels rounded up to 16.
inline uint32_t conv_nhwc_block_width(uint32_t cout, uint32_t b) {
  const uint32_t left = cout - b * kConvNhwcBlock;
  return left >= kConvNhwcBlock ? kConvNhwcBlock : (left + 15) / 16 * 16;
}
// Counts of packed floats are 64-bit, so that a 32-bit build can refuse a model whose packed
// weights do not fit its address space (plan/packing.cc) instead of wrapping around.
inline uint64_t conv_nhwc_packed_floats(uint32_t cin, uint32_t taps, uint32_t cout) {
  return uint64_t{(cout + 15) / 16 * 16} * taps * cin;
}
// dst block b at b * kConvNhwcBlock * taps * cin: [t][i][j] = w[b * kConvNhwcBlock + j][i][t]
// (0 for channels past cout), j below the block's width, from PyTorch's [cout][cin][kh][kw] with
// `taps` = kh * kw.
inline void pack_conv_nhwc(const float* w, uint32_t cin, uint32_t taps, uint32_t cout, float* dst) {
  const uint32_t blocks = (cout + kConvNhwcBlock - 1) / kConvNhwcBlock;
  for (uint32_t b = 0; b < blocks; ++b) {
    const uint32_t bw = conv_nhwc_block_width(cout, b);
    float* db = dst + size_t{b} * kConvNhwcBlock * taps * cin;
    for (uint32_t t = 0; t < taps; ++t)
      for (uint32_t i = 0; i < cin; ++i)
        for (uint32_t j = 0; j < bw; ++j) {
          const uint32_t o = b * kConvNhwcBlock + j;
          db[(size_t{t} * cin + i) * bw + j] =
              o < cout ? w[(size_t{o} * cin + i) * taps + t] : 0.0f;
        }
  }
}
// One 3x3, stride-1, dilation-1, groups-1 Conv2d on NHWC samples by Winograd's F(2x2, 3x3)
// (kernels_conv_wino.inc): the output in 2x2 tiles, each from a 4x4 input tile (B^T d B, entries
// 0 and +-1) times the transformed weights U = G g G^T (entries 0, +-0.5, 1: 16 products per tile
// and channel pair where direct convolution has 36), back by A^T M A (0 and +-1). The weights:
// pack_conv_wino's layout, per transform element e (16) a [cin][cout] matrix in blocks of
// kConvNhwcBlock output channels like pack_conv_nhwc's ([block][cin][block width]). The output
// is oh x ow (any padding: taps outside the input read zeros; pt and pl are the top and left
// pads). A unit is (sample, group of up to kWinoGroupTiles tiles); a call runs its units in order
// on `work` (conv_wino_work_floats floats), whose contents do not affect the results.
constexpr uint32_t kWinoGroupTiles = 24;  // a multiple of every variant's tile rows (8, 6, 4)
struct ConvWino {
  const float* weight;
  const float* bias;
  uint32_t cin, h, w, cout, oh, ow, pt, pl;
};
inline bool conv_wino_applies(uint32_t groups, uint32_t cin, uint32_t kh, uint32_t kw, uint32_t sh,
                              uint32_t sw, uint32_t dh, uint32_t dw) {
  return groups == 1 && cin <= kConvNhwcMaxCin && kh == 3 && kw == 3 && sh == 1 && sw == 1 &&
         dh == 1 && dw == 1;
}
inline uint32_t conv_wino_groups(const ConvWino& c) {
  const uint32_t tiles = ((c.oh + 1) / 2) * ((c.ow + 1) / 2);
  return (tiles + kWinoGroupTiles - 1) / kWinoGroupTiles;
}
inline size_t conv_wino_units(const ConvWino& c, size_t samples) {
  return samples * conv_wino_groups(c);
}
// A call's workspace: the group's transformed inputs [16][kWinoGroupTiles][cin rounded up to 16]
// and one block's transformed outputs [16][kWinoGroupTiles][kConvNhwcBlock].
inline size_t conv_wino_work_floats(uint32_t cin) {
  return size_t{16} * kWinoGroupTiles * ((cin + 15) / 16 * 16 + kConvNhwcBlock);
}
inline uint64_t conv_wino_packed_floats(uint32_t cin, uint32_t cout) {
  return uint64_t{16} * cin * ((cout + 15) / 16 * 16);
}
// dst[e] at e * cin * (cout rounded up to 16), its block b at b * kConvNhwcBlock * cin:
// [i][j] = U_e[b * kConvNhwcBlock + j][i] (0 past cout), U = G g G^T of PyTorch's
// [cout][cin][3][3] weights g, computed in double and rounded once.
inline void pack_conv_wino(const float* w, uint32_t cin, uint32_t cout, float* dst) {
  static const double kG[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  const size_t per = size_t{cin} * ((cout + 15) / 16 * 16);
  const uint32_t blocks = (cout + kConvNhwcBlock - 1) / kConvNhwcBlock;
  for (uint32_t b = 0; b < blocks; ++b) {
    const uint32_t bw = conv_nhwc_block_width(cout, b);
    for (uint32_t i = 0; i < cin; ++i)
      for (uint32_t j = 0; j < bw; ++j) {
        const uint32_t o = b * kConvNhwcBlock + j;
        double u[4][4] = {};
        if (o < cout) {
          const float* g = w + (size_t{o} * cin + i) * 9;
          for (int r = 0; r < 4; ++r)
            for (int s = 0; s < 4; ++s)
              for (int p = 0; p < 3; ++p)
                for (int q = 0; q < 3; ++q) u[r][s] += kG[r][p] * g[p * 3 + q] * kG[s][q];
        }
        for (int e = 0; e < 16; ++e)
          dst[e * per + size_t{b} * kConvNhwcBlock * cin + size_t{i} * bw + j] =
              static_cast<float>(u[e / 4][e % 4]);
      }
  }
}
// GroupNorm over rows of `width` values: `groups` contiguous blocks, each normalised by its own
// mean and 1 / sqrt(variance + epsilon), then gamma and beta (nullable) per channel, a channel
// being `plane` consecutive values. LayerNorm is groups = 1, plane = 1.
// A call may cover groups [g0, g1) of each row only (g1 == 0: every group), the other outputs
// left alone; a group's outputs are the same bits as in a call over every group (NHWC: when the
// range's first channel, g0 * channels / groups, is a multiple of kNhwcPartChannels).
constexpr uint32_t kNhwcMaxChannels = 256;  // the most channels of an NHWC GroupNorm
constexpr uint32_t kNhwcPartChannels = 16;  // a multiple of every variant's float and double lanes
struct Norm {
  const float* gamma;
  const float* beta;
  uint32_t width, groups, plane;
  float epsilon;
  uint32_t g0 = 0, g1 = 0;
};
// The groups of one part when a row's groups are split (NHWC: parts start on multiples of
// kNhwcPartChannels channels; NCHW: any group).
inline uint32_t norm_groups_per_part(const Norm& norm, bool nhwc) {
  if (!nhwc) return 1;
  const uint32_t per = norm.width / norm.plane / norm.groups;
  uint32_t n = 1;
  while (n < norm.groups && (n * per) % kNhwcPartChannels != 0) ++n;
  return n;
}
// One sample of MatMul: [g][m][k] x [g][k][n] (b [g][n][k] with transpose_b), times scale.
struct MatMul {
  uint32_t g, m, k, n;
  bool transpose_b;
  float scale;
};
// One sample of Resize: [c][h][w] to [c][oh][ow], nearest or bilinear (ops/resize.cc's taps).
struct Resize {
  uint32_t c, h, w, oh, ow;
  bool bilinear;
};
// Add, Mul or Div of one sample in [outer][inner] form: output (o, i) at o * inner + i combines
// a[o * a_outer + i * a_inner] with b[o * b_outer + i * b_inner], a_inner and b_inner 0 (the
// operand is one value across inner: a per-channel or scalar operand) or 1. The work is counted in
// units of up to kBinaryChunk values of one o, binary_units of them per sample; a unit is computed
// by the same code whichever call covers it.
enum class BinaryOp : uint8_t { kAdd, kMul, kDiv };
struct Binary {
  BinaryOp op;
  uint32_t outer, inner;
  uint32_t a_outer, a_inner, b_outer, b_inner;
};
constexpr uint32_t kBinaryChunk = 512;
inline size_t binary_units(const Binary& bin) {
  return size_t{bin.outer} * ((bin.inner + kBinaryChunk - 1) / kBinaryChunk);
}
struct Kernels {
  const char* isa;  // "avx512", "avx2", "sse2", "neon", "neon_fhm", "wasm_simd128", "generic"
  // Rows [r0, r1) of y = x W^T (+ b), x with row stride dense.in, outputs with stride dense.out.
  void (*dense)(const Dense& dense, const float* x, size_t r0, size_t r1, float* pre, float* post);
  // y = f(x) over rows [r0, r1) of width `width`.
  void (*unary_forward)(UnaryKind kind, float alpha, const float* x, size_t r0, size_t r1,
                        uint32_t width, float* y);
  // t_out[r*P+p][k] = f'(x[r][k]) t_in[r*P+p][k] for rows [r0, r1) of x; with y, also
  // y = f(x) over those rows, unary_forward's bits (SiLU: value and slope from one sigmoid).
  void (*unary_jvp)(UnaryKind kind, float alpha, const float* x, size_t r0, size_t r1,
                    uint32_t width, size_t directions, const float* t_in, float* t_out, float* y);
  // Training's weight gradient dW = dy^T x, one chunk of k <= kTnMaxK rows at a time:
  // c[o][i] (+)= sum over kk < k of a[kk][o] b[kk][i] for rows [o0, o1) of c [.][n] (row stride
  // ldc), b packed by pack_tn in strips of tn_strip columns. lda = 0 broadcasts a's first row
  // (column sums of b with a = {1}). Overwrites c unless `accumulate`.
  uint32_t tn_strip;
  void (*gemm_tn)(const float* a, size_t lda, const float* b_packed, size_t k, uint32_t n, float* c,
                  size_t ldc, size_t o0, size_t o1, bool accumulate);
  // f (or f' when deriv) of eight values: what the kernels above compute, for tests.
  void (*activation8)(UnaryKind kind, float alpha, const float* x, float* y, bool deriv);
  // Rows [r0, r1) of a reduced-precision dense layer, with dense's contract. kBf16 gives the bits
  // of reference::fully_connected_bf16 (NaN payloads aside) on every variant; kFp16 gives dense's
  // bits for the decoded weights on the activations rounded to halves (FMLAL's arithmetic, which
  // neon_fhm runs), kInt8 dense's bits for the decoded weights.
  void (*dense_reduced)(const DenseReduced& dense, const float* x, size_t r0, size_t r1, float* pre,
                        float* post);
  // Conv2d over units [u0, u1) of conv_units(conv, samples): x holds the samples
  // [cin][h][w] with stride ldx, y [cout][oh][ow] with stride ldy. Each output is its bias (or 0)
  // plus the products over (input channel, kernel row, kernel column) in order, one FMA each,
  // whichever units a call covers.
  // The units of a call: per sample, per group, per block of output pixels (the variant's).
  size_t (*conv_units)(const Conv& conv, size_t samples);
  void (*conv2d)(const Conv& conv, const float* x, size_t ldx, float* y, size_t ldy, size_t u0,
                 size_t u1);
  // Rows [r0, r1) of GroupNorm / LayerNorm (kernels_norm.inc: statistics in double, each output
  // within 2^-21 (|x gamma / s| + |mean gamma / s| + |beta| + |y|) of the reference), and its
  // JVP: t_out[r*P+p] for the rows' P = directions tangents t_in[r*P+p] (gamma, no beta).
  void (*norm_forward)(const Norm& norm, const float* x, size_t r0, size_t r1, float* y);
  void (*norm_jvp)(const Norm& norm, const float* x, size_t r0, size_t r1, size_t directions,
                   const float* t_in, float* t_out);
  // Softmax over `count` groups of `extent` contiguous values (kernels_attention.inc: the vector
  // exp, the sum in double; within 2^-21 (|x - max| + 8) y of the exact value) and its JVP
  // out = y (t - sum y t) (the sum in double).
  void (*softmax)(const float* x, size_t count, uint32_t extent, float* y);
  void (*softmax_jvp)(const float* y, size_t count, uint32_t extent, const float* t, float* out);
  // One sample of y = scale (a1 b1 + a2 b2), a pair skipped when its a is nullptr: one float
  // FMA chain per output over the first product's k, then the second's, times scale (with
  // transpose_b and k above 64: per product, vector lanes over k, then the lanes' sum).
  void (*matmul)(const MatMul& mm, const float* a1, const float* b1, const float* a2,
                 const float* b2, float* y);
  // One sample of Resize (kernels_resize.inc): nearest with the reference's bits, bilinear as a
  // float FMA chain over the four taps with the reference's weights rounded to float.
  void (*resize)(const Resize& rs, const float* x, float* y);
  // Units [u0, u1) of one sample's y = a op b (kernels_binary.inc): one IEEE operation per
  // element, the reference's bits. Its JVP for one tangent row: ta and tb (nullable: an operand
  // without a tangent) laid out as a and b, y the forward's output; Add's tangent, and Mul's and
  // Div's with ta alone, are one operation per element (the reference's bits); Mul with both
  // tangents and Div with tb may fuse their two roundings into one FMA (within 2^-22 of
  // |ta b| + |a tb|, respectively (|ta| + |y tb|) / |b|, of the reference).
  void (*binary)(const Binary& bin, const float* a, const float* b, float* y, size_t u0, size_t u1);
  void (*binary_jvp)(const Binary& bin, const float* a, const float* b, const float* y,
                     const float* ta, const float* tb, float* t, size_t u0, size_t u1);
  // dst[c][r] = src[r][c] for a rows x cols matrix (row strides lds and ldd; no overlap): the
  // NCHW <-> NHWC conversions of XNNPACK's convolutions (kernels_transpose.inc). Register tiles
  // of the vector width, pure data movement: every variant writes the same bits.
  void (*transpose)(const float* src, size_t lds, size_t rows, size_t cols, float* dst, size_t ldd);
  // norm_forward and norm_jvp on NHWC rows (kernels_norm.inc): `plane` pixels of
  // width / plane <= kNhwcMaxChannels channels each, a group being adjacent channels of every
  // pixel; the same bound against the reference, not the NCHW kernels' bits (the statistics sum
  // per channel first).
  void (*norm_forward_nhwc)(const Norm& norm, const float* x, size_t r0, size_t r1, float* y);
  void (*norm_jvp_nhwc)(const Norm& norm, const float* x, size_t r0, size_t r1, size_t directions,
                        const float* t_in, float* t_out);
  // Conv2d on NHWC samples (ConvNhwc) over units [u0, u1) of conv_nhwc_units(conv, samples): x
  // holds the samples [h][w][cin] with stride ldx, y [oh][ow][cout] with stride ldy. Each output
  // is its bias (or 0) plus the products over (kernel tap, input channel) in that order, one FMA
  // each, whichever units a call covers. A unit is (sample, block of kConvNhwcBlock output
  // channels, block of pixels).
  size_t (*conv_nhwc_units)(const ConvNhwc& conv, size_t samples);
  void (*conv2d_nhwc)(const ConvNhwc& conv, const float* x, size_t ldx, float* y, size_t ldy,
                      size_t u0, size_t u1);
  // Winograd F(2x2, 3x3) on NHWC samples (ConvWino) over units [u0, u1) of conv_wino_units, x and
  // y as conv2d_nhwc's, `work` the call's workspace. Every output is its bias (or 0) plus A^T M A
  // of its tile, M_e = sum over input channels in order of V_e U_e (one FMA each), whichever
  // units a call covers: not the direct kernels' bits (within the bound the tests check).
  void (*conv2d_wino)(const ConvWino& conv, const float* x, size_t ldx, float* y, size_t ldy,
                      float* work, size_t u0, size_t u1);
};

// The architecture's baseline (SSE2 on x86-64, NEON on ARM, plain vector code on WebAssembly)
// runs on every CPU of the architecture; AVX2 (with FMA and F16C) and AVX-512 (F, DQ, BW, VL) exist
// on x86-64 only, SIMD128 on WebAssembly only (in builds that define SIFLOW_WITH_WASM_SIMD128).
// AVX-512 BF16 is AVX-512 plus vdpbf16ps for bf16 layers (its other kernels are AVX-512's);
// NEON FHM (AArch64 with FEAT_FP16 and FEAT_FHM, read from the Linux auxiliary vector) is NEON
// plus FMLAL/FMLAL2 for fp16 layers.
enum class Isa : uint8_t { kBaseline, kAvx2, kAvx512, kWasmSimd128, kAvx512Bf16, kNeonFhm };

// The variant for `isa`, or nullptr when it is not compiled in or the CPU lacks it.
const Kernels* kernels_for(Isa isa);
// The best kernels this CPU runs. The environment variable SIFLOW_SIMD_ISA forces a variant by
// its name (avx512_bf16, avx512, avx2, neon_fhm, wasm_simd128, or the baseline's: sse2, neon,
// generic), so CI runs the paths of CPUs without AVX-512, AVX2 or FHM; a name that is unknown or
// that this CPU cannot run is an error naming the choices (and the CPU feature a known name lacks).

Status select(const Kernels** out);

}  // namespace siflow::simd
