// SPDX-License-Identifier: Apache-2.0
// Per-layer Conv2d timing at the shapes of bench/unet28.py's unet28 net, against the FMA peak
// measured in the same run (bench/peak_fma.hpp, in CPU seconds):
//   bench_conv [--backend B[,B...]] [--batch N[,N...]] [--threads N] [--reps R] [--layer TEXT]
// A model's x is at most Limits::kMaxDim floats and its output as wide as x, so most layers
// cannot be a one-node model: each row is a model built with ModelBuilder of the timed conv
// between small adapter convs (1x1 or channel-reducing 3x3, a few % of the timed conv's FLOPs)
// minus a base model of the adapters alone: the row's CPU seconds and FLOPs are the two models'
// differences (the 7x7 layers fit as one-node models; the input and output convs are timed as
// one pair). Each is planned with PlanOptions::backend = B and timed through Plan::velocity (one
// network evaluation per call; random weights and biases). Prints per row, backend and batch:
// the timed conv's kernel (Plan::node_kernel), the median CPU seconds per evaluation of R reps
// (each about 0.1 CPU s of calls), GFLOP/s per CPU second (2 x multiply-adds) and its % of the
// FMA peak measured in the same run in CPU seconds (bench/peak_fma.hpp; the AVX2 peak when
// SIFLOW_SIMD_ISA forces an AVX2 variant, else the widest).
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "peak_fma.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

struct ConvSpec {
  uint32_t cin, h, w, cout, k, stride, groups;
  uint32_t oh() const { return (h + 2 * (k / 2) - k) / stride + 1; }
  uint32_t ow() const { return (w + 2 * (k / 2) - k) / stride + 1; }
  double flops() const { return 2.0 * cout * (cin / groups) * k * k * oh() * ow(); }
};

struct Row {
  const char* name;
  std::vector<uint32_t> x_shape;
  std::vector<ConvSpec> model, base;  // base empty: no subtraction
  uint32_t timed;                     // the timed conv's node in `model`
};

// unet28's conv shapes: conv_in 1 -> 32 and conv_out 32 -> 1 at 28x28, 3x3 convs of the
// residual blocks at 32 (28x28) and 64 channels (14x14, 7x7), stride-2 down-sampling, the 1x1
// skip / attention convs at 7x7; and a depthwise 3x3 (not in unet28; 62 channels, the most
// whose 14x14 input fits a one-node model, since adapters would cost as much as it does).
const ConvSpec kIn{1, 28, 28, 32, 3, 1, 1}, kOut{32, 28, 28, 1, 3, 1, 1};
const ConvSpec kUp14{4, 14, 14, 64, 1, 1, 1}, kDown14{64, 14, 14, 4, 1, 1, 1};
const Row kRows[] = {
    {"3x3 32->32 28x28", {1, 28, 28}, {kIn, {32, 28, 28, 32, 3, 1, 1}, kOut}, {kIn, kOut}, 1},
    {"3x3 64->64 14x14",
     {4, 14, 14},
     {kUp14, {64, 14, 14, 64, 3, 1, 1}, kDown14},
     {kUp14, kDown14},
     1},
    {"3x3 64->64 7x7", {64, 7, 7}, {{64, 7, 7, 64, 3, 1, 1}}, {}, 0},
    {"3x3 s2 32->64 28->14",
     {1, 28, 28},
     {kIn, {32, 28, 28, 64, 3, 2, 1}, kDown14},
     {kIn, {32, 28, 28, 4, 1, 2, 1}},
     1},
    {"1x1 64->64 7x7", {64, 7, 7}, {{64, 7, 7, 64, 1, 1, 1}}, {}, 0},
    {"3x3 1->32, 32->1 28x28", {1, 28, 28}, {kIn, kOut}, {}, 0},
    {"dw 3x3 62 14x14", {62, 14, 14}, {{62, 14, 14, 62, 3, 1, 62}}, {}, 0},
};

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

double flops(const std::vector<ConvSpec>& convs) {
  double f = 0;
  for (const ConvSpec& c : convs) f += c.flops();
  return f;
}

// x of shape x_shape, then the convs in order (pads k / 2).
std::vector<uint8_t> build(const std::vector<uint32_t>& x_shape, const std::vector<ConvSpec>& convs,
                           uint32_t* dim) {
  std::mt19937 rng(7);
  *dim = x_shape[0] * x_shape[1] * x_shape[2];
  siflow::ModelBuilder b(*dim);
  b.set_x_shape(x_shape);
  uint32_t h = b.x();
  for (const ConvSpec& c : convs) {
    siflow::ImageWindow win;
    const uint32_t p = c.k / 2;
    win.pads = {p, p, p, p};
    win.strides = {c.stride, c.stride};
    win.groups = c.groups;
    const float scale = 1.0f / static_cast<float>(c.cin / c.groups * c.k * c.k);
    h = b.conv2d(h, c.cout, {c.k, c.k},
                 random_floats(size_t{c.cout} * (c.cin / c.groups) * c.k * c.k, rng, scale),
                 random_floats(c.cout, rng, 0.1f), win);
  }
  b.set_output(h);
  return b.finish();
}

