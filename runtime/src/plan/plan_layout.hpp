// SPDX-License-Identifier: Apache-2.0
// The arena layout of a plan: every buffer a run needs (network activations and tangents,
// divergence seeds, integrator stages, log-density terms) as offsets into one block, computed
// before running. Built at plan time; never touched during a run.
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/model_data.hpp"
#include "integrate/ode.hpp"
#include "kernels/xnnpack/xnn_dense.hpp"
#include "ops/op.hpp"
#include "support/memory.hpp"

namespace siflow {

// Readable bytes after every network buffer: XNNPACK reads up to kExtraReadBytes past the end of
// an input. Mostly absorbed by the 64-byte alignment.
constexpr size_t kReadPadding = xnn::kExtraReadBytes;

struct PlanLayout {
  size_t max_rows = 0;
  size_t directions = 0;  // tangent directions the arena holds (0: no divergence)
  // Exact divergence's Jacobian columns per network pass (PlanOptions::tangent_block resolved):
  // d when all fit at once, 0 when the plan cannot serve exact divergence.
  size_t exact_block = 0;
  size_t total_bytes = 0;
  // Per tensor (node_count + 2): activation and tangent offsets; SIZE_MAX when absent.
  size_t* value_offset = nullptr;
  size_t* tangent_offset = nullptr;
  size_t stage_offset[kMaxStages] = {};
  size_t state_offset = 0;  // stage input [rows, dim] float
  size_t work_offset = 0;   // working state for log_prob [rows, dim] float
  size_t stage_div_offset[kMaxStages] = {};
  size_t ell_offset = 0;  // [rows] double
  // Multistep history and dopri5's extra stages: [rows, dim] float and [rows] double each.
  size_t history_offset[kMaxHistory] = {};
  size_t history_div_offset[kMaxHistory] = {};
  size_t probe_offset = 0;           // Hutchinson probe values [rows * directions, dim] = seeds
  size_t scratch_offset = SIZE_MAX;  // the largest node scratch (OpModule::scratch_floats)
  // Conditioning and guidance (PlanOptions::guidance): the network runs net_rows rows (2 max_rows
  // when a guidance weight other than 0 and 1 evaluates the conditional and the null rows in one
  // pass, else max_rows). Per-row labels [net_rows] (floats) and conditions [net_rows, cond
  // width]; the guided pass's input [net_rows, dim] and divergences [net_rows] (doubles).
  size_t net_rows = 0;
  bool guided = false;
  size_t label_offset = SIZE_MAX;
  size_t cond_offset = SIZE_MAX;
  size_t net_x_offset = SIZE_MAX;
  size_t net_div_offset = SIZE_MAX;
  // Blocked execution (PlanOptions::block_rows, net/executor.hpp NetBlocking): the caller's fixed
  // block (0: none given), and the working-set estimate the automatic choice divides the budget
  // by: the most bytes per row any node touches in values (its inputs, its output and, on
  // XNNPACK, their NHWC copies) and likewise per row and tangent direction.
  // The network output's value and tangent buffers are then alive from the first node on: a
  // later block's nodes must not overwrite the rows an earlier block left there.
  size_t block_rows = 0;
  uint64_t block_value_bytes = 0;
  uint64_t block_tangent_bytes = 0;
  uint64_t block_budget = 0;  // kBlockCacheBytes (per thread without data-parallel blocks)
  size_t block_min_rows = 1;  // 1 (4 per thread without data-parallel blocks)
  bool may_block = false;     // some run of this plan splits into blocks
  // Then the buffers of the tensors other than tensor 1 and the output hold one block: the most
  // rows (values) and rows times directions (tangents) of any run's block; the executor does
  // not offset them (NetBlocking::local).
  uint64_t block_value_rows = 0;
  uint64_t block_tangent_samples = 0;
  // Data-parallel blocks (NetBlocking::threads): the threads that each run whole blocks on their
  // own copy of the network's buffers (local_stride_bytes apart, from offset 0) and of the scratch
  // (scratch_stride_bytes apart, from scratch_offset); 1: none, every node splits over the pool.
  uint32_t block_threads = 1;
  size_t local_stride_bytes = 0;
  size_t scratch_stride_bytes = 0;
};

// True when `guidance` needs both the conditional and the null evaluation (w not 0 or 1).
inline bool guidance_doubles_rows(double guidance) { return guidance != 0.0 && guidance != 1.0; }

// Computes the layout for options check_plan_options accepted (build_plan checks them before
// taking any memory). `fused` is the kernel choice's fusion decision (NetKernels::fused, nullable:
// none): a fused activation's buffer starts one node early. `kernels` (NetKernels::node,
// nullable) adds the scratch of each Conv2d on XNNPACK (its NHWC copies). The offset arrays are
// taken from `memory` and live as long as it does; the planning scratch is taken after them and
// given back.
Status compute_layout(const detail::ModelData& model, const PlanOptions& options, const bool* fused,
                      const ops::NodeKernel* kernels, detail::Memory& memory, PlanLayout* layout);
Status check_plan_options(const detail::ModelData& model, const PlanOptions& options);
// options.precision, or kFp32 when the caller's struct_size ends before that field.
Precision plan_precision(const PlanOptions& options);
// options.block_rows, or 0 (the plan's choice) when the caller's struct_size ends before it.
size_t plan_block_rows(const PlanOptions& options);

}  // namespace siflow
