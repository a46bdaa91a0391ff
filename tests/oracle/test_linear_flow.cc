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

std::unique_ptr<Model> linear_model(const std::vector<float>& w) {
  siflow::ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, w, {}, "linear"));
  auto bytes = b.finish();
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
