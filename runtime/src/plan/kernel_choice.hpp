// SPDX-License-Identifier: Apache-2.0
// The kernel choice of a plan: which backend runs each graph node, which dense layers run their
// activation in the epilogue, the simd variant, the thread pool and XNNPACK's operators. Made
// once at plan creation (allocating), used by every run (not allocating).
#pragma once

#include <cstdint>

#include "format/model_data.hpp"
#include "net/executor.hpp"
#include "siflow/siflow.hpp"
#include "support/memory.hpp"

namespace siflow {

struct KernelChoice {
  NetKernels kernels;
  char (*names)[32] = nullptr;  // [node_count]: what Plan::node_kernel reports
};

// Chooses for options.backend (docs/architecture.md):
//  - reference: every node on the reference kernels;
//  - simd / auto: dense layers and activations on the simd kernels, other ops on reference;
//    a dense layer whose only consumer is the activation right after it runs that activation
//    in its epilogue;
//  - xnnpack: dense layers on XNNPACK (except one reading the caller's x directly, which has
//    no read padding), activations on simd;
//  - auto with options.tune: each dense layer XNNPACK could run is timed on both (three runs
//    at max_batch rows on the plan's buffers) and keeps the faster.
// `values` are the plan's buffers (read and written only when tuning). The per-node tables come
// from `memory`; a measuring `memory` only counts them and starts no threads or operators.
// Worker threads (threads > 1) and XNNPACK operators live on the heap; free_kernel_choice
// releases them.
Status choose_kernels(const detail::ModelData& model, const PlanOptions& options,
                      float* const* values, detail::Memory& memory, KernelChoice* out);
void free_kernel_choice(KernelChoice* choice);

}  // namespace siflow
