// SPDX-License-Identifier: Apache-2.0
// Weights repacked for the fast kernels, once per model at load (shared by every plan): each op
// module says how many floats its node packs and packs them (the simd kernels' panels for dense
// layers). One block, after the model's tables, in the model's memory.
#pragma once

#include "format/model_data.hpp"
#include "support/memory.hpp"

namespace siflow::detail {

// Packs every node that packs anything into one 64-byte aligned block from `memory` (nullptr:
// the heap), recorded in ModelData::packed_block and ModelInfo::packed_bytes / held_bytes.
Status pack_model_weights(ModelData* data, Memory* memory);

}  // namespace siflow::detail
