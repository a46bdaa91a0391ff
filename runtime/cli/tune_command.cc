// SPDX-License-Identifier: Apache-2.0
// siflow tune-solver: fits a fixed-grid solver of a given NFE to a model (the method, its time
// grid and, for ab2..ab4, per-step coefficients) against the adaptive dopri5 reference on seeded
// base draws, measures it on held-out draws, and stores it with a test vector in a copy of the
// model. Public siflow API only.
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

constexpr size_t kDefaultDraws = 1024;             // base draws fitted on, and as many held out
constexpr uint64_t kHeldOutFirst = 1ull << 32;     // first sample index of the held-out draws
constexpr uint64_t kValidationFirst = 1ull << 31;  // of the draws that choose when to stop
constexpr uint32_t kTestPoints = 8;                // the stored test vector's base points
constexpr float kTestTolerance = 1e-4f;            // relative, as the embedded trajectories use
constexpr double kReferenceTolerance = 1e-8;       // dopri5 rtol = atol of the converged reference
constexpr double kDifferenceStep = 1e-3;           // forward-difference step of every parameter
// Fitted parameters at most this fraction of the fitted values (draws x dim); more would fit
// the draws rather than the model, so coefficients are then left out.
constexpr double kMaxParameterShare = 0.125;

// Converged samples of a set of base draws, with 1 / (RMS spread around their mean): the sample
// error of x is the RMS of (x - x_ref) times `scale` (docs/math.md, "Tuned solvers").
struct Reference {
  std::vector<float> x;
  uint64_t first = 0;
  double scale = 0.0;
};

