// SPDX-License-Identifier: Apache-2.0
// siflow training (optional library siflow_train): fits a velocity network to data with the
// simulation-free interpolant loss, on the CPU, and writes it as a .sif model. Unlike the
// runtime, training allocates freely; it reports every failure as a Status, never by crashing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "siflow/siflow.hpp"

namespace siflow {

// The built-in 2D datasets, pinned to FFJORD's definitions (docs/training.md).
enum class ToyData : uint8_t {
  kCheckerboard,
  kEightGaussians,
  kMoons,
  kRings,
  kTwoSpirals,
  kPinwheel
};

// What the net is fitted to minimise; both have the same minimiser and the same gradient
// (they differ by E|dI/dt|^2, which does not depend on the net), but not the same value.
enum class TrainLoss : uint8_t {
  kInterpolant = 0,  // G = E[|v|^2 - 2 dI/dt . v]; -E|v|^2 at the optimum
  kRegression = 1,   // E|v - dI/dt|^2
};
enum class TimeSampling : uint8_t { kUniform = 0, kBeta = 1 };  // t ~ U[0,1] or Beta(1, 0.7)
enum class LrSchedule : uint8_t { kConstant = 0, kStep = 1, kCosine = 2 };
// Kernels for the training arithmetic: reference (portable, exact summation order) or simd (the
// fast GEMMs; the default where built).
enum class TrainKernels : uint8_t { kAuto = 0, kReference = 1, kSimd = 2 };

const char* train_loss_name(TrainLoss loss);            // "interpolant", "regression"
const char* time_sampling_name(TimeSampling sampling);  // "uniform", "beta"
const char* lr_schedule_name(LrSchedule schedule);      // "constant", "step", "cosine"
const char* toy_data_name(ToyData data);                // "checkerboard", "8gaussians", ...
bool parse_train_loss(const char* text, TrainLoss* out);
bool parse_time_sampling(const char* text, TimeSampling* out);
bool parse_lr_schedule(const char* text, LrSchedule* out);
bool parse_toy_data(const char* text, ToyData* out);
// "checkerboard, 8gaussians, ..." for help texts.
const char* toy_data_names();

struct TrainOptions {
  // Network: concat(x, time features) -> [Linear -> activation] per hidden width -> Linear(dim).
  // Time features: raw t when time_frequencies is 0, else t and sin/cos(k pi t), k = 1..K.
  std::vector<uint32_t> hidden = std::vector<uint32_t>(3, 256);
  UnaryKind activation = UnaryKind::kSilu;
  uint32_t time_frequencies = 0;
  // Interpolant: linear, trig, or learned Fourier (path-length optimisation with `fourier_terms`
  // coefficients each for a and b, started at trig, t uniform only).
  InterpolantKind interpolant = InterpolantKind::kTrig;
  uint32_t fourier_terms = 4;
  double interpolant_lr = 2e-3;  // Adam step of the coefficients (gradient ascent on G)
  double path_penalty = 10.0;    // weight of the penalty keeping a^2 + b^2 >= 0.25
  TrainLoss loss = TrainLoss::kInterpolant;
  TimeSampling time = TimeSampling::kUniform;
  // Optimisation: AdamW (decoupled weight decay), schedule, global-norm gradient clipping.
  uint64_t steps = 20000;
  uint32_t batch = 2048;
  double lr = 2e-3;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, adam_epsilon = 1e-8;
  LrSchedule schedule = LrSchedule::kCosine;
  uint64_t warmup = 200;       // linear warm-up steps (every schedule)
  uint64_t step_every = 5000;  // kStep: multiply by step_gamma every step_every steps
  double step_gamma = 0.5;
  double min_lr_ratio = 0.01;  // kCosine: the rate it ends at, as a fraction of lr
  double clip_norm = 1.0;      // 0: no clipping
  uint64_t seed = 0;
  // Threads of the training arithmetic and evaluations; 0: every core this build can use (1 in
  // builds without a thread pool). Results do not depend on it: runs are bit-identical for any
  // thread count.
  uint32_t threads = 0;
  TrainKernels kernels = TrainKernels::kAuto;
  // Number format of the training GEMMs: kFp32, or kBf16 (the hidden-to-hidden dense layers'
  // forward, input-gradient and weight-gradient products in bf16 with f32 accumulation, on the
  // simd kernels; master weights, gradients, optimiser state and evaluations stay f32). fp16 and
  // int8 are inference precisions and are refused here.
  Precision precision = Precision::kFp32;
  // Held-out evaluation: negative log-likelihood (data space) by exact divergence with RK4.
  uint64_t eval_every = 2000;  // 0: only when asked
  uint32_t eval_points = 2000;
  uint32_t eval_steps = 50;
  // Data: the held-out share of a file's rows, or the held-out points drawn from a toy dataset.
  double holdout_fraction = 0.1;
  uint32_t holdout_points = 20000;
};

// The training data: a built-in dataset (fresh points every step) or a finite array of rows.
struct TrainData {
  bool toy = true;
  ToyData toy_kind = ToyData::kCheckerboard;
  std::vector<float> points;  // [rows][dim] when !toy
  uint32_t dim = 2;
  std::string name;  // what the model's metadata records as the data (a file name, say)
};

struct TrainStepReport {
  uint64_t step = 0;         // steps done, this one included
  double lr = 0.0;           // learning rate of this step
  double loss = 0.0;         // the chosen loss on this batch
  double g = 0.0;            // G on this batch (the interpolant loss, whatever is optimised)
  double v_squared = 0.0;    // E|v|^2 on this batch
  double grad_norm = 0.0;    // before clipping
  double path_energy = 0.0;  // learned interpolant: E|dI/dt|^2 on this batch; else 0
};

class Trainer {
 public:
  // Checks options and data, computes the normalisation, initialises the net from the seed.
  static Status create(const TrainOptions& options, TrainData data, std::unique_ptr<Trainer>* out);
  // Continues a run from a checkpoint; `data` must be what the run was started with (a file's
  // rows are compared by fingerprint). Every option comes from the checkpoint but the thread
  // count, which does not change results. Resumed runs produce bit-identical models.
  static Status resume(const char* checkpoint_path, TrainData data, uint32_t threads,
                       std::unique_ptr<Trainer>* out);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  const TrainOptions& options() const;
  uint64_t steps_done() const;
  uint64_t parameter_count() const;
  // Held-out rows evaluate() can use (0: evaluation is refused).
  uint64_t holdout_rows() const;
  // The normalisation computed from the training data (what the model stores).
  const std::vector<float>& normalization_mean() const;
  const std::vector<float>& normalization_std() const;

