// SPDX-License-Identifier: Apache-2.0
// Few-step integration against the closed-form Gaussian-mixture oracle: Adams-Bashforth
// weights, order drop and evaluation counts, measured orders on uniform and non-uniform grids
// (states and the log-density term), the grid families, and the adaptive dopri5 reference.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gaussian_oracle.hpp"
#include "integrate/solve.hpp"
#include "ode_workspace.hpp"

namespace {

using oracle::MixtureFlow;
using oracle::NoCheck;
using oracle::Path;
using oracle::Workspace;
using siflow::GridKind;
using siflow::Method;
using siflow::Status;
using siflow::TimeGrid;

MixtureFlow two_moons_like(Path path) {
  return MixtureFlow({{1.0, {0.0, 0.0}, {1.0, 1.0}}},
                     {{0.3, {2.0, 1.0}, {0.2, 0.3}},
                      {0.5, {-1.5, 0.5}, {0.4, 0.1}},
                      {0.2, {0.0, -2.0}, {0.3, 0.3}}},
                     path);
}

const std::vector<double> kStarts = {0.3, -0.8, -1.2, 0.4, 1.7, 1.1, -0.2, -1.9};

// Runs `method` over `grid` from x (and ell when given); returns the evaluations it made.
size_t run(MixtureFlow& flow, Method method, const TimeGrid& grid, std::vector<double>& x,
           std::vector<double>* ell, siflow::AdaptiveOptions adaptive = {}) {
  const size_t rows = x.size() / flow.dim();
  Workspace w(x.size(), rows);
  const size_t before = flow.evaluations;
  const Status s = siflow::integrate_method(flow, method, adaptive, grid, rows, flow.dim(),
                                            x.data(), ell ? ell->data() : nullptr, w.ws, NoCheck());
  REQUIRE_MESSAGE(s.ok(), s.message());
  return flow.evaluations - before;
}

TimeGrid family(GridKind kind, double param, size_t steps, bool backward = false) {
  TimeGrid g = TimeGrid::uniform(0.0, 1.0, steps);
  g.kind = kind;
  g.param = param;
  g.backward = backward;
  return g;
}

// Max state error at t = 1 (or, backward, of the log-density term at 0) against RK4 with 8192
// uniform steps.
double error(Method method, Path path, const TimeGrid& grid, bool log_density) {
  MixtureFlow flow = two_moons_like(path);
  std::vector<double> x = kStarts, ref = kStarts;
  std::vector<double> ell(x.size() / 2, 0.0), ell_ref(ell);
  run(flow, method, grid, x, log_density ? &ell : nullptr);
  TimeGrid fine = TimeGrid::uniform(0.0, 1.0, 8192);
  fine.backward = grid.backward;
  run(flow, Method::kRK4, fine, ref, log_density ? &ell_ref : nullptr);
  double err = 0.0;
  if (log_density)
    for (size_t r = 0; r < ell.size(); ++r) err = std::max(err, std::fabs(ell[r] - ell_ref[r]));
  else
    for (size_t i = 0; i < x.size(); ++i) err = std::max(err, std::fabs(x[i] - ref[i]));
  return err;
}

// log2 of successive error ratios over step doublings, averaged over the last two.
double measured_order(Method method, Path path, GridKind kind, double param, size_t first,
                      bool backward = false, bool log_density = false) {
  double e[4];
  for (int i = 0; i < 4; ++i)
    e[i] = error(method, path, family(kind, param, first << i, backward), log_density);
  return 0.5 * (std::log2(e[1] / e[2]) + std::log2(e[2] / e[3]));
}

}  // namespace

