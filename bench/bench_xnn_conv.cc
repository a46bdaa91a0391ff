// SPDX-License-Identifier: Apache-2.0
// Per-layer Conv2d timing, simd (NCHW) against XNNPACK (NHWC), on one thread at the unet28
// layer shapes (bench/unet28.py): for each shape and batch, the median CPU seconds of the simd
// kernel, of XNNPACK with the NCHW<->NHWC conversions the plan's layer does, of XNNPACK
// alone on NHWC data and of the simd NHWC implicit GEMM (kernels_conv_nhwc.inc) on the same NHWC
// data, with GFLOP/s (2 flops per multiply-add) to set beside bench/peak_fma. Reps alternate
// between the two NHWC kernels, so a change in the machine's load hits both alike. For 3x3
// stride-1 layers also the simd Winograd F(2x2, 3x3) (kernels_conv_wino.inc) on the same NHWC
// data ("wino_s"; its GFLOP/s count the direct convolution's flops, so they compare as speed).
//   bench_xnn_conv [REPS]        (default 7; prints one line per shape and batch)
#include <cstdio>

#if !defined(SIFLOW_WITH_XNNPACK) || !defined(SIFLOW_WITH_SIMD)
int main() {
  std::printf("bench_xnn_conv: this build has no XNNPACK or no simd kernels; nothing to time\n");
  return 0;
}
#else

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "kernels/xnnpack/xnn_conv.hpp"