  // One optimisation step on a fresh minibatch.
  Status step(TrainStepReport* report);
  // Held-out negative log-likelihood in nats per point (data space): the first `points` held-out
  // rows (0: all), exact divergence, `rk4_steps` classic RK4 steps. `progress` (optional) is
  // called after every integrator step, as OdeOptions::progress; returning false cancels the
  // evaluation (kCancelled).
  Status evaluate(uint32_t points, uint32_t rk4_steps, double* nll, ProgressFn progress = nullptr,
                  void* progress_user = nullptr);
  // The data's own negative log-likelihood on the same held-out points, where the data has a
  // closed-form density (built-in checkerboard and 8gaussians): the floor a model's held-out
  // NLL can approach. kUnsupported for other data.
  Status reference_nll(uint32_t points, double* nll) const;
  // The current model as .sif bytes (net, interpolant, normal base, normalisation, metadata).
  Status model_bytes(std::vector<uint8_t>* bytes) const;
  // The current interpolant coefficients (learned Fourier; empty otherwise).
  const std::vector<double>& interpolant_alpha() const;
  const std::vector<double>& interpolant_beta() const;
  // Everything needed to continue exactly, written through a temporary file renamed into place.
  Status save_checkpoint(const char* path) const;

  struct State;

 private:
  explicit Trainer(State* state) : state_(state) {}
  State* state_;
};

}  // namespace siflow
