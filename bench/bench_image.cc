// SPDX-License-Identifier: Apache-2.0
// siflow's side of the image benchmarks (bench/run_image.sh runs it next to bench/unet28.py and
// bench/peer_ort_image.mjs on the same converted nets):
//   bench_image sample MODEL.sif BATCH STEPS REPS euler|rk4 [--backend B] [--threads N]
//   bench_image logp MODEL.sif BATCH STEPS REPS exact|hutchinson K [--backend B] [--threads N]
// --tune (with --backend auto) times each dense layer and Conv2d on simd and XNNPACK at plan
// creation and keeps the faster (PlanOptions::tune). --block-rows N sets PlanOptions::block_rows
// (0: the plan's choice; BATCH or more: every layer over the whole batch).
// sample decodes BATCH fixed base points (z = sin(0.7 i + 0.3), as the peers) over STEPS steps;
// logp integrates RK4 log-likelihoods of the same points read as data. Prints the median and
// minimum seconds of REPS runs (after one warm-up when REPS > 1), the median CPU seconds of the
// process (what counts on a loaded machine with one thread), a checksum, the arena bytes,
// the peak RSS in KiB and the kernels of the Conv2d nodes, each with its count. --profile runs REPS
// more times after the timed runs with the per-node profile on (Plan::set_profile) and prints,
// after the result line, the CLI's --profile table of each node's fastest run (robust to preemption
// on a shared machine) under the fastest run's wall time.
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "profile.hpp"
#include "siflow/siflow.hpp"

