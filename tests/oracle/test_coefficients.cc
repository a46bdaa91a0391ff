// SPDX-License-Identifier: Apache-2.0
// Per-step coefficients of ab2..ab4 (docs/math.md, "Per-step coefficients"): with the
// Adams-Bashforth weights as coefficients the integrator is ab<k> (oracle and network), other
// coefficients change the result, the checks refuse wrong counts, NaN, huge values and rows not
// summing to 1, and a stored solver's coefficients survive writing, loading and add_solvers.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gaussian_oracle.hpp"
#include "integrate/solve.hpp"
#include "ode_workspace.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

using oracle::MixtureFlow;
using oracle::NoCheck;
using oracle::Path;
using oracle::Workspace;
using siflow::Method;
using siflow::Status;
using siflow::TimeGrid;

MixtureFlow mixture() {
  return MixtureFlow({{1.0, {0.0, 0.0}, {1.0, 1.0}}},
                     {{0.3, {2.0, 1.0}, {0.2, 0.3}}, {0.7, {-1.5, 0.5}, {0.4, 0.1}}}, Path::kTrig);
}

const std::vector<double> kStarts = {0.3, -0.8, -1.2, 0.4, 1.7, 1.1};

// x at t = 1 and the log-density term after `method` on `points` with `coefficients` (or none).
void run(Method method, const std::vector<double>& points, const double* coefficients,
         std::vector<double>* x, std::vector<double>* ell) {
  MixtureFlow flow = mixture();
  *x = kStarts;
  const size_t rows = x->size() / flow.dim();
  ell->assign(rows, 0.0);
  TimeGrid g = TimeGrid::uniform(0.0, 1.0, points.size() - 1);
  g.points = points.data();
  g.coefficients = coefficients;
  Workspace w(x->size(), rows);
  const Status s = siflow::integrate_method(flow, method, siflow::AdaptiveOptions(), g, rows,
                                            flow.dim(), x->data(), ell->data(), w.ws, NoCheck());
  REQUIRE_MESSAGE(s.ok(), s.message());
}

// A grid with a step more than twice its predecessor (0.05 -> 0.2), so ab2..ab4 drop an order.
const std::vector<double> kGrid = {0.0, 0.1, 0.15, 0.35, 0.5, 0.62, 0.7, 0.82, 0.93, 1.0};

}  // namespace

TEST_CASE("coefficient counts: k per step from step k - 1 on for ab<k>, none for other methods") {
  CHECK(siflow::solver_coefficient_count(Method::kAB2, 8) == 7 * 2);
  CHECK(siflow::solver_coefficient_count(Method::kAB3, 6) == 4 * 3);
  CHECK(siflow::solver_coefficient_count(Method::kAB4, 5) == 2 * 4);
  CHECK(siflow::solver_coefficient_count(Method::kAB4, 3) == 0);  // all bootstrap
  CHECK(siflow::solver_coefficient_count(Method::kRK4, 8) == 0);
  CHECK(siflow::solver_coefficient_count(Method::kEuler, 8) == 0);
}

TEST_CASE("with the Adams-Bashforth weights as coefficients the integrator is ab<k>") {
  for (Method m : {Method::kAB2, Method::kAB3, Method::kAB4}) {
    CAPTURE(siflow::method_name(m));
    std::vector<double> c(siflow::solver_coefficient_count(m, kGrid.size() - 1));
    REQUIRE(siflow::adams_bashforth_coefficients(m, kGrid.data(), kGrid.size(), c.data()).ok());
    REQUIRE(siflow::check_solver_coefficients(m, kGrid.size() - 1, c.data(), c.size()).ok());
    std::vector<double> x_ab, l_ab, x_c, l_c;
    run(m, kGrid, nullptr, &x_ab, &l_ab);
    run(m, kGrid, c.data(), &x_c, &l_c);
    // The step's weights are h (w / h) instead of w: one rounding of a product in double per
    // weight, so the states agree to a few ulp of their size (1e-12 leaves room for 9 steps).
    for (size_t i = 0; i < x_ab.size(); ++i) CHECK(std::fabs(x_c[i] - x_ab[i]) <= 1e-12);
    for (size_t i = 0; i < l_ab.size(); ++i) CHECK(std::fabs(l_c[i] - l_ab[i]) <= 1e-12);
  }
  // The order drop is in the coefficients: ab2's step 2 (0.2 after 0.05; row 1) is Euler,
  // weights (1, 0); step 1 (row 0) has 1 + r/2 and -r/2 with r = 0.05 / 0.1.
  std::vector<double> c(siflow::solver_coefficient_count(Method::kAB2, kGrid.size() - 1));
  REQUIRE(siflow::adams_bashforth_coefficients(Method::kAB2, kGrid.data(), kGrid.size(), c.data())
              .ok());
  CHECK(c[2] == 1.0);
  CHECK(c[3] == 0.0);
  CHECK(c[0] == doctest::Approx(1.25));
  CHECK(c[1] == doctest::Approx(-0.25));
}

TEST_CASE("other coefficients change the result, and a constant velocity stays exact") {
  std::vector<double> c(siflow::solver_coefficient_count(Method::kAB2, kGrid.size() - 1));
  REQUIRE(siflow::adams_bashforth_coefficients(Method::kAB2, kGrid.data(), kGrid.size(), c.data())
              .ok());
  c[4] += 0.25;  // step 3 (row 2): weights (c0 + 0.25, c1 - 0.25), still summing to 1
  c[5] -= 0.25;
  std::vector<double> x_ab, l_ab, x_c, l_c;
  run(Method::kAB2, kGrid, nullptr, &x_ab, &l_ab);
  run(Method::kAB2, kGrid, c.data(), &x_c, &l_c);
  double diff = 0.0;
  for (size_t i = 0; i < x_ab.size(); ++i) diff = std::fmax(diff, std::fabs(x_c[i] - x_ab[i]));
  CHECK(diff > 1e-4);
}

TEST_CASE("coefficient checks refuse a wrong count, NaN, huge values and rows not summing to 1") {
  const uint64_t steps = 5;  // ab3: steps 2, 3, 4, rows of 3
  std::vector<double> good = {1.5, -0.75, 0.25, 1.0, 0.0, 0.0, 2.0, -1.5, 0.5};
  CHECK(siflow::check_solver_coefficients(Method::kAB3, steps, good.data(), good.size()).ok());
  auto refused = [&](Method m, const std::vector<double>& c, const char* fragment) {
    const Status s = siflow::check_solver_coefficients(m, steps, c.data(), c.size());
    CHECK_FALSE(s.ok());
    INFO("message: " << s.message());
    CHECK(std::string(s.message()).find(fragment) != std::string::npos);
  };
  refused(Method::kAB3, std::vector<double>(good.begin(), good.end() - 1),
          "8 per-step coefficients, but ab3 on 5 steps takes 9");
  refused(Method::kRK4, good, "method rk4 takes none");
  std::vector<double> c = good;
  c[4] = NAN;
  refused(Method::kAB3, c, "coefficient 1 of step 3 is not finite");
  c = good;
  c[6] = 65.0;
  c[7] = -64.5;
  refused(Method::kAB3, c, "coefficient 0 of step 4 is 65, outside [-64, 64]");
  c = good;
  c[0] += 1e-6;
  refused(Method::kAB3, c, "the coefficients of step 2 sum to");
  const Status s = siflow::check_solver_coefficients(Method::kAB3, steps, nullptr, 9);
  CHECK_FALSE(s.ok());
}