double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Timing {
  double cpu = 0;  // median CPU seconds per evaluation
  std::string kernel;
};

bool time_model(const std::vector<uint8_t>& bytes, uint32_t dim, uint32_t conv,
                siflow::Backend backend, uint32_t threads, size_t batch, int reps, Timing* out) {
  std::unique_ptr<siflow::Model> model;
  siflow::Status s = siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  if (!s.ok()) return std::fprintf(stderr, "bench_conv: %s\n", s.message()), false;
  siflow::PlanOptions po;
  po.backend = backend;
  po.threads = threads;
  po.max_batch = batch;
  std::unique_ptr<siflow::Plan> plan;
  if (!(s = siflow::Plan::create(*model, po, nullptr, 0, &plan)).ok())
    return std::fprintf(stderr, "bench_conv: %s\n", s.message()), false;
  std::vector<float> y(batch * dim), v(batch * dim), t(batch, 0.5f);
  for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<float>((i * 37 % 101) * 0.02 - 1.0);
  if (!(s = plan->velocity(batch, t.data(), y.data(), v.data())).ok())  // warm-up
    return std::fprintf(stderr, "bench_conv: %s\n", s.message()), false;
  // Calls per rep: enough for 0.1 CPU s.
  double start = cpu_now();
  size_t calls = 0;
  while (cpu_now() - start < 0.02 || calls == 0) {
    plan->velocity(batch, t.data(), y.data(), v.data());
    ++calls;
  }
  const size_t per_rep = std::max<size_t>(1, calls * 5);
  std::vector<double> per_eval;
  for (int r = 0; r < reps; ++r) {
    start = cpu_now();
    for (size_t c = 0; c < per_rep; ++c) plan->velocity(batch, t.data(), y.data(), v.data());
    per_eval.push_back((cpu_now() - start) / double(per_rep));
  }
  std::sort(per_eval.begin(), per_eval.end());
  out->cpu = per_eval[per_eval.size() / 2];
  out->kernel = plan->node_kernel(conv);
  return true;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) out.push_back(part);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> backends{"simd"};
  std::vector<size_t> batches{1, 64};
  uint32_t threads = 1;
  int reps = 5;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool more = i + 1 < argc;
    if (a == "--backend" && more) {
      backends = split(argv[++i]);
    } else if (a == "--batch" && more) {
      batches.clear();
      for (const std::string& b : split(argv[++i]))
        batches.push_back(std::strtoul(b.c_str(), 0, 10));
    } else if (a == "--threads" && more) {
      threads = static_cast<uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--reps" && more) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--layer" && more) {
      only = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: bench_conv [--backend B[,B...]] [--batch N[,N...]] [--threads N] "
                   "[--reps R] [--layer TEXT]\n");
      return 2;
    }
  }
  std::vector<siflow::Backend> parsed;
  for (const std::string& b : backends) {
    siflow::Backend backend;
    if (!siflow::parse_backend(b.c_str(), &backend)) {
      std::fprintf(stderr, "bench_conv: unknown backend '%s'\n", b.c_str());
      return 2;
    }
    parsed.push_back(backend);
  }
  double peak = 0;
#if defined(__x86_64__)
  const char* isa = std::getenv("SIFLOW_SIMD_ISA");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    const double avx2 = peak_fma::peak(peak_fma::fma_avx2, 8, true);
    peak = avx2;
    std::printf("peak_gflops_avx2 %.1f (CPU s)\n", avx2);
    if (__builtin_cpu_supports("avx512f")) {
      const double avx512 = peak_fma::peak(peak_fma::fma_avx512, 16, true);
      std::printf("peak_gflops_avx512 %.1f (CPU s)\n", avx512);
      if (!(isa && std::strncmp(isa, "avx2", 4) == 0)) peak = std::max(peak, avx512);
    }
  }
#endif
  std::printf("%-24s %-10s %5s %-14s %12s %9s %7s\n", "layer", "backend", "batch", "kernel",
              "cpu_s/eval", "GFLOP/s", "%peak");
  for (size_t bi = 0; bi < parsed.size(); ++bi)
    for (size_t batch : batches)
      for (const Row& row : kRows) {
        if (!only.empty() && std::string(row.name).find(only) == std::string::npos) continue;
        uint32_t dim = 0, base_dim = 0;
        const std::vector<uint8_t> model = build(row.x_shape, row.model, &dim);
        const std::vector<uint8_t> base_model = build(row.x_shape, row.base, &base_dim);
        Timing tm, base;
        if (!time_model(model, dim, row.timed, parsed[bi], threads, batch, reps, &tm)) return 1;
        if (!row.base.empty() &&
            !time_model(base_model, base_dim, 0, parsed[bi], threads, batch, reps, &base))
          return 1;
        const double sec = tm.cpu - base.cpu;
        const double gflops = (flops(row.model) - flops(row.base)) * double(batch) / sec * 1e-9;
        std::printf("%-24s %-10s %5zu %-14s %12.3e %9.1f %6.1f%%\n", row.name, backends[bi].c_str(),
                    batch, tm.kernel.c_str(), sec, gflops, peak > 0 ? 100.0 * gflops / peak : 0.0);
        std::fflush(stdout);
      }
  return 0;
}
