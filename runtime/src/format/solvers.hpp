// SPDX-License-Identifier: Apache-2.0
// Verification of a model's stored solvers (format 1.2; docs/format.md, "Solvers"): counted and
// sized before the loader allocates its table block, then checked one by one into SolverData.
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/model_data.hpp"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"

namespace siflow::detail {

// The stored solvers and their grid points plus per-step coefficients, the doubles check_solvers
// copies (each grid 2 .. kMaxSteps + 1 points); refuses more
// than Limits::kMaxSolvers and solvers in a file recorded older than 1.2.
Status count_solvers(const fb::Model& model, uint32_t* count, size_t* points);
// Verifies every solver into data->solvers (count_solvers' count of them), copying the grids and
// coefficients to `grids` (count_solvers' points). Runs after the test vectors were checked
// (data->info and data->trajectory_steps set): the validation work of both is bounded together.
Status check_solvers(const fb::Model& model, uint32_t dim, ModelData* data, double* grids);

}  // namespace siflow::detail
