// SPDX-License-Identifier: Apache-2.0
// The optimiser of training: AdamW (Adam with decoupled weight decay), learning-rate schedules
// with linear warm-up, and global-norm gradient clipping. Plain float arithmetic in a fixed
// order, so a run is bit-reproducible on one platform.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/train.hpp"

namespace siflow::train {

// The learning rate of step `step` (0-based) of a run of options.steps steps: linear warm-up
// from lr/warmup to lr over the first `warmup` steps, then constant, step decay (times
// step_gamma every step_every steps) or cosine decay to lr * min_lr_ratio at the last step.
double learning_rate(const TrainOptions& options, uint64_t step);

struct AdamSettings {
  double beta1, beta2, epsilon, weight_decay;
};

// One AdamW step (number `step`, counted from 1, for the bias corrections):
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
//   p -= lr (m / (1 - b1^step) / (sqrt(v / (1 - b2^step)) + eps) + weight_decay p).
template <typename T>
void adam_step(const AdamSettings& settings, double lr, uint64_t step, size_t n, T* params,
               const T* grads, T* m, T* v);

// The Euclidean norm of g (accumulated in double, in order); when it exceeds max_norm > 0,
// scales g to that norm. Returns the norm before clipping.
double clip_gradient_norm(float* g, size_t n, double max_norm);

}  // namespace siflow::train
