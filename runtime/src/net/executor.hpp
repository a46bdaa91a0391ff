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

// Blocked execution: with more rows than block_rows(), run_network runs every node over rows
// [r0, r0 + block) before the next block, so one block's activations stay in the core's cache.
// Every buffer is row-major (values [rows, width], tangents [rows * directions, width],
// directions inner, the seeds in tangents[0] too, labels [rows], conditions [rows, cond width]),
// so a block is a pointer offset per tensor; `values` and `tangents` ([tensors] each, taken at
// plan time) receive them. With `local`, the intermediate tensors' buffers are one block long
// (plan_layout.hpp) and every block reuses them, so they stay in cache. Each kernel computes a row
// the same way whatever range it falls in, so the results are bit-identical for every block size.
struct NetThread;

struct NetBlocking {
  size_t fixed = 0;            // PlanOptions::block_rows; 0: from the working set below
  uint64_t value_bytes = 0;    // the most bytes per row a node touches in values
  uint64_t tangent_bytes = 0;  // likewise per row and tangent direction
  uint64_t budget = 0;         // cache bytes a block's working set may take (all threads)
  size_t min_rows = 1;         // the fewest rows of a block (4 per thread with workers)
  // The buffers of tensors other than 0 (x), 1 (the times) and the output (and its aliases) hold
  // one block only: every block uses them from their start.
  bool local = false;
  float** values = nullptr;
  float** tangents = nullptr;
  // Data-parallel blocks: with threads > 1 (the plan's pool) and at least two blocks, each
  // thread runs whole blocks through every node on its own copy of the one-block buffers
  // (`local`; copy t starts t * local_stride floats after the plan's tensor pointers), its own
  // scratch and its own XNNPACK operator part (NetThread), and a network evaluation waits for the
  // threads once, at its end. Nodes then run inline on their thread. The block size is the
  // one-thread plan's, and every row is computed the same way whichever thread runs its block,
  // so the bits equal the one-thread plan's. threads <= 1: every node splits over the pool.
  uint32_t threads = 1;
  size_t local_stride = 0;
  NetThread* thread = nullptr;  // [threads]
};

// `kernels` as one thread runs them: no pool (every loop inline) and each XNNPACK convolution on
// its part `part`'s whole operator. A thread of data-parallel blocks runs its own part; a run
// that leaves the pool idle (the tuner's one-thread timings, velocity runs kept on the caller's
// thread) runs part 0.
inline NetKernels on_one_thread(NetKernels kernels, uint32_t part) {
  kernels.pool = nullptr;
  kernels.part = part;
  return kernels;
}

// One thread's own resources for data-parallel blocks (NetBlocking::thread), made at plan time.
struct NetThread {
  ops::FastKernels kernels;  // on_one_thread(the plan's kernels, the thread's index)
  float* scratch = nullptr;  // the thread's copy of the node scratch, or nullptr
  float** values = nullptr;  // [tensors] the thread's block pointer tables
  float** tangents = nullptr;
  // [node_count]: where a thread other than 0 adds its node times while a profile is set; the
  // caller adds them into the plan's profile after the evaluation and zeroes them (so a profile's
  // times are the threads' times summed).
  NodeProfile* profile = nullptr;
};

// The cache budget per thread of the automatic block size: about the private L2 of a current
// x86 or Arm core (1 MiB on Zen 5, 1-2 MiB on recent Intel and Neoverse cores), less room for a
// layer's weights and the stack.
constexpr uint64_t kBlockCacheBytes = 768u << 10;

// Rows per block for a run with `directions` tangent directions: the fixed size, else the
// budget over the working set per row (at least min_rows).
size_t block_rows(const NetBlocking& blocking, size_t directions);

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
  // Blocked execution (nullptr: every node over all rows at once).
  const NetBlocking* blocking = nullptr;
  // The profile [node_count] each node run adds its call, steady-clock time and rows to
  // (Plan::set_profile), or nullptr: nothing is timed and the node loop has no clock read.
  NodeProfile* profile = nullptr;
};

// Evaluates every node for `rows` rows (in blocks, see NetBlocking). With `directions` > 0, also
// propagates that many tangent directions from tangents[0]; `identity_seeds` says those are the
// identity directions of exact divergence (fill_identity_seeds), which lets optimized kernels skip
// multiplying them.
// `diagonal_first` other than SIZE_MAX says the caller reads only the diagonal of the output's
// tangents, entry diagonal_first + p of direction p (ops::NodeRun::diagonal_first).
void run_network(const detail::ModelData& model, const NetBuffers& buffers, const float* x,
                 size_t rows, size_t directions, bool identity_seeds = false,
                 size_t diagonal_first = SIZE_MAX);

// The tensor whose buffer a tensor reads (ops/op.hpp).
using ops::alias_root;
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
