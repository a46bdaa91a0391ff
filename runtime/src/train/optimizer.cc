// SPDX-License-Identifier: Apache-2.0
// AdamW, schedules and clipping (see optimizer.hpp).
#include "train/optimizer.hpp"

#include <cmath>

#include "math/elementary.hpp"

namespace siflow::train {

double learning_rate(const TrainOptions& o, uint64_t step) {
  if (o.warmup > 0 && step < o.warmup) return o.lr * static_cast<double>(step + 1) / o.warmup;
  switch (o.schedule) {
    case LrSchedule::kConstant:
      return o.lr;
    case LrSchedule::kStep: {
      double lr = o.lr;
      for (uint64_t k = o.step_every ? step / o.step_every : 0; k > 0; --k) lr *= o.step_gamma;
      return lr;
    }
    case LrSchedule::kCosine: {
      const uint64_t span = o.steps > o.warmup + 1 ? o.steps - o.warmup - 1 : 1;
      const double progress =
          static_cast<double>(step - (step < o.warmup ? step : o.warmup)) / span;
      const double low = o.lr * o.min_lr_ratio;
      return low +
             0.5 * (o.lr - low) * (1.0 + math::cos(math::kPi * (progress < 1 ? progress : 1)));
    }
  }
  return o.lr;
}

template <typename T>
void adam_step(const AdamSettings& s, double lr, uint64_t step, size_t n, T* params, const T* grads,
               T* m, T* v) {
  // beta^step by repeated multiplication (libm's pow may differ between platforms); past 1e5
  // steps both powers are below 1e-43 for any beta <= 0.999, so the corrections are 1.
  double b1t = 1.0, b2t = 1.0;
  for (uint64_t k = 0; k < step && k < 100000; ++k) {
    b1t *= s.beta1;
    b2t *= s.beta2;
  }
  const T c1 = static_cast<T>(1.0 / (1.0 - b1t));
  const T c2 = static_cast<T>(1.0 / (1.0 - b2t));
  const T b1 = static_cast<T>(s.beta1), b2 = static_cast<T>(s.beta2);
  const T one_b1 = static_cast<T>(1.0 - s.beta1), one_b2 = static_cast<T>(1.0 - s.beta2);
  const T eps = static_cast<T>(s.epsilon), rate = static_cast<T>(lr);
  const T decay = static_cast<T>(s.weight_decay);
  for (size_t i = 0; i < n; ++i) {
    const T g = grads[i];
    m[i] = b1 * m[i] + one_b1 * g;
    v[i] = b2 * v[i] + one_b2 * (g * g);
    // std::sqrt is correctly rounded (IEEE), so this is the same on every platform.
    const T update = (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
    params[i] = params[i] - rate * (update + decay * params[i]);
  }
}

template void adam_step<float>(const AdamSettings&, double, uint64_t, size_t, float*, const float*,
                               float*, float*);
template void adam_step<double>(const AdamSettings&, double, uint64_t, size_t, double*,
                                const double*, double*, double*);

double clip_gradient_norm(float* g, size_t n, double max_norm) {
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(g[i]) * g[i];
  const double norm = math::sqrt(sum);
  if (max_norm > 0.0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / norm);
    for (size_t i = 0; i < n; ++i) g[i] *= scale;
  }
  return norm;
}

}  // namespace siflow::train
