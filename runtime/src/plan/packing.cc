// SPDX-License-Identifier: Apache-2.0
// Packing of weights for the fast kernels; see packing.hpp.
#include "plan/packing.hpp"

#include "ops/op.hpp"
#include "support/aligned_memory.hpp"

namespace siflow::detail {

Status pack_model_weights(ModelData* data, Memory* memory) {
  constexpr size_t kAlignment = 64;
  size_t total = 0;
  for (uint32_t i = 0; i < data->node_count; ++i) {
    const ops::OpModule& m = ops::op_module(data->nodes[i].op);
    if (m.packed_floats) total += m.packed_floats(*data, i);
  }
  if (total == 0) return Status();
  float* block = static_cast<float*>(memory ? memory->allocate(total * sizeof(float), kAlignment)
                                            : aligned_malloc(kAlignment, total * sizeof(float)));
  if (!block)
    return Status::error(StatusCode::kOutOfMemory,
                         "cannot allocate %zu bytes for the packed weights", total * sizeof(float));
  data->packed_block = block;
  for (uint32_t i = 0; i < data->node_count; ++i) {
    const ops::OpModule& m = ops::op_module(data->nodes[i].op);
    if (!m.packed_floats) continue;
    const size_t floats = m.packed_floats(*data, i);
    if (floats == 0) continue;
    m.pack(*data, &data->nodes[i], block);
    block += floats;
  }
  data->info.packed_bytes = total * sizeof(float);
  data->info.held_bytes += total * sizeof(float);
  return Status();
}

}  // namespace siflow::detail
