// SPDX-License-Identifier: Apache-2.0
// siflow tune-solver: fits a fixed-grid solver of a given NFE to a model (the method and its time
// grid) against the adaptive dopri5 reference on seeded base draws, measures it on held-out
// draws, and stores it with a test vector in a copy of the model. Public siflow API only.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "array_io.hpp"
#include "commands.hpp"
#include "conditioning.hpp"
#include "errors.hpp"
#include "file_checks.hpp"
#include "run_options.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace siflow::cli {
namespace {

constexpr size_t kTrainDraws = 256;             // base draws the grid is fitted on
constexpr size_t kHeldOutDraws = 256;           // base draws the reported error is measured on
constexpr uint64_t kHeldOutFirst = 1ull << 32;  // first sample index of the held-out draws
constexpr uint32_t kTestPoints = 8;             // the stored test vector's base points
constexpr float kTestTolerance = 1e-4f;         // relative, as the embedded trajectories use
constexpr double kReferenceTolerance = 1e-8;    // dopri5 rtol = atol of the converged reference

// Sample error of x against the converged samples ref ([n, dim] each): RMS distance divided by
// the RMS spread of ref around its mean (docs/math.md, "Tuned solvers").
double sample_error(const std::vector<float>& x, const std::vector<float>& ref, uint32_t dim) {
  const size_t n = ref.size() / dim;
  std::vector<double> mean(dim, 0.0);
  for (size_t r = 0; r < n; ++r)
    for (uint32_t k = 0; k < dim; ++k) mean[k] += ref[r * dim + k];
  for (double& m : mean) m /= static_cast<double>(n);
  double dist = 0.0, spread = 0.0;
  for (size_t r = 0; r < n; ++r)
    for (uint32_t k = 0; k < dim; ++k) {
      const double d = static_cast<double>(x[r * dim + k]) - ref[r * dim + k];
      const double s = ref[r * dim + k] - mean[k];
      dist += d * d;
      spread += s * s;
    }
  if (!(spread > 0.0)) return std::numeric_limits<double>::infinity();
  return std::sqrt(dist / spread);
}

// The steps a method takes for at most `nfe` evaluations (0 when it cannot).
uint32_t steps_for(Method m, uint32_t nfe) {
  switch (m) {
    case Method::kEuler:
    case Method::kAB2:
      return nfe;
    case Method::kHeun:
    case Method::kMidpoint:
      return nfe / 2;
    case Method::kRK4:
    case Method::kRK4_38:
      return nfe / 4;
    case Method::kAB3:
      return nfe >= 4 ? nfe - 2 : 0;
    case Method::kAB4:
      return nfe >= 12 ? nfe - 9 : 0;
    case Method::kDopri5:
      break;
  }
  return 0;
}

// The grid of `steps` steps whose increments are softmax(theta), on [start, end]; the ends are
// exact.
std::vector<double> grid_from(const std::vector<double>& theta, double start, double end) {
  const double top = *std::max_element(theta.begin(), theta.end());
  std::vector<double> w(theta.size());
  double sum = 0.0;
  for (size_t i = 0; i < theta.size(); ++i) sum += w[i] = std::exp(theta[i] - top);
  std::vector<double> g(theta.size() + 1);
  g[0] = start;
  double acc = 0.0;
  for (size_t i = 0; i + 1 < theta.size(); ++i) {
    acc += w[i] / sum;
    g[i + 1] = start + (end - start) * acc;
  }
  g.back() = end;
  return g;
}

// theta whose softmax reproduces the increments of a grid family (log of the increments).
std::vector<double> theta_of(GridKind kind, double param, uint32_t steps) {
  std::vector<double> theta(steps);
  auto u = [&](double s) {
    switch (kind) {
      case GridKind::kShift:
        return param * s / (1.0 + (param - 1.0) * s);
      case GridKind::kPower:
        return 1.0 - std::pow(1.0 - s, param);
      case GridKind::kCosine:
        return 0.5 * (1.0 - std::cos(M_PI * s));
      case GridKind::kUniform:
        break;
    }
    return s;
  };
  for (uint32_t i = 0; i < steps; ++i)
    theta[i] = std::log(std::max(1e-12, u((i + 1.0) / steps) - u(i / double(steps))));
  return theta;
}

struct Candidate {
  Method method;
  std::vector<double> theta;
  double error = std::numeric_limits<double>::infinity();
  std::string init;  // the family it started from
};

class Tuner {
 public:
  // `conditioning`: the label every draw is sampled with (the plan holds the guidance weight).
  Tuner(Plan& plan, const ModelInfo& info, uint64_t seed, const Conditioning& conditioning)
      : plan_(plan), info_(info), seed_(seed), conditioning_(conditioning) {}

