// SPDX-License-Identifier: Apache-2.0
// Checkpoint serialisation with the generated FlatBuffers code for schemas/checkpoint.fbs.
// A checkpoint is a hostile file: it is read only if it is a regular file of bounded size, every
// value is checked (the model loader's rules, naming the field), and no 8-byte value is ever read
// through a pointer the file placed (the verifier checks only 4-byte alignment of vectors).
#include "train/checkpoint.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "checkpoint_generated.h"

namespace siflow::train {
namespace {

// The elements of a verified vector, copied byte-wise: FlatBuffers 2.0's verifier checks only the
// 4-byte alignment of a vector's length, so a [double] may start at an address 4 mod 8.
template <typename T>
std::vector<T> to_vector(const flatbuffers::Vector<T>* v) {
  if (!v) return std::vector<T>();
  std::vector<T> out(v->size());
  const uint8_t* bytes = v->Data();
  for (size_t i = 0; i < out.size(); ++i) {
    T value;
    std::memcpy(&value, bytes + i * sizeof(T), sizeof(T));
    out[i] = flatbuffers::EndianScalar(value);
  }
  return out;
}

bool finite(double v) { return v == v && v - v == 0.0; }

// The first element of `values` that breaks the rule (finite, and > 0 or >= 0 when asked), as a
// Status naming the field and the index.
enum class Sign { kAny, kNonNegative, kPositive };
template <typename T>
Status check_values(const char* path, const char* field, const std::vector<T>& values, Sign sign) {
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    const bool ok = finite(v) && (sign == Sign::kAny || (sign == Sign::kNonNegative && v >= 0.0) ||
                                  (sign == Sign::kPositive && v > 0.0));
    if (!ok)
      return Status::error(StatusCode::kInvalidModel,
                           "checkpoint '%s': %s[%zu] is %g; it must be %s", path, field, i, v,
                           sign == Sign::kPositive      ? "positive and finite"
                           : sign == Sign::kNonNegative ? ">= 0 and finite"
                                                        : "finite");
  }
  return Status();
}

}  // namespace

Status write_checkpoint(const char* path, const CheckpointState& s) {
  flatbuffers::FlatBufferBuilder fbb;
  const TrainOptions& o = s.options;
  auto hidden = fbb.CreateVector(o.hidden);
  auto name = fbb.CreateString(s.data_name);
  auto params = fbb.CreateVector(s.params);
  auto m = fbb.CreateVector(s.adam_m);
  auto v = fbb.CreateVector(s.adam_v);
  auto mean = fbb.CreateVector(s.norm_mean);
  auto sd = fbb.CreateVector(s.norm_std);
  auto alpha = fbb.CreateVector(s.alpha);
  auto beta = fbb.CreateVector(s.beta);
  auto cm = fbb.CreateVector(s.coef_m);
  auto cv = fbb.CreateVector(s.coef_v);
  fb::TrainCheckpointBuilder b(fbb);
  b.add_version(1);
  b.add_hidden(hidden);
  b.add_activation(static_cast<uint8_t>(o.activation));
  b.add_time_frequencies(o.time_frequencies);
  b.add_interpolant(static_cast<uint8_t>(o.interpolant));
  b.add_fourier_terms(o.fourier_terms);
  b.add_interpolant_lr(o.interpolant_lr);
  b.add_path_penalty(o.path_penalty);
  b.add_loss(static_cast<uint8_t>(o.loss));
  b.add_time(static_cast<uint8_t>(o.time));
  b.add_steps(o.steps);
  b.add_batch(o.batch);
  b.add_lr(o.lr);
  b.add_weight_decay(o.weight_decay);
  b.add_beta1(o.beta1);
  b.add_beta2(o.beta2);
  b.add_adam_epsilon(o.adam_epsilon);
  b.add_schedule(static_cast<uint8_t>(o.schedule));
  b.add_warmup(o.warmup);
  b.add_step_every(o.step_every);
  b.add_step_gamma(o.step_gamma);
  b.add_min_lr_ratio(o.min_lr_ratio);
  b.add_clip_norm(o.clip_norm);
  b.add_seed(o.seed);
  b.add_kernels(static_cast<uint8_t>(o.kernels));
  b.add_precision(static_cast<uint8_t>(o.precision));
  b.add_eval_every(o.eval_every);
  b.add_eval_points(o.eval_points);
  b.add_eval_steps(o.eval_steps);
  b.add_holdout_fraction(o.holdout_fraction);
  b.add_holdout_points(o.holdout_points);
  b.add_toy(s.toy);
  b.add_toy_kind(static_cast<uint8_t>(s.toy_kind));
  b.add_dim(s.dim);
  b.add_data_rows(s.data_rows);
  b.add_data_fingerprint(s.data_fingerprint);
  b.add_data_name(name);
  b.add_step(s.step);
  b.add_params(params);
  b.add_adam_m(m);
  b.add_adam_v(v);
  b.add_norm_mean(mean);
  b.add_norm_std(sd);
  b.add_alpha(alpha);
  b.add_beta(beta);
  b.add_coef_m(cm);
  b.add_coef_v(cv);
  fbb.Finish(b.Finish(), fb::TrainCheckpointIdentifier());
  return write_file_atomic(path, fbb.GetBufferPointer(), fbb.GetSize());
}

