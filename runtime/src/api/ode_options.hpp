// SPDX-License-Identifier: Apache-2.0
// OdeOptions as a run reads them: the struct_size rule for appended fields, every value checked
// with a message naming it, a stored solver resolved by name, and the time grid built.
#pragma once

#include "format/model_data.hpp"
#include "integrate/ode.hpp"
#include "siflow/siflow.hpp"

namespace siflow {

// The options with fields past the caller's struct_size at their defaults.
OdeOptions effective_ode_options(const OdeOptions& o);
// Checks `options` for a run from `start` to `end`; *effective receives the options the run
// uses (a stored solver's method and grid filled in) and *grid the time grid.
Status check_ode_options(const detail::ModelData& md, const OdeOptions& options, double start,
                         double end, OdeOptions* effective, TimeGrid* grid);

}  // namespace siflow
