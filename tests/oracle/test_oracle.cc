// SPDX-License-Identifier: Apache-2.0
// Integrators, likelihoods, score and SDE against the closed-form Gaussian(-mixture) oracle:
// convergence orders in double, log rho_1 from the augmented ODE, sampled moments.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gaussian_oracle.hpp"
#include "integrate/ode.hpp"
#include "integrate/score.hpp"
#include "integrate/sde.hpp"
#include "math/random.hpp"

namespace {

using oracle::Gaussian;
using oracle::MixtureFlow;
using oracle::Path;
using siflow::Method;
using siflow::Status;
using siflow::TimeGrid;

template <typename T>
struct Workspace {
  explicit Workspace(size_t n, size_t rows) {
    for (int k = 0; k < siflow::kMaxStages; ++k) {
      stages[k].assign(n, 0);
      divs[k].assign(rows, 0);
      ws.stage[k] = stages[k].data();
      ws.stage_div[k] = divs[k].data();
    }
    state.assign(n, 0);
    ws.state = state.data();
  }
  std::vector<T> stages[siflow::kMaxStages], state;
  std::vector<double> divs[siflow::kMaxStages];
  siflow::OdeWorkspace<T> ws;
};

auto no_check = [](size_t) { return Status(); };

// Integrates rows of x forward over [0, 1] in K steps (or backward with ell when ell != null).
template <typename T>
void integrate(MixtureFlow& flow, Method method, size_t steps, std::vector<T>& x,
               std::vector<double>* ell, bool backward, double end = 1.0) {
  const uint32_t d = flow.dim();
  const size_t rows = x.size() / d;
  Workspace<T> w(x.size(), rows);
  TimeGrid grid = TimeGrid::uniform(0.0, end, steps);
  grid.backward = backward;
  Status s = siflow::integrate_ode(flow, siflow::tableau(method), grid, rows, d, x.data(),
                                   ell ? ell->data() : nullptr, w.ws, no_check);
  REQUIRE(s.ok());
}

MixtureFlow single_gaussian(Path path) {
  return MixtureFlow({{1.0, {0.0, 0.0}, {1.0, 1.0}}}, {{1.0, {2.0, -1.0}, {0.25, 2.0}}}, path);
}

MixtureFlow two_moons_like(Path path) {
  return MixtureFlow({{1.0, {0.0, 0.0}, {1.0, 1.0}}},
                     {{0.3, {2.0, 1.0}, {0.2, 0.3}},
                      {0.5, {-1.5, 0.5}, {0.4, 0.1}},
                      {0.2, {0.0, -2.0}, {0.3, 0.3}}},
                     path);
}

const std::vector<double> kStarts = {0.3, -0.8, -1.2, 0.4, 1.7, 1.1, -0.2, -1.9};

// Max error at t = 1 of `method` with K steps against the Gaussian flow map
// x_1 = m_1 + sqrt(Sigma_1 / Sigma_0) (x_0 - m_0), exact for Gaussian endpoints.
double gaussian_error(Method method, size_t steps, Path path) {
  MixtureFlow flow = single_gaussian(path);
  std::vector<double> x = kStarts;
  integrate(flow, method, steps, x, nullptr, false);
  const double mean1[2] = {2.0, -1.0}, var1[2] = {0.25, 2.0};
  double err = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double exact = mean1[i % 2] + std::sqrt(var1[i % 2]) * kStarts[i];
    err = std::max(err, std::fabs(x[i] - exact));
  }
  return err;
}

// Max error at t = 1 on the mixture flow against a reference RK4 solution with 4096 steps
// (its own error, ~1e-14, is far below the errors measured).
double mixture_error(Method method, size_t steps, Path path) {
  MixtureFlow flow = two_moons_like(path);
  std::vector<double> x = kStarts, reference = kStarts;
  integrate(flow, method, steps, x, nullptr, false);
  integrate(flow, Method::kRK4, 4096, reference, nullptr, false);
  double err = 0.0;
  for (size_t i = 0; i < x.size(); ++i) err = std::max(err, std::fabs(x[i] - reference[i]));
  return err;
}

// The order measured on a step-halving sequence: log2 of successive error ratios, averaged
// over the last two halvings (the first is still pre-asymptotic for some methods). The
// mixture is used because the single-Gaussian map is special: the midpoint rule happens to
// converge at third order on its linear-path flow.
double measured_order(Method method, Path path, size_t first_steps) {
  double e[4];
  for (int i = 0; i < 4; ++i) e[i] = mixture_error(method, first_steps << i, path);
  return 0.5 * (std::log2(e[1] / e[2]) + std::log2(e[2] / e[3]));
}

}  // namespace

