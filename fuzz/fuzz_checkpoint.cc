// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: checkpoint bytes -> verify and parse (every value checked) -> for small runs,
// Trainer::resume from the same bytes, which adds the option, consistency and model checks. Any
// crash, sanitizer report (misaligned reads included) or a parse that lets a bad value through is
// a finding.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "siflow/train.hpp"
#include "train/checkpoint.hpp"

namespace {

using namespace siflow;

// A parsed checkpoint holds only values the reader's rules allow.
void expect_valid(const train::CheckpointState& s) {
  const Status ok;
  if (s.step > s.options.steps) fuzz::finding("parsed a step beyond the run's steps", ok);
  for (float v : s.norm_std)
    if (!(fuzz::finite(v) && v > 0)) fuzz::finding("parsed a norm_std that is not positive", ok);
  for (const std::vector<float>* a : {&s.params, &s.adam_m, &s.adam_v, &s.norm_mean})
    for (float v : *a)
      if (!fuzz::finite(v)) fuzz::finding("parsed a non-finite value", ok);
  for (const std::vector<double>* a : {&s.alpha, &s.beta, &s.coef_m, &s.coef_v})
    for (double v : *a)
      if (!fuzz::finite(v)) fuzz::finding("parsed a non-finite coefficient", ok);
}

// Small enough to resume inside the fuzzer's memory and time limits.
bool small_run(const train::CheckpointState& s) {
  uint64_t widest = 2 + 2 * uint64_t{s.options.time_frequencies};
  for (uint32_t w : s.options.hidden) widest = w > widest ? w : widest;
  return s.toy && s.dim == 2 && s.options.hidden.size() <= 4 && widest <= 64 &&
         s.options.batch <= 64 && s.options.holdout_points <= 256;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // 8-byte aligned, as read_checkpoint's own buffer: misalignment can come only from the layout.
  std::vector<uint64_t> storage((size + 7) / 8);
  if (size) std::memcpy(storage.data(), data, size);
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(storage.data());
  train::CheckpointState s;
  const Status st = train::parse_checkpoint(bytes, size, "fuzz", &s);
  fuzz::expect_message(st);
  if (!st.ok()) return 0;
  expect_valid(s);
  if (!small_run(s)) return 0;
  // The same bytes through the file path and Trainer::resume (an in-memory file).
  const int fd = memfd_create("checkpoint", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (write(fd, data, size) == static_cast<ssize_t>(size)) {
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    TrainData toy;
    toy.toy_kind = s.toy_kind;
    toy.name = "fuzz";
    std::unique_ptr<Trainer> trainer;
    const Status r = Trainer::resume(path.c_str(), toy, 1, &trainer);
    fuzz::expect_message(r);
    if (r.ok() && trainer->steps_done() < trainer->options().steps) {
      TrainStepReport report;
      fuzz::expect_message(trainer->step(&report));
    }
  }
  close(fd);
  return 0;
}
