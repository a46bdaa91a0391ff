// SPDX-License-Identifier: Apache-2.0
// Lays buffers with known lifetimes into one arena so that buffers alive at the same time never
// overlap (greedy first-fit by production order, as TFLM's greedy planner does).
// Runs at plan time only; never during a run.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/siflow.hpp"
#include "support/aligned_memory.hpp"
#include "support/memory.hpp"

namespace siflow {

constexpr size_t kArenaAlignment = 64;

struct BufferRequest {
  size_t bytes;    // 0: no buffer
  uint32_t first;  // first step (node index) the buffer is alive
  uint32_t last;   // last step it is alive, inclusive
};

// Assigns 64-byte aligned offsets[i] to each request; *total receives the bytes spanned.
// Its scratch comes from `memory` (given back before returning); fails only when there is none.
Status plan_buffers(const BufferRequest* requests, size_t count, size_t* offsets, size_t* total,
                    detail::Memory& memory);

}  // namespace siflow