Status read_checkpoint(const char* path, CheckpointState* s) {
  // O_NONBLOCK: a FIFO planted under the name must not block the open; it is then refused as
  // not a regular file. The size is known (and bounded) before a byte is read.
  const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return Status::error(StatusCode::kIoError, "cannot open checkpoint '%s': %s", path,
                         std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Status::error(StatusCode::kIoError, "checkpoint '%s' is not a regular file", path);
  }
  if (static_cast<uint64_t>(st.st_size) > Limits::kMaxFileBytes) {
    close(fd);
    return Status::error(StatusCode::kInvalidModel,
                         "checkpoint '%s' has %lld bytes; a checkpoint has at most %llu", path,
                         static_cast<long long>(st.st_size),
                         static_cast<unsigned long long>(Limits::kMaxFileBytes));
  }
  // 8-byte aligned storage: the verifier checks scalars' alignment relative to the buffer start.
  std::vector<uint64_t> storage((static_cast<size_t>(st.st_size) + 7) / 8);
  uint8_t* bytes = reinterpret_cast<uint8_t*>(storage.data());
  const size_t size = static_cast<size_t>(st.st_size);
  size_t got = 0;
  while (got < size) {
    const ssize_t n = read(fd, bytes + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  const int err = errno;
  close(fd);
  if (got != size)
    return Status::error(StatusCode::kIoError, "cannot read checkpoint '%s': %s", path,
                         got < size ? "it shrank while being read" : std::strerror(err));
  return parse_checkpoint(bytes, size, path, s);
}

Status parse_checkpoint(const uint8_t* bytes, size_t size, const char* path, CheckpointState* s) {
  if (reinterpret_cast<uintptr_t>(bytes) % 8 != 0)
    return Status::error(StatusCode::kInvalidArgument,
                         "parse_checkpoint: the bytes of '%s' are not 8-byte aligned", path);
  flatbuffers::Verifier verifier(bytes, size);
  if (size < 8 || !fb::TrainCheckpointBufferHasIdentifier(bytes) ||
      !fb::VerifyTrainCheckpointBuffer(verifier))
    return Status::error(StatusCode::kInvalidModel,
                         "'%s' is not a siflow training checkpoint (or it is damaged)", path);
  const fb::TrainCheckpoint* c = fb::GetTrainCheckpoint(bytes);
  if (c->version() != 1)
    return Status::error(StatusCode::kInvalidModel,
                         "checkpoint '%s' has version %u; this build "
                         "reads version 1",
                         path, static_cast<unsigned>(c->version()));
  TrainOptions& o = s->options;
  o.hidden = to_vector(c->hidden());
  o.activation = static_cast<UnaryKind>(c->activation());
  o.time_frequencies = c->time_frequencies();
  o.interpolant = static_cast<InterpolantKind>(c->interpolant());
  o.fourier_terms = c->fourier_terms();
  o.interpolant_lr = c->interpolant_lr();
  o.path_penalty = c->path_penalty();
  o.loss = static_cast<TrainLoss>(c->loss());
  o.time = static_cast<TimeSampling>(c->time());
  o.steps = c->steps();
  o.batch = c->batch();
  o.lr = c->lr();
  o.weight_decay = c->weight_decay();
  o.beta1 = c->beta1();
  o.beta2 = c->beta2();
  o.adam_epsilon = c->adam_epsilon();
  o.schedule = static_cast<LrSchedule>(c->schedule());
  o.warmup = c->warmup();
  o.step_every = c->step_every();
  o.step_gamma = c->step_gamma();
  o.min_lr_ratio = c->min_lr_ratio();
  o.clip_norm = c->clip_norm();
  o.seed = c->seed();
  o.kernels = static_cast<TrainKernels>(c->kernels());
  o.precision = static_cast<Precision>(c->precision());
  o.eval_every = c->eval_every();
  o.eval_points = c->eval_points();
  o.eval_steps = c->eval_steps();
  o.holdout_fraction = c->holdout_fraction();
  o.holdout_points = c->holdout_points();
  if (c->activation() > static_cast<uint8_t>(UnaryKind::kCos) ||
      c->interpolant() > static_cast<uint8_t>(InterpolantKind::kLearnedFourier) || c->loss() > 1 ||
      c->time() > 1 || c->schedule() > 2 || c->kernels() > 2 ||
      c->precision() > static_cast<uint8_t>(Precision::kInt8) ||
      c->toy_kind() > static_cast<uint8_t>(ToyData::kPinwheel))
    return Status::error(StatusCode::kInvalidModel, "checkpoint '%s' holds an unknown enum value",
                         path);
  s->toy = c->toy();
  s->toy_kind = static_cast<ToyData>(c->toy_kind());
  s->dim = c->dim();
  s->data_rows = c->data_rows();
  s->data_fingerprint = c->data_fingerprint();
  s->data_name = c->data_name() ? c->data_name()->str() : std::string();
  s->step = c->step();
  s->params = to_vector(c->params());
  s->adam_m = to_vector(c->adam_m());
  s->adam_v = to_vector(c->adam_v());
  s->norm_mean = to_vector(c->norm_mean());
  s->norm_std = to_vector(c->norm_std());
  s->alpha = to_vector(c->alpha());
  s->beta = to_vector(c->beta());
  s->coef_m = to_vector(c->coef_m());
  s->coef_v = to_vector(c->coef_v());
  // The values, by the model loader's rules (a resumed run writes them into a model).
  if (s->step > o.steps)
    return Status::error(
        StatusCode::kInvalidModel, "checkpoint '%s': step %llu is beyond the run's steps (%llu)",
        path, static_cast<unsigned long long>(s->step), static_cast<unsigned long long>(o.steps));
  const struct {
    const char* field;
    const std::vector<float>& values;
    Sign sign;
  } floats[] = {{"params", s->params, Sign::kAny},
                {"adam_m", s->adam_m, Sign::kAny},
                {"adam_v", s->adam_v, Sign::kNonNegative},
                {"norm_mean", s->norm_mean, Sign::kAny},
                {"norm_std", s->norm_std, Sign::kPositive}};
  for (const auto& f : floats) {
    const Status st = check_values(path, f.field, f.values, f.sign);
    if (!st.ok()) return st;
  }
  const struct {
    const char* field;
    const std::vector<double>& values;
    Sign sign;
  } doubles[] = {{"alpha", s->alpha, Sign::kAny},
                 {"beta", s->beta, Sign::kAny},
                 {"coef_m", s->coef_m, Sign::kAny},
                 {"coef_v", s->coef_v, Sign::kNonNegative}};
  for (const auto& f : doubles) {
    const Status st = check_values(path, f.field, f.values, f.sign);
    if (!st.ok()) return st;
  }
  return Status();
}

}  // namespace siflow::train
