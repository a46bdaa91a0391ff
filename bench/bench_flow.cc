// SPDX-License-Identifier: Apache-2.0
// siflow's side of the benchmarks (bench/run.sh runs it next to the peers).
//   bench_flow models DIR      writes the benchmark models M1 and M2 as DIR/m1.sif, DIR/m2.sif
//                              and each layer's weights as .npy (DIR/m1_w0.npy, m1_b0.npy, ...)
//                              so the peers build exactly the same networks
//   bench_flow run MODEL.sif BATCH STEPS REPS [--logp] [--backend B] [--threads N] [--tune]
//                              times classic-RK4 decoding of BATCH fixed base points over STEPS
//                              steps (with exact log-likelihoods when --logp), REPS times (after
//                              one warm-up when REPS > 1), and prints the median and minimum
//                              seconds per run, a checksum, the dense layers' GFLOP/s at the
//                              median (2 in out flops per row and layer and network evaluation,
//                              forward only), the arena bytes, the peak RSS in KiB and the
//                              kernel of every dense layer
// M1: d = 2, input [t, x] -> 256 -> 256 -> 256 -> 2, SiLU. M2: d = 16, [x, t] -> 512 -> 512 -> 16,
// GELU (erf). Weights are drawn like PyTorch's nn.Linear default, U(-1/sqrt(in), 1/sqrt(in)).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "array_io.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

struct Layer {
  uint32_t in, out;
  std::vector<float> w, b;
};

// Deterministic U(-1/sqrt(in), 1/sqrt(in)) weights and biases.
Layer make_layer(uint32_t in, uint32_t out, uint64_t* state) {
  auto uniform = [state] {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(*state >> 11) / 9007199254740992.0;
  };
  Layer l{in, out, std::vector<float>(size_t{in} * out), std::vector<float>(out)};
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  for (float& v : l.w) v = static_cast<float>((2 * uniform() - 1) * bound);
  for (float& v : l.b) v = static_cast<float>((2 * uniform() - 1) * bound);
  return l;
}

bool write_model(const std::string& dir, const std::string& name, uint32_t dim, bool t_first,
                 const std::vector<uint32_t>& widths, siflow::UnaryKind act, uint64_t seed) {
  siflow::ModelBuilder b(dim);
  uint32_t h = t_first ? b.concat({b.t(), b.x()}) : b.concat({b.x(), b.t()});
  uint32_t in = dim + 1;
  std::vector<Layer> layers;
  for (size_t i = 0; i <= widths.size(); ++i) {
    const uint32_t out = i < widths.size() ? widths[i] : dim;
    layers.push_back(make_layer(in, out, &seed));
    h = b.fully_connected(h, out, layers.back().w, layers.back().b);
    if (i < widths.size()) h = b.unary(h, act);
    in = out;
  }
  b.set_output(h);
  b.set_name(name);
  const std::vector<uint8_t> bytes = b.finish();
  const std::string path = dir + "/" + name + ".sif";
  const siflow::Status s = siflow::write_file_atomic(path.c_str(), bytes.data(), bytes.size());
  if (!s.ok()) {
    std::fprintf(stderr, "bench_flow: %s\n", s.message());
    return false;
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string stem = dir + "/" + name + "_";
    siflow::cli::write_points(stem + "w" + std::to_string(i) + ".npy", layers[i].w.data(),
                              layers[i].out, layers[i].in);
    siflow::cli::write_points(stem + "b" + std::to_string(i) + ".npy", layers[i].b.data(), 1,
                              layers[i].out);
  }
  std::printf("wrote %s (%zu layers)\n", path.c_str(), layers.size());
  return true;
}

struct RunOptions {
  bool logp = false;
  bool tune = false;
  siflow::Backend backend = siflow::Backend::kAuto;
  uint32_t threads = 1;
  siflow::Precision precision = siflow::Precision::kFp32;
};

