// SPDX-License-Identifier: Apache-2.0
// End to end on the bundled example model: it is what its generator makes, it passes its own
// embedded test vectors, and its samples land where the closed-form target density is.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "gaussian_oracle.hpp"
#include "siflow/siflow.hpp"
#include "support/requirements.hpp"

namespace {

std::vector<char> read_file(const char* path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

oracle::MixtureFlow ring() {
  std::vector<oracle::Gaussian> components;
  for (int k = 0; k < 8; ++k) {
    const double angle = 2 * M_PI * k / 8;
    components.push_back({1.0 / 8, {3 * std::cos(angle), 3 * std::sin(angle)}, {0.16, 0.16}});
  }
  return oracle::MixtureFlow({{1.0, {0.0, 0.0}, {1.0, 1.0}}}, components, oracle::Path::kTrig);
}

}  // namespace

TEST_CASE("the committed example model is byte for byte what its generator writes" *
          SIFLOW_NEEDS_X86_64) {
  const std::string fresh = std::string(SIFLOW_TEST_TMPDIR) + "/gaussian_ring_regenerated.sif";
  const std::string command = std::string(SIFLOW_RING_GENERATOR) + " " + fresh + " > /dev/null";
  REQUIRE(std::system(command.c_str()) == 0);
  CHECK(read_file(fresh.c_str()) == read_file(SIFLOW_RING_MODEL));
}

TEST_CASE("the example model passes its embedded test vectors") {
  std::unique_ptr<siflow::Model> model;
  siflow::Status s = siflow::Model::load_file(SIFLOW_RING_MODEL, siflow::LoadOptions(), &model);
  REQUIRE_MESSAGE(s.ok(), s.message());
  siflow::ValidationReport report;
  REQUIRE(siflow::validate_embedded(*model, &report).ok());
  CHECK(report.velocity_count == 16);
  CHECK(report.velocity_ok);
  CHECK(report.trajectory_count == 4);
  CHECK(report.trajectory_ok);
}

TEST_CASE("example model samples sit on the ring and their log-likelihoods are consistent") {
  std::unique_ptr<siflow::Model> model;
  REQUIRE(siflow::Model::load_file(SIFLOW_RING_MODEL, siflow::LoadOptions(), &model).ok());
  std::unique_ptr<siflow::Plan> plan;
  REQUIRE(siflow::Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  const size_t n = 1000;
  std::vector<float> x(2 * n);
  std::vector<double> logp(n), backward(n);
  siflow::SampleOptions so;
  so.seed = 3;
  REQUIRE(plan->sample(n, so, x.data(), logp.data()).ok());
  siflow::LogProbOptions lo;
  REQUIRE(plan->log_prob(n, x.data(), lo, backward.data()).ok());
  // The true mixture's mean log-density at its own samples (-entropy), by Monte Carlo.
  oracle::MixtureFlow flow = ring();
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal;
  double neg_entropy = 0.0;
  const int reference_n = 20000;
  for (int i = 0; i < reference_n; ++i) {
    const double angle = 2 * M_PI * (i % 8) / 8;
    const double p[2] = {3 * std::cos(angle) + 0.4 * normal(rng),
                         3 * std::sin(angle) + 0.4 * normal(rng)};
    neg_entropy += flow.evaluate(1.0, p, nullptr, nullptr, nullptr) / reference_n;
  }
  double at_samples = 0.0, max_gap = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double p[2] = {x[2 * i], x[2 * i + 1]};
    at_samples += flow.evaluate(1.0, p, nullptr, nullptr, nullptr) / n;
    max_gap = std::max(max_gap, std::fabs(logp[i] - backward[i]));
  }
  // A hand-fitted model, not a trained one: its samples score 0.40 nats below the true
  // negative entropy (-3.085; measured -3.48 at seed 3). The bound 0.6 still catches a broken
  // sampler (a wrong sign or scale costs several nats).
  CAPTURE(at_samples);
  CAPTURE(neg_entropy);
  CHECK(at_samples > neg_entropy - 0.6);
  // Forward (sample) and backward (log_prob) likelihoods integrate the same ODE both ways
  // with RK4/50; their gap is the integrator error, ~1e-4 on this model.
  CHECK(max_gap < 5e-3);
}
