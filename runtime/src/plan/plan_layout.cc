// SPDX-License-Identifier: Apache-2.0
// Arena layout: activations and tangents share space by lifetime (buffer_planner), the
// integrator and divergence buffers live for the whole run. All sizes are computed in 64-bit
// with overflow checks, so a 32-bit target refuses what it cannot address.
#include "plan/plan_layout.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "math/elementary.hpp"
#include "net/executor.hpp"
#include "ops/op.hpp"
#include "plan/buffer_planner.hpp"

namespace siflow {

Status check_plan_options(const detail::ModelData& model, const PlanOptions& options) {
  if (options.struct_size < sizeof(uint32_t) || options.struct_size > sizeof(PlanOptions))
    return Status::error(StatusCode::kInvalidArgument,
                         "plan: PlanOptions.struct_size %u is not one this runtime knows",
                         options.struct_size);
  if (options.max_batch == 0)
    return Status::error(StatusCode::kInvalidArgument, "plan: max_batch is 0");
  if (options.max_batch > Limits::kMaxBatch)
    return Status::error(StatusCode::kInvalidArgument, "plan: max_batch %zu exceeds the limit %llu",
                         options.max_batch, static_cast<unsigned long long>(Limits::kMaxBatch));
  // max_probes sizes the tangents of exact plans too (max(dim, max_probes) directions).
  if (options.max_probes == 0 || options.max_probes > Limits::kMaxProbes)
    return Status::error(StatusCode::kInvalidArgument, "plan: max_probes %u is outside [1, %u]",
                         options.max_probes, Limits::kMaxProbes);
  if (options.threads == 0)
    return Status::error(StatusCode::kInvalidArgument, "plan: threads is 0 (use 1)");
  if (options.tangent_block > Limits::kMaxDim)
    return Status::error(StatusCode::kInvalidArgument,
                         "plan: tangent_block %u exceeds the largest dimension %u (0: automatic)",
                         options.tangent_block, Limits::kMaxDim);
  if (static_cast<unsigned>(options.divergence) >
      static_cast<unsigned>(DivergenceMode::kHutchinson))
    return Status::error(StatusCode::kInvalidArgument, "plan: unknown divergence mode %d",
                         static_cast<int>(options.divergence));
  if (static_cast<unsigned>(plan_precision(options)) > static_cast<unsigned>(Precision::kInt8))
    return Status::error(StatusCode::kInvalidArgument, "plan: unknown precision %d",
                         static_cast<int>(plan_precision(options)));
  if (plan_block_rows(options) > Limits::kMaxBatch)
    return Status::error(StatusCode::kInvalidArgument,
                         "plan: block_rows %zu exceeds the largest batch %llu (0: the plan's "
                         "choice)",
                         plan_block_rows(options),
                         static_cast<unsigned long long>(Limits::kMaxBatch));
  if (!math::is_finite(options.guidance))
    return Status::error(StatusCode::kInvalidArgument, "plan: guidance weight is not finite");
  if (options.guidance != 1.0) {
    const ModelInfo& info = model.info;
    if (!info.takes_labels && info.cond_width == 0)
      return Status::error(StatusCode::kInvalidArgument,
                           "plan: guidance weight %g, but this model takes no class label or "
                           "condition (classifier-free guidance needs a conditional model)",
                           options.guidance);
    if (info.takes_labels && info.null_label < 0)
      return Status::error(StatusCode::kInvalidArgument,
                           "plan: guidance weight %g needs the model's null label, and this "
                           "model has none (convert it with --null-label)",
                           options.guidance);
    if (info.cond_width && !info.has_null_cond)
      return Status::error(StatusCode::kInvalidArgument,
                           "plan: guidance weight %g needs the model's null condition vector, "
                           "and this model stores none",
                           options.guidance);
  }
  return Status();
}

Precision plan_precision(const PlanOptions& options) {
  // Callers built before the field existed pass a struct_size that ends before it: f32.
  return options.struct_size >= offsetof(PlanOptions, precision) + sizeof(options.precision)
             ? options.precision
             : Precision::kFp32;
}

size_t plan_block_rows(const PlanOptions& options) {
  return options.struct_size >= offsetof(PlanOptions, block_rows) + sizeof(options.block_rows)
             ? options.block_rows
             : 0;
}

namespace {

// The working set of blocked execution: for each node, the bytes per row it reads and writes
// (each input once, the output, and for a convolution that may run on XNNPACK the NHWC copies of
// both in the scratch), values and tangents apart; the most over all nodes. Whether a convolution
// may run on XNNPACK is decided from the options alone, not from the kernel it ended on: a plan
// measured for its arena marks every eligible conv XNNPACK, while the plan built in that arena
// may see XNNPACK refuse one, and the two must size the same blocks.
void block_working_set(const detail::ModelData& model, const PlanOptions& options,
                       PlanLayout* layout) {
  const bool convs_may_use_xnnpack =
      options.backend == Backend::kXnnpack || (options.backend == Backend::kAuto && options.tune);
  uint64_t most_values = 0, most_tangents = 0;
  for (uint32_t i = 0; i < model.node_count; ++i) {
    const detail::NodeData& n = model.nodes[i];
    if (ops::op_module(n.op).aliases_input) continue;  // copies nothing
    uint64_t values = n.width, tangents = model.tensors[i + 2].depends_on_x ? n.width : 0;
    for (uint32_t j = 0; j < n.input_count; ++j) {
      const detail::TensorData& t = model.tensors[n.inputs[j]];
      values += t.width;
      if (t.depends_on_x) tangents += t.width;
    }
    const bool conv = n.op == detail::OpKind::kConv2d || n.op == detail::OpKind::kConvTranspose2d;
    if (convs_may_use_xnnpack && conv) {
      values *= 2;
      tangents *= 2;
    }
    most_values = values > most_values ? values : most_values;
    most_tangents = tangents > most_tangents ? tangents : most_tangents;
  }
  layout->block_value_bytes = most_values * sizeof(float);
  layout->block_tangent_bytes = most_tangents * sizeof(float);
}

// The most exact-divergence directions whose tangents (every tensor that carries one, plus the
// seeds) fit in PlanOptions::kAutoTangentBytes at `rows` rows, between 1 and d; buffers shared by
// lifetime are counted once each, so this errs towards smaller blocks.
uint64_t automatic_tangent_block(const detail::ModelData& model, uint64_t rows) {
  uint64_t floats = model.dim;  // the seeds
  for (uint32_t id = 2; id < model.node_count + 2; ++id)
    if (model.tensors[id].depends_on_x && alias_root(model, id) == id)
      floats += model.tensors[id].width;
  const uint64_t per_direction = rows * floats * sizeof(float);
  const uint64_t fit = PlanOptions::kAutoTangentBytes / per_direction;
  return fit < 1 ? 1 : fit > model.dim ? model.dim : fit;
}

}  // namespace

Status compute_layout(const detail::ModelData& model, const PlanOptions& options, const bool* fused,
                      const ops::NodeKernel* kernels, detail::Memory& memory, PlanLayout* layout) {
  Status s;
  const bool guided = guidance_doubles_rows(options.guidance);
  // The network's rows: the conditional and the null evaluation side by side when guided.
  const uint64_t rows = guided ? 2 * uint64_t{options.max_batch} : options.max_batch;
  const uint64_t chunk_rows = options.max_batch;
  const uint64_t dim = model.dim;
  uint64_t directions = 0, exact_block = 0;
  if (options.divergence == DivergenceMode::kExact) {
    exact_block =
        options.tangent_block ? options.tangent_block : automatic_tangent_block(model, rows);
    if (exact_block > dim) exact_block = dim;
    directions = exact_block > options.max_probes ? exact_block : options.max_probes;
  } else if (options.divergence == DivergenceMode::kHutchinson) {
    directions = options.max_probes;
    exact_block = directions >= dim ? dim : 0;
  }
  layout->max_rows = options.max_batch;
  layout->net_rows = static_cast<size_t>(rows);
  layout->guided = guided;
  layout->directions = static_cast<size_t>(directions);
  layout->exact_block = static_cast<size_t>(exact_block);
  layout->block_rows = plan_block_rows(options);
  block_working_set(model, options, layout);
  // Data-parallel blocks (NetBlocking::threads) for f32 plans with worker threads: each thread
  // runs whole blocks of the one-thread size (one thread's cache budget, any number of rows), so
  // kernel choices and bits are the one-thread plan's. Reduced-precision plans share one
  // activation buffer for their converted rows (FastKernels::reduced_rows): every node splits
  // over the threads instead, and each block is one more dispatch to the pool per node (a wait
  // for the workers), so it has at least 4 rows per thread.
  const bool data_parallel = options.threads > 1 && plan_precision(options) == Precision::kFp32;
  layout->block_budget = data_parallel ? kBlockCacheBytes : kBlockCacheBytes * options.threads;
  layout->block_min_rows = options.threads == 1 || data_parallel ? 1 : 4 * size_t{options.threads};
  {
    NetBlocking b;
    b.fixed = layout->block_rows;
    b.value_bytes = layout->block_value_bytes;
    b.tangent_bytes = layout->block_tangent_bytes;
    b.budget = layout->block_budget;
    b.min_rows = layout->block_min_rows;
    // The smallest block of any run: the most directions.
    layout->may_block = block_rows(b, static_cast<size_t>(directions)) < rows;
    if (layout->may_block) {
      // The rows (values) and samples (tangents) of the largest block any run uses: a run with
      // n directions has blocks of block_rows(b, n) rows, or all its rows when they fit.
      const uint64_t v0 = block_rows(b, 0);
      layout->block_value_rows = v0 < rows ? v0 : rows;
      for (uint64_t n = 1; n <= directions; ++n) {
        const uint64_t bn = block_rows(b, static_cast<size_t>(n));
        const uint64_t samples = (bn < rows ? bn : rows) * n;
        if (samples > layout->block_tangent_samples) layout->block_tangent_samples = samples;
      }
    }
  }
  // The threads' copies of the one-block buffers and of the scratch (one per thread).
  layout->block_threads = data_parallel && layout->may_block ? options.threads : 1;
  // Buffers of the nodes between x and the output hold one block when the plan may block (every
  // block reuses the same memory, which stays in cache), all rows otherwise; tensor 1 (the
  // per-row times) and the output hold all rows.
  const uint64_t value_rows = layout->may_block ? layout->block_value_rows : rows;
  const uint64_t tangent_samples =
      layout->may_block ? layout->block_tangent_samples : rows * directions;
  const uint32_t output_root = alias_root(model, model.output);

  const uint32_t tensors = model.node_count + 2;
  const size_t request_count = 2 * static_cast<size_t>(tensors);
  // Kept: the offsets; scratch (given back in reverse order): the requests and planner offsets.
  layout->value_offset = static_cast<size_t*>(memory.allocate(tensors * sizeof(size_t)));
  layout->tangent_offset = layout->value_offset
                               ? static_cast<size_t*>(memory.allocate(tensors * sizeof(size_t)))
                               : nullptr;
  BufferRequest* requests =
      layout->tangent_offset
          ? static_cast<BufferRequest*>(memory.allocate(request_count * sizeof(BufferRequest)))
          : nullptr;
  size_t* offsets =
      requests ? static_cast<size_t*>(memory.allocate(request_count * sizeof(size_t))) : nullptr;
  auto cleanup = [&] {
    memory.release_last(offsets);
    memory.release_last(requests);
  };
  if (!offsets) {
    cleanup();
    return Status::error(StatusCode::kOutOfMemory, "plan: no memory for the layout");
  }
  // Widths are <= 2^17, rows <= 2^20, directions <= 2^14 (dim and max_probes are both bounded):
  // products stay below 2^53 in 64-bit arithmetic; a buffer a 32-bit size_t cannot hold is refused
  // before any cast.
  const uint64_t addressable = static_cast<uint64_t>(SIZE_MAX / 2);
  uint64_t largest = 0;
  const uint32_t end = model.node_count;
  for (uint32_t id = 1; id < tensors; ++id) {
    const detail::TensorData& t = model.tensors[id];
    uint32_t first = id == 1 ? 0 : id - 2;
    // An activation the kernel choice fused into the dense layer before it is written in that
    // layer's epilogue, while the dense node still reads its own input: its lifetime starts one
    // node early so the two never share memory.
    if (id >= 3 && fused && fused[id - 3]) first = id - 3;
    const uint32_t last = id == 1 ? end : t.last_use;
    // An aliasing node (Reshape) has no buffer of its own: the buffer it reads stays alive as
    // long as the alias is read (tensor 0, x, is the caller's memory and its seeds live
    // throughout).
    const uint32_t root = id >= 2 ? alias_root(model, id) : id;
    if (root != id) {
      if (root >= 1) {
        if (requests[root].last < last) requests[root].last = last;
        if (requests[tensors + root].last < last) requests[tensors + root].last = last;
      }
      requests[id] = BufferRequest{0, first, last};
      requests[tensors + id] = BufferRequest{0, first, last};
      continue;
    }
    const bool block = id >= 2 && id != output_root;
    const uint64_t value_bytes =
        (block ? value_rows : rows) * t.width * sizeof(float) + kReadPadding;
    const uint64_t tangent_bytes =
        (id >= 2 && t.depends_on_x)
            ? (block ? tangent_samples : rows * directions) * t.width * sizeof(float) + kReadPadding
            : 0;
    largest = value_bytes > largest ? value_bytes : largest;
    largest = tangent_bytes > largest ? tangent_bytes : largest;
    if (largest > addressable) break;
    requests[id] = BufferRequest{static_cast<size_t>(value_bytes), first, last};
    requests[tensors + id] = BufferRequest{static_cast<size_t>(tangent_bytes), first, last};
  }
  if (largest > addressable) {
    cleanup();
    return Status::error(StatusCode::kInvalidArgument,
                         "plan: a buffer of %llu bytes cannot be addressed on this platform",
                         static_cast<unsigned long long>(largest));
  }
  if (layout->may_block) {
    // Blocked runs read the output after every block has run: no other buffer may share it.
    const uint32_t out = alias_root(model, model.output);
    if (out >= 2) {
      requests[out].first = 0;
      requests[tensors + out].first = 0;
    }
  }
  size_t net_bytes = 0;
  s = plan_buffers(requests, request_count, offsets, &net_bytes, memory);
  if (!s.ok()) {
    cleanup();
    return s;
  }
  for (uint32_t id = 0; id < tensors; ++id) {
    layout->value_offset[id] = requests[id].bytes ? offsets[id] : SIZE_MAX;
    layout->tangent_offset[id] = requests[tensors + id].bytes ? offsets[tensors + id] : SIZE_MAX;
  }
  cleanup();

  // Every thread of data-parallel blocks has a copy of the whole network region (the full-row
  // buffers of tensor 1 and the output are used from copy 0 only).
  const uint64_t net_stride = detail::align_up64(net_bytes, kArenaAlignment);
  layout->local_stride_bytes = layout->block_threads > 1 ? static_cast<size_t>(net_stride) : 0;
  uint64_t total = layout->block_threads > 1 ? net_stride * layout->block_threads : net_bytes;
  auto take = [&](uint64_t bytes) {
    const uint64_t at = total;
    total += detail::align_up64(bytes, kArenaAlignment);
    return static_cast<size_t>(at);
  };
  const uint64_t state_bytes = chunk_rows * dim * sizeof(float);
  if (directions > 0) {
    layout->probe_offset = take(rows * directions * dim * sizeof(float) + kReadPadding);
    layout->tangent_offset[0] = layout->probe_offset;
  } else {
    layout->tangent_offset[0] = SIZE_MAX;
  }
  for (int k = 0; k < kMaxStages; ++k) layout->stage_offset[k] = take(state_bytes);
  layout->state_offset = take(state_bytes);
  layout->work_offset = take(state_bytes);
  for (int k = 0; k < kMaxStages; ++k)
    layout->stage_div_offset[k] = take(chunk_rows * sizeof(double));
  layout->ell_offset = take(chunk_rows * sizeof(double));
  for (int k = 0; k < kMaxHistory; ++k) layout->history_offset[k] = take(state_bytes);
  for (int k = 0; k < kMaxHistory; ++k)
    layout->history_div_offset[k] = take(chunk_rows * sizeof(double));
  if (model.label_tensor) layout->label_offset = take(rows * sizeof(float));
  if (model.cond_tensor) layout->cond_offset = take(rows * model.info.cond_width * sizeof(float));
  if (guided) {
    layout->net_x_offset = take(rows * dim * sizeof(float) + kReadPadding);
    layout->net_div_offset = take(rows * sizeof(double));
  }
  // One scratch region for every node (nodes run one at a time): the largest request.
  uint64_t scratch = 0;
  for (uint32_t i = 0; i < model.node_count; ++i) {
    const ops::OpModule& m = ops::op_module(model.nodes[i].op);
    // A node runs on at most value_rows rows (and tangent_samples <= value_rows * directions).
    uint64_t floats = m.scratch_floats ? m.scratch_floats(model, i, static_cast<size_t>(value_rows),
                                                          static_cast<size_t>(directions))
                                       : 0;
    if (kernels && kernels[i] == ops::NodeKernel::kXnnpack) {
      // A convolution on XNNPACK converts every sample of a call at once: values or tangents.
      const uint64_t samples = tangent_samples > value_rows ? tangent_samples : value_rows;
      const uint64_t xnn = ops::conv_xnn_scratch_floats(model, i, static_cast<size_t>(samples));
      floats = xnn > floats ? xnn : floats;
      // The tuning may move it to the Winograd kernel, whose workspaces may need more.
      if (options.backend == Backend::kAuto && options.tune) {
        const uint64_t wino =
            ops::conv_wino_scratch_floats(model, i, static_cast<size_t>(samples), options.threads);
        floats = wino > floats ? wino : floats;
      }
    }
    if (kernels && kernels[i] == ops::NodeKernel::kSimdNhwc) {
      // The simd NHWC convolution converts its NCHW sides the same way (at most XNNPACK's
      // scratch, so a convolution the tuning moves there from XNNPACK fits).
      const uint64_t samples = tangent_samples > value_rows ? tangent_samples : value_rows;
      const uint64_t own = ops::conv_nhwc_scratch_floats(model, i, static_cast<size_t>(samples));
      floats = own > floats ? own : floats;
    }
    if (kernels && kernels[i] == ops::NodeKernel::kSimdWino) {
      // The Winograd convolution: the same copies, then a workspace per part of its units.
      const uint64_t samples = tangent_samples > value_rows ? tangent_samples : value_rows;
      const uint64_t own =
          ops::conv_wino_scratch_floats(model, i, static_cast<size_t>(samples), options.threads);
      floats = own > floats ? own : floats;
    }
    scratch = floats > scratch ? floats : scratch;
  }
  // One copy per thread of data-parallel blocks, each scratch_stride_bytes long.
  const uint64_t scratch_stride = detail::align_up64(scratch * sizeof(float), kArenaAlignment);
  layout->scratch_stride_bytes = static_cast<size_t>(scratch_stride);
  layout->scratch_offset = scratch ? take(scratch_stride * layout->block_threads) : SIZE_MAX;
  if (total > addressable) {
    return Status::error(StatusCode::kInvalidArgument,
                         "plan: arena of %llu bytes cannot be addressed on this platform",
                         static_cast<unsigned long long>(total));
  }
  layout->total_bytes = static_cast<size_t>(total);
  return Status();
}

}  // namespace siflow