TEST_CASE("Adams-Bashforth weights: the classic uniform ones, and AB2's closed form on any grid") {
  const double nodes[4] = {0.0, -1.0, -2.0, -3.0};
  double w[4];
  siflow::adams_bashforth_weights(nodes, 2, 1.0, w);
  CHECK(w[0] == doctest::Approx(1.5).epsilon(1e-14));
  CHECK(w[1] == doctest::Approx(-0.5).epsilon(1e-14));
  siflow::adams_bashforth_weights(nodes, 3, 1.0, w);
  CHECK(w[0] == doctest::Approx(23.0 / 12).epsilon(1e-14));
  CHECK(w[1] == doctest::Approx(-16.0 / 12).epsilon(1e-14));
  CHECK(w[2] == doctest::Approx(5.0 / 12).epsilon(1e-14));
  siflow::adams_bashforth_weights(nodes, 4, 1.0, w);
  const double ab4[4] = {55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24};
  for (int j = 0; j < 4; ++j) CHECK(w[j] == doctest::Approx(ab4[j]).epsilon(1e-14));
  // Non-uniform AB2 with ratio r = h_n / h_{n-1}: h (1 + r/2) and -h r/2.
  for (double r : {0.25, 0.5, 1.5, 2.0}) {
    const double h_prev = 0.1, h = r * h_prev;
    const double t[2] = {0.5, 0.5 - h_prev};
    siflow::adams_bashforth_weights(t, 2, h, w);
    CHECK(w[0] == doctest::Approx(h * (1 + r / 2)).epsilon(1e-12));
    CHECK(w[1] == doctest::Approx(-h * r / 2).epsilon(1e-12));
  }
  // Weights sum to the step on an irregular backward grid too.
  const double back[4] = {0.4, 0.47, 0.5, 0.61};
  siflow::adams_bashforth_weights(back, 4, -0.05, w);
  CHECK(w[0] + w[1] + w[2] + w[3] == doctest::Approx(-0.05).epsilon(1e-12));
}

TEST_CASE("a step more than twice its neighbour drops to a lower order") {
  // h = 127 h_prev would give AB2 weights 64.5 h_prev and -63.5 h_prev: it takes Euler instead.
  const double extreme[2] = {1.0 / 128, 0.0};
  CHECK(siflow::adams_bashforth_order(extreme, 2, 2, 1.0 - 1.0 / 128) == 1);
  const double ok[4] = {0.3, 0.2, 0.1, 0.0};
  CHECK(siflow::adams_bashforth_order(ok, 4, 4, 0.2) == 4);   // ratio exactly 2 is kept
  CHECK(siflow::adams_bashforth_order(ok, 4, 4, 0.21) == 1);  // the newest ratio is 2.1
  CHECK(siflow::adams_bashforth_order(ok, 2, 4, 0.1) == 2);   // only two velocities yet
  const double middle[4] = {0.5, 0.2, 0.1, 0.0};              // h_{n-1} = 3 h_{n-2}
  CHECK(siflow::adams_bashforth_order(middle, 4, 4, 0.3) == 2);
  const double back[3] = {0.5, 0.6, 0.7};  // backward walk, steps of -0.1
  CHECK(siflow::adams_bashforth_order(back, 3, 3, -0.2) == 3);
  CHECK(siflow::adams_bashforth_order(back, 3, 3, -0.25) == 1);

  // On the grid 0, 1/128, 1 ab2 is then Euler on both steps, bit for bit.
  const double points[3] = {0.0, 1.0 / 128, 1.0};
  TimeGrid grid = TimeGrid::uniform(0.0, 1.0, 2);
  grid.points = points;
  MixtureFlow flow = two_moons_like(Path::kTrig);
  std::vector<double> ab = kStarts, euler = kStarts;
  run(flow, Method::kAB2, grid, ab, nullptr);
  run(flow, Method::kEuler, grid, euler, nullptr);
  for (size_t i = 0; i < ab.size(); ++i) CHECK(ab[i] == euler[i]);
  // What the drop avoids: AB2 weights of 64.5 h and -63.5 h for that step.
  double w[2];
  const double nodes[2] = {1.0 / 128, 0.0}, h = 1.0 - 1.0 / 128;
  siflow::adams_bashforth_weights(nodes, 2, h, w);
  CHECK(w[0] / h == doctest::Approx(64.5).epsilon(1e-12));
  CHECK(w[1] / h == doctest::Approx(-63.5).epsilon(1e-12));
}

