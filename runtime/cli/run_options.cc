// SPDX-License-Identifier: Apache-2.0
// The integrating commands' shared options, model loading, plan creation and progress line.
// Public siflow API only; it never prints anything but the progress line.
#include "run_options.hpp"

#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "array_io.hpp"
#include "errors.hpp"
#include "file_checks.hpp"

namespace siflow::cli {

const OptionSpec kMethodOption{"--method", nullptr, "M",
                               "integrator: euler, heun, midpoint, rk4, rk4-38, ab2, ab3, ab4 "
                               "(Adams-Bashforth), dopri5 (adaptive) (default rk4)"};
const OptionSpec kStepsOption{"--steps", nullptr, "K", "grid of K steps (default 50)"};
const OptionSpec kGridOption{
    "--grid", nullptr, "FILE",
    "vector file of increasing times, start to end (excludes --steps, --grid-kind)"};
const OptionSpec kGridKindOption{"--grid-kind", nullptr, "KIND",
                                 "grid of --steps steps: uniform, shift:A, power:R (small steps "
                                 "at the data end), cosine (default uniform)"};
const OptionSpec kRtolOption{"--rtol", nullptr, "R",
                             "dopri5: relative tolerance per step (default 1e-06)"};
const OptionSpec kAtolOption{"--atol", nullptr, "A",
                             "dopri5: absolute tolerance per step (default 1e-06)"};
const OptionSpec kSolverOption{"--solver", nullptr, "NAME",
                               "a solver stored in the model (siflow info lists them; excludes "
                               "--method, --steps, --grid*)"};
const OptionSpec kMaxStepsOption{"--max-steps", nullptr, "M",
                                 "dopri5: fail after M attempted steps (default 100000)"};
const OptionSpec kMaxBatchOption{"--max-batch", nullptr, "B",
                                 "rows per chunk through the planned arena (default 256)"};
const OptionSpec kDivergenceOption{"--divergence", nullptr, "MODE",
                                   "exact, or hutchinson[:K] with K probes (default exact; K 1)"};
const OptionSpec kProbeOption{"--probe", nullptr, "KIND",
                              "Hutchinson probe: rademacher or gaussian (default rademacher)"};
const OptionSpec kThreadsOption{"--threads", nullptr, "N",
                                "threads per run, 1..256, at most the cores free; results are "
                                "identical for any N (default 1)"};
const OptionSpec kBackendOption{"--backend", nullptr, "B",
                                "kernels: auto, reference (bit-identical across platforms), "
                                "simd, xnnpack (default auto)"};

const OptionSpec kTuneKernelsOption{
    "--tune-kernels", nullptr, "on|off",
    "on: with --backend auto, time simd against XNNPACK for each dense and conv layer (a conv "
    "also on the simd NHWC kernel and, 3x3 stride 1, the Winograd kernel) when the plan is made "
    "and keep the fastest (results may then differ by rounding between runs); with --threads "
    "above 1 and one block per run, also time splitting each layer over the threads against the "
    "caller's thread alone and sample the faster way (default off)"};

const OptionSpec kBlockRowsOption{
    "--block-rows", nullptr, "N",
    "rows the network runs over at a time, each block through every layer before the next "
    "(results identical for any N without --tune-kernels on; default 0: the plan's choice, see "
    "siflow info)"};

const OptionSpec kPrecisionOption{"--precision", nullptr, "P",
                                  "number format of the dense layers and convolutions: fp32, "
                                  "bf16, fp16, int8 (docs/math.md; default fp32)"};

uint32_t available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return static_cast<uint32_t>(CPU_COUNT(&set));
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? n : 1;
}

void warn_threads(uint32_t threads) {
  const uint32_t cores = available_cores();
  if (threads > cores)
    std::fprintf(stderr,
                 "siflow: warning: --threads %u exceeds the %u core%s this process may use; "
                 "threads then wait on each other and a run can be many times slower\n",
                 threads, cores, cores == 1 ? "" : "s");
}

Execution parse_execution(const ParsedArgs& args) {
  Execution e;
  if (const std::string* t = args.find("--threads")) {
    e.threads = static_cast<uint32_t>(parse_uint("--threads", *t, 1, 256));
    warn_threads(e.threads);
  }
  if (const std::string* b = args.find("--backend"))
    if (!parse_backend(b->c_str(), &e.backend))
      throw UsageError(
          format("--backend: unknown backend '%s' (expected auto, reference, simd or xnnpack)",
                 b->c_str()));
  if (const std::string* k = args.find("--tune-kernels")) {
    if (*k != "on" && *k != "off")
      throw UsageError(format("--tune-kernels: expected on or off, not '%s'", k->c_str()));
    e.tune = *k == "on";
    if (e.tune && e.backend != Backend::kAuto)
      throw UsageError(
          format("--tune-kernels on chooses between kernels: it needs --backend auto, "
                 "not %s",
                 backend_name(e.backend)));
  }
  if (const std::string* b = args.find("--block-rows"))
    e.block_rows = static_cast<size_t>(parse_uint("--block-rows", *b, 0, Limits::kMaxBatch));
  if (const std::string* p = args.find("--precision"))
    if (!parse_precision(p->c_str(), &e.precision))
      throw UsageError(format(
          "--precision: unknown precision '%s' (expected fp32, bf16, fp16 or int8)", p->c_str()));
  return e;
}

