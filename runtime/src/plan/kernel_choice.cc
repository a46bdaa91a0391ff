// SPDX-License-Identifier: Apache-2.0
// Kernel choice per node; see kernel_choice.hpp.
#include "plan/kernel_choice.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/xnnpack/xnn_dense.hpp"
#endif

namespace siflow {
namespace {

using detail::ModelData;
using detail::NodeData;
using detail::OpKind;

#if defined(SIFLOW_WITH_XNNPACK)
// Best of three runs of one dense layer (forward, with bias) on the plan's buffers, in seconds.
template <typename Run>
double best_of_three(Run&& run) {
  double best = 1e300;
  run();  // warm-up: caches, XNNPACK's first setup
  for (int k = 0; k < 3; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = s < best ? s : best;
  }
  return best;
}
#endif

}  // namespace

Status choose_kernels(const ModelData& md, const PlanOptions& options, float* const* values,
                      detail::Memory& memory, KernelChoice* out) {
  const uint32_t nodes = md.node_count, tensors = nodes + 2;
  // Rounded to 64 bytes: this is a plan's last block, so arena_bytes() is a multiple of 64.
  const size_t bytes =
      (nodes * (sizeof(NodeKernel) + sizeof(bool) + 32) + tensors * sizeof(int32_t) + 63) / 64 * 64;
  uint8_t* block = static_cast<uint8_t*>(memory.allocate(bytes));
  if (!block)
    return Status::error(StatusCode::kOutOfMemory, "plan: no memory for the kernel table");
  out->names = reinterpret_cast<char(*)[32]>(block);
  int32_t* seed_column = reinterpret_cast<int32_t*>(block + nodes * 32);
  NodeKernel* node = reinterpret_cast<NodeKernel*>(seed_column + tensors);
  bool* fused = reinterpret_cast<bool*>(node + nodes);
  NetKernels& k = out->kernels;
  k.node = node;
  k.fused = fused;
  k.seed_column = seed_column;
  find_seed_columns(md, seed_column);

  Backend backend = options.backend;
  switch (backend) {
    case Backend::kAuto:
    case Backend::kReference:
    case Backend::kSimd:
    case Backend::kXnnpack:
      break;
    default:
      return Status::error(StatusCode::kInvalidArgument, "plan: unknown backend %d",
                           static_cast<int>(backend));
  }
  Status s = RowPool::check(options.threads).prefix("plan");
  if (!s.ok()) return s;
  const bool measuring = memory.is_measuring();
  if (options.threads > 1 && !measuring &&
      !(s = RowPool::create(options.threads, &k.pool).prefix("plan")).ok())
    return s;
  const char* isa = "";
#if defined(SIFLOW_WITH_SIMD)
  if (backend != Backend::kReference) {
    if (!(s = simd::select(&k.simd)).ok()) return s.prefix("plan");
    isa = k.simd->isa;
  }
#else
  if (backend == Backend::kSimd || backend == Backend::kXnnpack)
    return Status::error(StatusCode::kUnsupported,
                         "plan: backend %s is not in this build (SIFLOW_MINIMAL: reference only)",
                         backend_name(backend));
  backend = Backend::kReference;
#endif
#if !defined(SIFLOW_WITH_XNNPACK)
  if (backend == Backend::kXnnpack)
    return Status::error(StatusCode::kUnsupported,
                         "plan: backend xnnpack is not in this build (it needs Debian's "
                         "libxnnpack-dev at configure time)");
#endif

  for (uint32_t i = 0; i < nodes; ++i) {
    const NodeData& n = md.nodes[i];
    const bool vector_op = n.op == OpKind::kFullyConnected || n.op == OpKind::kUnary;
    node[i] =
        backend != Backend::kReference && vector_op ? NodeKernel::kSimd : NodeKernel::kReference;
  }
#if defined(SIFLOW_WITH_XNNPACK)
  // Dense layers XNNPACK may run: inputs in the arena (padded), not the caller's x.
  auto xnn_eligible = [&](uint32_t i) {
    return md.nodes[i].op == OpKind::kFullyConnected && md.nodes[i].inputs[0] != 0;
  };
  const bool tune = backend == Backend::kAuto && options.tune && !measuring;
  if ((backend == Backend::kXnnpack && !measuring) || tune) {
    for (uint32_t i = 0; i < nodes; ++i)
      if (xnn_eligible(i)) node[i] = NodeKernel::kXnnpack;
    if (!(s = xnn::create_layers(md, node, k.pool ? k.pool->native() : nullptr, &k.xnn)).ok()) {
      if (backend == Backend::kXnnpack) return s.prefix("plan");
      for (uint32_t i = 0; i < nodes; ++i)  // tuning without XNNPACK: simd everywhere
        if (node[i] == NodeKernel::kXnnpack) node[i] = NodeKernel::kSimd;
    }
  }
  if (tune && k.xnn) {
    const size_t rows = options.max_batch;
    for (uint32_t i = 0; i < nodes; ++i) {
      if (node[i] != NodeKernel::kXnnpack) continue;
      const NodeData& n = md.nodes[i];
      const uint32_t in = md.tensors[n.inputs[0]].width;
      float* x = values[n.inputs[0]];
      float* y = values[i + 2];
      for (size_t j = 0; j < rows * in; ++j) x[j] = 0.5f;
      const simd::Dense d{n.packed, in, n.width, true, UnaryKind::kIdentity, 0.0f};
      const double t_simd = best_of_three([&] {
        parallel_rows(k.pool, rows, 16,
                      [&](size_t r0, size_t r1) { k.simd->dense(d, x, r0, r1, y, nullptr); });
      });
      const double t_xnn = best_of_three([&] { xnn::run_dense(k.xnn, i, x, rows, y, false); });
      if (!(t_xnn < t_simd)) node[i] = NodeKernel::kSimd;
    }
  }
#endif

  for (uint32_t i = 0; i + 1 < nodes; ++i) {
    const NodeData& n = md.nodes[i];
    const NodeData& next = md.nodes[i + 1];
    fused[i] = n.op == OpKind::kFullyConnected && node[i] == NodeKernel::kSimd &&
               next.op == OpKind::kUnary && node[i + 1] == NodeKernel::kSimd &&
               next.inputs[0] == i + 2 && md.tensors[i + 2].last_use == i + 1;
  }
  for (uint32_t i = 0; i < nodes; ++i) {
    char* name = out->names[i];
    if (node[i] == NodeKernel::kReference)
      std::snprintf(name, 32, "reference");
    else if (node[i] == NodeKernel::kXnnpack)
      std::snprintf(name, 32, "xnnpack");
    else if (i > 0 && fused[i - 1])
      std::snprintf(name, 32, "fused");
    else if (fused[i])
      std::snprintf(name, 32, "simd/%s+%s", isa, unary_kind_name(md.nodes[i + 1].unary));
    else
      std::snprintf(name, 32, "simd/%s", isa);
  }
  (void)values;
  return Status();
}

void free_kernel_choice(KernelChoice* choice) {
#if defined(SIFLOW_WITH_XNNPACK)
  xnn::destroy_layers(choice->kernels.xnn);
#endif
  RowPool::destroy(choice->kernels.pool);
  *choice = KernelChoice();
}

}  // namespace siflow
