// SPDX-License-Identifier: Apache-2.0
// siflow train: fits a velocity network with the interpolant loss (siflow::Trainer) and writes
// the model, checkpoints and a CSV log, each through a temporary file renamed into place.
// A client of the public API (siflow/train.hpp) only; it never reaches into the library.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "array_io.hpp"
#include "commands.hpp"
#include "errors.hpp"
#include "file_checks.hpp"
#include "run_options.hpp"
#include "siflow/train.hpp"

namespace siflow::cli {
namespace {

volatile sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }
// The evaluations' progress callback: a stop signal cancels a held-out evaluation mid-way.
bool keep_evaluating(void*, uint64_t, uint64_t) { return !g_interrupted; }

// Options that define the run; on --resume they come from the checkpoint instead.
const char* const kRunOptions[] = {
    "--hidden",         "--activation",   "--time-features", "--interpolant", "--fourier-terms",
    "--interpolant-lr", "--path-penalty", "--loss",          "--time",        "--steps",
    "--batch",          "--lr",           "--weight-decay",  "--schedule",    "--warmup",
    "--step-every",     "--step-gamma",   "--min-lr",        "--clip",        "--seed",
    "--kernels",        "--eval-every",   "--eval-points",   "--eval-steps",  "--holdout",
    "--holdout-points", "--precision"};

std::vector<uint32_t> parse_hidden(const std::string& text) {
  std::vector<uint32_t> widths;
  if (text == "none") return widths;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t comma = text.find(',', at);
    const std::string part = text.substr(at, comma == std::string::npos ? comma : comma - at);
    widths.push_back(static_cast<uint32_t>(parse_uint("--hidden", part, 1, Limits::kMaxWidth)));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return widths;
}

UnaryKind parse_activation(const std::string& text) {
  UnaryKind kind;
  // The trainer's hidden activations: the kinds up to cos (a checkpoint stores no others).
  if (parse_unary_kind(text.c_str(), &kind) && kind <= UnaryKind::kCos) return kind;
  std::string names;
  for (int k = 0; k <= static_cast<int>(UnaryKind::kCos); ++k)
    names += std::string(k ? ", " : "") + unary_kind_name(static_cast<UnaryKind>(k));
  throw UsageError(format("--activation: unknown activation '%s' (expected one of %s)",
                          text.c_str(), names.c_str()));
}

// --threads N, default 0: every core (results are the same for any N).
uint32_t parse_threads(const ParsedArgs& args) {
  const std::string* s = args.find("--threads");
  const uint32_t threads = s ? static_cast<uint32_t>(parse_uint("--threads", *s, 0, 256)) : 0;
  if (threads > 0) warn_threads(threads);
  return threads;
}

TrainOptions parse_options(const ParsedArgs& args) {
  TrainOptions o;
  if (auto* s = args.find("--hidden")) o.hidden = parse_hidden(*s);
  if (auto* s = args.find("--activation")) o.activation = parse_activation(*s);
  if (auto* s = args.find("--time-features"))
    o.time_frequencies = static_cast<uint32_t>(parse_uint("--time-features", *s, 0, 64));
  if (auto* s = args.find("--interpolant")) {
    if (!parse_interpolant_kind(s->c_str(), &o.interpolant))
      throw UsageError(
          format("--interpolant: unknown interpolant '%s' (expected linear, trig or learned)",
                 s->c_str()));
  }
  if (auto* s = args.find("--fourier-terms"))
    o.fourier_terms =
        static_cast<uint32_t>(parse_uint("--fourier-terms", *s, 1, Limits::kMaxFourierTerms));
  if (auto* s = args.find("--interpolant-lr"))
    o.interpolant_lr = parse_double("--interpolant-lr", *s);
  if (auto* s = args.find("--path-penalty")) o.path_penalty = parse_double("--path-penalty", *s);
  if (auto* s = args.find("--loss"))
    if (!parse_train_loss(s->c_str(), &o.loss))
      throw UsageError(
          format("--loss: unknown loss '%s' (expected interpolant or regression)", s->c_str()));
  if (auto* s = args.find("--time"))
    if (!parse_time_sampling(s->c_str(), &o.time))
      throw UsageError(
          format("--time: unknown sampling '%s' (expected uniform or beta)", s->c_str()));
  if (auto* s = args.find("--steps")) o.steps = parse_uint("--steps", *s, 1, uint64_t{1} << 40);
  if (auto* s = args.find("--batch"))
    o.batch = static_cast<uint32_t>(parse_uint("--batch", *s, 1, Limits::kMaxBatch));
  if (auto* s = args.find("--lr")) o.lr = parse_double("--lr", *s);
  if (auto* s = args.find("--weight-decay")) o.weight_decay = parse_double("--weight-decay", *s);
  if (auto* s = args.find("--schedule"))
    if (!parse_lr_schedule(s->c_str(), &o.schedule))
      throw UsageError(format(
          "--schedule: unknown schedule '%s' (expected constant, step or cosine)", s->c_str()));
  if (auto* s = args.find("--warmup")) o.warmup = parse_uint("--warmup", *s, 0, uint64_t{1} << 40);
  if (auto* s = args.find("--step-every"))
    o.step_every = parse_uint("--step-every", *s, 1, uint64_t{1} << 40);
  if (auto* s = args.find("--step-gamma")) o.step_gamma = parse_double("--step-gamma", *s);
  if (auto* s = args.find("--min-lr")) o.min_lr_ratio = parse_double("--min-lr", *s);
  if (auto* s = args.find("--clip")) o.clip_norm = parse_double("--clip", *s);
  if (auto* s = args.find("--seed")) o.seed = parse_uint("--seed", *s, 0, UINT64_MAX);
  if (auto* s = args.find("--kernels")) {
    if (*s == "auto")
      o.kernels = TrainKernels::kAuto;
    else if (*s == "reference")
      o.kernels = TrainKernels::kReference;
    else if (*s == "simd")
      o.kernels = TrainKernels::kSimd;
    else
      throw UsageError(
          format("--kernels: unknown kernels '%s' (expected auto, reference or simd)", s->c_str()));
  }
  if (auto* s = args.find("--precision")) {
    if (!parse_precision(s->c_str(), &o.precision))
      throw UsageError(
          format("--precision: unknown precision '%s' (train runs fp32 or bf16)", s->c_str()));
    if (o.precision != Precision::kFp32 && o.precision != Precision::kBf16)
      throw UsageError(format(
          "--precision: train runs fp32 or bf16, not %s (fp16 and int8 are inference precisions: "
          "give them to sample, logprob, ... on the trained model)",
          s->c_str()));
  }
  if (auto* s = args.find("--eval-every"))
    o.eval_every = parse_uint("--eval-every", *s, 0, uint64_t{1} << 40);
  if (auto* s = args.find("--eval-points"))
    o.eval_points = static_cast<uint32_t>(parse_uint("--eval-points", *s, 1, 1u << 24));
  if (auto* s = args.find("--eval-steps"))
    o.eval_steps = static_cast<uint32_t>(parse_uint("--eval-steps", *s, 1, Limits::kMaxSteps));
  if (auto* s = args.find("--holdout")) o.holdout_fraction = parse_double("--holdout", *s);
  if (auto* s = args.find("--holdout-points"))
    o.holdout_points = static_cast<uint32_t>(parse_uint("--holdout-points", *s, 0, 1u << 24));
  o.threads = parse_threads(args);
  return o;
}

TrainData parse_data(const std::string& text) {
  TrainData data;
  ToyData kind;
  if (parse_toy_data(text.c_str(), &kind)) {
    data.toy = true;
    data.toy_kind = kind;
    data.dim = 2;
    data.name = text;
    return data;
  }
  FileFormat format_kind;
  if (!known_format(text, &format_kind))
    throw UsageError(
        format("--data: '%s' is neither a built-in dataset (%s) nor a .npy or .csv "
               "file",
               text.c_str(), toy_data_names()));
  const Array a = read_array("--data", text);
  data.toy = false;
  data.dim = static_cast<uint32_t>(a.one_dimensional ? 1 : a.cols);
  if (data.dim == 0 || data.dim > Limits::kMaxDim)
    throw RunError(format("--data: '%s' has %zu columns; a model takes 1..%u", text.c_str(), a.cols,
                          Limits::kMaxDim));
  data.points.resize(a.values.size());
  for (size_t i = 0; i < a.values.size(); ++i) {
    const double v = a.values[i];
    if (std::fabs(v) > 3.4e38)
      throw RunError(format("--data: '%s' row %zu holds %g, beyond float32", text.c_str(),
                            i / data.dim + 1, v));
    data.points[i] = static_cast<float>(v);
  }
  const size_t slash = text.find_last_of('/');
  data.name = slash == std::string::npos ? text : text.substr(slash + 1);
  return data;
}

std::string duration_text(double seconds) {
  if (!(seconds >= 0.0) || seconds > 1e7) return "?";
  const long s = static_cast<long>(seconds + 0.5);
  if (s >= 3600) return format("%ldh%02ldm", s / 3600, (s / 60) % 60);
  if (s >= 60) return format("%ldm%02lds", s / 60, s % 60);
  return format("%lds", s);
}

// The CSV log: kept in memory and rewritten whole (atomically) at checkpoints and at the end.
class TrainLog {
 public:
  TrainLog(const std::string* path, bool resumed, uint64_t resumed_step) : path_(path) {
    if (!path_) return;
    text_ = "step,seconds,lr,loss,g,v_squared,grad_norm,heldout_nll,path_energy\n";
    if (!resumed || access(path_->c_str(), F_OK) != 0) return;
    // Keep the rows of the steps the checkpoint holds (read as any input: a regular file only).
    const std::vector<unsigned char> bytes = read_regular_file(*path_, kMaxInputBytes, "log");
    std::istringstream in(std::string(bytes.begin(), bytes.end()));
    std::string line;
    if (!std::getline(in, line)) return;
    while (std::getline(in, line)) {
      const uint64_t step = std::strtoull(line.c_str(), nullptr, 10);
      if (step > resumed_step) break;
      text_ += line + "\n";
    }
  }
  void add(const TrainStepReport& r, double seconds, double nll) {
    if (!path_) return;
    text_ += format("%" PRIu64 ",%.3f,%.6g,%.9g,%.9g,%.9g,%.6g,", r.step, seconds, r.lr, r.loss,
                    r.g, r.v_squared, r.grad_norm);
    if (std::isfinite(nll)) text_ += format("%.6f", nll);
    text_ += format(",%.9g\n", r.path_energy);
  }
  void save() const {
    if (path_) check(write_file_atomic(path_->c_str(), text_.data(), text_.size()));
  }

