// SPDX-License-Identifier: Apache-2.0
// What a plan is (PlanData: the model, its arena layout, the bound buffers, the integrator
// workspace and the kernel choice) and how it is built, in one fixed sequence of requests to a
// Memory: the API object's bytes, PlanData, the tensor pointer tables, the kernel tables, the
// layout's offsets (with the planning scratch after them, given back) and the arena. A measuring
// Memory runs the same sequence to count the bytes; it then skips the arena and creates neither
// threads nor XNNPACK operators. Runs (api/plan.cc) never allocate.
#pragma once

#include <cstddef>
#include <cstdint>

#include "integrate/ode.hpp"
#include "net/executor.hpp"
#include "plan/kernel_choice.hpp"
#include "plan/plan_layout.hpp"
#include "siflow/siflow.hpp"
#include "support/memory.hpp"

namespace siflow::detail {

struct PlanData {
  const Model* model;
  const ModelData* md;
  PlanOptions options;
  PlanLayout layout;
  void* owned_arena;   // the block holding the whole plan when create() allocated it
  size_t total_bytes;  // the bytes the plan occupies from its 64-byte aligned start
  uint8_t* arena;
  float** values;
  float** tangents;
  OdeWorkspace<float> ws;
  float* work;
  double* ell;
  float* scratch;  // the nodes' shared scratch, or nullptr
  // Conditioning and guidance (plan_layout.hpp): per-row labels and conditions the network
  // reads, the guided pass's doubled input and divergences; nullptr when not needed.
  float* label_rows;
  float* cond_rows;
  float* net_x;
  double* net_div;
  KernelChoice choice;
  NetBlocking blocking;  // blocked execution: the block size's inputs and its pointer tables
  uint64_t evaluations;  // network evaluations per trajectory of the last run (the most of any
                         // chunk), Plan::evaluations()
  NodeProfile* profile;  // Plan::set_profile's table [node_count], or nullptr
};

// Builds the plan's data in `memory`; *object receives `object_bytes` taken first (for the API
// object), *out the data. Measuring: both stay null-free but unbound (no arena).
Status build_plan_data(const Model& model, const PlanOptions& options, Memory& memory, void* owned,
                       size_t object_bytes, void** object, PlanData** out);

}  // namespace siflow::detail