namespace {

int fail(const siflow::Status& s) {
  std::fprintf(stderr, "bench_image: %s\n", s.message());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7 || (std::strcmp(argv[1], "sample") != 0 && std::strcmp(argv[1], "logp") != 0)) {
    std::fprintf(stderr,
                 "usage: bench_image sample MODEL BATCH STEPS REPS euler|rk4 [--backend B] "
                 "[--threads N] [--tune] [--block-rows N] [--profile]\n       bench_image logp "
                 "MODEL BATCH STEPS "
                 "REPS exact|hutchinson K [--backend B] [--threads N] [--tune] [--block-rows N] "
                 "[--profile]\n");
    return 2;
  }
  const bool logp = std::strcmp(argv[1], "logp") == 0;
  const size_t batch = std::strtoul(argv[3], nullptr, 10);
  const uint32_t steps = static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10));
  const int reps = std::atoi(argv[5]);
  const std::string mode = argv[6];
  uint32_t probes = 0;
  int i = 7;
  if (logp && mode == "hutchinson") {
    if (argc < 8) return 2;
    probes = static_cast<uint32_t>(std::strtoul(argv[7], nullptr, 10));
    i = 8;
  }
  siflow::PlanOptions po;
  bool profile = false;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--backend" && i + 1 < argc && siflow::parse_backend(argv[i + 1], &po.backend)) {
      ++i;
    } else if (a == "--threads" && i + 1 < argc) {
      po.threads = static_cast<uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--tune") {
      po.tune = true;
    } else if (a == "--profile") {
      profile = true;
    } else if (a == "--block-rows" && i + 1 < argc) {
      po.block_rows = std::strtoul(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "bench_image: bad option '%s'\n", a.c_str());
      return 2;
    }
  }
  std::unique_ptr<siflow::Model> model;
  siflow::Status s = siflow::Model::load_file(argv[2], siflow::LoadOptions(), &model);
  if (!s.ok()) return fail(s);
  const uint32_t d = model->info().dim;
  po.max_batch = batch;
  po.divergence = !logp                  ? siflow::DivergenceMode::kNone
                  : mode == "hutchinson" ? siflow::DivergenceMode::kHutchinson
                                         : siflow::DivergenceMode::kExact;
  po.max_probes = probes ? probes : 1;
  std::unique_ptr<siflow::Plan> plan;
  if (!(s = siflow::Plan::create(*model, po, nullptr, 0, &plan)).ok()) return fail(s);
  std::vector<float> z(batch * d), x(batch * d);
  for (size_t k = 0; k < z.size(); ++k) z[k] = static_cast<float>(std::sin(0.7 * k + 0.3));
  std::vector<double> lp(batch);
  siflow::OdeOptions ode;
  ode.method = mode == "euler" ? siflow::Method::kEuler : siflow::Method::kRK4;
  ode.steps = steps;
  siflow::LogProbOptions lo;
  lo.ode = ode;
  if (probes) {
    lo.divergence.mode = siflow::DivergenceMode::kHutchinson;
    lo.divergence.probes = probes;
  }
  std::vector<double> seconds, cpu;
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  };
  auto run = [&](double* sec) {
    const auto start = std::chrono::steady_clock::now();
    const siflow::Status st =
        logp ? plan->log_prob(batch, z.data(), lo, lp.data())
             : plan->decode(batch, z.data(), ode, siflow::DivergenceOptions(), x.data(), nullptr);
    *sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return st;
  };
  for (int r = reps > 1 ? 0 : 1; r <= reps; ++r) {
    const double cpu_start = cpu_now();
    double sec = 0;
    if (!(s = run(&sec)).ok()) return fail(s);
    if (r > 0) seconds.push_back(sec), cpu.push_back(cpu_now() - cpu_start);
  }
  // The profile: REPS more runs, each node's fastest (a run preempted in one node by another
  // process on a shared machine counts the lost time only there); the fastest run's wall time.
  const size_t node_count = model->info().node_count;
  std::vector<siflow::NodeProfile> nodes(node_count), one(node_count);
  double profile_seconds = 0;
  for (int r = 0; profile && r < std::max(reps, 1); ++r) {
    std::fill(one.begin(), one.end(), siflow::NodeProfile());
    if (!(s = plan->set_profile(one.data(), one.size())).ok()) return fail(s);
    double sec = 0;
    if (!(s = run(&sec)).ok()) return fail(s);
    plan->set_profile(nullptr, 0);
    profile_seconds = r == 0 ? sec : std::min(profile_seconds, sec);
    for (size_t k = 0; k < node_count; ++k)
      if (r == 0 || one[k].nanoseconds < nodes[k].nanoseconds) nodes[k] = one[k];
  }
  std::sort(seconds.begin(), seconds.end());
  std::sort(cpu.begin(), cpu.end());
  double checksum = 0;
  if (logp)
    for (double v : lp) checksum += v;
  else
    for (float v : x) checksum += v;
  // Each Conv2d kernel the plan chose with its count: "simd/avx512 nchw*2,xnnpack nhwc>nhwc*9".
  std::vector<std::pair<std::string, int>> chosen;
  for (uint32_t n = 0; n < model->info().node_count; ++n) {
    const char* op = "";
    uint32_t in = 0, width = 0;
    model->node(n, &op, &in, &width);
    if (std::strcmp(op, "conv2d") != 0) continue;
    const std::string k = plan->node_kernel(n);
    auto at =
        std::find_if(chosen.begin(), chosen.end(), [&](const auto& c) { return c.first == k; });
    if (at == chosen.end())
      chosen.emplace_back(k, 1);
    else
      ++at->second;
  }
  std::string kernels;
  for (const auto& c : chosen)
    kernels += (kernels.empty() ? "" : ",") + c.first + "*" + std::to_string(c.second);
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  std::printf(
      "median %.6f min %.6f cpu_median %.6f checksum %.6g arena %zu rss_kib %ld conv %s "
      "block_rows %zu velocity_threads %u\n",
      seconds[seconds.size() / 2], seconds[0], cpu[cpu.size() / 2], checksum, plan->arena_bytes(),
      usage.ru_maxrss, kernels.c_str(), plan->block_rows(logp ? (probes ? probes : d) : 0),
      plan->velocity_threads());
  if (profile)
    std::fputs(siflow::cli::profile_table(*model, *plan, nodes.data(), profile_seconds).c_str(),
               stdout);
  return 0;
}