TEST_CASE("measured convergence orders on the Gaussian oracle are 1, 2, 2, 4, 4") {
  // Steps 32..256: the smallest error (~2e-10 for RK4) stays far above the reference's
  // (~1e-14), and at 32 steps the narrow mixture components are already resolved (with 8
  // steps RK4-3/8 still shows order ~2.9 on the linear path).
  struct Case {
    Method method;
    double order;
    size_t first_steps;
  };
  const Case cases[] = {{Method::kEuler, 1, 32},
                        {Method::kHeun, 2, 32},
                        {Method::kMidpoint, 2, 32},
                        {Method::kRK4, 4, 32},
                        {Method::kRK4_38, 4, 32}};
  for (Path path : {Path::kTrig, Path::kLinear}) {
    for (const Case& c : cases) {
      const double order = measured_order(c.method, path, c.first_steps);
      const std::string method = siflow::method_name(c.method);
      const std::string path_name = path == Path::kTrig ? "trig" : "linear";
      CAPTURE(method);
      CAPTURE(path_name);
      CAPTURE(order);
      CHECK(std::fabs(order - c.order) <= 0.3);
    }
  }
}

TEST_CASE("RK4 with 64 steps matches the Gaussian flow map to 1e-8 in double") {
  // RK4's error constant on this smooth field gives ~1e-10 at h = 1/64; 1e-8 leaves margin.
  CHECK(gaussian_error(Method::kRK4, 64, Path::kTrig) < 1e-8);
}

TEST_CASE("log rho_1 from the backward augmented ODE matches the mixture's closed form") {
  // DESIGN target: RK4 with 64 steps within 1e-4 of the exact log-density.
  for (Path path : {Path::kTrig, Path::kLinear}) {
    MixtureFlow flow = two_moons_like(path);
    std::vector<double> x = {2.0, 1.0, -1.4, 0.6, 0.1, -2.2, 0.5, 0.5};
    const std::vector<double> data = x;
    std::vector<double> ell(x.size() / 2, 0.0);
    integrate(flow, Method::kRK4, 64, x, &ell, true);
    for (size_t r = 0; r < ell.size(); ++r) {
      const double log_rho0 =
          -0.5 * (x[2 * r] * x[2 * r] + x[2 * r + 1] * x[2 * r + 1]) - std::log(2 * M_PI);
      const double exact = flow.evaluate(1.0, &data[2 * r], nullptr, nullptr, nullptr);
      CAPTURE(r);
      CHECK(std::fabs(log_rho0 + ell[r] - exact) <= 1e-4);
    }
  }
}

TEST_CASE("log rho_s at an intermediate time s matches the closed form") {
  MixtureFlow flow = two_moons_like(Path::kTrig);
  const double s = 0.6;
  std::vector<double> x = {1.0, 0.2, -0.9, 0.4};
  const std::vector<double> data = x;
  std::vector<double> ell(2, 0.0);
  integrate(flow, Method::kRK4, 64, x, &ell, true, s);
  for (size_t r = 0; r < 2; ++r) {
    const double log_rho0 =
        -0.5 * (x[2 * r] * x[2 * r] + x[2 * r + 1] * x[2 * r + 1]) - std::log(2 * M_PI);
    CHECK(std::fabs(log_rho0 + ell[r] -
                    flow.evaluate(s, &data[2 * r], nullptr, nullptr, nullptr)) <= 1e-4);
  }
}

TEST_CASE("forward likelihood: log rho_1(X1) = log rho_0(X0) - l(1)") {
  MixtureFlow flow = two_moons_like(Path::kTrig);
  std::vector<double> x = {0.3, -0.5, 1.2, 0.8};
  const std::vector<double> start = x;
  std::vector<double> ell(2, 0.0);
  integrate(flow, Method::kRK4, 64, x, &ell, false);
  for (size_t r = 0; r < 2; ++r) {
    const double log_rho0 =
        -0.5 * (start[2 * r] * start[2 * r] + start[2 * r + 1] * start[2 * r + 1]) -
        std::log(2 * M_PI);
    CHECK(std::fabs(log_rho0 - ell[r] - flow.evaluate(1.0, &x[2 * r], nullptr, nullptr, nullptr)) <=
          1e-4);
  }
}

TEST_CASE("sampled moments of the ODE push-forward match the target mixture") {
  MixtureFlow flow = two_moons_like(Path::kTrig);
  const size_t n = 4000;
  std::vector<float> x(2 * n);
  for (size_t i = 0; i < n; ++i) siflow::fill_normals(7, i, 0, 0, &x[2 * i], 2);
  integrate(flow, Method::kRK4, 32, x, nullptr, false);
  std::vector<double> mean, var;
  flow.target_moments(&mean, &var);
  for (int k = 0; k < 2; ++k) {
    double m = 0.0, v = 0.0;
    for (size_t i = 0; i < n; ++i) m += x[2 * i + k];
    m /= n;
    for (size_t i = 0; i < n; ++i) v += (x[2 * i + k] - m) * (x[2 * i + k] - m);
    v /= n - 1;
    // 4 standard errors of the mean (sqrt(var/n)) and of the variance (~var*sqrt(2/n)
    // inflated x2 for the mixture's heavier fourth moment).
    CHECK(std::fabs(m - mean[k]) <= 4 * std::sqrt(var[k] / n));
    CHECK(std::fabs(v - var[k]) <= 8 * var[k] * std::sqrt(2.0 / n));
  }
}