void parse_grid_kind_option(const char* option, const std::string& text, GridKind* kind,
                            double* param) {
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  if (!parse_grid_kind(name.c_str(), kind))
    throw UsageError(
        format("%s: unknown grid kind '%s' (expected uniform, shift:A, power:R or "
               "cosine)",
               option, text.c_str()));
  const bool takes = *kind == GridKind::kShift || *kind == GridKind::kPower;
  *param = 0.0;
  if (!takes) {
    if (colon != std::string::npos)
      throw UsageError(format("%s: %s takes no parameter", option, name.c_str()));
    return;
  }
  if (colon == std::string::npos)
    throw UsageError(format("%s: %s needs a parameter (%s:%s)", option, name.c_str(), name.c_str(),
                            *kind == GridKind::kShift ? "A" : "R"));
  *param = parse_double(option, text.substr(colon + 1));
  if (!(*param >= 1e-3 && *param <= 1e3))
    throw UsageError(format("%s: parameter %s is outside [0.001, 1000]", option,
                            text.substr(colon + 1).c_str()));
}

std::string grid_kind_text(GridKind kind, double param) {
  if (kind == GridKind::kShift || kind == GridKind::kPower)
    return format("%s:%g", grid_kind_name(kind), param);
  return grid_kind_name(kind);
}

Integration::Integration(const ParsedArgs& args) {
  if (const std::string* m = args.find("--method"))
    if (!parse_method(m->c_str(), &method_))
      throw UsageError(
          format("--method: unknown method '%s' (expected euler, heun, midpoint, rk4, rk4-38, "
                 "ab2, ab3, ab4 or dopri5)",
                 m->c_str()));
  max_batch_ = parse_max_batch(args);
  if (const std::string* solver = args.find("--solver")) {
    for (const char* option :
         {"--method", "--steps", "--grid", "--grid-kind", "--rtol", "--atol", "--max-steps"})
      if (args.has(option))
        throw UsageError(
            format("--solver and %s are mutually exclusive (the stored solver "
                   "brings its method and grid)",
                   option));
    if (solver->empty()) throw UsageError("--solver: the name is empty");
    solver_ = *solver;
    return;
  }
  const std::string* steps = args.find("--steps");
  const std::string* grid = args.find("--grid");
  const std::string* kind = args.find("--grid-kind");
  if (steps && grid) throw UsageError("--steps and --grid are mutually exclusive");
  if (kind && grid) throw UsageError("--grid-kind and --grid are mutually exclusive");
  if (method_ == Method::kDopri5) {
    for (const char* option : {"--steps", "--grid", "--grid-kind"})
      if (args.has(option))
        throw UsageError(
            format("%s does not apply to --method dopri5, which chooses its own steps "
                   "(use --rtol, --atol, --max-steps)",
                   option));
  } else {
    for (const char* option : {"--rtol", "--atol", "--max-steps"})
      if (args.has(option))
        throw UsageError(format("%s applies only with --method dopri5", option));
  }
  if (steps) steps_ = static_cast<uint32_t>(parse_uint("--steps", *steps, 1, Limits::kMaxSteps));
  if (grid) grid_ = read_vector("--grid", *grid);
  if (kind) parse_grid_kind_option("--grid-kind", *kind, &grid_kind_, &grid_param_);
  if (const std::string* r = args.find("--rtol")) {
    rtol_ = parse_double("--rtol", *r);
    if (!(rtol_ >= 1e-13 && rtol_ <= 1.0))
      throw UsageError(format("--rtol: %s is outside [1e-13, 1]", r->c_str()));
  }
  if (const std::string* a = args.find("--atol")) {
    atol_ = parse_double("--atol", *a);
    if (!(atol_ >= 0.0 && atol_ <= 1.0))
      throw UsageError(format("--atol: %s is outside [0, 1]", a->c_str()));
  }
  if (const std::string* m = args.find("--max-steps"))
    max_steps_ = static_cast<uint32_t>(parse_uint("--max-steps", *m, 1, Limits::kMaxSteps));
}

OdeOptions Integration::ode() const {
  OdeOptions o;
  o.method = method_;
  o.steps = steps_;
  o.grid_kind = grid_kind_;
  o.grid_param = grid_param_;
  o.rtol = rtol_;
  o.atol = atol_;
  o.max_steps = max_steps_;
  if (!solver_.empty()) o.solver = solver_.c_str();
  if (!grid_.empty()) {
    o.grid = grid_.data();
    o.grid_size = grid_.size();
  }
  return o;
}

