// SPDX-License-Identifier: Apache-2.0
// The training loop (docs/training.md): minibatches of (x0, x1, t), the interpolant loss and its
// gradient through the tape, AdamW, the learned interpolant's ascent step, held-out evaluation
// through the runtime itself, and the model the run writes. Every random draw is a pure function
// of (seed, step, row), so a run resumed from a checkpoint repeats the uninterrupted run bit for
// bit.
#include <unistd.h>

#include <cstring>
#include <memory>

#include "math/elementary.hpp"
#include "math/interpolant.hpp"
#include "math/random.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.h"
#include "siflow/train.hpp"
#include "train/checkpoint.hpp"
#include "train/dense.hpp"
#include "train/graph.hpp"
#include "train/optimizer.hpp"
#include "train/path.hpp"
#include "train/tape.hpp"
#include "train/toy_data.hpp"

namespace siflow {

using train::DenseOps;
using train::Graph;
using train::Tape;

namespace {

// Streams of the training draws (the runtime's sampling uses 0-2, toy data 10, init 12-13).
// Held-out toy points are drawn from indices no training step reaches.
constexpr uint64_t kHoldoutFirstIndex = 1ull << 62;
// Toy normalisation: mean and std of the first training points.
constexpr uint32_t kNormalizationPoints = 100000;
// Beta(1, 0.7): t = 1 - u^(1/0.7) (more weight near the data, t = 1).
constexpr double kBetaB = 0.7;

uint64_t fingerprint(const std::vector<float>& points, uint32_t dim) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, size_t n) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  mix(&dim, sizeof dim);
  mix(points.data(), points.size() * sizeof(float));
  return h;
}

bool finite(double x) { return math::is_finite(x); }

// A draw in [0, n) from (seed, sample, stream): two lanes as 64 bits, reduced modulo n.
uint64_t draw_index(uint64_t seed, uint64_t sample, uint32_t stream, uint64_t n) {
  const PhiloxBlock b = random_block(seed, 0, sample, stream);
  return ((uint64_t{b.v[0]} << 32) | b.v[1]) % n;
}

}  // namespace

struct Trainer::State {
  TrainOptions options;
  TrainData data;
  Graph graph{1};
  std::vector<float> params, grads, adam_m, adam_v;
  std::vector<float> norm_mean, norm_std;
  std::vector<float> holdout;        // data space, [rows][dim]
  std::vector<uint64_t> train_rows;  // file data: the rows training draws from
  uint64_t data_fingerprint = 0;
  uint64_t step = 0;
  std::vector<double> alpha, beta, coef_m, coef_v, coef_grad;
  RowPool* pool = nullptr;
  std::unique_ptr<DenseOps> dense;
  std::unique_ptr<Tape<float>> tape;
  // Minibatch buffers.
  std::vector<float> x0, y1, u, dv;
  std::vector<double> row_t;
  std::vector<double> row_g, row_v2, row_reg;

  ~State() { RowPool::destroy(pool); }
  detail::InterpolantData interpolant() const {
    return {options.interpolant, static_cast<uint32_t>(alpha.size()), alpha.data(), beta.data()};
  }
  Status check_options() const;
  Status prepare_data(bool compute_normalization);
  Status prepare_compute();
  void make_batch(size_t rows);
  void learned_interpolant_step(size_t rows, const float* v, const float* d_x);
  // The first `points` held-out rows (0 or more than there are: all).
  size_t holdout_count(uint32_t points) const {
    const size_t held = holdout.size() / data.dim;
    return points == 0 || points > held ? held : points;
  }
};

namespace {

Status invalid(const char* what) {
  return Status::error(StatusCode::kInvalidArgument, "train: %s", what);
}

}  // namespace

