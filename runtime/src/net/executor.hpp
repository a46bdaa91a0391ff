// SPDX-License-Identifier: Apache-2.0
// The network executor: runs the SSA graph of a loaded model over arena buffers, forward and,
// when asked, forward-mode tangents (JVP) for all directions at once, each node through its op
// module (ops/op.hpp) on the kernel the plan chose. Never allocates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/model_data.hpp"
#include "ops/op.hpp"

namespace siflow {

using ops::FastKernels;
using ops::NodeKernel;
// The kernels a plan chose (ops/op.hpp).
using NetKernels = ops::FastKernels;

// Arena pointers for one plan. values[0] is bound to the caller's x at each run; values[1] is
// the per-row time [rows, 1] the caller fills. tangents[i] is nullptr for tensors that do not
// depend on x; tangents[0] holds the seed directions [rows * directions, dim]. `scratch` holds
// the largest scratch any node asks for (OpModule::scratch_floats), or is nullptr.
struct NetBuffers {
  float** values = nullptr;
  float** tangents = nullptr;
  size_t directions = 0;
  NetKernels kernels;
  float* scratch = nullptr;
  // Per-row class labels [rows] and conditions [rows, cond width] for the LabelInput and
  // CondInput nodes (ops/conditioning.cc), or nullptr.
  const float* labels = nullptr;
  const float* cond = nullptr;
};

// Evaluates every node for `rows` rows. With `directions` > 0, also propagates that many
// tangent directions from tangents[0]; `identity_seeds` says those are the identity directions
// of exact divergence (fill_identity_seeds), which lets optimized kernels skip multiplying them.
// `diagonal_first` other than SIZE_MAX says the caller reads only the diagonal of the output's
// tangents, entry diagonal_first + p of direction p (ops::NodeRun::diagonal_first).
void run_network(const detail::ModelData& model, const NetBuffers& buffers, const float* x,
                 size_t rows, size_t directions, bool identity_seeds = false,
                 size_t diagonal_first = SIZE_MAX);

// The tensor whose buffer `tensor` reads: itself, or for the output of an aliasing op (Reshape,
// OpModule::aliases_input) the first tensor up its chain of inputs that has its own buffer.
uint32_t alias_root(const detail::ModelData& model, uint32_t tensor);
// Points each aliasing node's value (and tangent, when `tangents` is set) at its input's, in node
// order; run_network does it after binding x, plan creation after binding the arena.
void bind_aliases(const detail::ModelData& model, float** values, float** tangents);

// The per-tensor seed columns for NetKernels::seed_column: tensor 0 (x) gets 0; a Concat whose
// only input with a tangent has a seed column c at column offset k gets k + c; an aliasing node
// its input's; others -1.
void find_seed_columns(const detail::ModelData& model, int32_t* seed_column);

// div[r] = sum_p t_out[r*dim + p][p]: the trace of the Jacobian from identity seeds.
void exact_divergence(const float* t_out, size_t rows, uint32_t dim, double* div);
// div[r] = (1/K) sum_p z_p . t_out_p: Hutchinson's estimate from probe seeds z.
void hutchinson_divergence(const float* z, const float* t_out, size_t rows, uint32_t dim,
                           size_t probes, double* div);
// Fills seeds [rows * dim, dim] with the identity directions e_p for every row.
void fill_identity_seeds(float* seeds, size_t rows, uint32_t dim);
// Fills seeds [rows * count, dim] with e_first .. e_(first + count - 1) for every row: one block
// of exact divergence's directions.
void fill_identity_block(float* seeds, size_t rows, uint32_t dim, size_t first, size_t count);

}  // namespace siflow