TEST_CASE("evaluations: (k - 1) s + (N - k + 1) for Adams-Bashforth, stages x N for one-step") {
  MixtureFlow flow = two_moons_like(Path::kTrig);
  for (size_t steps : {1, 2, 3, 4, 8, 17}) {
    for (Method m :
         {Method::kAB2, Method::kAB3, Method::kAB4, Method::kEuler, Method::kHeun, Method::kRK4}) {
      std::vector<double> x = kStarts;
      const size_t used = run(flow, m, TimeGrid::uniform(0.0, 1.0, steps), x, nullptr);
      CAPTURE(siflow::method_name(m));
      CAPTURE(steps);
      CHECK(used == siflow::fixed_grid_evaluations(m, steps));
    }
  }
  CHECK(siflow::fixed_grid_evaluations(Method::kAB2, 8) == 8);          // 1 Euler + 7
  CHECK(siflow::fixed_grid_evaluations(Method::kAB3, 8) == 2 * 2 + 6);  // 2 Heun + 6
  CHECK(siflow::fixed_grid_evaluations(Method::kAB4, 8) == 3 * 4 + 5);  // 3 RK4 + 5
  CHECK(siflow::fixed_grid_evaluations(Method::kAB4, 2) == 8);          // bootstrap only
}

TEST_CASE("measured orders of ab2, ab3, ab4 are 2, 3, 4 on uniform and non-uniform grids") {
  struct Grid {
    GridKind kind;
    double param;
    const char* name;
  };
  const Grid grids[] = {{GridKind::kUniform, 0, "uniform"},
                        {GridKind::kShift, 3.0, "shift:3"},
                        {GridKind::kPower, 2.0, "power:2"},
                        {GridKind::kCosine, 0, "cosine"}};
  for (Path path : {Path::kTrig, Path::kLinear})
    for (const Grid& g : grids)
      for (Method m : {Method::kAB2, Method::kAB3, Method::kAB4}) {
        const int k = siflow::multistep_order(m);
        // 64..512 steps: the narrow components are resolved, errors stay above the reference's.
        const double order = measured_order(m, path, g.kind, g.param, 64);
        CAPTURE(siflow::method_name(m));
        CAPTURE(g.name);
        CAPTURE(path == Path::kTrig ? "trig" : "linear");
        CAPTURE(order);
        CHECK(std::fabs(order - k) <= 0.3);
      }
}

TEST_CASE("the log-density term converges at the method's order backwards (ab2..ab4, rk4)") {
  for (Method m : {Method::kAB2, Method::kAB3, Method::kAB4, Method::kRK4}) {
    const int k = m == Method::kRK4 ? 4 : siflow::multistep_order(m);
    for (GridKind kind : {GridKind::kUniform, GridKind::kPower}) {
      const double order = measured_order(m, Path::kTrig, kind, 2.0, 64, true, true);
      CAPTURE(siflow::method_name(m));
      CAPTURE(siflow::grid_kind_name(kind));
      CAPTURE(order);
      CHECK(std::fabs(order - k) <= 0.3);
    }
  }
}

TEST_CASE("grid families: formulas, end points, monotone, mapped onto the range") {
  TimeGrid g = TimeGrid::uniform(0.2, 0.9, 10);
  g.kind = GridKind::kShift;
  g.param = 3.0;
  CHECK(g.point(0) == 0.2);
  CHECK(g.point(10) == 0.9);
  CHECK(g.point(4) == doctest::Approx(0.2 + 0.7 * (3 * 0.4 / (1 + 2 * 0.4))).epsilon(1e-15));
  g.kind = GridKind::kPower;
  g.param = 2.5;
  CHECK(g.point(3) == doctest::Approx(0.2 + 0.7 * (1 - std::pow(0.7, 2.5))).epsilon(1e-13));
  g.kind = GridKind::kCosine;
  CHECK(g.point(5) == doctest::Approx(0.2 + 0.7 * 0.5).epsilon(1e-14));
  CHECK(g.point(2) == doctest::Approx(0.2 + 0.7 * (1 - std::cos(M_PI * 0.2)) / 2).epsilon(1e-13));
  // power:R puts the small steps at the data end; backward walks the same points in reverse.
  g.kind = GridKind::kPower;
  g.param = 3.0;
  CHECK(g.point(10) - g.point(9) < g.point(1) - g.point(0));
  TimeGrid b = g;
  b.backward = true;
  for (size_t i = 0; i <= 10; ++i) CHECK(b.point(i) == g.point(10 - i));
  for (GridKind kind :
       {GridKind::kUniform, GridKind::kShift, GridKind::kPower, GridKind::kCosine}) {
    g.kind = kind;
    g.param = 0.5;
    for (size_t i = 1; i <= 10; ++i) CHECK(g.point(i) > g.point(i - 1));
  }
}

