// SPDX-License-Identifier: Apache-2.0
// A one-layer linear net v = W x + c has the exact flow x(t) = e^{Wt} x0 + ..., and divergence
// trace(W): sampling, encode/decode round trips and log-likelihoods must match it.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

using siflow::Model;
using siflow::Plan;

// 2x2 matrix exponential by scaling and squaring of a Taylor series (double, test-only).
void expm2(const double a[4], double t, double out[4]) {
  double m[4] = {a[0] * t / 1024, a[1] * t / 1024, a[2] * t / 1024, a[3] * t / 1024};
  double term[4] = {1, 0, 0, 1}, sum[4] = {1, 0, 0, 1};
  for (int k = 1; k < 20; ++k) {
    double next[4] = {(term[0] * m[0] + term[1] * m[2]) / k, (term[0] * m[1] + term[1] * m[3]) / k,
                      (term[2] * m[0] + term[3] * m[2]) / k, (term[2] * m[1] + term[3] * m[3]) / k};
    for (int i = 0; i < 4; ++i) {
      term[i] = next[i];
      sum[i] += term[i];
    }
  }
  for (int s = 0; s < 10; ++s) {
    double sq[4] = {sum[0] * sum[0] + sum[1] * sum[2], sum[0] * sum[1] + sum[1] * sum[3],
                    sum[2] * sum[0] + sum[3] * sum[2], sum[2] * sum[1] + sum[3] * sum[3]};
    for (int i = 0; i < 4; ++i) sum[i] = sq[i];
  }
  for (int i = 0; i < 4; ++i) out[i] = sum[i];
}

// Model bytes must outlive a model loaded in place; tests keep every file they build here.
std::vector<std::vector<uint8_t>> model_files;

std::unique_ptr<Model> linear_model(const std::vector<float>& w) {
  siflow::ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, w, {}, "linear"));
  model_files.push_back(b.finish());
  const std::vector<uint8_t>& bytes = model_files.back();
  std::unique_ptr<Model> model;
  siflow::Status s = Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  REQUIRE_MESSAGE(s.ok(), s.message());
  return model;
}

}  // namespace

TEST_CASE("decode of a linear flow matches the matrix exponential; log p drops by trace(W)") {
  const std::vector<float> w = {0.3f, -0.2f, 0.4f, 0.5f};  // trace 0.8 > 0
  auto model = linear_model(w);
  siflow::PlanOptions po;
  po.max_batch = 3;
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
  const std::vector<float> x0 = {0.5f, -1.0f, 1.5f, 0.25f, -0.7f, 0.1f, 2.0f, -2.0f};
  std::vector<float> x1(x0.size());
  std::vector<double> logp(4);
  siflow::OdeOptions ode;
  ode.steps = 64;
  siflow::Status s =
      plan->decode(4, x0.data(), ode, siflow::DivergenceOptions(), x1.data(), logp.data());
  REQUIRE_MESSAGE(s.ok(), s.message());
  const double a[4] = {w[0], w[1], w[2], w[3]};
  double e[4];
  expm2(a, 1.0, e);
  for (int r = 0; r < 4; ++r) {
    const double y0 = x0[2 * r], y1 = x0[2 * r + 1];
    CHECK(x1[2 * r] == doctest::Approx(e[0] * y0 + e[1] * y1).epsilon(1e-5));
    CHECK(x1[2 * r + 1] == doctest::Approx(e[2] * y0 + e[3] * y1).epsilon(1e-5));
    const double base = -0.5 * (y0 * y0 + y1 * y1) - std::log(2 * M_PI);
    CHECK(logp[r] == doctest::Approx(base - 0.8).epsilon(1e-6));
  }
}

TEST_CASE("encode inverts decode and log_prob agrees with decode's forward likelihood") {
  auto model = linear_model({0.3f, -0.2f, 0.4f, 0.5f});
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  const std::vector<float> x0 = {0.5f, -1.0f, 1.5f, 0.25f, -0.7f, 0.1f};
  std::vector<float> x1(6), back(6);
  std::vector<double> forward_logp(3), backward_logp(3);
  siflow::OdeOptions ode;
  ode.steps = 64;
  REQUIRE(
      plan->decode(3, x0.data(), ode, siflow::DivergenceOptions(), x1.data(), forward_logp.data())
          .ok());
  REQUIRE(plan->encode(3, x1.data(), ode, back.data()).ok());
  siflow::LogProbOptions lp;
  lp.ode = ode;
  REQUIRE(plan->log_prob(3, x1.data(), lp, backward_logp.data()).ok());
  for (size_t i = 0; i < 6; ++i) CHECK(back[i] == doctest::Approx(x0[i]).epsilon(1e-5));
  // Both directions carry RK4's O(h^4) error and float rounding: 1e-5 absolute is ample.
  for (size_t r = 0; r < 3; ++r) CHECK(std::fabs(forward_logp[r] - backward_logp[r]) < 1e-5);
}

