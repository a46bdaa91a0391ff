// SPDX-License-Identifier: Apache-2.0
// Training checkpoints as hostile files: a [double] vector the file places at an address 4 mod 8
// is read correctly (and without a misaligned load, which UBSan would report), every value is
// checked on read with the field named, and FIFOs are refused without blocking.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint_generated.h"
#include "doctest/doctest.h"
#include "siflow/train.hpp"
#include "train/checkpoint.hpp"

namespace {

using namespace siflow;

// 8-byte aligned storage for checkpoint bytes (the reader's own buffers are aligned the same).
struct Aligned {
  std::vector<uint64_t> words;
  size_t size = 0;
  explicit Aligned(const std::vector<uint8_t>& bytes)
      : words((bytes.size() + 7) / 8), size(bytes.size()) {
    std::memcpy(words.data(), bytes.data(), bytes.size());
  }
  uint8_t* data() { return reinterpret_cast<uint8_t*>(words.data()); }
};

// A checkpoint whose `alpha` vector is written as a [uint32] of the doubles' bits (so only 4-byte
// aligned), with `pad` hidden widths before it; the vector's length is then set to the count of
// doubles. Depending on `pad`, its data lands at an offset 0 or 4 mod 8.
Aligned checkpoint_with_alpha(const std::vector<double>& alpha, uint32_t pad) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<uint32_t> words(2 * alpha.size());
  std::memcpy(words.data(), alpha.data(), alpha.size() * sizeof(double));
  const auto hidden = fbb.CreateVector(std::vector<uint32_t>(pad, 1));
  const auto raw = fbb.CreateVector(words);
  fb::TrainCheckpointBuilder b(fbb);
  b.add_hidden(hidden);
  b.add_alpha(flatbuffers::Offset<flatbuffers::Vector<double>>(raw.o));
  b.add_steps(10);
  fbb.Finish(b.Finish(), fb::TrainCheckpointIdentifier());
  Aligned out(std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()));
  uint8_t* length = const_cast<uint8_t*>(fb::GetTrainCheckpoint(out.data())->alpha()->Data()) - 4;
  const uint32_t count = flatbuffers::EndianScalar(static_cast<uint32_t>(alpha.size()));
  std::memcpy(length, &count, sizeof count);
  return out;
}

TEST_CASE("a [double] vector at an offset 4 mod 8 is read correctly") {
  const std::vector<double> alpha = {0.125, -3.5, 1e-3};
  bool found = false;
  for (uint32_t pad = 0; pad < 4 && !found; ++pad) {
    Aligned buffer = checkpoint_with_alpha(alpha, pad);
    const fb::TrainCheckpoint* c = fb::GetTrainCheckpoint(buffer.data());
    REQUIRE(c->alpha() != nullptr);
    if ((c->alpha()->Data() - buffer.data()) % 8 != 4) continue;
    found = true;
    flatbuffers::Verifier verifier(buffer.data(), buffer.size);
    REQUIRE(fb::VerifyTrainCheckpointBuffer(verifier));  // the verifier lets it through
    train::CheckpointState s;
    const Status st = train::parse_checkpoint(buffer.data(), buffer.size, "crafted", &s);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(s.alpha == alpha);
  }
  CHECK(found);
}

// A consistent state of a small run, to break one value at a time.
train::CheckpointState valid_state() {
  train::CheckpointState s;
  s.options.hidden = {4};
  s.options.steps = 10;
  s.dim = 2;
  s.step = 3;
  s.params.assign(30, 0.25f);
  s.adam_m.assign(30, 0.0f);
  s.adam_v.assign(30, 0.0f);
  s.norm_mean = {0.0f, 0.0f};
  s.norm_std = {1.0f, 1.0f};
  return s;
}

std::string temp_path(const char* name) {
  return std::string(P_tmpdir) + "/siflow_test_checkpoint_" + std::to_string(getpid()) + "_" + name;
}

// Writes `s` and reads it back; the status of the read.
Status round_trip(const train::CheckpointState& s) {
  const std::string path = temp_path("c.sifckpt");
  REQUIRE(train::write_checkpoint(path.c_str(), s).ok());
  train::CheckpointState back;
  const Status st = train::read_checkpoint(path.c_str(), &back);
  std::remove(path.c_str());
  return st;
}

