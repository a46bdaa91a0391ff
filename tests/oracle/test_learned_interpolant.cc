// SPDX-License-Identifier: Apache-2.0
// Path-length optimisation, the acceptance test: on a Gaussian-mixture pair, whose velocity
// for any interpolant is known in closed form (the oracle), the Fourier interpolant learned by
// max-min training has a lower kinetic energy int E|v|^2 dt than trig, by a measured margin.
#include <cmath>
#include <random>
#include <vector>

#include "doctest/doctest.h"
#include "format/model_data.hpp"
#include "gaussian_oracle.hpp"
#include "math/interpolant.hpp"
#include "siflow/train.hpp"

namespace {

using namespace siflow;

// int_0^1 E|v(t, x_t)|^2 dt for the exact velocity of `flow` under `path`: midpoint rule over 64
// times, 4000 pairs (x0, x1) per time. The same draws for every path (common random numbers),
// so a difference between paths is not sampling noise.
double kinetic_energy(const oracle::MixtureFlow& flow, const std::vector<oracle::Gaussian>& target,
                      const detail::InterpolantData& path) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform;
  const int times = 64, pairs = 4000;
  double total = 0.0;
  for (int i = 0; i < times; ++i) {
    const double t = (i + 0.5) / times;
    const InterpolantValues iv = evaluate_interpolant(path, t);
    const oracle::Coefficients c{iv.a, iv.b, iv.a_dot, iv.b_dot};
    double sum = 0.0;
    for (int p = 0; p < pairs; ++p) {
      const double u = uniform(rng);
      const oracle::Gaussian& g = u < target[0].weight ? target[0] : target[1];
      double x[2], v[2];
      for (int k = 0; k < 2; ++k) {
        const double x0 = normal(rng);
        const double x1 = g.mean[k] + std::sqrt(g.var[k]) * normal(rng);
        x[k] = iv.a * x0 + iv.b * x1;
      }
      flow.evaluate_at(c, x, v, nullptr, nullptr);
      sum += v[0] * v[0] + v[1] * v[1];
    }
    total += sum / pairs / times;
  }
  return total;
}

TEST_CASE("the learned interpolant lowers the kinetic energy against trig on a Gaussian mixture") {
  // Target: two Gaussians at (-3, 1) and (3, -1), sd 0.5, equal weights; 20000 rows of data.
  const double sd = 0.5;
  const double centres[2][2] = {{-3.0, 1.0}, {3.0, -1.0}};
  TrainData data;
  data.toy = false;
  data.dim = 2;
  data.name = "two Gaussians";
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  for (int i = 0; i < 20000; ++i) {
    const double* c = centres[i % 2];
    for (int k = 0; k < 2; ++k) data.points.push_back(static_cast<float>(c[k] + sd * normal(rng)));
  }
  TrainOptions o;
  o.hidden = {64, 64, 64};
  o.batch = 512;
  o.steps = 3000;
  o.warmup = 50;
  o.lr = 1e-2;
  o.eval_every = 0;
  o.interpolant = InterpolantKind::kLearnedFourier;
  o.fourier_terms = 3;
  o.threads = 1;
  o.interpolant_lr = 0.002;

  std::unique_ptr<Trainer> trainer;
  REQUIRE(Trainer::create(o, data, &trainer).ok());
  while (trainer->steps_done() < o.steps) REQUIRE(trainer->step(nullptr).ok());

  // The flow the model describes: N(0, I) to the target in normalised coordinates.
  const std::vector<float>& mu = trainer->normalization_mean();
  const std::vector<float>& sigma = trainer->normalization_std();
  std::vector<oracle::Gaussian> base = {{1.0, {0.0, 0.0}, {1.0, 1.0}}}, target;
  for (const auto& c : centres)
    target.push_back({0.5,
                      {(c[0] - mu[0]) / sigma[0], (c[1] - mu[1]) / sigma[1]},
                      {sd * sd / (sigma[0] * sigma[0]), sd * sd / (sigma[1] * sigma[1])}});
  const oracle::MixtureFlow flow(base, target, oracle::Path::kTrig);
  const std::vector<double>& alpha = trainer->interpolant_alpha();
  const std::vector<double>& beta = trainer->interpolant_beta();
  const std::vector<double> zero(alpha.size(), 0.0);
  const detail::InterpolantData trig{InterpolantKind::kTrig, 0, nullptr, nullptr};
  const detail::InterpolantData linear{InterpolantKind::kLinear, 0, nullptr, nullptr};
  const detail::InterpolantData learned{InterpolantKind::kLearnedFourier,
                                        static_cast<uint32_t>(alpha.size()), alpha.data(),
                                        beta.data()};
  const double k_trig = kinetic_energy(flow, target, trig);
  const double k_linear = kinetic_energy(flow, target, linear);
  const double k_learned = kinetic_energy(flow, target, learned);
  MESSAGE("int E|v|^2 dt: trig " << k_trig << ", linear " << k_linear << ", learned " << k_learned
                                 << " (" << 100.0 * (1.0 - k_learned / k_trig)
                                 << "% below trig); alpha " << alpha[0] << " " << alpha[1] << " "
                                 << alpha[2] << ", beta " << beta[0] << " " << beta[1] << " "
                                 << beta[2]);
  // Documented margin (docs/training.md): at least 10 % below trig (measured 16.9 %).
  CHECK(k_learned < 0.90 * k_trig);
  // The coefficients are stored in the model, which the runtime loads as a learned path.
  std::vector<uint8_t> bytes;
  REQUIRE(trainer->model_bytes(&bytes).ok());
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(bytes.data(), bytes.size(), LoadOptions(), &model).ok());
  CHECK(model->info().interpolant == InterpolantKind::kLearnedFourier);
  CHECK(model->info().fourier_terms == 3);
  CHECK(model->data().interpolant.alpha[0] == alpha[0]);
  CHECK(model->data().interpolant.beta[2] == beta[2]);
  // The learned path keeps a and b from vanishing together (the penalty's floor, 0.25, with a
  // little slack for the penalty being soft).
  for (int i = 0; i <= 100; ++i) {
    const InterpolantValues iv = evaluate_interpolant(learned, i / 100.0);
    CHECK(iv.a * iv.a + iv.b * iv.b > 0.2);
  }
}

}  // namespace
