// SPDX-License-Identifier: Apache-2.0
// The xnnpack backend: dense layers through XNNPACK's fully connected operators (Debian's
// libxnnpack-dev, its February 2022 API). Every XNNPACK call of the project is in xnn_dense.cc,
// so a newer API is a change to that file only. Operators are created per plan (they hold the
// setup of their last run, so they cannot be shared between plans the way a model is), two per
// layer: with the bias for values, without it for tangents. XNNPACK allocates through the
// project's allocator hook, which counts its calls and live bytes. Knows nothing of models or
// plans: the planner creates one layer per node it puts on XNNPACK.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/siflow.hpp"

namespace siflow::xnn {

// Bytes XNNPACK may read past the end of an input (XNN_EXTRA_BYTES; xnn_dense.cc checks the
// bound at compile time). A plan pads every network buffer by this much.
constexpr size_t kExtraReadBytes = 16;

// Initializes XNNPACK once per process with the counting allocator; kUnsupported when it
// refuses (e.g. a CPU it does not support).
Status initialize();

// One dense layer y = x W^T (+ b), W [out][in]: two operators (with the bias for values, without
// it for tangents) created from the layer's shapes and weights, run on `pool` (a pthreadpool_t,
// or nullptr for the caller's thread). The weights must outlive the layer.
struct DenseLayer;
Status create_dense(uint32_t in, uint32_t out, const float* weight, const float* bias, void* pool,
                    DenseLayer** layer);
void destroy_dense(DenseLayer* layer);

// y = x W^T (+ b unless `tangent`) for `rows` rows. x must be followed by kExtraReadBytes of
// readable memory. One call at a time per layer (callers on several threads take turns). Fills y
// with NaN if XNNPACK refuses (it does not for a valid plan), so the run reports a numerical error
// instead of garbage.
void run_dense(DenseLayer* layer, const float* x, size_t rows, float* y, bool tangent);

// XNNPACK's allocations through the project's hook: calls so far and bytes live now.
struct AllocationStats {
  uint64_t calls = 0;
  uint64_t live_bytes = 0;
};
AllocationStats allocation_stats();

}  // namespace siflow::xnn
