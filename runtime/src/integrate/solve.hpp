// SPDX-License-Identifier: Apache-2.0
// One entry point for every ODE method: the Runge-Kutta tableaus, Adams-Bashforth and the
// adaptive dopri5, so plan.cc, validation, tuning and the oracle tests dispatch the same way.
// The step callback is after_step(step) on a fixed grid and after_step(step, t) for dopri5.
#pragma once

#include "integrate/dopri5.hpp"
#include "integrate/multistep.hpp"
#include "integrate/ode.hpp"

namespace siflow {

template <typename T, typename Field, typename AfterStep>
Status integrate_method(Field& field, Method method, const AdaptiveOptions& adaptive,
                        const TimeGrid& grid, size_t rows, uint32_t dim, T* x, double* ell,
                        const OdeWorkspace<T>& ws, AfterStep&& after_step) {
  if (method == Method::kDopri5)
    return integrate_dopri5(field, adaptive, grid, rows, dim, x, ell, ws, after_step);
  if (is_multistep(method))
    return integrate_multistep(field, method, grid, rows, dim, x, ell, ws, after_step);
  return integrate_ode(field, tableau(method), grid, rows, dim, x, ell, ws, after_step);
}

}  // namespace siflow