Status Trainer::State::check_options() const {
  const TrainOptions& o = options;
  for (uint32_t w : o.hidden)
    if (w == 0 || w > Limits::kMaxWidth)
      return invalid("hidden widths must be in 1..131072 (Limits::kMaxWidth)");
  if (o.hidden.size() > 64) return invalid("at most 64 hidden layers");
  if (o.time_frequencies > 64) return invalid("time frequencies must be at most 64");
  if (o.interpolant == InterpolantKind::kLearnedFourier) {
    if (o.fourier_terms == 0 || o.fourier_terms > Limits::kMaxFourierTerms)
      return invalid("a learned interpolant needs 1..64 Fourier terms");
    if (o.time != TimeSampling::kUniform)
      return invalid(
          "a learned interpolant must sample t uniformly (a non-uniform t weights the path "
          "energy and optimises something else)");
    if (!(o.interpolant_lr > 0.0) || !finite(o.interpolant_lr))
      return invalid("the interpolant learning rate must be positive");
    if (!(o.path_penalty >= 0.0) || !finite(o.path_penalty))
      return invalid("the path penalty must be >= 0");
  }
  if (o.steps == 0) return invalid("steps must be at least 1");
  if (o.batch == 0 || o.batch > Limits::kMaxBatch) return invalid("batch must be in 1..1048576");
  // Every tensor of a step is kept for the backward pass: bound the largest (options may come
  // from a checkpoint file).
  uint64_t widest = 2 + 2 * uint64_t{o.time_frequencies};
  for (uint32_t w : o.hidden) widest = w > widest ? w : widest;
  if (uint64_t{o.batch} * widest > (uint64_t{1} << 28))
    return invalid("batch x widest layer exceeds 2^28 values (1 GiB per tensor)");
  if (o.holdout_points > (1u << 24)) return invalid("held-out points must be at most 16777216");
  if (!(o.lr > 0.0) || !finite(o.lr)) return invalid("the learning rate must be positive");
  if (!(o.weight_decay >= 0.0) || !finite(o.weight_decay))
    return invalid("weight decay must be >= 0");
  if (!(o.beta1 >= 0.0 && o.beta1 < 1.0) || !(o.beta2 >= 0.0 && o.beta2 < 1.0))
    return invalid("Adam's betas must be in [0, 1)");
  if (!(o.adam_epsilon > 0.0) || !finite(o.adam_epsilon))
    return invalid("Adam's epsilon must be positive");
  if (o.schedule == LrSchedule::kStep && (o.step_every == 0 || !(o.step_gamma > 0.0)))
    return invalid("a step schedule needs step_every >= 1 and step_gamma > 0");
  if (!(o.min_lr_ratio >= 0.0 && o.min_lr_ratio <= 1.0))
    return invalid("the cosine schedule's min_lr_ratio must be in [0, 1]");
  if (!(o.clip_norm >= 0.0) || !finite(o.clip_norm)) return invalid("clip norm must be >= 0");
  if (o.threads > 256) return invalid("threads must be at most 256");
  if (o.precision != Precision::kFp32 && o.precision != Precision::kBf16)
    return Status::error(StatusCode::kUnsupported,
                         "train: precision %s is not a training precision (fp32 or bf16; fp16 "
                         "and int8 are for inference)",
                         precision_name(o.precision));
  if (o.precision == Precision::kBf16 && o.kernels == TrainKernels::kReference)
    return Status::error(StatusCode::kUnsupported,
                         "train: bf16 training runs on the simd kernels, not the reference ones");
  if (o.eval_steps == 0 || o.eval_steps > Limits::kMaxSteps)
    return invalid("evaluation steps must be in 1..1048576");
  if (!(o.holdout_fraction >= 0.0 && o.holdout_fraction <= 0.9))
    return invalid("the held-out fraction must be in [0, 0.9]");
  return Status();
}

