// SPDX-License-Identifier: Apache-2.0
// Times siflow's training step (siflow::Trainer::step: minibatch, forward, loss, backward,
// clipping, AdamW) for bench/run.sh, next to bench/peer_torch_train.py running the same model,
// batch and loss in PyTorch. Prints one line of key=value pairs.
//   bench_train [--data NAME] [--hidden W,W,..] [--batch B] [--threads N] [--steps N]
//               [--warmup N] [--kernels auto|reference|simd] [--precision fp32|bf16]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "siflow/train.hpp"

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "bench_train: %s\n", message.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  siflow::TrainOptions options;
  options.eval_every = 0;
  options.holdout_points = 0;
  options.warmup = 0;
  options.batch = 4096;
  options.threads = 1;
  std::string data_name = "checkerboard";
  int steps = 30, warmup = 5;
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc) fail(std::string("option without value: ") + argv[i]);
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--data") {
      data_name = value;
    } else if (key == "--hidden") {
      options.hidden.clear();
      for (size_t at = 0; at <= value.size();) {
        const size_t comma = value.find(',', at);
        options.hidden.push_back(static_cast<uint32_t>(std::stoul(value.substr(at, comma - at))));
        if (comma == std::string::npos) break;
        at = comma + 1;
      }
    } else if (key == "--batch") {
      options.batch = static_cast<uint32_t>(std::stoul(value));
    } else if (key == "--threads") {
      options.threads = static_cast<uint32_t>(std::stoul(value));
    } else if (key == "--steps") {
      steps = std::stoi(value);
    } else if (key == "--warmup") {
      warmup = std::stoi(value);
    } else if (key == "--kernels") {
      options.kernels = value == "reference" ? siflow::TrainKernels::kReference
                        : value == "simd"    ? siflow::TrainKernels::kSimd
                                             : siflow::TrainKernels::kAuto;
    } else if (key == "--precision") {
      if (!siflow::parse_precision(value.c_str(), &options.precision))
        fail("unknown precision " + value);
    } else {
      fail("unknown option " + key);
    }
  }
  options.steps = static_cast<uint64_t>(steps + warmup);
  siflow::TrainData data;
  if (!siflow::parse_toy_data(data_name.c_str(), &data.toy_kind)) fail("unknown data " + data_name);
  data.name = data_name;
  std::unique_ptr<siflow::Trainer> trainer;
  siflow::Status s = siflow::Trainer::create(options, data, &trainer);
  if (!s.ok()) fail(s.message());
  siflow::TrainStepReport report;
  std::vector<double> ms;
  // Process CPU time over the measured steps (all threads): what a step costs on a shared machine.
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
  };
  double cpu_start = 0.0;
  for (int i = 0; i < steps + warmup; ++i) {
    if (i == warmup) cpu_start = cpu_now();
    const auto t0 = std::chrono::steady_clock::now();
    s = trainer->step(&report);
    if (!s.ok()) fail(s.message());
    const double dt =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) ms.push_back(dt);
  }
  const double cpu_ms = (cpu_now() - cpu_start) / steps;
  std::sort(ms.begin(), ms.end());
  std::printf(
      "peer=siflow precision=%s threads=%u batch=%u params=%llu steps=%d step_ms_median=%.3f "
      "step_ms_min=%.3f cpu_ms_mean=%.3f loss_last=%.6g\n",
      siflow::precision_name(options.precision), options.threads, options.batch,
      static_cast<unsigned long long>(trainer->parameter_count()), steps, ms[ms.size() / 2], ms[0],
      cpu_ms, report.loss);
  return 0;
}
