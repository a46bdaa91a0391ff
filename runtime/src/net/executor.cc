// SPDX-License-Identifier: Apache-2.0
// Graph execution. Each node reads tensors with smaller ids (the loader proved it), so one pass
// in node order computes everything; each node runs through its op module, which picks the
// kernel the plan chose and splits rows over the plan's threads where that pays.
#include "net/executor.hpp"

#include <chrono>
#include <cstring>

#include "support/parallel.hpp"

namespace siflow {

using detail::ModelData;
using detail::NodeData;
using detail::OpKind;

void bind_aliases(const ModelData& model, float** values, float** tangents) {
  for (uint32_t i = 0; i < model.node_count; ++i) {
    const NodeData& n = model.nodes[i];
    if (!ops::op_module(n.op).aliases_input) continue;
    values[i + 2] = values[n.inputs[0]];
    if (tangents) tangents[i + 2] = tangents[n.inputs[0]];
  }
}

void find_seed_columns(const ModelData& model, int32_t* seed_column) {
  seed_column[0] = 0;
  seed_column[1] = -1;
  for (uint32_t i = 0; i < model.node_count; ++i) {
    const NodeData& n = model.nodes[i];
    int32_t column = -1;
    if (n.op == OpKind::kConcat) {
      uint32_t col = 0, with_tangent = 0;
      for (uint32_t j = 0; j < n.input_count; ++j) {
        const uint32_t in = n.inputs[j];
        if (model.tensors[in].depends_on_x) {
          ++with_tangent;
          column = seed_column[in] < 0 ? -1 : static_cast<int32_t>(col) + seed_column[in];
        }
        col += model.tensors[in].width;
      }
      if (with_tangent != 1) column = -1;
    } else if (ops::op_module(n.op).aliases_input) {
      column = seed_column[n.inputs[0]];
    }
    seed_column[i + 2] = column;
  }
}

size_t block_rows(const NetBlocking& b, size_t directions) {
  if (b.fixed) return b.fixed;
  const uint64_t per_row = b.value_bytes + directions * b.tangent_bytes;
  const uint64_t rows = per_row ? b.budget / per_row : b.budget;
  // rows <= budget, far below 2^32; the largest batch bounds it all the same.
  const uint64_t most = Limits::kMaxBatch;
  return rows < b.min_rows ? b.min_rows : static_cast<size_t>(rows < most ? rows : most);
}

namespace {

// One pass over every node for `rows` rows on the given tables, kernels and scratch.
void run_nodes(const ModelData& model, const ops::FastKernels* kernels, float* scratch,
               NodeProfile* profile, float* const* values, float* const* tangents, size_t rows,
               size_t directions, bool identity_seeds, const float* labels, const float* cond,
               size_t diagonal_first) {
  ops::NodeRun run{&model,         0,       values,  tangents, rows, directions,
                   identity_seeds, kernels, scratch, labels,   cond, diagonal_first};
  if (!profile) {
    for (uint32_t i = 0; i < model.node_count; ++i) {
      run.node = i;
      ops::op_module(model.nodes[i].op).run(run);
    }
    return;
  }
  // Profiling: one steady-clock read between nodes (the end of one node is the start of the
  // next), so the times add up to the pass and the clock costs one read per node.
  const uint64_t row_units = static_cast<uint64_t>(rows) * (1 + directions);
  auto start = std::chrono::steady_clock::now();
  for (uint32_t i = 0; i < model.node_count; ++i) {
    run.node = i;
    ops::op_module(model.nodes[i].op).run(run);
    const auto end = std::chrono::steady_clock::now();
    NodeProfile& p = profile[i];
    ++p.calls;
    p.nanoseconds += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    p.rows += row_units;
    start = end;
  }
}

// One blocked evaluation: its blocks of `block` rows, run on one thread or data-parallel.
struct BlockedRun {
  const ModelData* model;
  const NetBuffers* buffers;
  const NetBlocking* b;
  size_t rows, block, directions, diagonal_first;
  bool identity_seeds;
  uint32_t output_root;
};

// Block k of the run on the given tables, kernels, scratch and profile; `copy` floats past the
// plan's pointers hold the thread's one-block buffers.
void run_block(const BlockedRun& br, size_t k, float** values, float** tangents, size_t copy,
               const ops::FastKernels* kernels, float* scratch, NodeProfile* profile) {
  const ModelData& model = *br.model;
  const NetBuffers& buffers = *br.buffers;
  const NetBlocking* b = br.b;
  const size_t r0 = k * br.block;
  const size_t count = br.rows - r0 < br.block ? br.rows - r0 : br.block;
  const size_t directions = br.directions;
  const uint32_t tensors = model.node_count + 2;
  for (uint32_t id = 0; id < tensors; ++id) {
    // Aliases are rebound below; a one-block buffer is used from its start (the thread's copy).
    const bool local = b->local && id >= 2 && id != br.output_root;
    const size_t width = local ? 0 : model.tensors[id].width;
    const size_t at = local ? copy : 0;
    float* v = buffers.values[id];
    float* t = buffers.tangents ? buffers.tangents[id] : nullptr;
    values[id] = v ? v + at + r0 * width : nullptr;
    tangents[id] = t ? t + at + r0 * directions * width : nullptr;
  }
  bind_aliases(model, values, buffers.tangents ? tangents : nullptr);
  const size_t cond_width = model.info.cond_width;
  run_nodes(model, kernels, scratch, profile, values, buffers.tangents ? tangents : nullptr, count,
            directions, br.identity_seeds, buffers.labels ? buffers.labels + r0 : nullptr,
            buffers.cond ? buffers.cond + r0 * cond_width : nullptr, br.diagonal_first);
}

// A range of blocks on the calling thread of the pool, with that thread's own resources.
void run_thread_blocks(void* ctx, size_t k0, size_t k1) {
  const BlockedRun& br = *static_cast<const BlockedRun*>(ctx);
  const uint32_t t = RowPool::thread_index();
  const NetThread& th = br.b->thread[t < br.b->threads ? t : 0];
  NodeProfile* profile =
      br.buffers->profile ? (t == 0 ? br.buffers->profile : th.profile) : nullptr;
  for (size_t k = k0; k < k1; ++k)
    run_block(br, k, th.values, th.tangents, t * br.b->local_stride, &th.kernels, th.scratch,
              profile);
}

}  // namespace

void run_network(const ModelData& model, const NetBuffers& buffers, const float* x, size_t rows,
                 size_t directions, bool identity_seeds, size_t diagonal_first) {
  buffers.values[0] = const_cast<float*>(x);  // read only: no node writes tensor 0
  bind_aliases(model, buffers.values, buffers.tangents);
  const NetBlocking* b = buffers.blocking;
  const size_t block = b && b->values ? block_rows(*b, directions) : 0;
  if (!block || rows <= block) {
    run_nodes(model, &buffers.kernels, buffers.scratch, buffers.profile, buffers.values,
              buffers.tangents, rows, directions, identity_seeds, buffers.labels, buffers.cond,
              diagonal_first);
    return;
  }
  const BlockedRun br{&model,         &buffers,       b,
                      rows,           block,          directions,
                      diagonal_first, identity_seeds, alias_root(model, model.output)};
  const size_t blocks = (rows + block - 1) / block;
  RowPool* pool = buffers.kernels.pool;
  if (b->threads > 1 && b->thread && b->local && pool && pool->threads() == b->threads) {
    pool->run_items(blocks, run_thread_blocks, const_cast<BlockedRun*>(&br));
    if (buffers.profile)
      for (uint32_t t = 1; t < b->threads; ++t) {
        NodeProfile* own = b->thread[t].profile;
        for (uint32_t i = 0; i < model.node_count; ++i) {
          buffers.profile[i].calls += own[i].calls;
          buffers.profile[i].nanoseconds += own[i].nanoseconds;
          buffers.profile[i].rows += own[i].rows;
          own[i] = NodeProfile();
        }
      }
    return;
  }
  for (size_t k = 0; k < blocks; ++k)
    run_block(br, k, b->values, b->tangents, 0, &buffers.kernels, buffers.scratch, buffers.profile);
}

void exact_divergence(const float* t_out, size_t rows, uint32_t dim, double* div) {
  for (size_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (uint32_t p = 0; p < dim; ++p) sum += t_out[(r * dim + p) * dim + p];
    div[r] = sum;
  }
}

void hutchinson_divergence(const float* z, const float* t_out, size_t rows, uint32_t dim,
                           size_t probes, double* div) {
  for (size_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (size_t p = 0; p < probes; ++p) {
      const size_t base = (r * probes + p) * dim;
      for (uint32_t k = 0; k < dim; ++k) sum += static_cast<double>(z[base + k]) * t_out[base + k];
    }
    div[r] = sum / static_cast<double>(probes);
  }
}

void fill_identity_block(float* seeds, size_t rows, uint32_t dim, size_t first, size_t count) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < count; ++j)
      for (uint32_t k = 0; k < dim; ++k)
        seeds[(r * count + j) * dim + k] = k == first + j ? 1.0f : 0.0f;
}

void fill_identity_seeds(float* seeds, size_t rows, uint32_t dim) {
  for (size_t r = 0; r < rows; ++r)
    for (uint32_t p = 0; p < dim; ++p)
      for (uint32_t k = 0; k < dim; ++k) seeds[(r * dim + p) * dim + k] = p == k ? 1.0f : 0.0f;
}

}  // namespace siflow