double spread_scale(const std::vector<float>& ref, uint32_t dim) {
  const size_t n = ref.size() / dim;
  std::vector<double> mean(dim, 0.0);
  for (size_t r = 0; r < n; ++r)
    for (uint32_t k = 0; k < dim; ++k) mean[k] += ref[r * dim + k];
  for (double& m : mean) m /= static_cast<double>(n);
  double spread = 0.0;
  for (size_t r = 0; r < n; ++r)
    for (uint32_t k = 0; k < dim; ++k) {
      const double s = ref[r * dim + k] - mean[k];
      spread += s * s;
    }
  return spread > 0.0 ? 1.0 / std::sqrt(spread) : 0.0;
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

int multistep_order_of(Method m) {
  return m == Method::kAB2 ? 2 : m == Method::kAB3 ? 3 : m == Method::kAB4 ? 4 : 1;
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

// The per-step coefficients of ab<k> on `grid` moved by `offsets` from its Adams-Bashforth
// weights: offsets hold k - 1 values a step (for the older velocities, j = 1..k-1) and the
// newest takes 1 minus the others, so every step's coefficients sum to 1 (docs/math.md,
// "Per-step coefficients"). Empty when offsets is; false when the grid is not strictly
// increasing (a rounded extreme candidate).
bool coefficients_of(Method m, const std::vector<double>& grid, const std::vector<double>& offsets,
                     std::vector<double>* c) {
  c->clear();
  if (offsets.empty()) return true;
  c->resize(solver_coefficient_count(m, grid.size() - 1));
  if (!adams_bashforth_coefficients(m, grid.data(), grid.size(), c->data()).ok()) return false;
  const int k = multistep_order_of(m);
  for (size_t row = 0; row * k < c->size(); ++row) {
    double older = 0.0;
    for (int j = 1; j < k; ++j) older += (*c)[row * k + j] += offsets[row * (k - 1) + j - 1];
    (*c)[row * k] = 1.0 - older;
  }
  return true;
}

// The coefficient offsets a candidate of method m with `steps` steps fits (0 for one-step
// methods).
size_t offset_count(Method m, uint32_t steps) {
  const int k = multistep_order_of(m);
  return k > 1 ? solver_coefficient_count(m, steps) / k * (k - 1) : 0;
}

struct Candidate {
  Method method;
  std::vector<double> theta;    // grid log-increments
  std::vector<double> offsets;  // coefficient offsets (empty: the Adams-Bashforth weights)
  double error = std::numeric_limits<double>::infinity();       // on the fitted draws
  double validation = std::numeric_limits<double>::infinity();  // on the validation draws
  std::string init;                                             // the family it started from
};

class Tuner {
 public:
  // `conditioning`: the label every draw is sampled with (the plan holds the guidance weight).
  Tuner(Plan& plan, const ModelInfo& info, uint64_t seed, const Conditioning& conditioning)
      : plan_(plan), info_(info), seed_(seed), conditioning_(conditioning) {}

  // Converged samples of n draws from first_index, with the dopri5 reference.
  Reference reference(size_t n, uint64_t first) {
    SampleOptions o;
    o.seed = seed_;
    o.first_index = first;
    o.ode.method = Method::kDopri5;
    o.ode.rtol = o.ode.atol = kReferenceTolerance;
    Reference r;
    r.x.resize(n * info_.dim);
    r.first = first;
    check(plan_.sample(n, o, conditioning_, r.x.data(), nullptr));
    r.scale = spread_scale(r.x, info_.dim);
    return r;
  }
  // Scaled residuals (x - x_ref) * scale of candidate c on ref's draws; false when the run fails
  // or leaves a non-finite value (a diverging candidate is just a bad one).
  bool residuals(const Candidate& c, const Reference& ref, std::vector<double>* r) {
    ++evaluations_;
    const std::vector<double> grid = grid_from(c.theta, info_.time_start, info_.time_end);
    std::vector<double> coefficients;
    if (!coefficients_of(c.method, grid, c.offsets, &coefficients)) return false;
    SampleOptions o;
    o.seed = seed_;
    o.first_index = ref.first;
    o.ode.method = c.method;
    o.ode.grid = grid.data();
    o.ode.grid_size = grid.size();
    o.ode.coefficients = coefficients.empty() ? nullptr : coefficients.data();
    o.ode.coefficient_count = coefficients.size();
    x_.resize(ref.x.size());
    if (!(ref.scale > 0.0) ||
        !plan_.sample(ref.x.size() / info_.dim, o, conditioning_, x_.data(), nullptr).ok())
      return false;
    r->resize(x_.size());
    for (size_t i = 0; i < x_.size(); ++i) {
      (*r)[i] = (static_cast<double>(x_[i]) - ref.x[i]) * ref.scale;
      if (!std::isfinite((*r)[i])) return false;
    }
    return true;
  }
  // The sample error of c on ref's draws (infinite when the run fails).
  double error(const Candidate& c, const Reference& ref) {
    std::vector<double> r;
    if (!residuals(c, ref, &r)) return std::numeric_limits<double>::infinity();
    return norm(r);
  }
  static double norm(const std::vector<double>& r) {
    double sum = 0.0;
    for (double v : r) sum += v * v;
    return std::sqrt(sum);
  }
  uint64_t evaluations() const { return evaluations_; }

 private:
  Plan& plan_;
  const ModelInfo& info_;
  uint64_t seed_;
  Conditioning conditioning_;
  uint64_t evaluations_ = 0;
  std::vector<float> x_;
};

// Solves (A + lambda diag(A)) d = -g for the symmetric P x P matrix A by Cholesky; false when
// the damped matrix is not positive definite.
bool damped_solve(const std::vector<double>& a, const std::vector<double>& g, double lambda,
                  std::vector<double>* d) {
  const size_t p = g.size();
  double top = 0.0;
  for (size_t i = 0; i < p; ++i) top = std::max(top, a[i * p + i]);
  std::vector<double> l(a);
  for (size_t i = 0; i < p; ++i) l[i * p + i] += lambda * std::max(a[i * p + i], 1e-9 * top);
  for (size_t j = 0; j < p; ++j) {
    double diag = l[j * p + j];
    for (size_t k = 0; k < j; ++k) diag -= l[j * p + k] * l[j * p + k];
    if (!(diag > 0.0)) return false;
    l[j * p + j] = std::sqrt(diag);
    for (size_t i = j + 1; i < p; ++i) {
      double v = l[i * p + j];
      for (size_t k = 0; k < j; ++k) v -= l[i * p + k] * l[j * p + k];
      l[i * p + j] = v / l[j * p + j];
    }
  }
  d->assign(p, 0.0);
  for (size_t i = 0; i < p; ++i) {  // L y = -g
    double v = -g[i];
    for (size_t k = 0; k < i; ++k) v -= l[i * p + k] * (*d)[k];
    (*d)[i] = v / l[i * p + i];
  }
  for (size_t i = p; i-- > 0;) {  // L^T d = y
    double v = (*d)[i];
    for (size_t k = i + 1; k < p; ++k) v -= l[k * p + i] * (*d)[k];
    (*d)[i] = v / l[i * p + i];
  }
  return true;
}

// The iterations of refine_least_squares; `iterate(k)` after each accepted step.
template <typename Stop, typename Iterate>
uint32_t refine_iterates(Tuner& tuner, Candidate& c, const Reference& train, bool fit_grid,
                         bool fit_coefficients, uint32_t iterations, Stop&& stop,
                         Iterate&& iterate) {
  const size_t grid_params = fit_grid ? c.theta.size() : 0;
  const size_t p = grid_params + (fit_coefficients ? c.offsets.size() : 0);
  if (p == 0) return 0;
  auto get = [&](size_t i) -> double& {
    return i < grid_params ? c.theta[i] : c.offsets[i - grid_params];
  };
  std::vector<double> r0;
  if (!tuner.residuals(c, train, &r0)) return 0;
  c.error = Tuner::norm(r0);
  const size_t m = r0.size();
  std::vector<double> jac(p * m), a(p * p), g(p), d, r;
  double lambda = 1e-3;
  uint32_t done = 0;
  for (; done < iterations; ++done) {
    for (size_t i = 0; i < p; ++i) {
      if (stop()) return done;
      const double keep = get(i);
      get(i) = keep + kDifferenceStep;
      const bool ok = tuner.residuals(c, train, &r);
      get(i) = keep;
      for (size_t k = 0; k < m; ++k) jac[i * m + k] = ok ? (r[k] - r0[k]) / kDifferenceStep : 0.0;
    }
    for (size_t i = 0; i < p; ++i) {
      double gi = 0.0;
      for (size_t k = 0; k < m; ++k) gi += jac[i * m + k] * r0[k];
      g[i] = gi;
      for (size_t j = 0; j <= i; ++j) {
        double v = 0.0;
        for (size_t k = 0; k < m; ++k) v += jac[i * m + k] * jac[j * m + k];
        a[i * p + j] = a[j * p + i] = v;
      }
    }
    bool accepted = false;
    const double before = c.error;
    for (int attempt = 0; attempt < 10 && !accepted; ++attempt, lambda *= 4.0) {
      if (stop()) return done;
      if (!damped_solve(a, g, lambda, &d)) continue;
      Candidate trial = c;
      for (size_t i = 0; i < p; ++i) {
        double& v = i < grid_params ? trial.theta[i] : trial.offsets[i - grid_params];
        v += d[i];
      }
      if (!tuner.residuals(trial, train, &r)) continue;
      const double e = Tuner::norm(r);
      if (e < c.error) {
        trial.error = e;
        c = trial;
        r0 = r;
        accepted = true;
        lambda = std::max(lambda / 3.0, 1e-9);
      }
    }
    if (accepted) iterate(done + 1);
    // Stop when a step finds nothing better, or gains less than 0.1 %.
    if (!accepted || before - c.error < 1e-3 * before) return done + 1;
  }
  return done;
}

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

// Levenberg-Marquardt on the least-squares sample error of c over the fitted draws: the free
// parameters are the grid's log-increments (fit_grid) and the coefficient offsets
// (fit_coefficients); the Jacobian by forward differences, one run per parameter; a step is
// kept only when it lowers the fitted error. The sample error is dominated by a few draws, so
// the fit can follow those draws rather than the model: c ends as the iterate (the start
// included) with the lowest error on the separate validation draws. No random numbers:
// deterministic unless `stop` (the time budget) cuts it.
template <typename Stop, typename Report>
void refine_least_squares(Tuner& tuner, Candidate& c, const Reference& train,
                          const Reference& validation, bool fit_grid, bool fit_coefficients,
                          uint32_t iterations, Stop&& stop, Report&& report) {
  Candidate chosen = c;
  refine_iterates(tuner, c, train, fit_grid, fit_coefficients, iterations, stop, [&](uint32_t it) {
    const double v = tuner.error(c, validation);
    if (v < chosen.validation) {
      chosen = c;
      chosen.validation = v;
    }
    report(it, c.error, v);
  });
  c = chosen;
}

// How tune-solver fits per-step coefficients (--coefficients).
enum class CoefficientFit { kNone, kAfterGrid, kJoint };

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
  uint32_t iterations = 30;
  if (const std::string* s = args.find("--iterations"))
    iterations = static_cast<uint32_t>(parse_uint("--iterations", *s, 0, 1000));
  size_t draws = kDefaultDraws;
  if (const std::string* s = args.find("--draws"))
    draws = static_cast<size_t>(parse_uint("--draws", *s, 16, 65536));
  CoefficientFit fit = CoefficientFit::kJoint;
  if (const std::string* s = args.find("--coefficients")) {
    if (*s == "none")
      fit = CoefficientFit::kNone;
    else if (*s == "after-grid")
      fit = CoefficientFit::kAfterGrid;
    else if (*s != "joint")
      throw UsageError(format("--coefficients: '%s' is not none, after-grid or joint", s->c_str()));
  }
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
  const std::unique_ptr<Plan> plan =
      make_plan(*model, draws, nullptr, execution, conditioning.guidance());
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
  const Reference train = tuner.reference(draws, 0);
  const Reference held_out = tuner.reference(draws, kHeldOutFirst);
  const Reference validation = tuner.reference(draws, kValidationFirst);
  const uint64_t reference_nfe = plan->evaluations();

  // Every method that fits in the NFE, from every grid family: the best two are refined, and the
  // best multistep method too when coefficients are fitted.
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
    Candidate best{
        m, {}, {}, std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity(),
        ""};
    for (const Family& f : families) {
      Candidate c{m,   theta_of(f.kind, f.param, steps),        {},
                  0.0, std::numeric_limits<double>::infinity(), ""};
      c.error = tuner.error(c, train);
      if (c.error < best.error) {
        best = c;
        best.init = f.param ? format("%s:%g", grid_kind_name(f.kind), f.param)
                            : std::string(grid_kind_name(f.kind));
      }
    }
    candidates.push_back(best);
  }
  if (candidates.empty())
    throw UsageError(format("--nfe %u: no method fits in %u evaluations", nfe, nfe));
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.error < b.error; });
  {
    std::vector<Candidate> kept(candidates.begin(),
                                candidates.begin() + std::min<size_t>(2, candidates.size()));
    bool multistep = false;
    for (const Candidate& c : kept) multistep = multistep || is_multistep(c.method);
    if (fit != CoefficientFit::kNone && !multistep)
      for (const Candidate& c : candidates)
        if (is_multistep(c.method) && std::isfinite(c.error)) {
          kept.push_back(c);
          break;
        }
    candidates = kept;
  }

  // Grid refinement: coordinate search on the grid's log-increments in a seeded order, halving
  // the step after a sweep without improvement. Then per-step coefficients (multistep methods)
  // by least squares, jointly with the grid or after it. Deterministic for a seed unless the
  // budget cuts it.
  std::mt19937_64 rng(seed ^ 0x5eed5017e5ULL);
  bool cut = false;
  auto stop = [&] { return cut = cut || elapsed() > budget; };
  const double fitted_values = static_cast<double>(draws) * info.dim;
  for (Candidate& c : candidates) {
    double delta = 0.5;
    for (uint32_t sweep = 0; sweep < sweeps && !cut; ++sweep) {
      std::vector<size_t> order(c.theta.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::shuffle(order.begin(), order.end(), rng);
      bool improved = false;
      for (size_t i : order) {
        if (stop()) break;
        for (double sign : {1.0, -1.0}) {
          Candidate trial = c;
          trial.theta[i] += sign * delta;
          const double e = tuner.error(trial, train);
          if (e < c.error) {
            c = trial;
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
    c.validation = tuner.error(c, validation);
    if (fit == CoefficientFit::kNone || cut) continue;
    const size_t offsets = offset_count(c.method, static_cast<uint32_t>(c.theta.size()));
    const bool fit_grid = fit == CoefficientFit::kJoint;
    const size_t parameters = offsets + (fit_grid ? c.theta.size() : 0);
    // Coefficients only while the parameters stay a small share of the fitted values.
    const bool fit_coefficients = offsets > 0 && parameters <= kMaxParameterShare * fitted_values;
    if (fit_coefficients) c.offsets.assign(offsets, 0.0);
    refine_least_squares(
        tuner, c, train, validation, fit_grid, fit_coefficients, iterations, stop,
        [&](uint32_t it, double e, double v) {
          status(
              format("%s, least squares %u of %u, error %.4g fitted, %.4g "
                     "validation, %s",
                     method_name(c.method), it, iterations, e, v, seconds_text(elapsed()).c_str()));
        });
  }
  // The candidate with the lowest validation error (the fitted error when the budget cut the
  // search before any validation run).
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) {
                     return std::isfinite(a.validation) || std::isfinite(b.validation)
                                ? a.validation < b.validation
                                : a.error < b.error;
                   });
  Candidate best = candidates.front();
  if (!std::isfinite(best.error))
    throw RunError(format("tune-solver: every candidate with %u evaluations diverged", nfe));
  // Offsets the search left at zero are the Adams-Bashforth weights: store none then.
  if (std::all_of(best.offsets.begin(), best.offsets.end(), [](double v) { return v == 0.0; }))
    best.offsets.clear();

  StoredSolver solver;
  solver.name = name;
  solver.method = best.method;
  solver.grid = grid_from(best.theta, info.time_start, info.time_end);
  if (!coefficients_of(best.method, solver.grid, best.offsets, &solver.coefficients))
    throw RunError("tune-solver: the fitted grid is not strictly increasing");
  const double held_out_error = tuner.error(best, held_out);
  solver.nfe = static_cast<uint32_t>(plan->evaluations());
  solver.sample_error = held_out_error;
  solver.label = conditioning.conditioning().label;
  solver.guidance = conditioning.guidance();
  // The same grid with the Adams-Bashforth weights, for the report: what the coefficients gain.
  double held_out_plain = held_out_error;
  if (!best.offsets.empty()) {
    Candidate plain = best;
    plain.offsets.clear();
    held_out_plain = tuner.error(plain, held_out);
  }
  // The test vector: base points (flow coordinates, the reference samples' encodings) and what
  // this solver maps them to.
  {
    OdeOptions reverse;
    reverse.method = Method::kDopri5;
    reverse.rtol = reverse.atol = kReferenceTolerance;
    std::vector<float> start(held_out.x.begin(), held_out.x.begin() + kTestPoints * info.dim);
    check(plan->encode(kTestPoints, start.data(), reverse, conditioning.conditioning(),
                       start.data()));
    std::vector<float> end(start.size());
    OdeOptions forward;
    forward.method = solver.method;
    forward.grid = solver.grid.data();
    forward.grid_size = solver.grid.size();
    forward.coefficients = solver.coefficients.empty() ? nullptr : solver.coefficients.data();
    forward.coefficient_count = solver.coefficients.size();
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
  std::printf(
      "sample error  %.4g on %zu held-out draws (%.4g on the %zu fitted, %.4g on the %zu "
      "validation draws)\n",
      held_out_error, draws, best.error, draws, best.validation, draws);
  if (!solver.coefficients.empty())
    std::printf(
        "coefficients  %zu per-step (%zu fitted, %s; %zu fitted values); held-out "
        "error %.4g with the Adams-Bashforth weights on this grid\n",
        solver.coefficients.size(), best.offsets.size(),
        fit == CoefficientFit::kJoint ? "jointly with the grid" : "after the grid",
        static_cast<size_t>(fitted_values), held_out_plain);
  else
    std::printf("coefficients  none (%s)\n",
                fit == CoefficientFit::kNone ? "--coefficients none"
                : !is_multistep(best.method) ? "a one-step method"
                : offset_count(best.method, static_cast<uint32_t>(best.theta.size())) +
                            (fit == CoefficientFit::kJoint ? best.theta.size() : 0) >
                        kMaxParameterShare * fitted_values
                    ? "more parameters than 1/8 of the fitted values; raise --draws"
                : cut ? "the time budget ran out first"
                      : "none lowered the error");
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
          "[--time-budget SEC] [--coefficients MODE] [--draws D]",
          "fit a few-step solver to the model and store it",
          "Fits a solver with at most N network evaluations per sample to this model: for\n"
          "every fixed-grid method that fits in N (euler, heun, midpoint, rk4, rk4-38, ab2..ab4),\n"
          "the best grid family; then the best two (and the best of ab2..ab4, when coefficients\n"
          "are fitted) refined by a seeded coordinate search on the grid and by least squares\n"
          "(Levenberg-Marquardt, forward-difference Jacobian) on the grid and, for ab2..ab4, on\n"
          "per-step coefficients: each step's weights of its last k velocities, summing to 1\n"
          "(docs/math.md). All minimise the sample error against dopri5 (rtol = atol = 1e-8) on\n"
          "D seeded base draws (default 1024); the least squares ends at its iterate with the\n"
          "lowest error on D validation draws, which also choose among the candidates. The error\n"
          "reported and stored is measured on D held-out draws, beside the same grid's error\n"
          "with the Adams-Bashforth weights.\n"
          "Coefficients are left out when the fitted parameters would exceed 1/8 of the fitted\n"
          "values (D x dim). Writes a copy of MODEL with the solver (and a test vector validate\n"
          "re-runs) to OUT.sif, replacing a stored solver of the same name. Deterministic for a\n"
          "seed unless --time-budget stops it early (it says so).\n"
          "A class-conditional model is tuned for one class, --label K, and the guided velocity\n"
          "v(null) + W (v(K) - v(null)) of --guidance W (default 1; other weights need a null\n"
          "label); the file records both and validate re-runs the test vector with them.",
          {{"--nfe", nullptr, "N", "network evaluations per sample (required)"},
           {"--output", "-o", "FILE", "the model with the solver (.sif; required)"},
           {"--name", nullptr, "NAME", "the solver's name (default tuned-N)"},
           {"--seed", nullptr, "S", "seed of the base draws and the search (default 0)"},
           {"--time-budget", nullptr, "SEC",
            "stop refining after SEC wall-clock seconds (default 300)"},
           {"--sweeps", nullptr, "K", "coordinate-search sweeps per candidate (default 8)"},
           {"--coefficients", nullptr, "MODE",
            "joint (default: least squares on grid and coefficients), after-grid (coefficients "
            "only, the searched grid kept) or none (the coordinate search on the grid alone)"},
           {"--iterations", nullptr, "K", "least-squares iterations per candidate (default 30)"},
           {"--draws", nullptr, "D",
            "base draws fitted on, and as many for validation and held out (default 1024)"},
           {"--label", nullptr, "K", "tune for class label K (class-conditional models)"},
           kGuidanceOption,
           kThreadsOption,
           kBackendOption,
           kTuneKernelsOption},
          run_tune_solver};
}

}  // namespace siflow::cli
