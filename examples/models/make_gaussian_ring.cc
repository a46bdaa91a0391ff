// SPDX-License-Identifier: Apache-2.0
// Builds the bundled example model examples/models/gaussian_ring.sif: a velocity net whose
// last layer is fitted by ridge regression to the closed-form velocity of a Gaussian-mixture
// flow (N(0, I) -> 8 Gaussians on a ring). No training loop: a deterministic, hand-built model.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gaussian_oracle.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

constexpr int kFrequencies = 4;
constexpr int kHidden = 384;
constexpr int kSamples = 60000;
constexpr double kRidge = 1e-6;
constexpr double kRadius = 3.0;
constexpr double kComponentVar = 0.16;  // sigma 0.4

// Solves (A + ridge I) x = b for symmetric positive definite A (n x n) by Cholesky.
std::vector<double> solve_spd(std::vector<double> a, std::vector<double> b, int n) {
  for (int i = 0; i < n; ++i) a[i * n + i] += kRidge * (1.0 + a[i * n + i]);
  for (int j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    d = std::sqrt(d);
    a[j * n + j] = d;
    for (int i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / d;
    }
  }
  for (int i = 0; i < n; ++i) {
    double s = b[i];
    for (int k = 0; k < i; ++k) s -= a[i * n + k] * b[k];
    b[i] = s / a[i * n + i];
  }
  for (int i = n - 1; i >= 0; --i) {
    double s = b[i];
    for (int k = i + 1; k < n; ++k) s -= a[k * n + i] * b[k];
    b[i] = s / a[i * n + i];
  }
  return b;
}

struct Net {
  std::vector<float> freq;    // [kFrequencies]
  std::vector<float> w1, b1;  // [kHidden][2 + 2 kFrequencies], [kHidden]
  std::vector<float> w2, b2;  // [2][kHidden], [2]

  // Hidden features in double, in the graph's order: concat[x, sin(f t), cos(f t)].
  void hidden(double t, const double* x, double* h) const {
    double in[2 + 2 * kFrequencies];
    in[0] = x[0];
    in[1] = x[1];
    for (int k = 0; k < kFrequencies; ++k) {
      const double ft = static_cast<double>(freq[k]) * t;
      in[2 + k] = std::sin(ft);
      in[2 + kFrequencies + k] = std::cos(ft);
    }
    for (int j = 0; j < kHidden; ++j) {
      double s = b1[j];
      for (int i = 0; i < 2 + 2 * kFrequencies; ++i)
        s += w1[j * (2 + 2 * kFrequencies) + i] * in[i];
      h[j] = std::tanh(s);
    }
  }
  void velocity(double t, const double* x, double* v) const {
    std::vector<double> h(kHidden);
    hidden(t, x, h.data());
    for (int o = 0; o < 2; ++o) {
      double s = b2[o];
      for (int j = 0; j < kHidden; ++j) s += w2[o * kHidden + j] * h[j];
      v[o] = s;
    }
  }
};