TEST_CASE("dopri5 matches the closed-form Gaussian map and log-density within its tolerance") {
  // Single Gaussian endpoints: x_1 = m_1 + sqrt(var_1 / var_0) (x_0 - m_0) exactly.
  MixtureFlow flow({{1.0, {0.0, 0.0}, {1.0, 1.0}}}, {{1.0, {2.0, -1.0}, {0.25, 2.0}}}, Path::kTrig);
  const double mean1[2] = {2.0, -1.0}, var1[2] = {0.25, 2.0};
  double last_error = 1e9;
  size_t last_nfe = 0;
  for (double tol : {1e-4, 1e-7, 1e-10}) {
    std::vector<double> x = kStarts;
    siflow::AdaptiveOptions o;
    o.rtol = o.atol = tol;
    const size_t nfe = run(flow, Method::kDopri5, TimeGrid::uniform(0.0, 1.0, 1), x, nullptr, o);
    double err = 0.0;
    for (size_t i = 0; i < x.size(); ++i)
      err = std::max(err, std::fabs(x[i] - (mean1[i % 2] + std::sqrt(var1[i % 2]) * kStarts[i])));
    CAPTURE(tol);
    CAPTURE(err);
    CAPTURE(nfe);
    CHECK(err <= 100 * tol);
    CHECK(err < last_error);
    CHECK(nfe > last_nfe);
    CHECK((nfe - 1) % 6 == 0);  // FSAL: one first evaluation, then six per attempted step
    last_error = err;
    last_nfe = nfe;
  }
  // The mixture, backwards with the log-density: log rho_1 against the closed form.
  MixtureFlow mix = two_moons_like(Path::kTrig);
  std::vector<double> x = {2.0, 1.0, -1.4, 0.6, 0.1, -2.2, 0.5, 0.5};
  const std::vector<double> data = x;
  std::vector<double> ell(4, 0.0);
  TimeGrid back = TimeGrid::uniform(0.0, 1.0, 1);
  back.backward = true;
  siflow::AdaptiveOptions o;
  o.rtol = o.atol = 1e-9;
  run(mix, Method::kDopri5, back, x, &ell, o);
  for (size_t r = 0; r < 4; ++r) {
    const double log_rho0 =
        -0.5 * (x[2 * r] * x[2 * r] + x[2 * r + 1] * x[2 * r + 1]) - std::log(2 * M_PI);
    const double exact = mix.evaluate(1.0, &data[2 * r], nullptr, nullptr, nullptr);
    CAPTURE(r);
    CHECK(std::fabs(log_rho0 + ell[r] - exact) <= 1e-6);
  }
}

TEST_CASE("dopri5 fails naming max_steps when it needs more steps") {
  MixtureFlow flow = two_moons_like(Path::kTrig);
  std::vector<double> x = kStarts;
  Workspace w(x.size(), 4);
  siflow::AdaptiveOptions o;
  o.rtol = o.atol = 1e-12;
  o.max_steps = 5;
  const Status s = siflow::integrate_method(flow, Method::kDopri5, o, TimeGrid::uniform(0, 1, 1), 4,
                                            2, x.data(), nullptr, w.ws, NoCheck());
  CHECK(s.code() == siflow::StatusCode::kNumericalError);
  CHECK(std::string(s.message()).find("max_steps = 5") != std::string::npos);
}
