// SPDX-License-Identifier: Apache-2.0
// Butcher tableaus of the fixed-step methods (and of the Adams-Bashforth bootstraps).
#include "integrate/ode.hpp"

namespace siflow {

const Tableau& tableau(Method method) {
  static const Tableau kEuler{1, {{0}}, {1.0}, {0.0}};
  static const Tableau kHeun{2, {{0}, {1.0}}, {0.5, 0.5}, {0.0, 1.0}};
  static const Tableau kMidpoint{2, {{0}, {0.5}}, {0.0, 1.0}, {0.0, 0.5}};
  static const Tableau kRK4{4,
                            {{0}, {0.5}, {0.0, 0.5}, {0.0, 0.0, 1.0}},
                            {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6},
                            {0.0, 0.5, 0.5, 1.0}};
  static const Tableau kRK4_38{4,
                               {{0}, {1.0 / 3}, {-1.0 / 3, 1.0}, {1.0, -1.0, 1.0}},
                               {1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8},
                               {0.0, 1.0 / 3, 2.0 / 3, 1.0}};
  switch (method) {
    case Method::kEuler:
      return kEuler;
    case Method::kHeun:
      return kHeun;
    case Method::kMidpoint:
      return kMidpoint;
    case Method::kRK4_38:
      return kRK4_38;
    // The one-step method that starts each Adams-Bashforth method (docs/math.md).
    case Method::kAB2:
      return kEuler;
    case Method::kAB3:
      return kHeun;
    case Method::kAB4:
    case Method::kDopri5:  // not a tableau method (integrate/dopri5.hpp); never asked for
    case Method::kRK4:
      break;
  }
  return kRK4;
}

}  // namespace siflow