 private:
  const std::string* path_;
  std::string text_;
};

int run_train(const ParsedArgs& args) {
  const std::string& data_text = args.required("--data");
  const std::string& output = args.required("--output");
  if (output.size() < 4 || output.compare(output.size() - 4, 4, ".sif") != 0)
    throw UsageError(format("--output: '%s' must name a .sif model file", output.c_str()));
  const std::string* resume = args.find("--resume");
  if (resume)
    for (const char* option : kRunOptions)
      if (args.has(option))
        throw UsageError(
            format("%s cannot be given with --resume: the run's options come from "
                   "the checkpoint",
                   option));
  const std::string checkpoint =
      args.has("--checkpoint") ? *args.find("--checkpoint") : output + ".ckpt";
  uint64_t checkpoint_every = 1000;
  if (auto* s = args.find("--checkpoint-every"))
    checkpoint_every = parse_uint("--checkpoint-every", *s, 0, uint64_t{1} << 40);
  uint64_t stop_after = 0;
  if (auto* s = args.find("--stop-after"))
    stop_after = parse_uint("--stop-after", *s, 1, uint64_t{1} << 40);
  double budget = 0.0;
  if (auto* s = args.find("--time-budget")) {
    budget = parse_double("--time-budget", *s);
    if (!(budget > 0.0))
      throw UsageError(format("--time-budget: SECONDS must be positive, not %s", s->c_str()));
  }
  uint64_t log_every = 10;
  if (auto* s = args.find("--log-every"))
    log_every = parse_uint("--log-every", *s, 1, uint64_t{1} << 40);
  const std::string* log_path = args.find("--log");
  if (log_path) {
    FileFormat f;
    if (!known_format(*log_path, &f) || f != FileFormat::kCsv)
      throw UsageError(format("--log: '%s' must name a .csv file", log_path->c_str()));
  }
  // Every option is checked before any work (the final evaluation's too).
  uint64_t final_points = UINT32_MAX;
  if (auto* s = args.find("--final-eval"))
    final_points = parse_uint("--final-eval", *s, 0, UINT32_MAX);
  const TrainOptions fresh_options = resume ? TrainOptions() : parse_options(args);
  const uint32_t threads = resume ? parse_threads(args) : fresh_options.threads;
  // No output may be an input or another output. The checkpoint may be the one resumed from (it
  // is read whole first), and the log is read back on --resume by design.
  std::vector<NamedPath> inputs;
  FileFormat data_format;
  if (known_format(data_text, &data_format)) inputs.push_back({"--data", data_text});
  const std::vector<NamedPath> outputs{{"--output", output}, {"--checkpoint", checkpoint}};
  std::vector<NamedPath> all_outputs = outputs;
  if (log_path) all_outputs.push_back({"--log", *log_path});
  check_distinct(inputs, all_outputs);
  if (resume) {
    inputs.push_back({"--resume", *resume});
    std::vector<NamedPath> not_checkpoint{{"--output", output}};
    if (log_path) not_checkpoint.push_back({"--log", *log_path});
    check_distinct(inputs, not_checkpoint);
  }
  prepare_outputs(all_outputs);

  TrainData data = parse_data(data_text);
  std::unique_ptr<Trainer> trainer;
  if (resume) {
    check(Trainer::resume(resume->c_str(), std::move(data), threads, &trainer));
  } else {
    check(Trainer::create(fresh_options, std::move(data), &trainer));
  }
  const TrainOptions& o = trainer->options();
  const uint64_t first_step = trainer->steps_done();
  TrainLog log(log_path, resume != nullptr, first_step);
  std::fprintf(stderr,
               "siflow train: %s, %" PRIu64
               " parameters, %s interpolant, %s loss, t %s, batch "
               "%u, %" PRIu64 " steps%s, %u thread%s%s\n",
               data_text.c_str(), trainer->parameter_count(), interpolant_kind_name(o.interpolant),
               train_loss_name(o.loss), time_sampling_name(o.time), o.batch, o.steps,
               resume ? format(" (resuming at %" PRIu64 ")", first_step).c_str() : "", o.threads,
               o.threads == 1 ? "" : "s", o.precision == Precision::kBf16 ? ", bf16 GEMMs" : "");

  struct sigaction action {};
  action.sa_handler = on_interrupt;
  action.sa_flags = SA_RESTART;  // a checkpoint being written is not cut short
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  const bool terminal = isatty(fileno(stderr)) != 0;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  double eval_seconds = 0.0, last_nll = NAN, last_draw = -1.0;
  TrainStepReport report;
  const char* stopped = nullptr;
  while (trainer->steps_done() < o.steps) {
    check(trainer->step(&report));
    const uint64_t step = report.step;
    double nll = NAN;
    if (o.eval_every && step % o.eval_every == 0 && step < o.steps && trainer->holdout_rows()) {
      const double t0 = elapsed();
      const Status s = trainer->evaluate(o.eval_points, o.eval_steps, &nll, keep_evaluating);
      eval_seconds += elapsed() - t0;
      if (s.code() == StatusCode::kCancelled) {
        stopped = "interrupted";
        break;  // the step itself is complete: the checkpoint below holds it
      }
      check(s);
      last_nll = nll;
      if (!terminal)
        std::fprintf(stderr, "  step %" PRIu64 ": loss %.4f, held-out NLL %.4f (%u points)\n", step,
                     report.loss, nll, o.eval_points);
    }
    if (step % log_every == 0 || std::isfinite(nll)) log.add(report, elapsed(), nll);
    const bool checkpoint_now = checkpoint_every && step % checkpoint_every == 0;
    if (checkpoint_now) {
      check(trainer->save_checkpoint(checkpoint.c_str()));
      log.save();
    }
    const double now = elapsed();
    if (terminal && (now - last_draw >= 0.2 || step == o.steps)) {
      last_draw = now;
      const double per_step = (now - eval_seconds) / (step - first_step);
      const double eta = per_step * (o.steps - step);
      const int width = 24;
      const int filled = static_cast<int>(width * static_cast<double>(step) / o.steps);
      std::fprintf(stderr, "\r  [%s%s] %" PRIu64 "/%" PRIu64 " loss %.4f NLL %s ETA %s   ",
                   std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), step,
                   o.steps, report.loss,
                   std::isfinite(last_nll) ? format("%.3f", last_nll).c_str() : "-",
                   duration_text(eta).c_str());
    }
    if (g_interrupted)
      stopped = "interrupted";
    else if (stop_after && step >= stop_after)
      stopped = "--stop-after";
    else if (budget > 0.0 && now >= budget)
      stopped = "--time-budget";
    if (stopped) break;
  }
  if (terminal) std::fprintf(stderr, "\n");
  check(trainer->save_checkpoint(checkpoint.c_str()));
  if (stopped && std::strcmp(stopped, "--time-budget") != 0) {
    log.save();
    std::fprintf(stderr,
                 "siflow train: stopped (%s) after step %" PRIu64
                 "; checkpoint '%s' (continue "
                 "with --resume)\n",
                 stopped, trainer->steps_done(), checkpoint.c_str());
    return g_interrupted ? 130 : 0;
  }
  std::vector<uint8_t> bytes;
  check(trainer->model_bytes(&bytes));
  check(write_file_atomic(output.c_str(), bytes.data(), bytes.size()));
  double nll = NAN;
  const double t0 = elapsed();
  if (final_points > 0 && trainer->holdout_rows() == 0) {
    std::fprintf(stderr, "siflow train: no held-out rows, so no held-out NLL\n");
    final_points = 0;
  }
  if (final_points > 0) {
    const Status s =
        trainer->evaluate(final_points == UINT32_MAX ? 0 : static_cast<uint32_t>(final_points),
                          o.eval_steps, &nll, keep_evaluating);
    if (s.code() == StatusCode::kCancelled) {
      log.save();
      std::fprintf(stderr,
                   "siflow train: stopped (interrupted) during the final evaluation; wrote '%s' "
                   "and checkpoint '%s'\n",
                   output.c_str(), checkpoint.c_str());
      return 130;
    }
    check(s);
    report.step = trainer->steps_done();
    log.add(report, elapsed(), nll);
  }
  log.save();
  const double total = elapsed();
  std::fprintf(stderr, "siflow train: %" PRIu64 " steps%s in %s; wrote '%s' (%zu bytes)\n",
               trainer->steps_done(), stopped ? " (time budget reached)" : "",
               duration_text(total).c_str(), output.c_str(), bytes.size());
  if (std::isfinite(nll)) {
    std::printf("held-out NLL %.4f nats (RK4, %u steps, exact divergence; evaluation %.1f s)\n",
                nll, o.eval_steps, total - t0);
    double floor = 0.0;
    if (trainer
            ->reference_nll(final_points == UINT32_MAX ? 0 : static_cast<uint32_t>(final_points),
                            &floor)
            .ok())
      std::printf("the data's own density on the same points: %.4f nats\n", floor);
  }
  return 0;
}

}  // namespace

