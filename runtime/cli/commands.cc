// SPDX-License-Identifier: Apache-2.0
// The siflow subcommands: sample, decode, encode, logprob, velocity and validate, with
// their help. A client of the public siflow API only: it must never include the runtime's
// internal headers, and every file it writes goes through siflow::write_files_atomic.
#include "commands.hpp"

#include <signal.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstring>

#include "array_io.hpp"
#include "conditioning.hpp"
#include "errors.hpp"
#include "file_checks.hpp"
#include "profile.hpp"
#include "run_options.hpp"
#include "siflow/siflow.hpp"

namespace siflow::cli {

std::string human_bytes(uint64_t n) {
  if (n < 1024) return format("%" PRIu64 " B", n);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024;
    ++u;
  }
  return format("%.1f %s", v, units[u]);
}

std::string bytes_text(uint64_t n) {
  return format("%" PRIu64 " bytes (%s)", n, human_bytes(n).c_str());
}

namespace {

// The most rows one request may hold; keeps rows * dim * sizeof(float) far from overflow.
constexpr uint64_t kMaxRows = uint64_t{1} << 40;

const OptionSpec kSeedProbeOption{"--seed", nullptr, "S",
                                  "seed of the Hutchinson probes (default 0)"};

// The path an output option names, checked for a known extension; nullptr when not given.
const std::string* output_option(const ParsedArgs& args, const char* option) {
  const std::string* path = args.find(option);
  if (path) format_of(option, *path);
  return path;
}

const std::string& required_output(const ParsedArgs& args, const char* option) {
  args.required(option);
  return *output_option(args, option);
}

// Before any work: no output (-o, --logprob-out) may be an input (the model, -i, --grid, a
// --times file) or another output, and each output's folder is writable and rid of stale
// temporaries.
void check_files(const ParsedArgs& args) {
  std::vector<NamedPath> inputs{{"MODEL", args.positional(0)}}, outputs;
  FileFormat kind;
  for (const char* option :
       {"--input", "--grid", "--inputs", "--expected", "--times", "--labels", "--cond"})
    if (const std::string* p = args.find(option))
      if (known_format(*p, &kind)) inputs.push_back({option, *p});
  for (const char* option : {"--output", "--logprob-out", "--profile"})
    if (const std::string* p = args.find(option))
      if (*p != "-" || std::strcmp(option, "--profile") != 0) outputs.push_back({option, *p});
  check_distinct(inputs, outputs);
  prepare_outputs(outputs);
}

// The rows a plan is made for: the request's, up to --max-batch (a 4-row request needs no
// arena for 256 rows).
size_t plan_rows(size_t rows, size_t max_batch) {
  return std::max<size_t>(1, std::min(rows, max_batch));
}

// Each time must lie in the model's range [start, end], as the integrating commands require.
void check_times(const char* option, const std::vector<double>& times, const ModelInfo& info) {
  for (size_t i = 0; i < times.size(); ++i) {
    if (times[i] >= info.time_start && times[i] <= info.time_end) continue;
    const std::string row = times.size() == 1 ? "" : format(" (row %zu)", i + 1);
    throw RunError(format("%s: time %.9g%s is outside the model's range [%.9g, %.9g]", option,
                          times[i], row.c_str(), info.time_start, info.time_end));
  }
}

// Times for `rows` rows: a number (the same t for every row) or a vector file of `rows` times,
// each within the model's time range.
std::vector<float> read_times(const char* option, const std::string& text, size_t rows,
                              const ModelInfo& info) {
  double t = 0.0;
  if (try_parse_double(text, &t)) {
    check_times(option, {t}, info);
    return std::vector<float>(rows, static_cast<float>(t));
  }
  FileFormat kind = FileFormat::kNpy;
  if (!known_format(text, &kind))
    throw UsageError(
        format("%s: '%s' is neither a number nor a .npy or .csv file", option, text.c_str()));
  const std::vector<double> times = read_vector(option, text);
  if (times.size() != rows)
    throw RunError(format("%s: '%s' holds %zu times, but the input has %zu rows", option,
                          text.c_str(), times.size(), rows));
  check_times(option, times, info);
  return std::vector<float>(times.begin(), times.end());
}

// The model's per-sample shape of x ([C, H, W] for an image model), as .npy files carry it.
std::vector<uint32_t> sample_shape(const ModelInfo& info) {
  return std::vector<uint32_t>(info.x_shape, info.x_shape + info.x_rank);
}

// -i FILE as points of the model's dimension ([N, d], or [N, C, H, W] for an image model); sets
// the row count.
std::vector<float> read_input(const ParsedArgs& args, const Model& model, size_t* rows) {
  const uint32_t dim = model.info().dim;
  std::vector<float> x =
      read_points("--input", args.required("--input"), dim, sample_shape(model.info()));
  *rows = x.size() / dim;
  return x;
}

std::string rows_text(uint64_t n) {
  return format(n == 1 ? "%" PRIu64 " row" : "%" PRIu64 " rows", n);
}

// "siflow sample: 40 rows, rk4, 50 steps, NFE 200, 0.012 s; arena 1234 bytes (1.2 KiB) for 40
// rows": NFE is the network evaluations per row the run used (Plan::evaluations).
void summarize(const char* command, const std::string& what, double seconds, const Plan& plan,
               size_t rows) {
  std::fprintf(stderr, "siflow %s: %s, NFE %" PRIu64 ", %.3f s; arena %s for %s\n", command,
               what.c_str(), plan.evaluations(), seconds, bytes_text(plan.arena_bytes()).c_str(),
               rows_text(rows).c_str());
}

// Points to `out` and, when `logp_out` is given, their log-likelihoods: both files or neither.
void write_with_log_probs(const std::string& out, const float* x, size_t n, const ModelInfo& info,
                          const std::string* logp_out, const double* logp) {
  std::vector<std::pair<std::string, std::string>> files{
      {out, encode_points(out, x, n, info.dim, sample_shape(info))}};
  if (logp_out) files.push_back({*logp_out, encode_log_probs(*logp_out, logp, n)});
  write_outputs(files);
}

SdeOptions parse_sde(const ParsedArgs& args) {
  for (const char* option : {"--sde-schedule", "--sde-stop", "--sde-method"})
    require_with(args, option, "--sde");
  SdeOptions sde;
  const std::string* eps = args.find("--sde");
  if (!eps) return sde;
  sde.epsilon = parse_double("--sde", *eps);
  if (!(sde.epsilon > 0.0))
    throw UsageError(format("--sde: EPS must be positive, not %s", eps->c_str()));
  if (const std::string* s = args.find("--sde-schedule")) {
    if (!parse_epsilon_schedule(s->c_str(), &sde.schedule))
      throw UsageError(
          format("--sde-schedule: unknown schedule '%s' (expected constant or a)", s->c_str()));
  }
  if (const std::string* s = args.find("--sde-stop"))
    sde.stop_delta = parse_double("--sde-stop", *s);
  if (const std::string* s = args.find("--sde-method")) {
    if (!parse_sde_method(s->c_str(), &sde.method))
      throw UsageError(
          format("--sde-method: unknown method '%s' (expected em or heun)", s->c_str()));
  }
  return sde;
}

// "SDE heun, eps 0.5, schedule a, 50 steps" or, with a stop, "... stop 0.05 then rk4, ...".
std::string describe_sde(const SdeOptions& sde, const Integration& run) {
  const std::string then =
      sde.stop_delta > 0 ? format(", stop %g then %s", sde.stop_delta, method_name(run.method()))
                         : "";
  return format("SDE %s, eps %g, schedule %s%s, %s", sde_method_name(sde.method), sde.epsilon,
                epsilon_schedule_name(sde.schedule), then.c_str(), run.steps_text().c_str());
}

int run_sample(const ParsedArgs& args) {
  const uint64_t n = parse_uint("-n", args.required("--count"), 1, kMaxRows);
  const std::string& out = required_output(args, "--output");
  const std::string* logp_out = output_option(args, "--logprob-out");
  if (!logp_out) require_with(args, "--divergence", "--logprob-out");
  SampleOptions options;
  options.seed = parse_seed(args);
  options.sde = parse_sde(args);
  options.divergence = parse_divergence(args);
  options.divergence.seed = options.seed;
  options.temperature = parse_temperature(args);
  const Integration run(args);
  const Execution execution = parse_execution(args);
  check_files(args);
  const std::unique_ptr<Model> model = load_model(args.positional(0));
  const CliConditioning conditioning(args, *model, n);
  if (options.sde.epsilon > 0 && conditioning.guidance() != 1.0)
    throw UsageError(
        "--sde with --guidance other than 1: the score derived from the guided velocity is not "
        "the score of the guided flow's marginals; sample with the ODE");

  const uint32_t dim = model->info().dim;
  std::vector<float> x(n * dim);
  std::vector<double> logp(logp_out ? n : 0);
  const std::unique_ptr<Plan> plan =
      make_plan(*model, plan_rows(n, run.max_batch()), logp_out ? &options.divergence : nullptr,
                execution, conditioning.guidance());
  RunProfile profile(args);
  profile.attach(*plan);
  Progress progress("sample");
  options.ode = run.ode();
  progress.attach(&options.ode);
  check(plan->sample(n, options, conditioning.conditioning(), x.data(),
                     logp_out ? logp.data() : nullptr));
  const double seconds = progress.finish();
  write_with_log_probs(out, x.data(), n, model->info(), logp_out, logp.data());
  profile.write(*plan, seconds);
  const std::string how = options.sde.epsilon > 0 ? describe_sde(options.sde, run) : run.describe();
  const std::string temperature =
      options.temperature != 1.0 ? format(", temperature %g", options.temperature) : "";
  summarize("sample",
            format("%s, %s%s%s%s", rows_text(n).c_str(), how.c_str(),
                   logp_out ? (", " + describe(options.divergence)).c_str() : "",
                   conditioning.describe().c_str(), temperature.c_str()),
            seconds, *plan, plan_rows(n, run.max_batch()));
  return 0;
}

int run_decode(const ParsedArgs& args) {
  const std::string& out = required_output(args, "--output");
  const std::string* logp_out = output_option(args, "--logprob-out");
  if (!logp_out)
    for (const char* option : {"--divergence", "--seed"})
      require_with(args, option, "--logprob-out");
  DivergenceOptions divergence = parse_divergence(args);
  divergence.seed = parse_seed(args);
  const Integration run(args);
  const Execution execution = parse_execution(args);
  check_files(args);
  const std::unique_ptr<Model> model = load_model(args.positional(0));

  size_t n = 0;
  std::vector<float> x = read_input(args, *model, &n);
  const CliConditioning conditioning(args, *model, n);
  std::vector<double> logp(logp_out ? n : 0);
  const std::unique_ptr<Plan> plan =
      make_plan(*model, plan_rows(n, run.max_batch()), logp_out ? &divergence : nullptr, execution,
                conditioning.guidance());
  RunProfile profile(args);
  profile.attach(*plan);
  Progress progress("decode");
  OdeOptions ode = run.ode();
  progress.attach(&ode);
  check(plan->decode(n, x.data(), ode, divergence, conditioning.conditioning(), x.data(),
                     logp_out ? logp.data() : nullptr));
  const double seconds = progress.finish();
  write_with_log_probs(out, x.data(), n, model->info(), logp_out, logp.data());
  profile.write(*plan, seconds);
  summarize("decode",
            format("%s, %s%s%s", rows_text(n).c_str(), run.describe().c_str(),
                   logp_out ? (", " + describe(divergence)).c_str() : "",
                   conditioning.describe().c_str()),
            seconds, *plan, plan_rows(n, run.max_batch()));
  return 0;
}

int run_encode(const ParsedArgs& args) {
  const std::string& out = required_output(args, "--output");
  const Integration run(args);
  const Execution execution = parse_execution(args);
  check_files(args);
  const std::unique_ptr<Model> model = load_model(args.positional(0));

  size_t n = 0;
  std::vector<float> x = read_input(args, *model, &n);
  const CliConditioning conditioning(args, *model, n);
  const std::unique_ptr<Plan> plan =
      make_plan(*model, plan_rows(n, run.max_batch()), nullptr, execution, conditioning.guidance());
  Progress progress("encode");
  OdeOptions ode = run.ode();
  progress.attach(&ode);
  check(plan->encode(n, x.data(), ode, conditioning.conditioning(), x.data()));
  const double seconds = progress.finish();
  write_points(out, x.data(), n, model->info().dim, sample_shape(model->info()));
  summarize("encode",
            format("%s, %s%s", rows_text(n).c_str(), run.describe().c_str(),
                   conditioning.describe().c_str()),
            seconds, *plan, plan_rows(n, run.max_batch()));
  return 0;
}

int run_logprob(const ParsedArgs& args) {
  const std::string& out = required_output(args, "--output");
  LogProbOptions options;
  options.divergence = parse_divergence(args);
  options.divergence.seed = parse_seed(args);
  if (const std::string* time = args.find("--time")) {
    options.time = parse_double("--time", *time);
    if (options.time < 0.0)
      throw UsageError(
          format("--time: %s is negative; expected a time in the model's range "
                 "(start, end]",
                 time->c_str()));
  }
  const Integration run(args);
  const Execution execution = parse_execution(args);
  check_files(args);
  const std::unique_ptr<Model> model = load_model(args.positional(0));

  size_t n = 0;
  const std::vector<float> x = read_input(args, *model, &n);
  const CliConditioning conditioning(args, *model, n);
  std::vector<double> logp(n);
  const std::unique_ptr<Plan> plan =
      make_plan(*model, plan_rows(n, run.max_batch()), &options.divergence, execution,
                conditioning.guidance());
  RunProfile profile(args);
  profile.attach(*plan);
  Progress progress("logprob");
  options.ode = run.ode();
  progress.attach(&options.ode);
  check(plan->log_prob(n, x.data(), options, conditioning.conditioning(), logp.data()));
  const double seconds = progress.finish();
  write_outputs({{out, encode_log_probs(out, logp.data(), n)}});
  profile.write(*plan, seconds);
  summarize("logprob",
            format("%s, %s, %s%s", rows_text(n).c_str(), run.describe().c_str(),
                   describe(options.divergence).c_str(), conditioning.describe().c_str()),
            seconds, *plan, plan_rows(n, run.max_batch()));
  return 0;
}

int run_velocity(const ParsedArgs& args) {
  const std::string& out = required_output(args, "--output");
  const std::string& times = args.required("--times");
  const size_t max_batch = parse_max_batch(args);
  const Execution execution = parse_execution(args);
  check_files(args);
  const std::unique_ptr<Model> model = load_model(args.positional(0));

  size_t n = 0;
  const std::vector<float> y = read_input(args, *model, &n);
  const std::vector<float> t = read_times("--times", times, n, model->info());
  const CliConditioning conditioning(args, *model, n);
  std::vector<float> v(y.size());
  const std::unique_ptr<Plan> plan =
      make_plan(*model, plan_rows(n, max_batch), nullptr, execution, conditioning.guidance());
  check(plan->velocity(n, t.data(), y.data(), conditioning.conditioning(), v.data()));
  write_points(out, v.data(), n, model->info().dim, sample_shape(model->info()));
  return 0;
}

// max |v - ref| / max(1, max |ref|); NaN in v makes it NaN (a failure).
const char* verdict(bool ok) { return ok ? "ok" : "FAILED"; }

// validate's stop signal: SIGINT or SIGTERM sets the flag, and the validation's progress
// callback (which also draws the progress line on a terminal) then cancels it.
volatile sig_atomic_t g_validate_interrupted = 0;
void on_validate_interrupt(int) { g_validate_interrupted = 1; }
struct ValidateProgress {
  Progress line{"validate"};
  OdeOptions draw;  // the line's callback, attached only when stderr is a terminal
  ValidateProgress() { line.attach(&draw); }
  static bool update(void* user, uint64_t done, uint64_t total) {
    if (g_validate_interrupted) return false;
    const OdeOptions& draw = static_cast<ValidateProgress*>(user)->draw;
    return !draw.progress || draw.progress(draw.progress_user, done, total);
  }
};

int run_validate(const ParsedArgs& args) {
  const bool custom = args.has("--inputs") || args.has("--times") || args.has("--expected");
  double tolerance = 1e-5;
  if (custom) {
    for (const char* option : {"--inputs", "--times", "--expected"}) args.required(option);
    if (const std::string* tol = args.find("--tolerance")) {
      tolerance = parse_double("--tolerance", *tol);
      if (tolerance < 0.0) throw UsageError(format("--tolerance: %s is negative", tol->c_str()));
    }
  } else {
    for (const char* option : {"--tolerance", "--max-batch"})
      require_with(args, option, "--inputs");
  }
  const size_t max_batch = parse_max_batch(args);
  const Execution execution = parse_execution(args);
  check_files(args);
  const std::unique_ptr<Model> model = load_model(args.positional(0));

  bool ok = true;
  if (!custom) {
    ValidationReport r;
    PlanOptions plan_options;
    plan_options.threads = execution.threads;
    plan_options.backend = execution.backend;
    plan_options.tune = execution.tune;
    plan_options.precision = execution.precision;
    plan_options.block_rows = execution.block_rows;
    struct sigaction action {};
    action.sa_handler = on_validate_interrupt;
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    ValidateProgress progress;
    const Status s =
        validate_embedded(*model, plan_options, &r, &ValidateProgress::update, &progress);
    progress.line.finish();
    if (s.code() == StatusCode::kCancelled && g_validate_interrupted) {
      std::fprintf(stderr, "siflow validate: stopped (interrupted)\n");
      return 130;
    }
    check(s);
    if (r.velocity_count > 0)
      std::printf("velocity      %u points: max relative error %.3g (tolerance %.3g) %s\n",
                  r.velocity_count, r.velocity_max_error, r.velocity_tolerance,
                  verdict(r.velocity_ok));
    if (r.trajectory_count > 0)
      std::printf("trajectories  %u of %u RK4 steps: max relative error %.3g (tolerance %.3g) %s\n",
                  r.trajectory_count, r.trajectory_steps, r.trajectory_max_error,
                  r.trajectory_tolerance, verdict(r.trajectory_ok));
    if (r.solver_count > 0)
      std::printf(
          "solvers       %u stored: max relative error %.3g (solver '%s', tolerance %.3g) "
          "%s\n",
          r.solver_count, r.solver_max_error, r.solver_worst, r.solver_tolerance,
          verdict(r.solver_ok));
    ok = r.velocity_ok && r.trajectory_ok && r.solver_ok;
  } else {
    const uint32_t dim = model->info().dim;
    const std::string& inputs = *args.find("--inputs");
    const std::string& expected = *args.find("--expected");
    const std::vector<float> y = read_points("--inputs", inputs, dim, sample_shape(model->info()));
    const size_t n = y.size() / dim;
    const std::vector<float> t = read_times("--times", *args.find("--times"), n, model->info());
    const std::vector<float> ref =
        read_points("--expected", expected, dim, sample_shape(model->info()));
    if (ref.size() != y.size())
      throw RunError(format("--expected: '%s' has %zu rows, but --inputs '%s' has %zu",
                            expected.c_str(), ref.size() / dim, inputs.c_str(), n));
    std::vector<float> v(y.size());
    const std::unique_ptr<Plan> plan =
        make_plan(*model, plan_rows(n, max_batch), nullptr, execution);
    check(plan->velocity(n, t.data(), y.data(), v.data()));
    const double error = max_relative_error(v.data(), ref.data(), v.size());
    ok = error <= tolerance;
    std::printf("velocity      %zu points: max relative error %.3g (tolerance %.3g) %s\n", n, error,
                tolerance, verdict(ok));
  }
  if (!ok) std::fprintf(stderr, "siflow: validation failed: an error exceeds its tolerance\n");
  return ok ? 0 : 1;
}

}  // namespace