Status Trainer::State::prepare_data(bool compute_normalization) {
  const uint32_t dim = data.dim;
  if (data.toy) {
    if (dim != 2)
      return Status::error(StatusCode::kInvalidArgument,
                           "train: the built-in datasets are 2-D, not %u-D", dim);
    holdout.resize(size_t{options.holdout_points} * 2);
    train::draw_toy_data(data.toy_kind, options.seed, kHoldoutFirstIndex, options.holdout_points,
                         holdout.data());
    data_fingerprint = 0;
  } else {
    if (dim == 0 || dim > Limits::kMaxDim)
      return Status::error(StatusCode::kInvalidArgument, "train: data dimension %u not in 1..%u",
                           dim, Limits::kMaxDim);
    const size_t rows = data.points.size() / dim;
    if (rows * dim != data.points.size())
      return invalid("the data's length is not a multiple of its dimension");
    if (rows < 2) return invalid("the data needs at least 2 rows");
    for (size_t i = 0; i < data.points.size(); ++i)
      if (!math::is_finite(data.points[i]))
        return Status::error(StatusCode::kInvalidArgument,
                             "train: data row %zu column %zu is not finite", i / dim, i % dim);
    data_fingerprint = fingerprint(data.points, dim);
    // A seeded shuffle (Fisher-Yates on Philox draws) splits the rows.
    std::vector<uint64_t> order(rows);
    for (size_t i = 0; i < rows; ++i) order[i] = i;
    for (size_t i = rows - 1; i > 0; --i) {
      const uint64_t r = draw_index(options.seed, i, kStreamHoldout, i + 1);
      const uint64_t tmp = order[i];
      order[i] = order[r];
      order[r] = tmp;
    }
    size_t held = static_cast<size_t>(options.holdout_fraction * rows + 0.5);
    if (held >= rows) held = rows - 1;
    holdout.resize(held * dim);
    for (size_t i = 0; i < held; ++i)
      std::memcpy(&holdout[i * dim], &data.points[order[i] * dim], dim * sizeof(float));
    train_rows.assign(order.begin() + held, order.end());
  }
  if (!compute_normalization) return Status();
  // Normalisation from training data only: mean and (population) std per column, in double.
  std::vector<double> sum(dim, 0.0), sq(dim, 0.0);
  const size_t n = data.toy ? kNormalizationPoints : train_rows.size();
  std::vector<float> toy;
  if (data.toy) {
    toy.resize(size_t{n} * 2);
    train::draw_toy_data(data.toy_kind, options.seed, 0, n, toy.data());
  }
  for (size_t i = 0; i < n; ++i) {
    const float* p = data.toy ? &toy[i * dim] : &data.points[train_rows[i] * dim];
    for (uint32_t k = 0; k < dim; ++k) sum[k] += p[k];
  }
  norm_mean.resize(dim);
  norm_std.resize(dim);
  for (uint32_t k = 0; k < dim; ++k) norm_mean[k] = static_cast<float>(sum[k] / n);
  for (size_t i = 0; i < n; ++i) {
    const float* p = data.toy ? &toy[i * dim] : &data.points[train_rows[i] * dim];
    for (uint32_t k = 0; k < dim; ++k) {
      const double c = p[k] - static_cast<double>(norm_mean[k]);
      sq[k] += c * c;
    }
  }
  for (uint32_t k = 0; k < dim; ++k) {
    const double sd = math::sqrt(sq[k] / n);
    if (!(sd > 1e-12 * (1.0 + (norm_mean[k] < 0 ? -norm_mean[k] : norm_mean[k]))))
      return Status::error(StatusCode::kInvalidArgument,
                           "train: data column %u is constant (%g) in the training rows: a "
                           "density over it is degenerate",
                           k, static_cast<double>(norm_mean[k]));
    norm_std[k] = static_cast<float>(sd);
  }
  return Status();
}

Status Trainer::State::prepare_compute() {
  if (options.threads == 0) {
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    options.threads = RowPool::available() && cores > 1 ? static_cast<uint32_t>(cores) : 1;
    if (options.threads > 256) options.threads = 256;
  }
  Status s = RowPool::create(options.threads, &pool);
  if (!s.ok()) return s.prefix("train: ");
  const simd::Kernels* kernels = nullptr;
#ifdef SIFLOW_WITH_SIMD
  if (options.kernels != TrainKernels::kReference) {
    s = simd::select(&kernels);
    if (!s.ok()) return s;
  }
#else
  if (options.kernels == TrainKernels::kSimd)
    return Status::error(StatusCode::kUnsupported, "train: this build has no simd kernels");
#endif
  if (!kernels && options.precision == Precision::kBf16)
    return Status::error(StatusCode::kUnsupported,
                         "train: bf16 training needs the simd kernels (this build has none)");
  if (kernels) dense = std::make_unique<DenseOps>(kernels, pool);
  tape = std::make_unique<Tape<float>>(graph, options.batch, dense.get(), options.precision);
  const size_t d = data.dim, b = options.batch;
  grads.resize(graph.parameter_count());
  x0.resize(b * d);
  y1.resize(b * d);
  u.resize(b * d);
  dv.resize(b * d);
  row_t.resize(b);
  row_g.resize(b);
  row_v2.resize(b);
  row_reg.resize(b);
  coef_grad.resize(2 * alpha.size());
  return Status();
}

