// SPDX-License-Identifier: Apache-2.0
// Plan construction: the one fixed sequence of memory requests that turns a model and plan
// options into a bound plan (kernel choice, arena layout, buffer pointers, tuning); see build.hpp.
#include "plan/build.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

#include "plan/buffer_planner.hpp"
#include "plan/reduced_weights.hpp"
#include "support/parallel.hpp"

namespace siflow::detail {
namespace {

// A velocity run of one block (x, t, labels and conditions fixed) with `kernels`.
double time_velocity(PlanData* p, const NetKernels& kernels, const float* x, size_t rows) {
  const NetBuffers net{p->values,     p->tangents,  p->layout.directions, kernels, p->scratch,
                       p->label_rows, p->cond_rows, &p->blocking,         nullptr};
  const auto t0 = std::chrono::steady_clock::now();
  run_network(*p->md, net, x, rows, 0);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// With tuning, worker threads and per-node splitting (no data-parallel blocks): times a velocity
// run of `rows` rows (one block) with every node split over the pool and with every node on the
// caller's thread (as one thread of data-parallel blocks runs them: no pool, XNNPACK part 0),
// alternating, seven of each, and splits only if its median is under kSplitGain of the caller's
// (a tenth saved at least): a split keeps more cores busy, and on a loaded machine a lucky
// round must not decide. Small nodes hand work to another core and read back what it wrote; at
// batch 1 that can cost more than the split saves. A run whose split warm-up takes over 20 ms has
// nodes large enough to split: it is not timed further. The bits are the same either way
// (results do not depend on the thread count).
constexpr double kSplitGain = 0.9;
void choose_velocity_threads(PlanData* p, size_t rows) {
  const ModelData& md = *p->md;
  // SIFLOW_VELOCITY_ON_CALLER=1 / =0 makes the choice without timing (for tests and
  // comparisons).
  if (const char* forced = std::getenv("SIFLOW_VELOCITY_ON_CALLER")) {
    p->choice.velocity_on_caller = std::strcmp(forced, "1") == 0;
    return;
  }
  const NetKernels split = p->choice.kernels;
  const NetKernels caller = on_one_thread(split, 0);
  float* x = p->net_x ? p->net_x : p->ws.state;
  for (size_t i = 0; i < rows * md.dim; ++i) x[i] = 0.5f;
  for (size_t r = 0; r < rows; ++r) {
    if (p->values[1]) p->values[1][r] = 0.5f;
    if (p->label_rows) p->label_rows[r] = 0.0f;
  }
  if (p->cond_rows)
    for (size_t i = 0; i < rows * md.info.cond_width; ++i) p->cond_rows[i] = 0.0f;
  if (time_velocity(p, split, x, rows) > 0.02) return;
  time_velocity(p, caller, x, rows);
  constexpr int kRounds = 7;
  double t_split[kRounds], t_caller[kRounds];
  for (int k = 0; k < kRounds; ++k) {
    t_split[k] = time_velocity(p, split, x, rows);
    t_caller[k] = time_velocity(p, caller, x, rows);
  }
  std::nth_element(t_split, t_split + kRounds / 2, t_split + kRounds);
  std::nth_element(t_caller, t_caller + kRounds / 2, t_caller + kRounds);
  p->choice.velocity_on_caller = !(t_split[kRounds / 2] < kSplitGain * t_caller[kRounds / 2]);
}

}  // namespace

Status build_plan_data(const Model& model, const PlanOptions& options, Memory& memory, void* owned,
                       size_t object_bytes, void** object, PlanData** out) {
  *object = nullptr;
  *out = nullptr;
  const ModelData& md = model.data();
  const bool measuring = memory.is_measuring();
  const uint32_t tensors = md.node_count + 2;
  Status s = check_plan_options(md, options);
  if (!s.ok()) return s;
  void* header = memory.allocate(object_bytes);
  PlanData* p = static_cast<PlanData*>(memory.allocate(sizeof(PlanData), alignof(PlanData)));
  float** pointers =
      p ? static_cast<float**>(memory.allocate(4 * size_t{tensors} * sizeof(float*))) : nullptr;
  if (!header || !pointers)
    return Status::error(StatusCode::kOutOfMemory, "plan: no memory for the plan's tables");
  // Kernels first: the layout reads the fusion decision.
  KernelChoice choice;
  if (!(s = choose_kernels(md, options, memory, &choice)).ok()) {
    free_kernel_choice(md, &choice);
    return s;
  }
  PlanLayout layout;
  if (!(s = compute_layout(md, options, choice.kernels.fused, choice.kernels.node, memory, &layout))
           .ok()) {
    free_kernel_choice(md, &choice);
    return s;
  }
  if (!(s = reduce_weights(md, options, layout.net_rows, layout.directions, memory, &choice))
           .ok()) {
    free_kernel_choice(md, &choice);
    return s;
  }
  // Data-parallel blocks: each thread's kernels, block pointer tables and profile table.
  const uint32_t dp = layout.block_threads;
  NetThread* threads = nullptr;
  if (dp > 1) {
    const size_t tables_at = dp * sizeof(NetThread);
    const size_t profiles_at = tables_at + 2 * size_t{dp} * tensors * sizeof(float*);
    const size_t bytes = profiles_at + (dp - 1) * size_t{md.node_count} * sizeof(NodeProfile);
    uint8_t* block = static_cast<uint8_t*>(memory.allocate(bytes));
    if (!block) {
      free_kernel_choice(md, &choice);
      return Status::error(StatusCode::kOutOfMemory, "plan: no memory for the threads' tables");
    }
    threads = reinterpret_cast<NetThread*>(block);
    float** tables = reinterpret_cast<float**>(block + tables_at);
    NodeProfile* profiles = reinterpret_cast<NodeProfile*>(block + profiles_at);
    for (uint32_t t = 0; t < dp && !measuring; ++t) {
      NetThread* th = new (&threads[t]) NetThread();
      th->values = tables + 2 * size_t{t} * tensors;
      th->tangents = th->values + tensors;
      if (t > 0) {
        th->profile = profiles + (t - 1) * size_t{md.node_count};
        for (uint32_t i = 0; i < md.node_count; ++i) th->profile[i] = NodeProfile();
      }
    }
  }
  uint8_t* base = static_cast<uint8_t*>(
      memory.allocate(layout.total_bytes ? layout.total_bytes : 1, kArenaAlignment, !measuring));
  if (!base && !measuring) {
    free_kernel_choice(md, &choice);
    return Status::error(StatusCode::kOutOfMemory, "plan: no memory for an arena of %zu bytes",
                         layout.total_bytes);
  }
  p->model = &model;
  p->md = &md;
  p->options = options;
  p->layout = layout;
  p->owned_arena = owned;
  p->arena = base;
  p->values = pointers;
  p->tangents = pointers + tensors;
  // Blocked execution: the block pointer tables and the layout's block sizing.
  p->blocking = NetBlocking();
  p->blocking.values = pointers + 2 * size_t{tensors};
  p->blocking.tangents = pointers + 3 * size_t{tensors};
  p->blocking.fixed = layout.block_rows;
  p->blocking.value_bytes = layout.block_value_bytes;
  p->blocking.tangent_bytes = layout.block_tangent_bytes;
  p->blocking.budget = layout.block_budget;
  p->blocking.min_rows = layout.block_min_rows;
  p->blocking.local = layout.may_block;
  p->blocking.threads = dp;
  p->blocking.local_stride = layout.local_stride_bytes / sizeof(float);
  p->blocking.thread = dp > 1 ? threads : nullptr;
  if (!measuring) {
    for (uint32_t id = 0; id < tensors; ++id) {
      p->values[id] = layout.value_offset[id] == SIZE_MAX
                          ? nullptr
                          : reinterpret_cast<float*>(base + layout.value_offset[id]);
      p->tangents[id] = layout.tangent_offset[id] == SIZE_MAX
                            ? nullptr
                            : reinterpret_cast<float*>(base + layout.tangent_offset[id]);
    }
    bind_aliases(md, p->values, p->tangents);
    for (int k = 0; k < kMaxStages; ++k) {
      p->ws.stage[k] = reinterpret_cast<float*>(base + layout.stage_offset[k]);
      p->ws.stage_div[k] = reinterpret_cast<double*>(base + layout.stage_div_offset[k]);
    }
    for (int k = 0; k < kMaxHistory; ++k) {
      p->ws.history[k] = reinterpret_cast<float*>(base + layout.history_offset[k]);
      p->ws.history_div[k] = reinterpret_cast<double*>(base + layout.history_div_offset[k]);
    }
    p->ws.state = reinterpret_cast<float*>(base + layout.state_offset);
    p->work = reinterpret_cast<float*>(base + layout.work_offset);
    p->ell = reinterpret_cast<double*>(base + layout.ell_offset);
    auto at = [&](size_t offset) { return offset == SIZE_MAX ? nullptr : base + offset; };
    p->label_rows = reinterpret_cast<float*>(at(layout.label_offset));
    p->cond_rows = reinterpret_cast<float*>(at(layout.cond_offset));
    p->net_x = reinterpret_cast<float*>(at(layout.net_x_offset));
    p->net_div = reinterpret_cast<double*>(at(layout.net_div_offset));
    p->scratch = layout.scratch_offset == SIZE_MAX
                     ? nullptr
                     : reinterpret_cast<float*>(base + layout.scratch_offset);
  }
  p->choice = choice;
  p->evaluations = 0;
  p->profile = nullptr;
  if (!measuring) {
    // Tuning times each layer at the rows a velocity run gives it: one block.
    const size_t block = block_rows(p->blocking, 0);
    const size_t tune_rows = block < layout.net_rows ? block : layout.net_rows;
    // With data-parallel blocks every layer runs on one thread: it is timed so. A plan that
    // splits each layer also times its layers on one thread when it will then choose between
    // splitting and the caller's thread alone: the kernels of a plan that keeps velocities on
    // the caller's thread are then a one-thread plan's.
    RowPool* pool = p->choice.kernels.pool;
    const bool choose_threads = options.tune && options.backend == Backend::kAuto && dp <= 1 &&
                                pool && pool->threads() > 1 && tune_rows > 0;
    if (dp > 1 || choose_threads) p->choice.kernels = on_one_thread(p->choice.kernels, 0);
    tune_kernels(md, tune_rows, p->values, p->scratch, &p->choice);
    p->choice.kernels.pool = pool;
    p->choice.kernels.part = UINT32_MAX;
    if (choose_threads) choose_velocity_threads(p, tune_rows);
    for (uint32_t t = 0; t < dp && dp > 1; ++t) {
      NetThread& th = threads[t];
      th.kernels = on_one_thread(p->choice.kernels, t);
      th.scratch = p->scratch ? reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(p->scratch) +
                                                         t * layout.scratch_stride_bytes)
                              : nullptr;
    }
  }
  p->total_bytes = memory.high_water();
  *object = header;
  *out = p;
  return Status();
}

}  // namespace siflow::detail