Command train_command() {
  return {
      "train",
      "--data DATA -o MODEL.sif [options]",
      "fit a velocity network to data (on this machine)",
      "Trains the velocity network v(t, x) of a flow from N(0, I) to DATA with the\n"
      "interpolant loss G = E[|v|^2 - 2 dI/dt . v] (t ~ U[0,1] or Beta(1, 0.7)), AdamW and\n"
      "a learning-rate schedule, and writes a .sif model with the data's normalisation.\n"
      "DATA is a built-in 2-D dataset (checkerboard, 8gaussians, moons, rings, 2spirals,\n"
      "pinwheel) drawn afresh every step, or a .npy/.csv file of rows [N, dim] split into\n"
      "training and held-out rows. The held-out negative log-likelihood (nats, data space,\n"
      "exact divergence, RK4) is reported every --eval-every steps and at the end.\n"
      "Checkpoints are written every --checkpoint-every steps and when the run stops\n"
      "(Ctrl-C or SIGTERM within a second, evaluations included, exit 130; --stop-after;\n"
      "--time-budget); --resume CHECKPOINT continues the run exactly, with the options it\n"
      "was started with. No output may be the data or another output.",
      {{"--data", nullptr, "DATA", "built-in dataset name or .npy/.csv file (required)"},
       {"--output", "-o", "FILE", "the trained model (.sif; required)"},
       {"--hidden", nullptr, "W,W,...", "hidden layer widths (default 256,256,256)"},
       {"--activation", nullptr, "F", "hidden activation (default silu)"},
       {"--time-features", nullptr, "K", "t plus sin/cos(k pi t), k <= K (default 0: t)"},
       {"--interpolant", nullptr, "I", "linear, trig or learned (default trig)"},
       {"--fourier-terms", nullptr, "M", "learned interpolant's terms (default 4)"},
       {"--interpolant-lr", nullptr, "LR", "learned interpolant's step (default 0.002)"},
       {"--path-penalty", nullptr, "P", "weight keeping a^2+b^2 >= 0.25 (default 10)"},
       {"--loss", nullptr, "L", "interpolant or regression (default interpolant)"},
       {"--time", nullptr, "T", "t sampling: uniform or beta (default uniform)"},
       {"--steps", nullptr, "N", "optimisation steps (default 20000)"},
       {"--batch", nullptr, "B", "minibatch rows (default 2048)"},
       {"--lr", nullptr, "LR", "peak learning rate (default 0.002)"},
       {"--weight-decay", nullptr, "WD", "AdamW's decoupled weight decay (default 0)"},
       {"--schedule", nullptr, "S", "constant, step or cosine (default cosine)"},
       {"--warmup", nullptr, "N", "linear warm-up steps (default 200)"},
       {"--step-every", nullptr, "N", "step schedule: decay every N steps (default 5000)"},
       {"--step-gamma", nullptr, "G", "step schedule: decay factor (default 0.5)"},
       {"--min-lr", nullptr, "R", "cosine schedule: final rate / peak (default 0.01)"},
       {"--clip", nullptr, "C", "clip the gradient's global norm to C, 0: off (default 1)"},
       {"--seed", nullptr, "S", "seed of initialisation and minibatches (default 0)"},
       {"--threads", nullptr, "N",
        "threads, 0: all cores (more warns); results are identical for any N (default 0)"},
       {"--kernels", nullptr, "K", "auto, reference or simd (default auto: simd)"},
       {"--precision", nullptr, "P",
        "fp32 or bf16: bf16 runs the hidden-to-hidden layers' three GEMMs in bf16 "
        "with f32 sums, weights and Adam state f32 (default fp32)"},
       {"--eval-every", nullptr, "N", "held-out NLL every N steps, 0: end only (default 2000)"},
       {"--eval-points", nullptr, "N", "held-out points per periodic evaluation (default 2000)"},
       {"--eval-steps", nullptr, "N", "RK4 steps of evaluations (default 50)"},
       {"--holdout", nullptr, "F", "file data: held-out fraction (default 0.1)"},
       {"--holdout-points", nullptr, "N", "built-in data: held-out points (default 20000)"},
       {"--final-eval", nullptr, "N", "held-out points of the final NLL, 0: none (default all)"},
       {"--log", nullptr, "FILE", "CSV training log (step, loss, G, E|v|^2, NLL, ...)"},
       {"--log-every", nullptr, "N", "log every N steps (default 10)"},
       {"--checkpoint", nullptr, "FILE", "checkpoint path (default MODEL.sif.ckpt)"},
       {"--checkpoint-every", nullptr, "N",
        "checkpoint every N steps, 0: at stops only "
        "(default 1000)"},
       {"--resume", nullptr, "FILE", "continue the run saved in this checkpoint"},
       {"--stop-after", nullptr, "N", "stop after step N as if interrupted (checkpoint only)"},
       {"--time-budget", nullptr, "SECONDS", "stop after this long and write the model"}},
      run_train,
      false};
}

}  // namespace siflow::cli