// Row r of step s is global draw s * batch + r: x0 ~ N(0, I), t, and x1 from the data; then
// x_t = a x0 + b x1 goes to the tape and u = a_dot x0 + b_dot x1 is the regression target.
void Trainer::State::make_batch(size_t rows) {
  const uint32_t d = data.dim;
  const uint64_t first = step * options.batch;
  const uint64_t seed = options.seed;
  const detail::InterpolantData path = interpolant();
  float* xt = tape->x();
  float* tt = tape->t();
  auto fill = [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const uint64_t sample = first + r;
      fill_normals(seed, sample, kStreamTrainBase, 0, &x0[r * d], d);
      const double un = lane_uniform(random_block(seed, 0, sample, kStreamTrainTime).v[0]);
      const double t =
          options.time == TimeSampling::kUniform ? un : 1.0 - math::exp(math::log(un) / kBetaB);
      float* y = &y1[r * d];
      if (data.toy) {
        train::draw_toy_data(data.toy_kind, seed, sample, 1, y);
      } else {
        const uint64_t pick = draw_index(seed, sample, kStreamTrainData, train_rows.size());
        std::memcpy(y, &data.points[train_rows[pick] * d], d * sizeof(float));
      }
      const float tf = static_cast<float>(t);
      const InterpolantValues iv = evaluate_interpolant(path, tf);
      row_t[r] = tf;
      for (uint32_t k = 0; k < d; ++k) {
        y[k] = (y[k] - norm_mean[k]) / norm_std[k];
        xt[r * d + k] = static_cast<float>(iv.a * x0[r * d + k] + iv.b * y[k]);
        u[r * d + k] = static_cast<float>(iv.a_dot * x0[r * d + k] + iv.b_dot * y[k]);
      }
      tt[r] = tf;
    }
  };
  parallel_rows(pool, rows, 64, fill);
}

// Ascent on G - penalty over the Fourier coefficients (the max of max-min), at the net's
// current v; Adam on the negated gradient.
void Trainer::State::learned_interpolant_step(size_t rows, const float* v, const float* d_x) {
  const size_t terms = alpha.size();
  train::path_gradient(rows, data.dim, static_cast<uint32_t>(terms), row_t.data(), x0.data(),
                       y1.data(), v, d_x, coef_grad.data());
  train::path_penalty(interpolant(), options.path_penalty, coef_grad.data());
  std::vector<double> coefs(alpha);
  coefs.insert(coefs.end(), beta.begin(), beta.end());
  for (double& g : coef_grad) g = -g;
  const train::AdamSettings settings{options.beta1, options.beta2, options.adam_epsilon, 0.0};
  // The coefficients follow the net's schedule: an ascent that kept its pace while the net's
  // rate decays outruns the inner minimisation and exploits the net's error instead of
  // shortening the path.
  const double rate = options.interpolant_lr * train::learning_rate(options, step) / options.lr;
  train::adam_step(settings, rate, step + 1, coefs.size(), coefs.data(), coef_grad.data(),
                   coef_m.data(), coef_v.data());
  std::copy(coefs.begin(), coefs.begin() + terms, alpha.begin());
  std::copy(coefs.begin() + terms, coefs.end(), beta.begin());
}

Trainer::~Trainer() { delete state_; }

Status Trainer::create(const TrainOptions& options, TrainData data, std::unique_ptr<Trainer>* out) {
  if (!out) return invalid("out is null");
  std::unique_ptr<State> st(new State);
  st->options = options;
  st->data = std::move(data);
  Status s = st->check_options();
  if (!s.ok()) return s;
  s = st->prepare_data(true);
  if (!s.ok()) return s;
  st->graph =
      train::make_mlp(st->data.dim, options.hidden, options.activation, options.time_frequencies);
  const size_t n = st->graph.parameter_count();
  if (n > Limits::kMaxParameters) return invalid("the network has too many parameters");
  st->params.resize(n);
  st->graph.initialize(options.seed, st->params.data());
  st->adam_m.assign(n, 0.0f);
  st->adam_v.assign(n, 0.0f);
  if (options.interpolant == InterpolantKind::kLearnedFourier) {
    // Started at trig: every coefficient 0.
    st->alpha.assign(options.fourier_terms, 0.0);
    st->beta.assign(options.fourier_terms, 0.0);
    st->coef_m.assign(2 * options.fourier_terms, 0.0);
    st->coef_v.assign(2 * options.fourier_terms, 0.0);
  }
  s = st->prepare_compute();
  if (!s.ok()) return s;
  out->reset(new Trainer(st.release()));
  return Status();
}

