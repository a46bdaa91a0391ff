// SPDX-License-Identifier: Apache-2.0
// ConvTranspose2d layers of U-Net up-sampling shapes on each backend, side by side in one run:
// reference (the scalar loops), simd (the stride-1 Conv2d over the spread-out input,
// ops/conv2d_simd.cc run_conv_transposed_simd) and xnnpack (XNNPACK's NHWC deconvolution,
// conversions included; in builds with it). Each layer is a model x -> ConvTranspose2d -> Conv2d
// back to x's shape (same window), planned per backend and timed through Plan::velocity with a
// profile (Plan::set_profile): the transposed conv's own wall time per evaluation, median of R reps
// of about 0.2 s each. Prints per layer, batch and backend the kernel name, the time, GFLOP/s (2 x
// the formula's multiply-adds) and the time over simd's.
//   bench_deconv [--batch N[,N...]] [--threads N] [--reps R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

struct Layer {
  const char* what;
  uint32_t cin, h, w, cout, k, stride, pad, out_pad;
  double flops() const { return 2.0 * cin * h * w * cout * k * k; }
};

const Layer kLayers[] = {
    {"32->64 14x14->28x28 4x4 s2", 32, 14, 14, 64, 4, 2, 1, 0},
    {"64->32 7x7->14x14 4x4 s2", 64, 7, 7, 32, 4, 2, 1, 0},
    {"32->32 14x14->28x28 3x3 s2 op1", 32, 14, 14, 32, 3, 2, 1, 1},
    {"128->64 7x7->14x14 2x2 s2", 128, 7, 7, 64, 2, 2, 0, 0},
};

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

std::vector<uint8_t> model_of(const Layer& l) {
  std::mt19937 rng(5);
  siflow::ModelBuilder b(l.cin * l.h * l.w);
  b.set_x_shape({l.cin, l.h, l.w});
  siflow::ImageWindow win;
  win.strides = {l.stride, l.stride};
  win.pads = {l.pad, l.pad, l.pad, l.pad};
  siflow::ImageWindow up = win;
  up.output_padding = {l.out_pad, l.out_pad};
  const float scale = 1.0f / static_cast<float>(l.k * l.k * l.cin);
  const uint32_t h = b.conv_transpose2d(
      b.x(), l.cout, {l.k, l.k}, random_floats(size_t{l.cin} * l.cout * l.k * l.k, rng, scale),
      random_floats(l.cout, rng, 0.1f), up);
  b.set_output(b.conv2d(h, l.cin, {l.k, l.k},
                        random_floats(size_t{l.cin} * l.cout * l.k * l.k, rng, scale), {}, win));
  return b.finish();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> batches{1, 16};
  uint32_t threads = 1;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool more = i + 1 < argc;
    if (a == "--batch" && more) {
      // N[,N...]
      batches.clear();
      for (char* p = argv[++i]; *p;) {
        char* end = nullptr;
        batches.push_back(std::strtoul(p, &end, 10));
        if (end == p) break;
        p = *end == ',' ? end + 1 : end;
      }
    } else if (a == "--threads" && more) {
      threads = static_cast<uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--reps" && more) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_deconv [--batch N[,N...]] [--threads N] [--reps R]\n");
      return 2;
    }
  }
  if (batches.empty() || std::count(batches.begin(), batches.end(), size_t{0}) != 0) {
    std::fprintf(stderr, "bench_deconv: --batch takes positive numbers, N[,N...]\n");
    return 2;
  }
  const siflow::Backend backends[] = {siflow::Backend::kSimd, siflow::Backend::kReference,
                                      siflow::Backend::kXnnpack};
  std::printf("# layer | batch | backend | kernel | ms per evaluation | GFLOP/s | time / simd's\n");
  for (const Layer& l : kLayers) {
    const std::vector<uint8_t> bytes = model_of(l);
    std::unique_ptr<siflow::Model> m;
    siflow::LoadOptions lo;
    lo.allow_copy = true;
    siflow::Status s = siflow::Model::load(bytes.data(), bytes.size(), lo, &m);
    if (!s.ok()) {
      std::fprintf(stderr, "bench_deconv: %s: %s\n", l.what, s.message());
      return 1;
    }
    const size_t dim = m->info().dim;
    for (size_t batch : batches) {
      double simd_ms = 0;
      for (siflow::Backend backend : backends) {
        siflow::PlanOptions po;
        po.max_batch = batch;
        po.backend = backend;
        po.threads = threads;
        po.divergence = siflow::DivergenceMode::kNone;
        std::unique_ptr<siflow::Plan> plan;
        s = siflow::Plan::create(*m, po, nullptr, 0, &plan);
        if (!s.ok()) {
          std::printf("%s | %zu | %s | (%s)\n", l.what, batch, siflow::backend_name(backend),
                      s.message());
          continue;
        }
        std::mt19937 rng(3);
        const std::vector<float> x = random_floats(batch * dim, rng, 1.0f);
        std::vector<float> t(batch, 0.5f), v(batch * dim);
        siflow::NodeProfile prof[2];
        plan->velocity(batch, t.data(), x.data(), v.data());  // warm-up
        // Calls per rep: about 0.2 s of them, from the warm-up's time.
        auto t0 = std::chrono::steady_clock::now();
        plan->velocity(batch, t.data(), x.data(), v.data());
        const double one =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const int calls = std::max(1, static_cast<int>(0.2 / std::max(one, 1e-6)));
        std::vector<double> ms;
        for (int r = 0; r < reps; ++r) {
          prof[0] = prof[1] = siflow::NodeProfile();
          plan->set_profile(prof, 2);
          for (int c = 0; c < calls; ++c) plan->velocity(batch, t.data(), x.data(), v.data());
          plan->set_profile(nullptr, 0);
          ms.push_back(1e-6 * static_cast<double>(prof[0].nanoseconds) / calls);
        }
        std::sort(ms.begin(), ms.end());
        const double med = ms[ms.size() / 2];
        if (backend == siflow::Backend::kSimd) simd_ms = med;
        std::printf("%s | %zu | %s | %s | %.4f | %.1f | %.2f\n", l.what, batch,
                    siflow::backend_name(backend), plan->node_kernel(0), med,
                    l.flops() * static_cast<double>(batch) / (med * 1e-3) * 1e-9,
                    simd_ms > 0 ? med / simd_ms : 0.0);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