  // Converged samples of n draws from first_index, with the dopri5 reference.
  std::vector<float> reference(size_t n, uint64_t first) {
    SampleOptions o;
    o.seed = seed_;
    o.first_index = first;
    o.ode.method = Method::kDopri5;
    o.ode.rtol = o.ode.atol = kReferenceTolerance;
    std::vector<float> x(n * info_.dim);
    check(plan_.sample(n, o, conditioning_, x.data(), nullptr));
    return x;
  }
  // Samples of n draws from first_index with `method` on `grid`; false when the run fails
  // (a diverging grid is just a bad candidate).
  bool run(Method method, const std::vector<double>& grid, size_t n, uint64_t first,
           std::vector<float>* x) {
    SampleOptions o;
    o.seed = seed_;
    o.first_index = first;
    o.ode.method = method;
    o.ode.grid = grid.data();
    o.ode.grid_size = grid.size();
    x->resize(n * info_.dim);
    return plan_.sample(n, o, conditioning_, x->data(), nullptr).ok();
  }
  double error(Method method, const std::vector<double>& theta, const std::vector<float>& ref,
               uint64_t first) {
    ++evaluations_;
    std::vector<float> x;
    if (!run(method, grid_from(theta, info_.time_start, info_.time_end), ref.size() / info_.dim,
             first, &x))
      return std::numeric_limits<double>::infinity();
    const double e = sample_error(x, ref, info_.dim);
    return std::isfinite(e) ? e : std::numeric_limits<double>::infinity();
  }
  uint64_t evaluations() const { return evaluations_; }

 private:
  Plan& plan_;
  const ModelInfo& info_;
  uint64_t seed_;
  Conditioning conditioning_;
  uint64_t evaluations_ = 0;
};

std::string seconds_text(double s) { return format("%.1f s", s); }

// What the solver is tuned for: the velocity every sample follows, so it must be one the model
// can run for every draw. A class-conditional model needs --label (or --guidance 0, the null
// label alone); guidance needs a null label; condition vectors differ per row, so a model taking
// them is refused.
void check_tuning_conditioning(const ModelInfo& info, const ParsedArgs& args, double guidance) {
  if (info.cond_width > 0 && guidance != 0.0)
    throw RunError(
        "tune-solver: this model takes a condition vector per row, which a solver cannot be tuned "
        "for (only class labels: --label K); --guidance 0 tunes for its null vector");
  if (args.find("--guidance") && !info.takes_labels && info.cond_width == 0)
    throw RunError("--guidance: this model takes no class label, so there is nothing to guide");
  if (guidance != 1.0 && info.takes_labels && info.null_label < 0)
    throw RunError(
        format("--guidance: this model has no null label, so guidance weight %g "
               "cannot be run (only 1, the plain conditional model)",
               guidance));
  if (info.takes_labels && !args.find("--label") && guidance != 0.0)
    throw RunError(
        format("tune-solver: this model takes a class label: give --label K "
               "(0 to %u) to tune for that class",
               info.label_classes - 1));
}

int run_tune_solver(const ParsedArgs& args) {
  const uint32_t nfe = static_cast<uint32_t>(parse_uint("--nfe", args.required("--nfe"), 1, 4096));
  const std::string& output = args.required("--output");
  if (output.size() < 4 || output.compare(output.size() - 4, 4, ".sif") != 0)
    throw UsageError(format("--output: '%s' must name a .sif model file", output.c_str()));
  std::string name = format("tuned-%u", nfe);
  if (const std::string* n = args.find("--name")) name = *n;
  if (name.empty() || name.size() > Limits::kMaxSolverName)
    throw UsageError(format("--name: must have 1 to %u characters", Limits::kMaxSolverName));
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.' &&
        c != '+')
      throw UsageError(
          format("--name: '%s' holds '%c' (letters, digits and - _ . + only)", name.c_str(), c));
  const uint64_t seed = parse_seed(args);
  double budget = 300.0;
  if (const std::string* b = args.find("--time-budget")) {
    budget = parse_double("--time-budget", *b);
    if (!(budget > 0.0)) throw UsageError("--time-budget: SEC must be positive");
  }
  uint32_t sweeps = 8;
  if (const std::string* s = args.find("--sweeps"))
    sweeps = static_cast<uint32_t>(parse_uint("--sweeps", *s, 0, 1000));
  const Execution execution = parse_execution(args);
  const std::string& model_path = args.positional(0);
  check_distinct({{"MODEL", model_path}}, {{"--output", output}});
  prepare_outputs({{"--output", output}});
  const std::vector<unsigned char> file =
      read_regular_file(model_path, Limits::kMaxFileBytes, "model");
  std::unique_ptr<Model> model;
  check(Model::load(file.data(), file.size(), LoadOptions(), &model));
  const ModelInfo& info = model->info();
  const CliConditioning conditioning(args, *model, 0);
  check_tuning_conditioning(info, args, conditioning.guidance());
  const std::unique_ptr<Plan> plan = make_plan(*model, std::max(kTrainDraws, kHeldOutDraws),
                                               nullptr, execution, conditioning.guidance());
  const bool terminal = isatty(STDERR_FILENO) != 0;
  const auto started = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  auto status = [&](const std::string& line) {
    if (terminal) std::fprintf(stderr, "\r\033[Ktune-solver: %s", line.c_str());
  };

