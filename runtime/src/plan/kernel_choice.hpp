// SPDX-License-Identifier: Apache-2.0
// The kernel choice of a plan: which backend runs each graph node, which dense layers run their
// activation in the epilogue, the simd variant, the thread pool and XNNPACK's operators. Made
// once at plan creation (allocating), before the arena layout, which reads the fusion decision;
// used by every run (not allocating).
#pragma once

#include <cstdint>

#include "format/model_data.hpp"
#include "net/executor.hpp"
#include "siflow/siflow.hpp"
#include "support/memory.hpp"

namespace siflow {

// Bytes of a node's kernel name, its terminating NUL included: the longest,
// "simd/wasm_simd128 nhwc nchw>nhwc" (32 characters), and a reduced precision's suffix fit.
constexpr size_t kKernelNameBytes = 48;

struct KernelChoice {
  NetKernels kernels;
  char (*names)[kKernelNameBytes] = nullptr;  // [node_count]: what Plan::node_kernel reports
  bool tune = false;                          // tune_kernels() has layers to time
  uint32_t* component = nullptr;  // [tensors]: the layout choice's scratch (layout_choice.hpp)
  bool tangents = false;          // the plan has tangent directions (divergence not none)
  // Tuning timed a velocity run of one block both ways and found every node on the caller's
  // thread faster than each node split over the pool (choose_velocity_threads): velocity runs
  // leave the pool idle; runs with tangents still split.
  bool velocity_on_caller = false;
};

// Chooses for options.backend (docs/architecture.md), among the kernels each node's op module
// allows:
//  - reference: every node on the reference kernels;
//  - simd / auto: nodes the simd kernels can run on simd, others on reference; a dense layer
//    whose only consumer is the activation right after it runs that activation in its epilogue
//    (NetKernels::fused, which the arena layout reads);
//  - xnnpack: dense layers on XNNPACK (except one reading the caller's x directly, which has
//    no read padding) and every Conv2d XNNPACK accepts (NHWC, "xnnpack nhwc"), activations and
//    the rest on simd;
//  - auto with options.tune: dense layers and Conv2d nodes XNNPACK could run get an XNNPACK
//    layer, timed by tune_kernels() once the arena exists.
// The per-node tables come from `memory`; a measuring `memory` only counts them and starts no
// threads or operators. Worker threads (threads > 1) and XNNPACK operators live on the heap;
// free_kernel_choice releases them.
Status choose_kernels(const detail::ModelData& model, const PlanOptions& options,
                      detail::Memory& memory, KernelChoice* out);
// Once the arena exists: sets every Conv2d and ConvTranspose2d on XNNPACK up on the plan's
// `scratch` (XNNPACK's buffers for the input size are allocated here, not at a run; one that fails
// moves to simd). With options.tune: times each dense layer and each Conv2d (the whole layer,
// NCHW<->NHWC conversions included) on simd and XNNPACK (best of three at `rows` rows, the plan's
// velocity block, on the plan's buffers `values`) and keeps the faster; a layer moved to simd does
// not fuse its activation (the layout planned it unfused); a Conv2d reading the caller's x is not
// timed and stays on simd. Then lays tensors out NHWC between XNNPACK convolutions where it can
// (plan/layout_choice.hpp; the timing above counted both conversions of every convolution, so
// it is decided after the kernels) and names every node's kernel with its layouts.
void tune_kernels(const detail::ModelData& model, size_t rows, float* const* values, float* scratch,
                  KernelChoice* choice);
void free_kernel_choice(const detail::ModelData& model, KernelChoice* choice);

}  // namespace siflow
