// SPDX-License-Identifier: Apache-2.0
// The Solver table writer shared by ModelBuilder::finish and add_solvers (format/model_copy.cc).
#pragma once

#include <cstdint>

#include "siflow/model_builder.hpp"
#include "siflow_generated.h"

namespace siflow::detail {

// A stored solver as a Solver table (format 1.2); its test points are [test_start.size() / dim].
flatbuffers::Offset<fb::Solver> write_solver(flatbuffers::FlatBufferBuilder& fbb,
                                             const StoredSolver& s, uint32_t dim);

}  // namespace siflow::detail
