// SPDX-License-Identifier: Apache-2.0
// Checkpoint serialisation with the generated FlatBuffers code for schemas/checkpoint.fbs.
#include "train/checkpoint.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "checkpoint_generated.h"

namespace siflow::train {
namespace {

template <typename T>
std::vector<T> to_vector(const flatbuffers::Vector<T>* v) {
  return v ? std::vector<T>(v->begin(), v->end()) : std::vector<T>();
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
  std::FILE* f = std::fopen(path, "rb");
  if (!f)
    return Status::error(StatusCode::kIoError, "cannot open checkpoint '%s': %s", path,
                         std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[65536];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0)
    bytes.insert(bytes.end(), chunk, chunk + n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status::error(StatusCode::kIoError, "cannot read checkpoint '%s'", path);
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (bytes.size() < 8 || !fb::TrainCheckpointBufferHasIdentifier(bytes.data()) ||
      !fb::VerifyTrainCheckpointBuffer(verifier))
    return Status::error(StatusCode::kInvalidModel,
                         "'%s' is not a siflow training checkpoint (or it is damaged)", path);
  const fb::TrainCheckpoint* c = fb::GetTrainCheckpoint(bytes.data());
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
  o.eval_every = c->eval_every();
  o.eval_points = c->eval_points();
  o.eval_steps = c->eval_steps();
  o.holdout_fraction = c->holdout_fraction();
  o.holdout_points = c->holdout_points();
  if (c->activation() > static_cast<uint8_t>(UnaryKind::kCos) ||
      c->interpolant() > static_cast<uint8_t>(InterpolantKind::kLearnedFourier) || c->loss() > 1 ||
      c->time() > 1 || c->schedule() > 2 || c->kernels() > 2 ||
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
  return Status();
}

}  // namespace siflow::train
