// SPDX-License-Identifier: Apache-2.0
// The simd backend's vector type and vector elementary functions, written once with GCC/Clang
// vector extensions and compiled once per instruction set (kernels_impl.inc): SIFLOW_SIMD_BYTES
// wide, the ISA's native register (32 bytes for AVX2, 16 for SSE2, NEON and WebAssembly
// SIMD128), so the compiler never splits or spills a vector. Included only from kernels_impl.inc,
// inside that file's per-ISA namespace, so each compilation has its own copy.
//
// The functions are float approximations (Cephes-style range reduction and minimax polynomials);
// their measured maximum errors against the reference backend are documented in
// docs/architecture.md and enforced by tests/unit/test_simd.cc.

typedef float V __attribute__((vector_size(SIFLOW_SIMD_BYTES)));
typedef int32_t VI __attribute__((vector_size(SIFLOW_SIMD_BYTES)));
constexpr int kVecLanes = SIFLOW_SIMD_BYTES / 4;

inline V load(const float* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, V v) { __builtin_memcpy(p, &v, sizeof v); }
// A braced list of equal lanes compiles to one broadcast (V{} + s would add 0 first).
inline V splat(float s) {
#if SIFLOW_SIMD_BYTES == 16
  return V{s, s, s, s};
#elif SIFLOW_SIMD_BYTES == 32
  return V{s, s, s, s, s, s, s, s};
#else
  return V{s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
#endif
}
inline V bits(VI i) { return (V)i; }  // same-size vector casts reinterpret the bits
inline VI ibits(V v) { return (VI)v; }
// Lane-wise select: mask lanes are all ones (true) or zero.
inline V select(VI mask, V a, V b) { return bits((ibits(a) & mask) | (ibits(b) & ~mask)); }
inline V vmin(V a, V b) { return select(a < b, a, b); }
inline V vmax(V a, V b) { return select(a > b, a, b); }
inline V vabs(V a) { return bits(ibits(a) & 0x7fffffff); }
inline V copysign_of(V magnitude, V sign) {
  return bits((ibits(magnitude) & 0x7fffffff) | (ibits(sign) & static_cast<int32_t>(0x80000000u)));
}
// Round to nearest integer value (|x| < 2^22), as float: ties to even either way, so both paths
// give the same bits. WebAssembly SIMD128 has the instruction (f32x4.nearest); elsewhere adding
// and subtracting 1.5 * 2^23 rounds in the addition.
inline V round_near(V x) {
#if defined(__wasm_simd128__) && SIFLOW_SIMD_BYTES == 16
  return __builtin_wasm_nearest_f32x4(x);
#else
  const V magic = splat(12582912.0f);  // 1.5 * 2^23
  return (x + magic) - magic;
#endif
}

// exp(xc) = p * 2^n for xc in the clamped range [-87.3, 88.7]: Cody-Waite reduction by ln 2 and
// a degree-6 polynomial of the remainder; n is returned as a float.
inline V exp_reduced(V xc, V* n) {
  *n = round_near(xc * 1.44269504088896341f);
  V r = xc - *n * 0.693359375f;
  r = r - *n * -2.12194440e-4f;
  V p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * (r * r) + r + 1.0f;
}

// exp(x) for all x: exp(-inf..-87.3) -> 0, overflow -> +inf; relative error ~2 ulp.
inline V vexp(V x) {
  const V hi = splat(88.72283905206835f), lo = splat(-87.33654475055310f);
  const VI over = x > hi, under = x < lo;
  V n;
  const V p = exp_reduced(vmin(vmax(x, lo), hi), &n);
  // 2^n split in two factors so n = 128 (x just below the overflow bound) stays representable.
  const VI ni = __builtin_convertvector(n, VI);
  const VI n1 = ni >> 1, n2 = ni - n1;
  V y = p * bits((n1 + 127) << 23) * bits((n2 + 127) << 23);
  y = select(over, splat(__builtin_inff()), y);
  return select(under, V{}, y);
}

// exp(x) - 1 with relative accuracy near 0.
inline V vexpm1(V x) {
  const VI small = vabs(x) < 0.3125f;
  V p = splat(1.0f / 5040);
  p = p * x + 1.0f / 720;
  p = p * x + 1.0f / 120;
  p = p * x + 1.0f / 24;
  p = p * x + 1.0f / 6;
  p = p * x + 0.5f;
  const V series = x + x * x * p;
  return select(small, series, vexp(x) - 1.0f);
}

// log(x) for x > 0 finite (callers never pass other values).
inline V vlog(V x) {
  VI xi = ibits(x);
  VI e = ((xi >> 23) & 0xff) - 126;
  V m = bits((xi & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  const VI low = m < 0.70710678118654752f;
  e = e - (low & 1);
  m = select(low, m + m, m) - 1.0f;
  const V z = m * m;
  V p = splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  const V ef = __builtin_convertvector(e, V);
  V y = m * z * p + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  return m + y + ef * 0.693359375f;
}

// log(1 + u) for u > -1, accurate for small u: log(w) * u / (w - 1) with w = 1 + u rounded.
inline V vlog1p(V u) {
  const V w = u + 1.0f;
  const VI exact = w == 1.0f;
  const V d = w - 1.0f;
  const V safe = select(exact, splat(1.0f), d);
  return select(exact, u, vlog(select(exact, splat(2.0f), w)) * (u / safe));
}

// 1 / d for finite d >= 1: the ISA's reciprocal estimate refined by one Newton step (about one
// ulp) where there is one, else a division (SSE2, NEON, WebAssembly SIMD128, which has no
// estimate).
inline V vrecip12(V d) {
#if SIFLOW_SIMD_BYTES == 64 && defined(__AVX512F__)
  const V r = __builtin_ia32_rcp14ps512_mask(d, V{}, static_cast<unsigned short>(0xffff));
#elif SIFLOW_SIMD_BYTES == 32 && defined(__AVX__)
  const V r = __builtin_ia32_rcpps256(d);
#else
  return 1.0f / d;
#endif
#if (SIFLOW_SIMD_BYTES == 64 && defined(__AVX512F__)) || \
    (SIFLOW_SIMD_BYTES == 32 && defined(__AVX__))
  return r + r * (1.0f - d * r);
#endif
}

// exp(x) for x <= 0 (no overflow check, one scaling factor): 0 below -87.3, where float
// leaves its normal range.
inline V vexp_nonpositive(V x) {
  const V lo = splat(-87.33654475055310f);
  const VI under = x < lo;
  V n;
  const V p = exp_reduced(vmax(x, lo), &n);
  return select(under, V{}, p * bits((__builtin_convertvector(n, VI) + 127) << 23));
}

// sigmoid(x) = 1 / (1 + exp(-x)) and 1 - sigmoid(x) = sigmoid(-x), both without cancellation or
// overflow: with e = exp(-|x|) and r = 1 / (1 + e), they are r and e r in the order of x's sign.
inline void vsigmoid2(V x, V* s, V* one_minus_s) {
  const V e = vexp_nonpositive(-vabs(x));
  const V r = vrecip12(1.0f + e);
  const VI positive = x >= 0.0f;
  *s = select(positive, r, e * r);
  *one_minus_s = select(positive, e * r, r);
}
inline V vsigmoid(V x) {
  const V e = vexp_nonpositive(-vabs(x));
  const V r = vrecip12(1.0f + e);
  return select(x >= 0.0f, r, e * r);
}

inline V vtanh(V x) {
  const V a = vabs(x);
  const V z = x * x;
  V p = splat(-5.70498872745e-3f);
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const V small = x + x * z * p;
  const V big = 1.0f - 2.0f / (vexp(a + a) + 1.0f);
  return select(a < 0.625f, small, copysign_of(big, x));
}

// 1 - tanh(x)^2 = 4 e / (1 + e)^2 with e = exp(-2|x|): no cancellation for large |x|.
inline V vtanh_derivative(V x) {
  const V e = vexp_nonpositive(-2.0f * vabs(x));
  const V r = vrecip12(1.0f + e);
  return 4.0f * e * r * r;
}

// erfc(z) with relative error about 1.2e-7 over the whole line (the Chebyshev fit of
// Numerical Recipes' erfcc), plus float rounding.
inline V verfc(V z) {
  // Beyond |z| = 20, erfc is 0 or 2 in float; the clamp keeps t finite and nonzero.
  const V a = vmin(vabs(z), splat(20.0f));
  const V t = vrecip12(1.0f + 0.5f * a);
  V p = splat(0.17087277f);
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const V r = t * vexp(p - a * a);
  return select(z >= 0.0f, r, 2.0f - r);
}

// Normal CDF Phi(x) = erfc(-x / sqrt 2) / 2, accurate in both tails.
inline V vphi(V x) { return 0.5f * verfc(x * -0.70710678118654752f); }
// Normal density.
inline V vpdf(V x) { return 0.39894228040143267794f * vexp(-0.5f * x * x); }

// sin and cos for |x| <= 8192 by Cody-Waite reduction with a three-part pi/2; beyond that the
// caller takes the reference path (kernels_impl.inc).
constexpr float kTrigLimit = 8192.0f;
inline void vsincos(V x, V* s, V* c) {
  const V n = round_near(x * 0.63661977236758134f);
  V r = x - n * 1.5703125f;
  r = r - n * 4.837512969970703125e-4f;
  r = r - n * 7.54978995489188216e-8f;
  const V z = r * r;
  V ps = splat(-1.9515295891e-4f);
  ps = ps * z + 8.3321608736e-3f;
  ps = ps * z - 1.6666654611e-1f;
  const V sr = r + r * z * ps;
  V pc = splat(2.443315711809948e-5f);
  pc = pc * z - 1.388731625493765e-3f;
  pc = pc * z + 4.166664568298827e-2f;
  const V cr = 1.0f - 0.5f * z + z * z * pc;
  const VI q = __builtin_convertvector(n, VI) & 3;
  // Quadrant q: sin x = (sin r, cos r, -sin r, -cos r)[q], cos x = (cos r, -sin r, -cos r, sin
  // r)[q].
  const VI swap = (q & 1) != 0;
  const V s0 = select(swap, cr, sr), c0 = select(swap, sr, cr);
  *s = select((q & 2) != 0, -s0, s0);
  *c = select(((q + 1) & 2) != 0, -c0, c0);
}