TEST_CASE("normalisation: samples map back to data space and log p subtracts sum log sigma") {
  siflow::ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, {0.3f, -0.2f, 0.4f, 0.5f}));
  b.set_normalization({1.0f, -2.0f}, {2.0f, 0.5f});
  const auto bytes = b.finish();
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  CHECK(model->info().normalized);
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  const std::vector<float> y0 = {0.5f, -1.0f};
  std::vector<float> x(2);
  std::vector<double> logp(1), check(1);
  siflow::OdeOptions ode;
  ode.steps = 64;
  REQUIRE(plan->decode(1, y0.data(), ode, siflow::DivergenceOptions(), x.data(), logp.data()).ok());
  double e[4];
  const double a[4] = {0.3, -0.2, 0.4, 0.5};
  expm2(a, 1.0, e);
  CHECK(x[0] == doctest::Approx(1.0 + 2.0 * (e[0] * 0.5 - e[1] * 1.0)).epsilon(1e-5));
  CHECK(x[1] == doctest::Approx(-2.0 + 0.5 * (e[2] * 0.5 - e[3] * 1.0)).epsilon(1e-5));
  const double base = -0.5 * (0.25 + 1.0) - std::log(2 * M_PI);
  CHECK(logp[0] == doctest::Approx(base - 0.8 - std::log(2.0 * 0.5)).epsilon(1e-6));
  siflow::LogProbOptions lp;
  lp.ode = ode;
  REQUIRE(plan->log_prob(1, x.data(), lp, check.data()).ok());
  CHECK(check[0] == doctest::Approx(logp[0]).epsilon(1e-5));
}

TEST_CASE("samples of a linear flow have the covariance e^W e^W^T") {
  const std::vector<float> w = {0.3f, -0.2f, 0.4f, 0.5f};
  auto model = linear_model(w);
  siflow::PlanOptions po;
  po.max_batch = 512;
  po.divergence = siflow::DivergenceMode::kNone;
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, po, nullptr, 0, &plan).ok());
  const size_t n = 20000;
  std::vector<float> x(2 * n);
  siflow::SampleOptions so;
  so.seed = 42;
  so.ode.steps = 16;
  REQUIRE(plan->sample(n, so, x.data(), nullptr).ok());
  double e[4];
  const double a[4] = {w[0], w[1], w[2], w[3]};
  expm2(a, 1.0, e);
  const double cov[3] = {e[0] * e[0] + e[1] * e[1], e[0] * e[2] + e[1] * e[3],
                         e[2] * e[2] + e[3] * e[3]};
  double m0 = 0, m1 = 0, s00 = 0, s01 = 0, s11 = 0;
  for (size_t i = 0; i < n; ++i) {
    m0 += x[2 * i];
    m1 += x[2 * i + 1];
    s00 += x[2 * i] * x[2 * i];
    s01 += x[2 * i] * x[2 * i + 1];
    s11 += x[2 * i + 1] * x[2 * i + 1];
  }
  // Mean 0 within 4 standard errors; second moments within 4 standard errors
  // (var of x^2 for a Gaussian is 2 sigma^4).
  CHECK(std::fabs(m0 / n) < 4 * std::sqrt(cov[0] / n));
  CHECK(std::fabs(m1 / n) < 4 * std::sqrt(cov[2] / n));
  CHECK(std::fabs(s00 / n - cov[0]) < 4 * cov[0] * std::sqrt(2.0 / n));
  CHECK(std::fabs(s11 / n - cov[2]) < 4 * cov[2] * std::sqrt(2.0 / n));
  CHECK(std::fabs(s01 / n - cov[1]) < 4 * std::sqrt((cov[0] * cov[2] + cov[1] * cov[1]) / n));
}