oracle::MixtureFlow ring_flow() {
  std::vector<oracle::Gaussian> ring;
  for (int k = 0; k < 8; ++k) {
    const double angle = 2 * M_PI * k / 8;
    ring.push_back({1.0 / 8,
                    {kRadius * std::cos(angle), kRadius * std::sin(angle)},
                    {kComponentVar, kComponentVar}});
  }
  return oracle::MixtureFlow({{1.0, {0.0, 0.0}, {1.0, 1.0}}}, ring, oracle::Path::kTrig);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT.sif\n", argv[0]);
    return 2;
  }
  std::mt19937_64 rng(20221030);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const int in_width = 2 + 2 * kFrequencies;
  Net net;
  for (int k = 0; k < kFrequencies; ++k) net.freq.push_back(static_cast<float>(M_PI * (k + 1) / 2));
  for (int j = 0; j < kHidden; ++j) {
    for (int i = 0; i < in_width; ++i)
      net.w1.push_back(static_cast<float>(normal(rng) * (i < 2 ? 0.8 : 1.5)));
    net.b1.push_back(static_cast<float>(normal(rng) * 1.5));
  }
  // Regression data: x_t = a x0 + b x1 with t uniform, target the closed-form v(t, x_t).
  oracle::MixtureFlow flow = ring_flow();
  std::vector<double> gram(kHidden * kHidden, 0.0), rhs0(kHidden, 0.0), rhs1(kHidden, 0.0);
  std::vector<double> h(kHidden);
  for (int s = 0; s < kSamples; ++s) {
    const double t = uniform(rng);
    const int comp = static_cast<int>(uniform(rng) * 8) % 8;
    const double angle = 2 * M_PI * comp / 8;
    const double x1[2] = {kRadius * std::cos(angle) + std::sqrt(kComponentVar) * normal(rng),
                          kRadius * std::sin(angle) + std::sqrt(kComponentVar) * normal(rng)};
    const oracle::Coefficients c = oracle::coefficients(oracle::Path::kTrig, t);
    const double x[2] = {c.a * normal(rng) + c.b * x1[0], c.a * normal(rng) + c.b * x1[1]};
    double v[2];
    flow.evaluate(t, x, v, nullptr, nullptr);
    net.hidden(t, x, h.data());
    for (int i = 0; i < kHidden; ++i) {
      rhs0[i] += h[i] * v[0];
      rhs1[i] += h[i] * v[1];
      for (int j = 0; j <= i; ++j) gram[i * kHidden + j] += h[i] * h[j];
    }
  }
  for (int i = 0; i < kHidden; ++i)
    for (int j = i + 1; j < kHidden; ++j) gram[i * kHidden + j] = gram[j * kHidden + i];
  const std::vector<double> c0 = solve_spd(gram, rhs0, kHidden);
  const std::vector<double> c1 = solve_spd(gram, rhs1, kHidden);
  for (int j = 0; j < kHidden; ++j) net.w2.push_back(static_cast<float>(c0[j]));
  for (int j = 0; j < kHidden; ++j) net.w2.push_back(static_cast<float>(c1[j]));
  net.b2 = {0.0f, 0.0f};

  siflow::ModelBuilder b(2);
  const uint32_t phase = b.fully_connected(b.t(), kFrequencies, net.freq, {}, "time_frequencies");
  const uint32_t features = b.concat(
      {b.x(), b.unary(phase, siflow::UnaryKind::kSin), b.unary(phase, siflow::UnaryKind::kCos)});
  const uint32_t hidden = b.unary(b.fully_connected(features, kHidden, net.w1, net.b1, "hidden"),
                                  siflow::UnaryKind::kTanh);
  b.set_output(b.fully_connected(hidden, 2, net.w2, net.b2, "velocity"));
  b.set_name("gaussian-ring");
  b.set_interpolant(siflow::InterpolantKind::kTrig);
  b.set_normal_base();
  b.add_metadata("description",
                 "hand-built: random tanh features, last layer fitted by ridge regression to the "
                 "closed-form velocity of N(0,I) -> 8 Gaussians (radius 3, sigma 0.4), trig path");
  b.add_metadata("target", "mixture of 8 Gaussians, radius 3, sigma 0.4");
  b.add_metadata("generator", "examples/models/make_gaussian_ring.cc");

  // Embedded test vectors from a float64 evaluation of the same weights.
  std::vector<float> tt, ty, tv;
  for (int i = 0; i < 16; ++i) {
    const double t = (i + 0.5) / 16;
    const double x[2] = {3.0 * normal(rng), 3.0 * normal(rng)};
    double v[2];
    net.velocity(t, x, v);
    tt.push_back(static_cast<float>(t));
    ty.push_back(static_cast<float>(x[0]));
    ty.push_back(static_cast<float>(x[1]));
    tv.push_back(static_cast<float>(v[0]));
    tv.push_back(static_cast<float>(v[1]));
  }
  // Float32 inputs rounded from these doubles and float32 accumulation over 384 terms:
  // 1e-5 relative to max(1, |v|) covers the expected ~1e-6 differences.
  b.set_velocity_tests(tt, ty, tv, 1e-5f);
  const int steps = 20;
  std::vector<float> start, end;
  for (int i = 0; i < 4; ++i) {
    double x[2] = {normal(rng), normal(rng)};
    start.push_back(static_cast<float>(x[0]));
    start.push_back(static_cast<float>(x[1]));
    // Classic RK4 in double from the float32-rounded start.
    x[0] = start[start.size() - 2];
    x[1] = start[start.size() - 1];
    const double dt = 1.0 / steps;
    for (int n = 0; n < steps; ++n) {
      const double t = n * dt;
      double k1[2], k2[2], k3[2], k4[2], y[2];
      net.velocity(t, x, k1);
      for (int d = 0; d < 2; ++d) y[d] = x[d] + 0.5 * dt * k1[d];
      net.velocity(t + 0.5 * dt, y, k2);
      for (int d = 0; d < 2; ++d) y[d] = x[d] + 0.5 * dt * k2[d];
      net.velocity(t + 0.5 * dt, y, k3);
      for (int d = 0; d < 2; ++d) y[d] = x[d] + dt * k3[d];
      net.velocity(t + dt, y, k4);
      for (int d = 0; d < 2; ++d) x[d] += dt / 6 * (k1[d] + 2 * k2[d] + 2 * k3[d] + k4[d]);
    }
    end.push_back(static_cast<float>(x[0]));
    end.push_back(static_cast<float>(x[1]));
  }
  b.set_trajectory_tests(steps, start, end, 1e-4f);
  const std::vector<uint8_t> bytes = b.finish();
  siflow::Status s = siflow::write_file_atomic(argv[1], bytes.data(), bytes.size());
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message());
    return 1;
  }
  std::printf("wrote %s (%zu bytes)\n", argv[1], bytes.size());
  return 0;
}