void refused(const train::CheckpointState& s, const char* words) {
  const Status st = round_trip(s);
  CHECK(st.code() == StatusCode::kInvalidModel);
  CHECK_MESSAGE(std::string(st.message()).find(words) != std::string::npos, st.message());
}

TEST_CASE("every checkpoint value is checked on read, with the field named") {
  REQUIRE(round_trip(valid_state()).ok());
  train::CheckpointState s = valid_state();
  s.norm_std[1] = -1.0f;
  refused(s, "norm_std[1] is -1; it must be positive and finite");
  s = valid_state();
  s.norm_std[0] = 0.0f;
  refused(s, "norm_std[0] is 0");
  s = valid_state();
  s.norm_mean[0] = INFINITY;
  refused(s, "norm_mean[0] is inf");
  s = valid_state();
  s.params[7] = NAN;
  refused(s, "params[7] is nan");
  s = valid_state();
  s.adam_m[2] = NAN;
  refused(s, "adam_m[2]");
  s = valid_state();
  s.adam_v[0] = -1e-3f;
  refused(s, "adam_v[0] is -0.001; it must be >= 0 and finite");
  s = valid_state();
  s.alpha = {0.1, NAN};
  s.beta = {0.1, 0.2};
  refused(s, "alpha[1] is nan");
  s = valid_state();
  s.coef_v = {0.0, -2.0};
  refused(s, "coef_v[1] is -2");
  s = valid_state();
  s.step = UINT64_MAX;
  refused(s, "step 18446744073709551615 is beyond the run's steps (10)");
}

TEST_CASE("a resumed checkpoint must hold a model the loader accepts") {
  // A real run's checkpoint, then the same with every value finite but a learned interpolant
  // whose a and b vanish together (the loader refuses such a model).
  TrainOptions o;
  o.hidden = {8};
  o.batch = 16;
  o.steps = 4;
  o.warmup = 1;
  o.eval_every = 0;
  o.holdout_points = 20;
  o.threads = 1;
  o.interpolant = InterpolantKind::kLearnedFourier;
  o.fourier_terms = 1;
  TrainData data;
  data.toy_kind = ToyData::kMoons;
  data.name = "moons";
  std::unique_ptr<Trainer> t;
  REQUIRE(Trainer::create(o, data, &t).ok());
  REQUIRE(t->step(nullptr).ok());
  const std::string path = temp_path("learned.sifckpt");
  REQUIRE(t->save_checkpoint(path.c_str()).ok());
  REQUIRE(Trainer::resume(path.c_str(), data, 1, &t).ok());
  train::CheckpointState s;
  REQUIRE(train::read_checkpoint(path.c_str(), &s).ok());
  // a = cos(pi t/2) + alpha sin(pi t) and b = sin(pi t/2) + beta sin(pi t) both vanish at t = 1/2.
  s.alpha = {-0.70710678118654752};
  s.beta = {-0.70710678118654752};
  REQUIRE(train::write_checkpoint(path.c_str(), s).ok());
  const Status st = Trainer::resume(path.c_str(), data, 1, &t);
  CHECK_FALSE(st.ok());
  CHECK_MESSAGE(
      std::string(st.message()).find("holds a model the loader refuses") != std::string::npos,
      st.message());
  std::remove(path.c_str());
}

TEST_CASE("a FIFO or a folder as the checkpoint is refused without blocking") {
  const std::string fifo = temp_path("fifo.sifckpt");
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  train::CheckpointState s;
  Status st = train::read_checkpoint(fifo.c_str(), &s);
  CHECK(st.code() == StatusCode::kIoError);
  CHECK_MESSAGE(std::string(st.message()).find("is not a regular file") != std::string::npos,
                st.message());
  std::remove(fifo.c_str());
  st = train::read_checkpoint(P_tmpdir, &s);
  CHECK(std::string(st.message()).find("is not a regular file") != std::string::npos);
}

}  // namespace