namespace {

double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

template <typename F>
double median_cpu(int reps, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = cpu_seconds();
    f();
    t.push_back(cpu_seconds() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Medians of two functions timed in alternation (a, b, a, b, ...), after one warm-up each.
template <typename F, typename G>
void median_pair(int reps, F&& f, G&& g, double* tf, double* tg) {
  f();
  g();
  std::vector<double> a, b;
  for (int r = 0; r < reps; ++r) {
    double t0 = cpu_seconds();
    f();
    a.push_back(cpu_seconds() - t0);
    t0 = cpu_seconds();
    g();
    b.push_back(cpu_seconds() - t0);
  }
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  *tf = a[a.size() / 2];
  *tg = b[b.size() / 2];
}

struct Shape {
  const char* what;
  uint32_t cin, h, w, cout, k, stride, pad;
};

const Shape kShapes[] = {
    {"3x3 1->32 28x28 (conv_in)", 1, 28, 28, 32, 3, 1, 1},
    {"3x3 32->32 28x28", 32, 28, 28, 32, 3, 1, 1},
    {"3x3 32->32 s2 28->14 (down)", 32, 28, 28, 32, 3, 2, 1},
    {"3x3 32->64 14x14", 32, 14, 14, 64, 3, 1, 1},
    {"3x3 64->64 14x14", 64, 14, 14, 64, 3, 1, 1},
    {"3x3 64->64 s2 14->7 (down)", 64, 14, 14, 64, 3, 2, 1},
    {"3x3 64->64 7x7", 64, 7, 7, 64, 3, 1, 1},
    {"3x3 128->64 14x14 (up, concat)", 128, 14, 14, 64, 3, 1, 1},
    {"1x1 32->64 14x14 (skip)", 32, 14, 14, 64, 1, 1, 0},
    {"1x1 64->64 7x7 (attention q/k/v)", 64, 7, 7, 64, 1, 1, 0},
};

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 7;
  const siflow::simd::Kernels* k = nullptr;
  if (!siflow::simd::select(&k).ok()) {
    std::fprintf(stderr, "bench_xnn_conv: no simd kernels on this CPU\n");
    return 1;
  }
  std::printf("# isa %s, one thread, median CPU seconds of %d reps per layer call\n", k->isa, reps);
  std::printf("%-34s %5s %10s %10s %10s %10s %10s %8s %8s %8s %8s %8s %7s %8s\n", "layer", "batch",
              "simd_s", "xnn_conv_s", "xnn_nhwc_s", "own_nhwc_s", "wino_s", "simd_GF", "xnnc_GF",
              "xnnh_GF", "ownh_GF", "wino_GF", "own/xnn", "winner");
  for (const Shape& sh : kShapes) {
    const uint32_t oh = (sh.h + 2 * sh.pad - sh.k) / sh.stride + 1;
    const uint32_t ow = (sh.w + 2 * sh.pad - sh.k) / sh.stride + 1;
    const size_t in = size_t{sh.cin} * sh.h * sh.w, out = size_t{sh.cout} * oh * ow;
    std::vector<float> w(size_t{sh.cout} * sh.cin * sh.k * sh.k), b(sh.cout);
    for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = 0.1f;
    const siflow::xnn::ConvShape xs{sh.cin, sh.h,      sh.w,      sh.cout, oh,     ow,
                                    1,      sh.k,      sh.k,      sh.pad,  sh.pad, sh.pad,
                                    sh.pad, sh.stride, sh.stride, 1,       1};
    siflow::xnn::ConvLayer* layer = nullptr;
    const siflow::Status s = siflow::xnn::create_conv(xs, w.data(), b.data(), nullptr, &layer);
    if (!s.ok()) {
      std::fprintf(stderr, "bench_xnn_conv: %s\n", s.message());
      return 1;
    }
    const siflow::simd::Conv c{w.data(),  b.data(), sh.cin, sh.h,   sh.w,  sh.cout,
                               oh,        ow,       1,      sh.k,   sh.k,  sh.stride,
                               sh.stride, 1,        1,      sh.pad, sh.pad};
    const uint32_t taps = sh.k * sh.k;
    std::vector<float> packed(siflow::simd::conv_nhwc_packed_floats(sh.cin, taps, sh.cout));
    siflow::simd::pack_conv_nhwc(w.data(), sh.cin, taps, sh.cout, packed.data());
    const siflow::simd::ConvNhwc cn{
        packed.data(), b.data(), sh.cin,    sh.h,      sh.w, sh.cout, oh,     ow,
        sh.k,          sh.k,     sh.stride, sh.stride, 1,    1,       sh.pad, sh.pad};
    const bool wino =
        siflow::simd::conv_wino_applies(1, sh.cin, sh.k, sh.k, sh.stride, sh.stride, 1, 1);
    std::vector<float> wpacked(wino ? siflow::simd::conv_wino_packed_floats(sh.cin, sh.cout) : 0);
    if (wino) siflow::simd::pack_conv_wino(w.data(), sh.cin, sh.cout, wpacked.data());
    const siflow::simd::ConvWino cw{wpacked.data(), b.data(), sh.cin, sh.h,   sh.w,
                                    sh.cout,        oh,       ow,     sh.pad, sh.pad};
    std::vector<float> work(siflow::simd::conv_wino_work_floats(sh.cin));
    for (size_t batch : {size_t{1}, size_t{64}}) {
      std::vector<float> x(batch * in + 64), y(batch * out + 64);
      for (size_t i = 0; i < x.size(); ++i) x[i] = 0.001f * static_cast<float>(i % 1013);
      std::vector<float> scratch(siflow::xnn::conv_scratch_floats(xs, batch));
      if (!siflow::xnn::prime_conv(layer, scratch.data()).ok()) return 1;
      auto serial = [](size_t count, auto&& fn) { fn(size_t{0}, count); };
      const size_t units = k->conv_units(c, batch);
      const double t_simd =
          median_cpu(reps, [&] { k->conv2d(c, x.data(), in, y.data(), out, 0, units); });
      const double t_conv = median_cpu(reps, [&] {
        siflow::xnn::run_conv(layer, x.data(), in, batch, y.data(), out, scratch.data(), batch,
                              false, k->transpose, serial);
      });
      float* nhwc_out = scratch.data() + (in * batch + 16 + 15) / 16 * 16;
      const size_t own_units = k->conv_nhwc_units(cn, batch);
      double t_nhwc = 0, t_own = 0;
      median_pair(
          reps, [&] { siflow::xnn::run_nhwc(layer, scratch.data(), batch, nhwc_out, false); },
          [&] { k->conv2d_nhwc(cn, scratch.data(), in, nhwc_out, out, 0, own_units); }, &t_nhwc,
          &t_own);
      double t_wino = 1e300;
      if (wino)
        t_wino = median_cpu(reps, [&] {
          k->conv2d_wino(cw, scratch.data(), in, nhwc_out, out, work.data(), 0,
                         siflow::simd::conv_wino_units(cw, batch));
        });
      const double flops = 2.0 * batch * out * sh.cin * sh.k * sh.k;
      const double best_xnn = t_conv < t_nhwc ? t_conv : t_nhwc;
      const char* winner = t_wino < best_xnn && t_wino < t_simd && t_wino < t_own ? "wino"
                           : t_own < best_xnn && t_own < t_simd                   ? "own_nhwc"
                           : best_xnn < t_simd                                    ? "xnnpack"
                                                                                  : "simd";
      std::printf(
          "%-34s %5zu %10.6f %10.6f %10.6f %10.6f %10.6f %8.1f %8.1f %8.1f %8.1f %8.1f %7.2f %8s\n",
          sh.what, batch, t_simd, t_conv, t_nhwc, t_own, wino ? t_wino : 0.0, flops / t_simd * 1e-9,
          flops / t_conv * 1e-9, flops / t_nhwc * 1e-9, flops / t_own * 1e-9,
          wino ? flops / t_wino * 1e-9 : 0.0, t_nhwc / t_own, winner);
    }
    siflow::xnn::destroy_conv(layer);
  }
  return 0;
}

#endif