std::string Integration::steps_text() const {
  if (!solver_.empty()) return format("stored solver '%s'", solver_.c_str());
  if (method_ == Method::kDopri5) return format("adaptive, rtol %g, atol %g", rtol_, atol_);
  if (!grid_.empty()) return format("grid of %zu steps", grid_.size() - 1);
  if (grid_kind_ != GridKind::kUniform)
    return format("%u steps on the %s grid", steps_,
                  grid_kind_text(grid_kind_, grid_param_).c_str());
  return format("%u steps", steps_);
}

std::string Integration::describe() const {
  if (!solver_.empty()) return steps_text();
  return format("%s, %s", method_name(method_), steps_text().c_str());
}

DivergenceOptions parse_divergence(const ParsedArgs& args) {
  DivergenceOptions d;
  const std::string* probe = args.find("--probe");
  if (const std::string* mode = args.find("--divergence")) {
    const std::string hutchinson = "hutchinson";
    if (*mode == "exact") {
      d.mode = DivergenceMode::kExact;
    } else if (mode->compare(0, hutchinson.size(), hutchinson) == 0 &&
               (mode->size() == hutchinson.size() || (*mode)[hutchinson.size()] == ':')) {
      d.mode = DivergenceMode::kHutchinson;
      if (mode->size() > hutchinson.size())
        d.probes = static_cast<uint32_t>(parse_uint("--divergence hutchinson:K",
                                                    mode->substr(hutchinson.size() + 1), 1,
                                                    Limits::kMaxProbes));
    } else {
      throw UsageError(
          format("--divergence: unknown mode '%s' (expected exact, hutchinson or hutchinson:K)",
                 mode->c_str()));
    }
  }
  if (probe) {
    if (d.mode != DivergenceMode::kHutchinson)
      throw UsageError("--probe applies only with --divergence hutchinson");
    if (!parse_probe_kind(probe->c_str(), &d.probe))
      throw UsageError(
          format("--probe: unknown probe '%s' (expected rademacher or gaussian)", probe->c_str()));
  }
  return d;
}

std::string describe(const DivergenceOptions& d) {
  if (d.mode == DivergenceMode::kExact) return "exact divergence";
  return format("Hutchinson divergence (%u %s probe%s)", d.probes, probe_kind_name(d.probe),
                d.probes == 1 ? "" : "s");
}

uint64_t parse_seed(const ParsedArgs& args) {
  const std::string* s = args.find("--seed");
  return s ? parse_uint("--seed", *s, 0, UINT64_MAX) : 0;
}

size_t parse_max_batch(const ParsedArgs& args) {
  const std::string* b = args.find("--max-batch");
  return b ? parse_uint("--max-batch", *b, 1, Limits::kMaxBatch) : PlanOptions().max_batch;
}

void require_with(const ParsedArgs& args, const char* option, const char* needed) {
  if (args.has(option) && !args.has(needed))
    throw UsageError(format("%s applies only with %s", option, needed));
}

std::unique_ptr<Model> load_model(const std::string& path) {
  // Model::load_file opens with fopen, which blocks on a FIFO: refuse anything but a regular
  // file first.
  require_regular_file(path, "model");
  std::unique_ptr<Model> model;
  check(Model::load_file(path.c_str(), LoadOptions(), &model));
  return model;
}

std::unique_ptr<Plan> make_plan(const Model& model, size_t max_batch,
                                const DivergenceOptions* divergence, const Execution& execution,
                                double guidance) {
  PlanOptions po;
  po.guidance = guidance;
  po.max_batch = max_batch;
  po.threads = execution.threads;
  po.backend = execution.backend;
  po.precision = execution.precision;
  po.tune = execution.tune;
  po.block_rows = execution.block_rows;
  po.divergence = divergence ? divergence->mode : DivergenceMode::kNone;
  po.max_probes =
      divergence && divergence->mode == DivergenceMode::kHutchinson ? divergence->probes : 1;
  std::unique_ptr<Plan> plan;
  check(Plan::create(model, po, nullptr, 0, &plan));
  return plan;
}

Progress::Progress(const char* command)
    : command_(command),
      terminal_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { clear(); }

void Progress::attach(OdeOptions* ode) {
  if (!terminal_) return;
  ode->progress = &Progress::update;
  ode->progress_user = this;
}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double Progress::finish() {
  clear();
  return seconds();
}

bool Progress::update(void* user, uint64_t done, uint64_t total) {
  Progress& p = *static_cast<Progress*>(user);
  const double now = p.seconds();
  if (now < 1.0 || now - p.last_draw_ < 0.2 || total == 0) return true;
  p.last_draw_ = now;
  p.drawn_ = true;
  const double fraction = static_cast<double>(done) / static_cast<double>(total);
  std::fprintf(stderr, "\r\033[K%s: %5.1f%%, %.0f s elapsed, about %.0f s left", p.command_,
               100.0 * fraction, now, fraction > 0 ? now * (1.0 - fraction) / fraction : 0.0);
  return true;
}

void Progress::clear() {
  if (drawn_) std::fputs("\r\033[K", stderr);
  drawn_ = false;
}

}  // namespace siflow::cli
