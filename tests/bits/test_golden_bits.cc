// SPDX-License-Identifier: Apache-2.0
// Cross-platform reproducibility of the reference backend: the same models and seeds give the
// same bits on x86-64, AArch64, ARMv7 and WebAssembly. This program computes samples (ODE with
// exact log-likelihoods, and SDE), encodings and log-likelihoods (exact and Hutchinson) for the
// committed models and compares every float/double bit pattern with one committed file,
// golden_bits.txt, written on x86-64. `test_golden_bits --write FILE` regenerates it.
#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "siflow/siflow.hpp"

namespace {

struct Line {
  std::string key;
  std::string hex;  // bit patterns, space-separated
};

template <typename T>
std::string bits(const std::vector<T>& v) {
  std::string out;
  char buf[24];
  for (T x : v) {
    if (sizeof(T) == 4) {
      uint32_t u;
      std::memcpy(&u, &x, 4);
      std::snprintf(buf, sizeof buf, "%08" PRIx32 " ", u);
    } else {
      uint64_t u;
      std::memcpy(&u, &x, 8);
      std::snprintf(buf, sizeof buf, "%016" PRIx64 " ", u);
    }
    out += buf;
  }
  return out;
}

bool ok(const siflow::Status& s, const char* what) {
  if (!s.ok()) std::fprintf(stderr, "test_golden_bits: %s: %s\n", what, s.message());
  return s.ok();
}

// Every quantity for one model, as key -> bits lines.
bool compute(const std::string& name, const std::string& path, std::vector<Line>* out) {
  std::unique_ptr<siflow::Model> model;
  if (!ok(siflow::Model::load_file(path.c_str(), siflow::LoadOptions(), &model), path.c_str()))
    return false;
  siflow::PlanOptions po;
  po.max_batch = 8;
  po.max_probes = 2;
  po.backend = siflow::Backend::kReference;  // the backend whose bits are the same everywhere
  std::unique_ptr<siflow::Plan> plan;
  if (!ok(siflow::Plan::create(*model, po, nullptr, 0, &plan), "plan")) return false;
  const size_t n = 12, d = model->info().dim;
  std::vector<float> x(n * d), z(n * d);
  std::vector<double> logp(n), exact(n), hutch(n);
  siflow::SampleOptions so;
  so.seed = 20261128;
  so.ode.steps = 16;
  if (!ok(plan->sample(n, so, x.data(), logp.data()), "sample")) return false;
  out->push_back({name + ".sample", bits(x)});
  out->push_back({name + ".sample_logp", bits(logp)});
  siflow::OdeOptions ode;
  ode.steps = 16;
  ode.method = siflow::Method::kRK4_38;
  if (!ok(plan->encode(n, x.data(), ode, z.data()), "encode")) return false;
  out->push_back({name + ".encode", bits(z)});
  siflow::LogProbOptions lp;
  lp.ode.steps = 16;
  lp.ode.method = siflow::Method::kHeun;
  if (!ok(plan->log_prob(n, x.data(), lp, exact.data()), "log_prob")) return false;
  out->push_back({name + ".logprob_exact", bits(exact)});
  lp.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lp.divergence.probes = 2;
  lp.divergence.probe = siflow::ProbeKind::kGaussian;
  lp.divergence.seed = 5;
  if (!ok(plan->log_prob(n, x.data(), lp, hutch.data()), "log_prob hutchinson")) return false;
  out->push_back({name + ".logprob_hutchinson", bits(hutch)});
  if (model->info().score_available) {
    siflow::SampleOptions sde = so;
    sde.sde.epsilon = 0.5;
    if (!ok(plan->sample(n, sde, x.data(), nullptr), "sde sample")) return false;
    out->push_back({name + ".sde_sample", bits(x)});
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // argv: [--write OUT | GOLDEN] then name=path pairs.
  if (argc < 3) {
    std::fprintf(stderr, "usage: test_golden_bits (--write OUT | GOLDEN) NAME=MODEL...\n");
    return 2;
  }
  const bool write = std::strcmp(argv[1], "--write") == 0;
  const int first_model = write ? 3 : 2;
  const char* file = write ? argv[2] : argv[1];
  std::vector<Line> lines;
  for (int i = first_model; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "test_golden_bits: expected NAME=MODEL, got '%s'\n", argv[i]);
      return 2;
    }
    if (!compute(arg.substr(0, eq), arg.substr(eq + 1), &lines)) return 1;
  }
  if (write) {
    std::string text =
        "# siflow reference-backend bit patterns (tests/bits/test_golden_bits.cc), written on "
        "x86-64\n";
    for (const Line& l : lines) text += l.key + " " + l.hex + "\n";
    const siflow::Status s = siflow::write_file_atomic(file, text.data(), text.size());
    if (!ok(s, file)) return 1;
    std::printf("wrote %zu lines to %s\n", lines.size(), file);
    return 0;
  }
  FILE* f = std::fopen(file, "r");
  if (!f) {
    std::fprintf(stderr, "test_golden_bits: cannot open %s\n", file);
    return 1;
  }
  std::vector<std::string> golden;
  std::string current;
  for (int c; (c = std::fgetc(f)) != EOF;) {
    if (c == '\n') {
      if (!current.empty() && current[0] != '#') golden.push_back(current);
      current.clear();
    } else {
      current += static_cast<char>(c);
    }
  }
  std::fclose(f);
  int failures = 0;
  if (golden.size() != lines.size()) {
    std::fprintf(stderr, "test_golden_bits: %zu golden lines, computed %zu\n", golden.size(),
                 lines.size());
    return 1;
  }
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string mine = lines[i].key + " " + lines[i].hex;
    if (mine == golden[i]) continue;
    ++failures;
    // Name the first differing value.
    size_t at = 0;
    while (at < mine.size() && at < golden[i].size() && mine[at] == golden[i][at]) ++at;
    const size_t value = std::count(mine.begin(), mine.begin() + static_cast<long>(at), ' ');
    std::fprintf(stderr, "test_golden_bits: %s differs from the golden bits at value %zu\n",
                 lines[i].key.c_str(), value == 0 ? 0 : value - 1);
  }
  std::printf("%zu quantities compared bit for bit, %d differ\n", lines.size(), failures);
  return failures == 0 ? 0 : 1;
}
