// SPDX-License-Identifier: Apache-2.0
// The built-in 2D toy datasets for on-device training, pinned to FFJORD's inf_train_gen
// (rtqichen/ffjord, lib/toy_data.py), with closed-form densities where they exist.
// Never allocates and never calls libm: point i is the same bits for (seed, i) on every platform.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/train.hpp"

namespace siflow::train {

// Toy-data draws use Philox stream kStreamToyData (math/random.hpp lists every stream).
// Point i uses counter (block, i, stream 10): block 0 gives the uniform and discrete choices
// (lanes 0-3), block 1 the Gaussian noise (a Box-Muller pair from lanes 0 and 1, fill_normals).

// The datasets (siflow::ToyData) and their names (toy_data_name, parse_toy_data,
// toy_data_names) are public, in siflow/train.hpp; the enum's order is the checkpoint's.
using ::siflow::ToyData;

// Points first .. first+n-1 of the dataset for `seed`, row-major [n][2] floats. Point i is a pure
// function of (seed, i): computed in double with the runtime's own elementary functions and
// rounded to float once. Never allocates.
void draw_toy_data(ToyData kind, uint64_t seed, uint64_t first, size_t n, float* out);

// log-density of the dataset's distribution at the points x [n][2] (double), in closed form:
// available for checkerboard (log(1/32) on its 8 closed squares, -inf off them) and 8gaussians
// (the mixture of 8 isotropic Gaussians N(c_k/1.414, (0.5/1.414)^2 I)); returns false (and writes
// nothing) for the others.
bool toy_log_density(ToyData kind, const double* x, size_t n, double* out);

// The differential entropy in nats where known in closed form (checkerboard: log 32), else NaN.
double toy_entropy(ToyData kind);

}  // namespace siflow::train
