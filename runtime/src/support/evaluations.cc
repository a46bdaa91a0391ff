// SPDX-License-Identifier: Apache-2.0
// fixed_grid_evaluations: the NFE of a fixed-grid method, shared by the loader (a stored
// solver's recorded NFE is checked against it) and the multistep integrator's tests.
#include "siflow/siflow.hpp"

namespace siflow {

uint64_t fixed_grid_evaluations(Method method, uint64_t steps) {
  uint64_t stages = 0, boot_steps = 0, boot_stages = 0;
  switch (method) {
    case Method::kEuler:
      stages = 1;
      break;
    case Method::kHeun:
    case Method::kMidpoint:
      stages = 2;
      break;
    case Method::kRK4:
    case Method::kRK4_38:
      stages = 4;
      break;
    case Method::kAB2:
      boot_steps = 1;
      boot_stages = 1;  // Euler
      break;
    case Method::kAB3:
      boot_steps = 2;
      boot_stages = 2;  // Heun
      break;
    case Method::kAB4:
      boot_steps = 3;
      boot_stages = 4;  // RK4
      break;
    case Method::kDopri5:
      return 0;
  }
  if (stages) return stages * steps;
  if (steps <= boot_steps) return steps * boot_stages;
  return boot_steps * boot_stages + (steps - boot_steps);
}

}  // namespace siflow
