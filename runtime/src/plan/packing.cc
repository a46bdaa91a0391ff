// SPDX-License-Identifier: Apache-2.0
// Packing of weights for the fast kernels; see packing.hpp.
#include "plan/packing.hpp"

#include <cstdint>

#include "ops/op.hpp"
#include "support/aligned_memory.hpp"

namespace siflow::detail {

Status pack_model_weights(ModelData* data, Memory* memory) {
  constexpr size_t kAlignment = 64;
  // Counted in 64 bits: on a 32-bit build the packed copies (up to about 4x a convolution's
  // weights) of a model near the parameter limit would wrap a size_t around.
  uint64_t total = 0;
  for (uint32_t i = 0; i < data->node_count; ++i) {
    const ops::OpModule& m = ops::op_module(data->nodes[i].op);
    if (m.packed_floats) total += m.packed_floats(*data, i);
  }
  if (total == 0) return Status();
  if (total > SIZE_MAX / sizeof(float))
    return Status::error(StatusCode::kOutOfMemory,
                         "the packed weights need %llu bytes, more than this platform can address",
                         static_cast<unsigned long long>(total) * sizeof(float));
  const size_t bytes = static_cast<size_t>(total) * sizeof(float);
  float* block = static_cast<float*>(memory ? memory->allocate(bytes, kAlignment)
                                            : aligned_malloc(kAlignment, bytes));
  if (!block)
    return Status::error(StatusCode::kOutOfMemory,
                         "cannot allocate %zu bytes for the packed weights", bytes);
  data->packed_block = block;
  for (uint32_t i = 0; i < data->node_count; ++i) {
    const ops::OpModule& m = ops::op_module(data->nodes[i].op);
    if (!m.packed_floats) continue;
    const size_t floats = static_cast<size_t>(m.packed_floats(*data, i));  // below total
    if (floats == 0) continue;
    m.pack(*data, &data->nodes[i], block);
    block += floats;
  }
  data->info.packed_bytes = bytes;
  data->info.held_bytes += bytes;
  return Status();
}

}  // namespace siflow::detail
