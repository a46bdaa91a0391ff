// SPDX-License-Identifier: Apache-2.0
// The xnnpack backend: dense layers through XNNPACK's fully connected operators (Debian's
// libxnnpack-dev, its February 2022 API). Every XNNPACK call of the project is in xnn_dense.cc,
// so a newer API is a change to that file only. Operators are created per plan (they hold the
// setup of their last run, so they cannot be shared between plans the way a model is), two per
// layer: with the bias for values, without it for tangents. XNNPACK allocates through the
// project's allocator hook, which counts its calls and live bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/model_data.hpp"
#include "siflow/siflow.hpp"

namespace siflow {
enum class NodeKernel : uint8_t;
}

namespace siflow::xnn {

// Initializes XNNPACK once per process with the counting allocator; kUnsupported when it
// refuses (e.g. a CPU it does not support).
Status initialize();

struct Layers;
// Operators for every node whose kernel is NodeKernel::kXnnpack, run on `pool` (a
// pthreadpool_t, or nullptr for the caller's thread).
Status create_layers(const detail::ModelData& model, const NodeKernel* kernels, void* pool,
                     Layers** out);
void destroy_layers(Layers* layers);

// y = x W^T (+ b unless `tangent`) for `rows` rows through node `node`'s operator. x must be
// followed by XNN_EXTRA_BYTES of readable memory (plan buffers have kReadPadding). Fills y with NaN
// if XNNPACK refuses (it does not for a valid plan), so the run reports a numerical error instead
// of garbage.
void run_dense(Layers* layers, uint32_t node, const float* x, size_t rows, float* y, bool tangent);

// XNNPACK's allocations through the project's hook: calls so far and bytes live now.
struct AllocationStats {
  uint64_t calls = 0;
  uint64_t live_bytes = 0;
};
AllocationStats allocation_stats();

}  // namespace siflow::xnn