TEST_CASE("the score computed from the velocity matches the mixture's closed-form score") {
  // Base N(mu, diag sigma^2) with mu != 0 exercises the W*mu term of the formula.
  MixtureFlow flow({{1.0, {0.5, -0.3}, {1.5, 0.7}}},
                   {{0.4, {2.0, 1.0}, {0.2, 0.3}}, {0.6, {-1.5, 0.5}, {0.4, 0.1}}}, Path::kTrig);
  const double mean[2] = {0.5, -0.3}, std_dev[2] = {std::sqrt(1.5), std::sqrt(0.7)};
  const siflow::detail::InterpolantData trig{siflow::InterpolantKind::kTrig, 0, nullptr, nullptr};
  for (double t : {0.05, 0.3, 0.5, 0.8, 0.95}) {
    const double x[2] = {0.7, -0.4};
    double v[2], score[2], s_from_v[2];
    flow.evaluate(t, x, v, nullptr, score);
    siflow::score_from_velocity(siflow::evaluate_interpolant(trig, t), mean, std_dev, x, v, 1, 2,
                                s_from_v);
    for (int k = 0; k < 2; ++k) {
      CAPTURE(t);
      // Both are closed forms; agreement to 1e-9 relative leaves room only for rounding.
      CHECK(s_from_v[k] == doctest::Approx(score[k]).epsilon(1e-9));
    }
  }
}

namespace {

// SDE sampling of the mixture; returns per-component sample mean and variance.
void sde_moments(siflow::SdeMethod method, siflow::EpsilonSchedule schedule, double stop_delta,
                 std::vector<double>* mean, std::vector<double>* var, size_t n) {
  MixtureFlow flow = two_moons_like(Path::kTrig);
  const uint32_t d = 2;
  const double base_mean[2] = {0, 0}, base_std[2] = {1, 1};
  const siflow::detail::InterpolantData trig{siflow::InterpolantKind::kTrig, 0, nullptr, nullptr};
  const siflow::SdeCoefficients coeffs{&trig, base_mean, base_std, 1.0, schedule};
  std::vector<double> x(d * n);
  for (size_t i = 0; i < n; ++i) siflow::fill_normals(11, i, 0, 0, &x[d * i], d);
  Workspace<double> w(x.size(), n);
  const TimeGrid grid = TimeGrid::uniform(0.0, 1.0, 200);
  size_t sde_steps = grid.steps;
  if (stop_delta > 0)
    while (grid.at(sde_steps) > 1.0 - stop_delta) --sde_steps;
  auto noise = [&](size_t step, double* xi) {
    for (size_t i = 0; i < n; ++i)
      siflow::fill_normals(11, i, siflow::kStreamSdeNoise, static_cast<uint32_t>(step), &xi[d * i],
                           d);
  };
  Status s = siflow::integrate_sde(flow, coeffs, method, grid.piece(0, sde_steps), n, d, x.data(),
                                   w.ws, noise, no_check);
  REQUIRE(s.ok());
  if (sde_steps < grid.steps) {
    s = siflow::integrate_ode(flow, siflow::tableau(Method::kRK4),
                              grid.piece(sde_steps, grid.steps - sde_steps), n, d, x.data(),
                              nullptr, w.ws, no_check);
    REQUIRE(s.ok());
  }
  mean->assign(d, 0.0);
  var->assign(d, 0.0);
  for (uint32_t k = 0; k < d; ++k) {
    for (size_t i = 0; i < n; ++i) (*mean)[k] += x[d * i + k];
    (*mean)[k] /= n;
    for (size_t i = 0; i < n; ++i)
      (*var)[k] += (x[d * i + k] - (*mean)[k]) * (x[d * i + k] - (*mean)[k]);
    (*var)[k] /= n - 1;
  }
}

}  // namespace

TEST_CASE("SDE samples (Euler-Maruyama and Heun, both guards) match the target moments") {
  MixtureFlow flow = two_moons_like(Path::kTrig);
  std::vector<double> mean, var;
  flow.target_moments(&mean, &var);
  const size_t n = 3000;
  struct Case {
    siflow::SdeMethod method;
    siflow::EpsilonSchedule schedule;
    double stop;
  };
  const Case cases[] = {
      {siflow::SdeMethod::kHeun, siflow::EpsilonSchedule::kProportionalToA, 0.0},
      {siflow::SdeMethod::kEulerMaruyama, siflow::EpsilonSchedule::kProportionalToA, 0.0},
      {siflow::SdeMethod::kHeun, siflow::EpsilonSchedule::kConstant, 0.05},
  };
  for (const Case& c : cases) {
    std::vector<double> m, v;
    sde_moments(c.method, c.schedule, c.stop, &m, &v, n);
    for (int k = 0; k < 2; ++k) {
      CAPTURE(static_cast<int>(c.method));
      CAPTURE(k);
      // 5 standard errors; 200 steps keep the discretisation bias well below that.
      CHECK(std::fabs(m[k] - mean[k]) <= 5 * std::sqrt(var[k] / n));
      CHECK(std::fabs(v[k] - var[k]) <= 10 * var[k] * std::sqrt(2.0 / n));
    }
  }
}
