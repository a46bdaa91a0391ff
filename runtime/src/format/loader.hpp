// SPDX-License-Identifier: Apache-2.0
// The format stage's entry point: bytes -> verified ModelData (format/model_data.hpp). Runs the
// FlatBuffers Verifier with explicit limits, then every semantic check (version, enums, shapes
// along the graph, limits, finite weights, interpolant validity); nodes are checked by the op
// modules' verifiers, which the caller passes in. Packs nothing (plan/packing.hpp does).
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/model_data.hpp"
#include "format/node_check.hpp"
#include "support/memory.hpp"

namespace siflow::detail {

// Verifies `size` bytes at 64-byte aligned `bytes` (which must outlive the model data) and
// builds the tables in `memory` (nullptr: one heap block).
Status verify_model(const uint8_t* bytes, size_t size, Memory* memory, FindOpVerifier find,
                    ModelData** out);

}  // namespace siflow::detail