  Tuner tuner(*plan, info, seed, conditioning.conditioning());
  status("converged reference (dopri5)");
  const std::vector<float> train = tuner.reference(kTrainDraws, 0);
  const std::vector<float> held_out = tuner.reference(kHeldOutDraws, kHeldOutFirst);
  const uint64_t reference_nfe = plan->evaluations();

  // Every method that fits in the NFE, from every grid family: the best two are refined.
  struct Family {
    GridKind kind;
    double param;
  };
  const Family families[] = {{GridKind::kUniform, 0}, {GridKind::kCosine, 0},
                             {GridKind::kPower, 1.5}, {GridKind::kPower, 2.0},
                             {GridKind::kPower, 3.0}, {GridKind::kShift, 0.5},
                             {GridKind::kShift, 2.0}, {GridKind::kShift, 4.0}};
  const Method methods[] = {Method::kEuler,  Method::kHeun, Method::kMidpoint, Method::kRK4,
                            Method::kRK4_38, Method::kAB2,  Method::kAB3,      Method::kAB4};
  std::vector<Candidate> candidates;
  for (Method m : methods) {
    const uint32_t steps = steps_for(m, nfe);
    if (steps == 0) continue;
    Candidate best{m, {}, std::numeric_limits<double>::infinity(), ""};
    for (const Family& f : families) {
      std::vector<double> theta = theta_of(f.kind, f.param, steps);
      const double e = tuner.error(m, theta, train, 0);
      if (e < best.error)
        best = {m, theta, e,
                f.param ? format("%s:%g", grid_kind_name(f.kind), f.param)
                        : std::string(grid_kind_name(f.kind))};
    }
    candidates.push_back(best);
  }
  if (candidates.empty())
    throw UsageError(format("--nfe %u: no method fits in %u evaluations", nfe, nfe));
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.error < b.error; });
  if (candidates.size() > 2) candidates.resize(2);

  // Refinement: coordinate search on the grid's log-increments in a seeded order, halving the
  // step after a sweep without improvement. Deterministic for a seed unless the budget cuts it.
  std::mt19937_64 rng(seed ^ 0x5eed5017e5ULL);
  bool cut = false;
  for (Candidate& c : candidates) {
    double delta = 0.5;
    for (uint32_t sweep = 0; sweep < sweeps && !cut; ++sweep) {
      std::vector<size_t> order(c.theta.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::shuffle(order.begin(), order.end(), rng);
      bool improved = false;
      for (size_t i : order) {
        if (elapsed() > budget) {
          cut = true;
          break;
        }
        for (double sign : {1.0, -1.0}) {
          std::vector<double> trial = c.theta;
          trial[i] += sign * delta;
          const double e = tuner.error(c.method, trial, train, 0);
          if (e < c.error) {
            c.theta = trial;
            c.error = e;
            improved = true;
            break;
          }
        }
      }
      status(format("%s, sweep %u of %u, training error %.4g, %s", method_name(c.method), sweep + 1,
                    sweeps, c.error, seconds_text(elapsed()).c_str()));
      if (!improved) delta *= 0.5;
    }
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.error < b.error; });
  const Candidate& best = candidates.front();
  if (!std::isfinite(best.error))
    throw RunError(format("tune-solver: every candidate with %u evaluations diverged", nfe));

  StoredSolver solver;
  solver.name = name;
  solver.method = best.method;
  solver.grid = grid_from(best.theta, info.time_start, info.time_end);
  solver.nfe = 0;
  const double held_out_error = tuner.error(best.method, best.theta, held_out, kHeldOutFirst);
  solver.nfe = static_cast<uint32_t>(plan->evaluations());
  solver.sample_error = held_out_error;
  solver.label = conditioning.conditioning().label;
  solver.guidance = conditioning.guidance();
  // The test vector: base points (flow coordinates, the reference samples' encodings) and what
  // this solver maps them to.
  {
    OdeOptions reverse;
    reverse.method = Method::kDopri5;
    reverse.rtol = reverse.atol = kReferenceTolerance;
    std::vector<float> start(held_out.begin(), held_out.begin() + kTestPoints * info.dim);
    check(plan->encode(kTestPoints, start.data(), reverse, conditioning.conditioning(),
                       start.data()));
    std::vector<float> end(start.size());
    OdeOptions forward;
    forward.method = solver.method;
    forward.grid = solver.grid.data();
    forward.grid_size = solver.grid.size();
    check(plan->decode(kTestPoints, start.data(), forward, DivergenceOptions(),
                       conditioning.conditioning(), end.data(), nullptr));
    solver.test_start = start;
    solver.test_end = end;
    solver.test_tolerance = kTestTolerance;
  }
  std::vector<uint8_t> bytes;
  check(add_solvers(file.data(), file.size(), {solver}, &bytes));
  // The copy must load and hold the solver as tuned.
  std::unique_ptr<Model> written;
  check(Model::load(bytes.data(), bytes.size(), LoadOptions(), &written));
  check(write_file_atomic(output.c_str(), bytes.data(), bytes.size()));
  if (terminal) std::fputs("\r\033[K", stderr);
  std::printf("solver        %s\n", name.c_str());
  std::printf("method        %s, %zu steps, NFE %u (started from the %s grid)\n",
              method_name(best.method), solver.grid.size() - 1, solver.nfe, best.init.c_str());
  std::printf("sample error  %.4g on %zu held-out draws (%.4g on the %zu fitted)\n", held_out_error,
              kHeldOutDraws, best.error, kTrainDraws);
  if (solver.label >= 0 || solver.guidance != 1.0)
    std::printf("tuned for     label %d, guidance %g\n", solver.label, solver.guidance);
  std::printf("reference     dopri5, rtol = atol = %g, NFE %llu\n", kReferenceTolerance,
              static_cast<unsigned long long>(reference_nfe));
  std::printf("grid         ");
  for (double t : solver.grid) std::printf(" %.6g", t);
  std::printf("\n");
  std::fprintf(stderr, "siflow tune-solver: %llu candidate runs, %.1f s%s; wrote %s\n",
               static_cast<unsigned long long>(tuner.evaluations()), elapsed(),
               cut ? " (stopped by --time-budget: the result depends on timing)" : "",
               output.c_str());
  return 0;
}

}  // namespace