Status Trainer::resume(const char* path, TrainData data, uint32_t threads,
                       std::unique_ptr<Trainer>* out) {
  if (!out) return invalid("out is null");
  std::unique_ptr<State> st(new State);
  train::CheckpointState cp;
  Status s = train::read_checkpoint(path, &cp);
  if (!s.ok()) return s;
  st->options = cp.options;
  st->options.threads = threads;
  st->data = std::move(data);
  s = st->check_options();
  if (!s.ok()) return s;
  if (st->data.toy != cp.toy || (cp.toy && st->data.toy_kind != cp.toy_kind) ||
      st->data.dim != cp.dim)
    return Status::error(StatusCode::kInvalidArgument,
                         "resume: checkpoint '%s' was trained on %s (dimension %u), not on this "
                         "data",
                         path, cp.data_name.c_str(), cp.dim);
  s = st->prepare_data(false);
  if (!s.ok()) return s;
  if (!cp.toy && (st->data.points.size() / cp.dim != cp.data_rows ||
                  st->data_fingerprint != cp.data_fingerprint))
    return Status::error(StatusCode::kInvalidArgument,
                         "resume: the data differs from the run's (%llu rows, fingerprint "
                         "%016llx in the checkpoint)",
                         static_cast<unsigned long long>(cp.data_rows),
                         static_cast<unsigned long long>(cp.data_fingerprint));
  st->graph = train::make_mlp(st->data.dim, st->options.hidden, st->options.activation,
                              st->options.time_frequencies);
  const size_t n = st->graph.parameter_count();
  if (cp.params.size() != n || cp.adam_m.size() != n || cp.adam_v.size() != n ||
      cp.norm_mean.size() != st->data.dim || cp.norm_std.size() != st->data.dim ||
      cp.alpha.size() != cp.beta.size() || cp.coef_m.size() != 2 * cp.alpha.size() ||
      cp.coef_v.size() != 2 * cp.alpha.size() ||
      (st->options.interpolant == InterpolantKind::kLearnedFourier) !=
          (cp.alpha.size() == st->options.fourier_terms && !cp.alpha.empty()))
    return Status::error(StatusCode::kInvalidModel,
                         "resume: checkpoint '%s' is inconsistent (its arrays do not match its "
                         "options)",
                         path);
  st->params = std::move(cp.params);
  st->adam_m = std::move(cp.adam_m);
  st->adam_v = std::move(cp.adam_v);
  st->norm_mean = std::move(cp.norm_mean);
  st->norm_std = std::move(cp.norm_std);
  st->alpha = std::move(cp.alpha);
  st->beta = std::move(cp.beta);
  st->coef_m = std::move(cp.coef_m);
  st->coef_v = std::move(cp.coef_v);
  st->step = cp.step;
  std::unique_ptr<Trainer> trainer(new Trainer(st.release()));
  // The model this state would write must pass the loader's own rules (normalisation,
  // interpolant coefficients, weights): a checkpoint cannot resume into a model nothing reads.
  std::vector<uint8_t> bytes;
  s = trainer->model_bytes(&bytes);
  std::unique_ptr<Model> model;
  if (s.ok()) s = Model::load(bytes.data(), bytes.size(), LoadOptions(), &model);
  if (!s.ok()) return s.prefix("resume: checkpoint '%s' holds a model the loader refuses: ", path);
  model.reset();
  s = trainer->state_->prepare_compute();
  if (!s.ok()) return s;
  *out = std::move(trainer);
  return Status();
}

const TrainOptions& Trainer::options() const { return state_->options; }
uint64_t Trainer::steps_done() const { return state_->step; }
uint64_t Trainer::parameter_count() const { return state_->graph.parameter_count(); }
uint64_t Trainer::holdout_rows() const { return state_->holdout_count(0); }
const std::vector<float>& Trainer::normalization_mean() const { return state_->norm_mean; }
const std::vector<float>& Trainer::normalization_std() const { return state_->norm_std; }
const std::vector<double>& Trainer::interpolant_alpha() const { return state_->alpha; }
const std::vector<double>& Trainer::interpolant_beta() const { return state_->beta; }

