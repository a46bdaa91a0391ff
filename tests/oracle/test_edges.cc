// SPDX-License-Identifier: Apache-2.0
// Numeric edge cases with defined behaviour: the time grid hits t = 0 and t = 1 exactly, the score
// from the velocity stays accurate close to t = 1 (its error grows like eps/a(t), as the formula's
// cancellation predicts), and the guarded SDE drift eps*s is finite at t = 1 exactly, where the
// raw score is not defined. Velocities, samples and log-likelihoods at the time range's ends.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "integrate/ode.hpp"
#include "integrate/score.hpp"
#include "math/interpolant.hpp"
#include "oracle/gaussian_oracle.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

using oracle::Gaussian;
using oracle::MixtureFlow;
using oracle::Path;

const siflow::detail::InterpolantData kTrig{siflow::InterpolantKind::kTrig, 0, nullptr, nullptr};

MixtureFlow target_flow() {
  return MixtureFlow({{1.0, {0.5, -0.3}, {1.5, 0.7}}},
                     {{0.4, {2.0, 1.0}, {0.2, 0.3}}, {0.6, {-1.5, 0.5}, {0.4, 0.1}}}, Path::kTrig);
}

}  // namespace

TEST_CASE("uniform grids start and end exactly at the time range's ends, both directions") {
  for (size_t steps : {1u, 3u, 7u, 50u, 1000u}) {
    for (auto range : {std::pair<double, double>{0.0, 1.0}, {0.1, 0.9}, {0.0, 0.3}}) {
      siflow::TimeGrid g = siflow::TimeGrid::uniform(range.first, range.second, steps);
      CHECK(g.point(0) == range.first);
      CHECK(g.point(steps) == range.second);
      g.backward = true;
      CHECK(g.point(0) == range.second);
      CHECK(g.point(steps) == range.first);
      for (size_t j = 0; j < steps; ++j) CHECK(g.point(j) > g.point(j + 1));
    }
  }
}

TEST_CASE("the score from the velocity near t = 1 agrees with the closed form to ~eps/a(t)") {
  const MixtureFlow flow = target_flow();
  const double mean[2] = {0.5, -0.3}, std_dev[2] = {std::sqrt(1.5), std::sqrt(0.7)};
  const double x[2] = {1.1, 0.4};
  for (double gap : {1e-2, 1e-3, 1e-5, 1e-7}) {
    const double t = 1.0 - gap;
    double v[2], score[2], from_v[2];
    flow.evaluate(t, x, v, nullptr, score);
    const siflow::InterpolantValues iv = siflow::evaluate_interpolant(kTrig, t);
    siflow::score_from_velocity(iv, mean, std_dev, x, v, 1, 2, from_v);
    // b v - b_dot x + W mu is O(a): rounding of its O(1) terms is amplified by 1/a.
    const double bound = 1e3 * 2.2e-16 / iv.a;
    for (int k = 0; k < 2; ++k) {
      CAPTURE(t);
      CAPTURE(k);
      CHECK(std::isfinite(from_v[k]));
      CHECK(std::fabs(from_v[k] - score[k]) <= bound * std::fabs(score[k]) + 1e-12);
    }
  }
}

TEST_CASE("the guarded SDE drift eps0*a(t)*s(t, x) is finite at t = 1 and continuous there") {
  const MixtureFlow flow = target_flow();
  const double mean[2] = {0.5, -0.3}, std_dev[2] = {std::sqrt(1.5), std::sqrt(0.7)};
  const double x[2] = {1.1, 0.4}, eps0 = 0.7;
  auto drift = [&](double t, double out[2]) {
    flow.evaluate(t, x, out, nullptr, nullptr);
    const siflow::InterpolantValues iv = siflow::evaluate_interpolant(kTrig, t);
    siflow::add_scaled_score(iv, eps0, mean, std_dev, x, 1, 2, out);  // eps/a = eps0
  };
  double at_one[2], near_one[2];
  drift(1.0, at_one);
  drift(1.0 - 1e-9, near_one);
  for (int k = 0; k < 2; ++k) {
    CHECK(std::isfinite(at_one[k]));
    CHECK(at_one[k] == doctest::Approx(near_one[k]).epsilon(1e-6));
  }
  // Without the guard the raw score at t = 1 divides by a(1), which is 0 up to rounding.
  const siflow::InterpolantValues iv = siflow::evaluate_interpolant(kTrig, 1.0);
  CHECK(std::fabs(iv.a) < 1e-15);
}

TEST_CASE("velocity at t = 0 and t = 1 exactly, sampling and log_prob at the range's ends") {
  siflow::ModelBuilder b(2);
  const uint32_t h =
      b.unary(b.fully_connected(
                  b.concat({b.x(), b.t()}), 8,
                  {0.3f, -0.2f, 0.5f, 0.1f,  0.4f, -0.3f, -0.5f, 0.2f, 0.1f,  0.2f, 0.2f, 0.6f,
                   0.7f, -0.1f, 0.3f, -0.4f, 0.3f, 0.2f,  0.2f,  0.1f, -0.3f, 0.5f, 0.1f, 0.2f}),
              siflow::UnaryKind::kTanh);
  b.set_output(b.fully_connected(h, 2, std::vector<float>(16, 0.1f)));
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<siflow::Model> model;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  std::unique_ptr<siflow::Plan> plan;
  REQUIRE(siflow::Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  const float t[2] = {0.0f, 1.0f}, y[4] = {0.5f, -1.0f, 0.5f, -1.0f};
  float v[4];
  REQUIRE(plan->velocity(2, t, y, v).ok());
  for (float value : v) CHECK(std::isfinite(value));
  CHECK(v[0] != v[2]);  // t enters the network: the two ends differ
  std::vector<float> x(8);
  std::vector<double> lp_sample(4), lp_scored(4);
  siflow::SampleOptions so;
  so.seed = 5;
  so.ode.steps = 40;
  REQUIRE(plan->sample(4, so, x.data(), lp_sample.data()).ok());
  siflow::LogProbOptions lp;
  lp.ode.steps = 40;
  lp.time = 1.0;  // exactly time_end: the same as the default
  REQUIRE(plan->log_prob(4, x.data(), lp, lp_scored.data()).ok());
  for (int i = 0; i < 4; ++i) CHECK(lp_scored[i] == doctest::Approx(lp_sample[i]).epsilon(1e-4));
  lp.time = 0.0;  // time_start is not in (time_start, time_end]: nothing to integrate
  CHECK(plan->log_prob(4, x.data(), lp, lp_scored.data()).code() ==
        siflow::StatusCode::kInvalidArgument);
}
