// SPDX-License-Identifier: Apache-2.0
// The closed-form test oracle: Gaussian-mixture endpoints with diagonal covariances give
// rho_t, the velocity, its divergence and the score in closed form (docs/math.md, "Test
// oracle"). It plugs into the integrators as a Field, like a network. Test-only, uses libm.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "siflow/siflow.hpp"

namespace oracle {

struct Gaussian {
  double weight;
  std::vector<double> mean;
  std::vector<double> var;  // diagonal covariance
};

enum class Path { kLinear, kTrig };

struct Coefficients {
  double a, b, a_dot, b_dot;
};

inline Coefficients coefficients(Path path, double t) {
  if (path == Path::kLinear) return {1.0 - t, t, -1.0, 1.0};
  const double h = M_PI / 2;
  return {std::cos(h * t), std::sin(h * t), -h * std::sin(h * t), h * std::cos(h * t)};
}

class MixtureFlow {
 public:
  MixtureFlow(std::vector<Gaussian> base, std::vector<Gaussian> target, Path path)
      : base_(std::move(base)),
        target_(std::move(target)),
        path_(path),
        dim_(static_cast<uint32_t>(base_[0].mean.size())) {}

  uint32_t dim() const { return dim_; }

  // log rho_t(x), and optionally v, div v and the score at x.
  double evaluate(double t, const double* x, double* v, double* div, double* score) const {
    return evaluate_at(coefficients(path_, t), x, v, div, score);
  }
  // The same for any interpolant, given its coefficients at t (a learned Fourier path, say).
  double evaluate_at(const Coefficients& c, const double* x, double* v, double* div,
                     double* score) const {
    const size_t pairs = base_.size() * target_.size();
    std::vector<double> logw(pairs);
    size_t ij = 0;
    for (const Gaussian& g0 : base_)
      for (const Gaussian& g1 : target_) {
        double l = std::log(g0.weight * g1.weight);
        for (uint32_t k = 0; k < dim_; ++k) {
          const double m = c.a * g0.mean[k] + c.b * g1.mean[k];
          const double s = c.a * c.a * g0.var[k] + c.b * c.b * g1.var[k];
          l -= 0.5 * ((x[k] - m) * (x[k] - m) / s + std::log(2 * M_PI * s));
        }
        logw[ij++] = l;
      }
    double top = logw[0];
    for (double l : logw) top = std::max(top, l);
    double sum = 0.0;
    for (double l : logw) sum += std::exp(l - top);
    const double log_rho = top + std::log(sum);
    if (!v && !div && !score) return log_rho;
    std::vector<double> s(dim_, 0.0), vel(dim_, 0.0);
    // First pass: velocity and score.
    ij = 0;
    for (const Gaussian& g0 : base_)
      for (const Gaussian& g1 : target_) {
        const double w = std::exp(logw[ij++] - log_rho);
        for (uint32_t k = 0; k < dim_; ++k) {
          const double m = c.a * g0.mean[k] + c.b * g1.mean[k];
          const double sig = c.a * c.a * g0.var[k] + c.b * c.b * g1.var[k];
          const double m_dot = c.a_dot * g0.mean[k] + c.b_dot * g1.mean[k];
          const double c_dot = 2 * (c.a * c.a_dot * g0.var[k] + c.b * c.b_dot * g1.var[k]);
          vel[k] += w * (m_dot + 0.5 * c_dot / sig * (x[k] - m));
          s[k] -= w * (x[k] - m) / sig;
        }
      }
    if (div) {
      // div v = sum_ij w_ij [ (grad log N_ij - score) . u_ij + sum_k C_dot_k / (2 Sigma_k) ].
      double d = 0.0;
      ij = 0;
      for (const Gaussian& g0 : base_)
        for (const Gaussian& g1 : target_) {
          const double w = std::exp(logw[ij++] - log_rho);
          double term = 0.0;
          for (uint32_t k = 0; k < dim_; ++k) {
            const double m = c.a * g0.mean[k] + c.b * g1.mean[k];
            const double sig = c.a * c.a * g0.var[k] + c.b * c.b * g1.var[k];
            const double m_dot = c.a_dot * g0.mean[k] + c.b_dot * g1.mean[k];
            const double c_dot = 2 * (c.a * c.a_dot * g0.var[k] + c.b * c.b_dot * g1.var[k]);
            const double u = m_dot + 0.5 * c_dot / sig * (x[k] - m);
            term += (-(x[k] - m) / sig - s[k]) * u + 0.5 * c_dot / sig;
          }
          d += w * term;
        }
      *div = d;
    }
    for (uint32_t k = 0; k < dim_; ++k) {
      if (v) v[k] = vel[k];
      if (score) score[k] = s[k];
    }
    return log_rho;
  }

  // The Field interface of siflow's integrators, for any scalar type.
  template <typename T>
  siflow::Status eval(double t, const T* x, size_t rows, T* v, double* div) {
    std::vector<double> xd(dim_), vd(dim_);
    for (size_t r = 0; r < rows; ++r) {
      for (uint32_t k = 0; k < dim_; ++k) xd[k] = x[r * dim_ + k];
      evaluate(t, xd.data(), vd.data(), div ? div + r : nullptr, nullptr);
      for (uint32_t k = 0; k < dim_; ++k) v[r * dim_ + k] = static_cast<T>(vd[k]);
    }
    ++evaluations;
    return siflow::Status();
  }

  // Mean and per-component variance of the target mixture.
  void target_moments(std::vector<double>* mean, std::vector<double>* var) const {
    mean->assign(dim_, 0.0);
    var->assign(dim_, 0.0);
    for (const Gaussian& g : target_)
      for (uint32_t k = 0; k < dim_; ++k) (*mean)[k] += g.weight * g.mean[k];
    for (const Gaussian& g : target_)
      for (uint32_t k = 0; k < dim_; ++k)
        (*var)[k] += g.weight * (g.var[k] + (g.mean[k] - (*mean)[k]) * (g.mean[k] - (*mean)[k]));
  }

  size_t evaluations = 0;

 private:
  std::vector<Gaussian> base_, target_;
  Path path_;
  uint32_t dim_;
};

}  // namespace oracle