Status Trainer::step(TrainStepReport* report) {
  State& st = *state_;
  const size_t rows = st.options.batch;
  const uint32_t d = st.data.dim;
  st.make_batch(rows);
  st.tape->forward(st.params.data(), rows);
  const float* v = st.tape->output();
  // Per-row loss terms in parallel, summed in row order (the same for any thread count).
  const float scale = 2.0f / static_cast<float>(rows);
  parallel_rows(st.pool, rows, 256, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      double v2 = 0.0, uv = 0.0, reg = 0.0;
      for (uint32_t k = 0; k < d; ++k) {
        const double vk = v[r * d + k], uk = st.u[r * d + k];
        v2 += vk * vk;
        uv += uk * vk;
        reg += (vk - uk) * (vk - uk);
        st.dv[r * d + k] = scale * (v[r * d + k] - st.u[r * d + k]);
      }
      st.row_v2[r] = v2;
      st.row_g[r] = v2 - 2.0 * uv;
      st.row_reg[r] = reg;
    }
  });
  double g = 0.0, v2 = 0.0, reg = 0.0, path = 0.0;
  for (size_t r = 0; r < rows; ++r) {
    g += st.row_g[r];
    v2 += st.row_v2[r];
    reg += st.row_reg[r];
  }
  g /= rows;
  v2 /= rows;
  reg /= rows;
  if (!finite(g) || !finite(reg))
    return Status::error(StatusCode::kNumericalError,
                         "train: the loss is not finite at step %llu (learning rate too high?)",
                         static_cast<unsigned long long>(st.step + 1));
  const bool learned = !st.alpha.empty();
  st.tape->backward(st.params.data(), st.dv.data(), rows, st.grads.data(), learned);
  const double norm =
      train::clip_gradient_norm(st.grads.data(), st.grads.size(), st.options.clip_norm);
  if (!finite(norm))
    return Status::error(StatusCode::kNumericalError,
                         "train: the gradient is not finite at step %llu",
                         static_cast<unsigned long long>(st.step + 1));
  // After the check, so a failed step changes no state (v and dG/dx_t are not clipped).
  if (learned) {
    for (size_t i = 0; i < rows * d; ++i) path += static_cast<double>(st.u[i]) * st.u[i];
    path /= rows;
    st.learned_interpolant_step(rows, v, st.tape->d_x());
  }
  const double lr = train::learning_rate(st.options, st.step);
  const train::AdamSettings settings{st.options.beta1, st.options.beta2, st.options.adam_epsilon,
                                     st.options.weight_decay};
  train::adam_step(settings, lr, st.step + 1, st.params.size(), st.params.data(), st.grads.data(),
                   st.adam_m.data(), st.adam_v.data());
  ++st.step;
  if (report) {
    report->step = st.step;
    report->lr = lr;
    report->g = g;
    report->v_squared = v2;
    report->loss = st.options.loss == TrainLoss::kInterpolant ? g : reg;
    report->grad_norm = norm;
    report->path_energy = path;
  }
  return Status();
}

Status Trainer::model_bytes(std::vector<uint8_t>* bytes) const {
  const State& st = *state_;
  const TrainOptions& o = st.options;
  ModelBuilder b(st.data.dim);
  st.graph.emit(st.params.data(), &b);
  b.set_interpolant(o.interpolant, st.alpha, st.beta);
  b.set_normal_base();
  b.set_normalization(st.norm_mean, st.norm_std);
  b.set_name("siflow train: " + st.data.name);
  std::string hidden;
  for (uint32_t w : o.hidden) hidden += (hidden.empty() ? "" : ",") + std::to_string(w);
  b.add_metadata("trained_by", "siflow train " SIFLOW_VERSION_STRING);
  b.add_metadata("data", st.data.name);
  b.add_metadata("hidden", hidden);
  b.add_metadata("activation", unary_kind_name(o.activation));
  b.add_metadata("loss", train_loss_name(o.loss));
  b.add_metadata("time_sampling", time_sampling_name(o.time));
  b.add_metadata("steps", std::to_string(st.step));
  b.add_metadata("batch", std::to_string(o.batch));
  b.add_metadata("seed", std::to_string(o.seed));
  if (o.precision != Precision::kFp32)  // fp32 runs write the files they always wrote
    b.add_metadata("train_precision", precision_name(o.precision));
  *bytes = b.finish();
  return Status();
}