int run(const char* path, size_t batch, uint32_t steps, int reps, const RunOptions& o) {
  const bool logp = o.logp;
  std::unique_ptr<siflow::Model> model;
  siflow::Status s = siflow::Model::load_file(path, siflow::LoadOptions(), &model);
  if (!s.ok()) {
    std::fprintf(stderr, "bench_flow: %s\n", s.message());
    return 1;
  }
  const uint32_t d = model->info().dim;
  siflow::PlanOptions po;
  po.max_batch = batch;
  po.divergence = logp ? siflow::DivergenceMode::kExact : siflow::DivergenceMode::kNone;
  po.backend = o.backend;
  po.threads = o.threads;
  po.tune = o.tune;
  po.precision = o.precision;
  std::unique_ptr<siflow::Plan> plan;
  if (!(s = siflow::Plan::create(*model, po, nullptr, 0, &plan)).ok()) {
    std::fprintf(stderr, "bench_flow: %s\n", s.message());
    return 1;
  }
  std::vector<float> z(batch * d), x(batch * d);
  for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>(std::sin(0.7 * i + 0.3));
  std::vector<double> lp(batch);
  siflow::OdeOptions ode;
  ode.method = siflow::Method::kRK4;
  ode.steps = steps;
  std::vector<double> seconds;
  // One warm-up run first, unless a single run is asked for (slow configurations).
  for (int r = reps > 1 ? 0 : 1; r <= reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    s = plan->decode(batch, z.data(), ode, siflow::DivergenceOptions(), x.data(),
                     logp ? lp.data() : nullptr);
    const double sec =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!s.ok()) {
      std::fprintf(stderr, "bench_flow: %s\n", s.message());
      return 1;
    }
    if (r > 0) seconds.push_back(sec);  // the first run warms caches up
  }
  std::sort(seconds.begin(), seconds.end());
  double checksum = 0;
  for (float v : x) checksum += v;
  double flops_per_row = 0;
  std::string kernels;
  for (uint32_t i = 0; i < model->info().node_count; ++i) {
    const char* op = "";
    uint32_t in = 0, width = 0;
    model->node(i, &op, &in, &width);
    if (std::strcmp(op, "fully_connected") != 0) continue;
    flops_per_row += 2.0 * in * width;
    kernels += (kernels.empty() ? "" : ",") + std::string(plan->node_kernel(i));
  }
  // With --logp: the sum over rows of log p(x) - log N(z), the change of log density along the
  // paths, which the PyTorch peer prints as logp_sum (the models' base is N(0, I)).
  double logp_sum = 0;
  for (size_t r = 0; logp && r < batch; ++r) {
    double base = -0.5 * d * std::log(2 * M_PI);
    for (uint32_t k = 0; k < d; ++k) base -= 0.5 * double(z[r * d + k]) * z[r * d + k];
    logp_sum += lp[r] - base;
  }
  const double median = seconds[seconds.size() / 2];
  const double gflops = flops_per_row * batch * steps * 4 / median * 1e-9;  // RK4: 4 evaluations
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  std::printf("median %.6f min %.6f checksum %.6g gflops %.1f arena %zu rss_kib %ld kernels %s",
              median, seconds[0], checksum, gflops, plan->arena_bytes(), usage.ru_maxrss,
              kernels.c_str());
  if (logp) std::printf(" logp_sum %.6g", logp_sum);
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "models") == 0) {
    const std::string dir = argv[2];
    const bool ok = write_model(dir, "m1", 2, true, {256, 256, 256}, siflow::UnaryKind::kSilu, 1) &&
                    write_model(dir, "m2", 16, false, {512, 512}, siflow::UnaryKind::kGeluErf, 2);
    return ok ? 0 : 1;
  }
  if (argc >= 6 && std::strcmp(argv[1], "run") == 0) {
    RunOptions o;
    for (int i = 6; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--logp") {
        o.logp = true;
      } else if (a == "--tune") {
        o.tune = true;
      } else if (a == "--backend" && i + 1 < argc &&
                 siflow::parse_backend(argv[i + 1], &o.backend)) {
        ++i;
      } else if (a == "--precision" && i + 1 < argc &&
                 siflow::parse_precision(argv[i + 1], &o.precision)) {
        ++i;
      } else if (a == "--threads" && i + 1 < argc) {
        o.threads = static_cast<uint32_t>(std::strtoul(argv[++i], nullptr, 10));
      } else {
        std::fprintf(stderr, "bench_flow: bad option '%s'\n", a.c_str());
        return 2;
      }
    }
    return run(argv[2], std::strtoul(argv[3], nullptr, 10),
               static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10)), std::atoi(argv[5]), o);
  }
  std::fprintf(stderr,
               "usage: bench_flow models DIR | bench_flow run MODEL BATCH STEPS REPS [--logp] "
               "[--backend B] [--precision P] [--threads N] [--tune]\n");
  return 2;
}