const std::vector<Command>& commands() {
  static const OptionSpec input_points{
      "--input", "-i", "FILE",
      "input points [N, dim] (.npy: also [N, C, H, W] for an image model) or .csv (required)"};
  static const std::vector<Command> table = {
      info_command(),
      {"sample",
       "MODEL -n N -o OUT [options]",
       "draw samples from the model (ODE or SDE)",
       "Draws N points from the base and pushes them through the flow (Plan::sample).\n"
       "Writes float32 [N, dim] to OUT (.npy: in the model's shape, [N, C, H, W] for an image "
       "model)\nand, with --logprob-out, float64 log p(x) [N] (ODE only).\n"
       "--sde EPS integrates dX = [v + eps s] dt + sqrt(2 eps) dW instead (Gaussian base only).\n"
       "A class-conditional model needs --label or --labels (a condition model --cond);\n"
       "--guidance W samples the guided ODE (with --sde only W = 1).",
       {{"--count", "-n", "N", "number of samples (required)"},
        {"--output", "-o", "FILE", "samples [N, dim] (.npy float32 or .csv; required)"},
        {"--logprob-out", nullptr, "FILE", "also write log p of each sample [N] (.npy or .csv)"},
        kDivergenceOption,
        kProbeOption,
        {"--seed", nullptr, "S", "seed of the base draws, SDE noise and probes (default 0)"},
        {"--sde", nullptr, "EPS", "sample with the SDE of noise level EPS > 0"},
        {"--sde-schedule", nullptr, "S", "eps(t): a (eps a(t)) or constant (default a)"},
        {"--sde-stop", nullptr, "DELTA", "run the SDE up to end - DELTA, then ODE steps"},
        {"--sde-method", nullptr, "M", "SDE stepper: em or heun (default heun)"},
        kMethodOption,
        kStepsOption,
        kGridOption,
        kGridKindOption,
        kRtolOption,
        kAtolOption,
        kMaxStepsOption,
        kSolverOption,
        kMaxBatchOption,
        kThreadsOption,
        kBackendOption,
        kTuneKernelsOption,
        kBlockRowsOption,
        kPrecisionOption,
        kProfileOption,
        kLabelOption,
        kLabelsOption,
        kCondOption,
        kGuidanceOption,
        kTemperatureOption},
       run_sample},
      {"decode",
       "MODEL -i X0 -o X1 [options]",
       "map base points to data space",
       "Integrates base points X0 (flow coordinates) forward to data-space X1 (Plan::decode);\n"
       "with --logprob-out also writes log p(X1) [N]. Conditional models: --label/--labels,\n"
       "--cond and --guidance as in sample (editing: encode with one label, decode with another).",
       {input_points,
        {"--output", "-o", "FILE",
         "data-space points [N, dim] (.npy in the model's shape; required)"},
        {"--logprob-out", nullptr, "FILE", "also write log p of each output point [N]"},
        kDivergenceOption,
        kProbeOption,
        kSeedProbeOption,
        kMethodOption,
        kStepsOption,
        kGridOption,
        kGridKindOption,
        kRtolOption,
        kAtolOption,
        kMaxStepsOption,
        kSolverOption,
        kMaxBatchOption,
        kThreadsOption,
        kBackendOption,
        kTuneKernelsOption,
        kBlockRowsOption,
        kPrecisionOption,
        kProfileOption,
        kLabelOption,
        kLabelsOption,
        kCondOption,
        kGuidanceOption},
       run_decode},
      {"encode",
       "MODEL -i X1 -o X0 [options]",
       "map data points to the base",
       "Integrates data-space points X1 backwards to base points X0 in flow coordinates\n"
       "(Plan::encode), the inverse of decode. Conditional models: --label/--labels, --cond and\n"
       "--guidance as in sample.",
       {input_points,
        {"--output", "-o", "FILE", "base points [N, dim] (.npy in the model's shape; required)"},
        kMethodOption,
        kStepsOption,
        kGridOption,
        kGridKindOption,
        kRtolOption,
        kAtolOption,
        kMaxStepsOption,
        kSolverOption,
        kMaxBatchOption,
        kThreadsOption,
        kBackendOption,
        kTuneKernelsOption,
        kBlockRowsOption,
        kPrecisionOption,
        kLabelOption,
        kLabelsOption,
        kCondOption,
        kGuidanceOption},
       run_encode},
      {"logprob",
       "MODEL -i DATA -o LOGP [options]",
       "log-likelihoods of data points",
       "Computes log p(x) of each data-space row (Plan::log_prob) by integrating backwards\n"
       "from time S (default the end of the model's time range) with the divergence.\n"
       "Writes float64 [N]. Conditional models: --label/--labels, --cond; under --guidance W\n"
       "the log-likelihood is that of the guided ODE (v(null) + W (v(y) - v(null))).",
       {input_points,
        {"--output", "-o", "FILE", "log-likelihoods [N] (.npy float64 or .csv; required)"},
        kDivergenceOption,
        kProbeOption,
        kSeedProbeOption,
        {"--time", nullptr, "S", "log rho_S at time S in (start, end] (default end)"},
        kMethodOption,
        kStepsOption,
        kGridOption,
        kGridKindOption,
        kRtolOption,
        kAtolOption,
        kMaxStepsOption,
        kSolverOption,
        kMaxBatchOption,
        kThreadsOption,
        kBackendOption,
        kTuneKernelsOption,
        kBlockRowsOption,
        kPrecisionOption,
        kProfileOption,
        kLabelOption,
        kLabelsOption,
        kCondOption,
        kGuidanceOption},
       run_logprob},
      {"velocity",
       "MODEL -i X -t T -o V [--max-batch B] [--label K | --labels FILE] [--cond FILE]",
       "evaluate the velocity network",
       "Evaluates the network v(t, x) (Plan::velocity). X and V are in flow (normalized)\n"
       "coordinates. T is a number (the same t for every row) or a vector file of N times.\n"
       "Conditional models: --label/--labels, --cond; --guidance W gives the guided velocity.",
       {{"--input", "-i", "FILE",
         "points [N, dim] (or the model's shape) in flow coordinates (required)"},
        {"--times", "-t", "T", "a time, or a vector file [N] / [N, 1] of times (required)"},
        {"--output", "-o", "FILE", "velocities [N, dim] (.npy in the model's shape; required)"},
        kMaxBatchOption,
        kThreadsOption,
        kBackendOption,
        kTuneKernelsOption,
        kBlockRowsOption,
        kPrecisionOption,
        kLabelOption,
        kLabelsOption,
        kCondOption,
        kGuidanceOption},
       run_velocity},
      {"validate",
       "MODEL [--inputs Y --times T --expected V] [--tolerance TOL]",
       "check the model against test vectors",
       "Without options, re-runs the test vectors embedded in the model (velocities, RK4\n"
       "trajectories and each stored solver's base points -> samples). With --inputs, --times and "
       "--expected, compares Plan::velocity on Y at\n"
       "T with V. Errors are relative: max |v - v_ref| / max(1, max |v_ref|). Exits 0 when\n"
       "every error is within its tolerance, 1 otherwise. Ctrl-C (SIGINT or SIGTERM) stops the\n"
       "embedded check after the current RK4 step, with exit status 130.",
       {{"--inputs", nullptr, "FILE", "points [N, dim] in flow coordinates"},
        {"--times", nullptr, "T", "a time, or a vector file [N] of times"},
        {"--expected", nullptr, "FILE", "reference velocities [N, dim]"},
        {"--tolerance", nullptr, "TOL", "largest relative error accepted (default 1e-05)"},
        kMaxBatchOption,
        kThreadsOption,
        kBackendOption,
        kTuneKernelsOption,
        kBlockRowsOption,
        kPrecisionOption},
       run_validate},
      tune_solver_command(),
#ifdef SIFLOW_CLI_TRAINING
      train_command(),
#endif
  };
  return table;
}

const Command* find_command(const std::string& name) {
  for (const Command& c : commands())
    if (name == c.name) return &c;
  return nullptr;
}

void print_help(const Command& command, std::FILE* out) {
  std::fprintf(out, "Usage: siflow %s %s\n\n%s\n\nOptions:\n", command.name, command.synopsis,
               command.description);
  constexpr size_t kColumn = 26;
  auto line = [&](const std::string& left, const char* help) {
    if (left.size() + 2 <= kColumn)
      std::fprintf(out, "%-*s%s\n", static_cast<int>(kColumn), left.c_str(), help);
    else
      std::fprintf(out, "%s\n%*s%s\n", left.c_str(), static_cast<int>(kColumn), "", help);
  };
  for (const OptionSpec& o : command.options)
    line(o.short_name ? format("  %s, %s %s", o.short_name, o.name, o.value)
                      : format("  %s %s", o.name, o.value),
         o.help);
  line("  -h, --help", "show this help");
}

}  // namespace siflow::cli