Status Trainer::evaluate(uint32_t points, uint32_t rk4_steps, double* nll, ProgressFn progress,
                         void* progress_user) {
  State& st = *state_;
  if (!nll) return invalid("nll is null");
  const size_t n = st.holdout_count(points);
  if (n == 0) return invalid("there are no held-out rows to evaluate on");
  std::vector<uint8_t> bytes;
  Status s = model_bytes(&bytes);
  if (!s.ok()) return s;
  std::unique_ptr<Model> model;
  s = Model::load(bytes.data(), bytes.size(), LoadOptions(), &model);
  if (!s.ok()) return s.prefix("train: the trained model does not load: ");
  PlanOptions po;
  po.max_batch = 512;
  po.threads = st.options.threads;
  po.backend = st.dense ? Backend::kAuto : Backend::kReference;
  std::unique_ptr<Plan> plan;
  s = Plan::create(*model, po, nullptr, 0, &plan);
  if (!s.ok()) return s;
  LogProbOptions lo;
  lo.ode.method = Method::kRK4;
  lo.ode.steps = rk4_steps;
  lo.divergence.mode = DivergenceMode::kExact;
  lo.ode.progress = progress;
  lo.ode.progress_user = progress_user;
  std::vector<double> logp(n);
  s = plan->log_prob(n, st.holdout.data(), lo, logp.data());
  if (!s.ok()) return s;
  double sum = 0.0;
  for (double l : logp) sum -= l;
  *nll = sum / n;
  return Status();
}

Status Trainer::reference_nll(uint32_t points, double* nll) const {
  const State& st = *state_;
  if (!nll) return invalid("nll is null");
  const size_t n = st.holdout_count(points);
  if (n == 0) return invalid("there are no held-out rows");
  std::vector<double> x(st.holdout.begin(), st.holdout.begin() + n * st.data.dim), logp(n);
  if (!st.data.toy || !train::toy_log_density(st.data.toy_kind, x.data(), n, logp.data()))
    return Status::error(StatusCode::kUnsupported,
                         "train: the data has no closed-form density to compare with");
  double sum = 0.0;
  for (double l : logp) sum -= l;
  *nll = sum / n;
  return Status();
}

Status Trainer::save_checkpoint(const char* path) const {
  const State& st = *state_;
  train::CheckpointState cp;
  cp.options = st.options;
  cp.toy = st.data.toy;
  cp.toy_kind = st.data.toy_kind;
  cp.dim = st.data.dim;
  cp.data_rows = st.data.toy ? 0 : st.data.points.size() / st.data.dim;
  cp.data_fingerprint = st.data_fingerprint;
  cp.data_name = st.data.name;
  cp.step = st.step;
  cp.params = st.params;
  cp.adam_m = st.adam_m;
  cp.adam_v = st.adam_v;
  cp.norm_mean = st.norm_mean;
  cp.norm_std = st.norm_std;
  cp.alpha = st.alpha;
  cp.beta = st.beta;
  cp.coef_m = st.coef_m;
  cp.coef_v = st.coef_v;
  return train::write_checkpoint(path, cp);
}

const char* train_loss_name(TrainLoss loss) {
  return loss == TrainLoss::kRegression ? "regression" : "interpolant";
}
const char* time_sampling_name(TimeSampling sampling) {
  return sampling == TimeSampling::kBeta ? "beta" : "uniform";
}
const char* lr_schedule_name(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::kConstant:
      return "constant";
    case LrSchedule::kStep:
      return "step";
    case LrSchedule::kCosine:
      return "cosine";
  }
  return "?";
}
bool parse_train_loss(const char* text, TrainLoss* out) {
  if (std::strcmp(text, "interpolant") == 0) return *out = TrainLoss::kInterpolant, true;
  if (std::strcmp(text, "regression") == 0) return *out = TrainLoss::kRegression, true;
  return false;
}
bool parse_time_sampling(const char* text, TimeSampling* out) {
  if (std::strcmp(text, "uniform") == 0) return *out = TimeSampling::kUniform, true;
  if (std::strcmp(text, "beta") == 0) return *out = TimeSampling::kBeta, true;
  return false;
}
bool parse_lr_schedule(const char* text, LrSchedule* out) {
  for (LrSchedule s : {LrSchedule::kConstant, LrSchedule::kStep, LrSchedule::kCosine})
    if (std::strcmp(text, lr_schedule_name(s)) == 0) return *out = s, true;
  return false;
}

}  // namespace siflow