Command tune_solver_command() {
  return {"tune-solver",
          "MODEL --nfe N -o OUT.sif [--name NAME] [--label K] [--guidance W] [--seed S] "
          "[--time-budget SEC]",
          "fit a few-step solver to the model and store it",
          "Fits a solver with at most N network evaluations per sample to this model: for\n"
          "every fixed-grid method that fits in N (euler, heun, midpoint, rk4, rk4-38, ab2..ab4),\n"
          "the best grid family, then the best two refined by a seeded coordinate search on the\n"
          "grid, minimising the sample error against dopri5 (rtol = atol = 1e-8) on 256 seeded\n"
          "base draws. The error reported and stored is measured on 256 held-out draws. Writes\n"
          "a copy of MODEL with the solver (and a test vector validate re-runs) to OUT.sif,\n"
          "replacing a stored solver of the same name. Deterministic for a seed unless\n"
          "--time-budget stops it early (it says so).\n"
          "A class-conditional model is tuned for one class, --label K, and the guided velocity\n"
          "v(null) + W (v(K) - v(null)) of --guidance W (default 1; other weights need a null\n"
          "label); the file records both and validate re-runs the test vector with them.",
          {{"--nfe", nullptr, "N", "network evaluations per sample (required)"},
           {"--output", "-o", "FILE", "the model with the solver (.sif; required)"},
           {"--name", nullptr, "NAME", "the solver's name (default tuned-N)"},
           {"--seed", nullptr, "S", "seed of the base draws and the search (default 0)"},
           {"--time-budget", nullptr, "SEC", "stop refining after SEC seconds (default 300)"},
           {"--sweeps", nullptr, "K", "coordinate-search sweeps per candidate (default 8)"},
           {"--label", nullptr, "K", "tune for class label K (class-conditional models)"},
           kGuidanceOption,
           kThreadsOption,
           kBackendOption},
          run_tune_solver};
}

}  // namespace siflow::cli
