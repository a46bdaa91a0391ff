// SPDX-License-Identifier: Apache-2.0
// Options shared by the CLI's integrating commands (method, steps or grid, batch, divergence,
// SDE) turned into runtime option structs, plus model loading, plan creation and the progress
// line. Uses the public siflow API only; never prints except the progress line on a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "args.hpp"
#include "siflow/siflow.hpp"

namespace siflow::cli {

// Option specs shared by several commands (for parsing and help).
extern const OptionSpec kMethodOption, kStepsOption, kGridOption, kMaxBatchOption,
    kDivergenceOption, kProbeOption, kThreadsOption, kBackendOption, kTuneKernelsOption,
    kBlockRowsOption, kPrecisionOption, kGridKindOption, kRtolOption, kAtolOption, kMaxStepsOption,
    kSolverOption;

// --threads N, --backend B, --tune-kernels on|off, --precision P and --block-rows N: how a plan
// runs (PlanOptions::threads, backend, tune, precision, block_rows).
struct Execution {
  uint32_t threads = 1;
  Backend backend = Backend::kAuto;
  bool tune = false;
  Precision precision = Precision::kFp32;
  size_t block_rows = 0;  // PlanOptions::block_rows (--block-rows)
};
// Parses --threads, --backend, --tune-kernels, --precision and --block-rows; warns on stderr when
// --threads exceeds available_cores().
Execution parse_execution(const ParsedArgs& args);
// The cores this process may run on (its CPU affinity mask; else hardware_concurrency).
uint32_t available_cores();
// The stderr warning when `threads` exceeds available_cores() (oversubscribed threads spin and
// wait on each other: a run can be many times slower).
void warn_threads(uint32_t threads);

// --method, --steps, --grid or --grid-kind, --rtol/--atol/--max-steps (dopri5) and
// --max-batch.
class Integration {
 public:
  // Parses the options; reads the --grid file when one is given.
  explicit Integration(const ParsedArgs& args);
  Integration(const Integration&) = delete;
  Integration& operator=(const Integration&) = delete;

  size_t max_batch() const { return max_batch_; }
  // The options for one run; they point into this object's grid.
  OdeOptions ode() const;
  Method method() const { return method_; }
  // "50 steps", "8 steps on the power:2 grid", "grid of 64 steps" or, for dopri5,
  // "adaptive, rtol 1e-06, atol 1e-06".
  std::string steps_text() const;
  // "rk4, 50 steps" or "rk4, grid of 64 steps".
  std::string describe() const;

 private:
  Method method_ = OdeOptions().method;
  uint32_t steps_ = OdeOptions().steps;
  std::vector<double> grid_;
  GridKind grid_kind_ = GridKind::kUniform;
  double grid_param_ = 0.0;
  double rtol_ = OdeOptions().rtol, atol_ = OdeOptions().atol;
  uint32_t max_steps_ = OdeOptions().max_steps;
  std::string solver_;  // --solver NAME, or empty
  size_t max_batch_ = PlanOptions().max_batch;
};

// "uniform", "shift:A", "power:R" or "cosine" as a kind and its parameter (a UsageError naming
// `option` otherwise).
void parse_grid_kind_option(const char* option, const std::string& text, GridKind* kind,
                            double* param);
std::string grid_kind_text(GridKind kind, double param);

// --divergence exact|hutchinson[:K] and --probe (the probe seed is the caller's).
DivergenceOptions parse_divergence(const ParsedArgs& args);
std::string describe(const DivergenceOptions& divergence);

// --seed S (default 0) and --max-batch B (default 256).
uint64_t parse_seed(const ParsedArgs& args);
size_t parse_max_batch(const ParsedArgs& args);

// A UsageError when `option` is given without `needed`.
void require_with(const ParsedArgs& args, const char* option, const char* needed);

std::unique_ptr<Model> load_model(const std::string& path);
// A plan owning its arena; `divergence` is what it must hold tangents for (kNone: none).
// `guidance`: the plan's classifier-free guidance weight (PlanOptions::guidance).
std::unique_ptr<Plan> make_plan(const Model& model, size_t max_batch,
                                const DivergenceOptions* divergence, const Execution& execution,
                                double guidance = 1.0);

// The run's wall time, and a progress line redrawn with \r on stderr when stderr is a
// terminal and the run has taken more than a second. The line is cleared by finish() or,
// when the run fails, on destruction.
class Progress {
 public:
  explicit Progress(const char* command);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Routes the integrator's progress callback here (only when stderr is a terminal).
  void attach(OdeOptions* ode);
  // Clears the progress line; returns the seconds since construction.
  double finish();

 private:
  static bool update(void* user, uint64_t done, uint64_t total);
  double seconds() const;
  void clear();

  const char* command_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_;
  double last_draw_ = 0.0;
  bool drawn_ = false;
};

}  // namespace siflow::cli
