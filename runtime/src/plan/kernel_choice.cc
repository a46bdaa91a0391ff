// SPDX-License-Identifier: Apache-2.0
// Kernel choice per node; see kernel_choice.hpp.
#include "plan/kernel_choice.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ops/op.hpp"
#include "plan/layout_choice.hpp"
#include "plan/plan_layout.hpp"
#include "support/parallel.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif
#if defined(SIFLOW_WITH_XNNPACK)
#include "kernels/xnnpack/xnn_conv.hpp"
#include "kernels/xnnpack/xnn_dense.hpp"
#endif

namespace siflow {
namespace {

using detail::ModelData;
using detail::NodeData;
using detail::OpKind;

bool allows(const NodeData& n, NodeKernel k) {
  const ops::OpModule& m = ops::op_module(n.op);
  return (m.kernels & ops::kernel_bit(k)) != 0 && (!m.runs_on || m.runs_on(n, k));
}

// Conv2d and ConvTranspose2d: XNNPACK runs them in NHWC (converted in and out of the scratch).
bool is_conv(OpKind op) { return op == OpKind::kConv2d || op == OpKind::kConvTranspose2d; }
#if defined(SIFLOW_WITH_XNNPACK)
// A node's kernel when XNNPACK does not run it: simd where its module has one, else reference.
NodeKernel off_xnnpack(const NodeData& n) {
  return allows(n, NodeKernel::kSimd) ? NodeKernel::kSimd : NodeKernel::kReference;
}

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

bool nhwc(const NetKernels& k, uint32_t tensor) {
  return k.layout && k.layout[tensor] == static_cast<uint8_t>(ops::TensorLayout::kNhwc);
}
const char* layout_name(const NetKernels& k, uint32_t tensor) {
  return nhwc(k, tensor) ? "nhwc" : "nchw";
}

void name_kernels(const ModelData& md, KernelChoice* choice) {
  const NetKernels& k = choice->kernels;
  const char* isa = "";
#if defined(SIFLOW_WITH_SIMD)
  if (k.simd) isa = k.simd->isa;
#endif
  for (uint32_t i = 0; i < md.node_count; ++i) {
    char* name = choice->names[i];
    if (k.node[i] == NodeKernel::kReference)
      std::snprintf(name, kKernelNameBytes, "reference");
    else if (k.node[i] == NodeKernel::kXnnpack && is_conv(md.nodes[i].op))
      // A convolution on XNNPACK runs in NHWC, converting an NCHW input or output
      // ("xnnpack nhwc"), or reading or writing NHWC tensors in place (their layouts named).
      std::snprintf(
          name, kKernelNameBytes,
          !nhwc(k, md.nodes[i].inputs[0]) && !nhwc(k, i + 2) ? "xnnpack nhwc" : "xnnpack %s>%s",
          layout_name(k, md.nodes[i].inputs[0]), layout_name(k, i + 2));
    else if (k.node[i] == NodeKernel::kXnnpack)
      std::snprintf(name, kKernelNameBytes, "xnnpack");
    else if (k.node[i] == NodeKernel::kSimdNhwc)
      // The simd NHWC implicit GEMM, with the layouts it reads and writes (converting NCHW ones).
      std::snprintf(name, kKernelNameBytes, "simd/%s nhwc %s>%s", isa,
                    layout_name(k, md.nodes[i].inputs[0]), layout_name(k, i + 2));
    else if (k.node[i] == NodeKernel::kSimdWino)
      // The simd Winograd F(2x2, 3x3), NHWC inside, with the layouts it reads and writes.
      std::snprintf(name, kKernelNameBytes, "simd/%s wino %s>%s", isa,
                    layout_name(k, md.nodes[i].inputs[0]), layout_name(k, i + 2));
    else if (is_conv(md.nodes[i].op))
      std::snprintf(name, kKernelNameBytes, "simd/%s nchw", isa);
    else if (i > 0 && k.fused[i - 1])
      std::snprintf(name, kKernelNameBytes, "fused");
    else if (k.fused[i])
      std::snprintf(name, kKernelNameBytes, "simd/%s+%s", isa,
                    unary_kind_name(md.nodes[i + 1].unary));
    else
      std::snprintf(name, kKernelNameBytes, "simd/%s", isa);
    // Other nodes whose output the plan laid out NHWC (plan/layout_choice.cc) say so.
    if (!(k.node[i] == NodeKernel::kXnnpack && is_conv(md.nodes[i].op)) &&
        k.node[i] != NodeKernel::kSimdNhwc && k.node[i] != NodeKernel::kSimdWino &&
        nhwc(k, i + 2)) {
      const size_t used = std::strlen(name);
      std::snprintf(name + used, kKernelNameBytes - used, " nhwc");
    }
  }
}

}  // namespace

Status choose_kernels(const ModelData& md, const PlanOptions& options, detail::Memory& memory,
                      KernelChoice* out) {
  const uint32_t nodes = md.node_count, tensors = nodes + 2;
  const size_t bytes =
      nodes * (kKernelNameBytes + 2 * sizeof(void*) + sizeof(NodeKernel) + sizeof(bool)) +
      tensors * (2 * sizeof(int32_t) + sizeof(uint8_t));
  uint8_t* block = static_cast<uint8_t*>(memory.allocate(bytes));
  if (!block)
    return Status::error(StatusCode::kOutOfMemory, "plan: no memory for the kernel table");
  std::memset(block, 0, bytes);
  out->names = reinterpret_cast<char(*)[kKernelNameBytes]>(block);
  xnn::DenseLayer** layers = reinterpret_cast<xnn::DenseLayer**>(block + nodes * kKernelNameBytes);
  xnn::ConvLayer** convs = reinterpret_cast<xnn::ConvLayer**>(layers + nodes);
  int32_t* seed_column = reinterpret_cast<int32_t*>(convs + nodes);
  out->component = reinterpret_cast<uint32_t*>(seed_column + tensors);
  NodeKernel* node = reinterpret_cast<NodeKernel*>(out->component + tensors);
  bool* fused = reinterpret_cast<bool*>(node + nodes);
  uint8_t* layout = reinterpret_cast<uint8_t*>(fused + nodes);  // all NCHW until tune_kernels
  NetKernels& k = out->kernels;
  k.node = node;
  k.fused = fused;
  k.seed_column = seed_column;
  k.xnn = layers;
  k.xnn_conv = convs;
  k.layout = layout;
  out->tangents = options.divergence != DivergenceMode::kNone;
  find_seed_columns(md, seed_column);

  Backend backend = options.backend;
  if (static_cast<unsigned>(backend) > static_cast<unsigned>(Backend::kXnnpack))
    return Status::error(StatusCode::kInvalidArgument, "plan: unknown backend %d",
                         static_cast<int>(backend));
  Status s = RowPool::check(options.threads).prefix("plan");
  if (!s.ok()) return s;
  const bool measuring = memory.is_measuring();
  if (options.threads > 1 && !measuring &&
      !(s = RowPool::create(options.threads, &k.pool).prefix("plan")).ok())
    return s;
#if defined(SIFLOW_WITH_SIMD)
  if (backend != Backend::kReference && !(s = simd::select(&k.simd)).ok()) return s.prefix("plan");
#else
  if (backend == Backend::kSimd || backend == Backend::kXnnpack)
    return Status::error(StatusCode::kUnsupported,
                         "plan: backend %s is not in this build (SIFLOW_MINIMAL: reference only)",
                         backend_name(backend));
  backend = Backend::kReference;
#endif
  // Reduced precision runs on the project's kernels: XNNPACK's f32 layers would not round alike.
  const bool reduced = plan_precision(options) != Precision::kFp32;
  if (reduced && backend == Backend::kXnnpack)
    return Status::error(StatusCode::kUnsupported,
                         "plan: precision %s runs on the simd or reference backend, not xnnpack",
                         precision_name(plan_precision(options)));
#if !defined(SIFLOW_WITH_XNNPACK)
  if (backend == Backend::kXnnpack)
    return Status::error(StatusCode::kUnsupported,
                         "plan: backend xnnpack is not in this build (it needs Debian's "
                         "libxnnpack-dev at configure time)");
#endif

  for (uint32_t i = 0; i < nodes; ++i)
    node[i] = backend != Backend::kReference && allows(md.nodes[i], NodeKernel::kSimd)
                  ? NodeKernel::kSimd
                  : NodeKernel::kReference;
#if defined(SIFLOW_WITH_XNNPACK)
  // Nodes XNNPACK may run: dense layers with inputs in the arena (padded), not the caller's x (nor
  // a Reshape of it); every Conv2d (its NHWC copy of the input is in the padded scratch).
  auto xnn_eligible = [&](uint32_t i) {
    if (!allows(md.nodes[i], NodeKernel::kXnnpack)) return false;
    return is_conv(md.nodes[i].op) || alias_root(md, md.nodes[i].inputs[0]) != 0;
  };
  out->tune = backend == Backend::kAuto && options.tune && !measuring && !reduced;
  if ((backend == Backend::kXnnpack && !measuring) || out->tune) {
    for (uint32_t i = 0; i < nodes && s.ok(); ++i) {
      if (!xnn_eligible(i)) continue;
      const NodeData& n = md.nodes[i];
      if (is_conv(n.op)) {
        // A convolution XNNPACK refuses stays on simd; running out of memory fails the plan.
        // Its parts run on the plan's threads (XNNPACK itself runs single-threaded).
        s = xnn::create_conv(ops::conv_xnn_shape(n), n.weight, n.bias, k.pool, &convs[i]);
        if (s.code() == StatusCode::kUnsupported && xnn::initialize().ok()) s = Status();
      } else {
        // A dense layer on XNNPACK runs on the caller's thread: the plan has no pthreadpool.
        s = xnn::create_dense(md.tensors[n.inputs[0]].width, n.width, n.weight, n.bias, nullptr,
                              &layers[i]);
      }
      if (s.ok() && (layers[i] || convs[i])) node[i] = NodeKernel::kXnnpack;
    }
    if (!s.ok()) {
      if (backend == Backend::kXnnpack) return s.prefix("plan");
      // Tuning without XNNPACK: simd everywhere.
      for (uint32_t i = 0; i < nodes; ++i) {
        xnn::destroy_dense(layers[i]);
        xnn::destroy_conv(convs[i]);
        layers[i] = nullptr;
        convs[i] = nullptr;
        if (node[i] == NodeKernel::kXnnpack) node[i] = off_xnnpack(md.nodes[i]);
      }
      out->tune = false;
    }
  } else if (backend == Backend::kXnnpack ||
             (measuring && backend == Backend::kAuto && options.tune && !reduced)) {
    // Measuring: the same decision without creating operators (with tuning, every candidate, so
    // the layout reserves the scratch of any convolution the tuning may keep on XNNPACK).
    for (uint32_t i = 0; i < nodes; ++i)
      if (xnn_eligible(i) && (backend == Backend::kXnnpack || is_conv(md.nodes[i].op)))
        node[i] = NodeKernel::kXnnpack;
  }
#endif
  // SIFLOW_CONV=nhwc: every Conv2d the simd NHWC kernel runs goes there instead of simd NCHW or
  // XNNPACK's tuning; SIFLOW_CONV=wino: every one the Winograd kernel runs goes there, the others
  // staying on their kernels (for tests and comparisons; f32 plans on the auto or simd backend).
  const char* conv = std::getenv("SIFLOW_CONV");
  const NodeKernel forced = conv && std::strcmp(conv, "nhwc") == 0   ? NodeKernel::kSimdNhwc
                            : conv && std::strcmp(conv, "wino") == 0 ? NodeKernel::kSimdWino
                                                                     : NodeKernel::kReference;
  if (forced != NodeKernel::kReference && !reduced &&
      (backend == Backend::kAuto || backend == Backend::kSimd))
    for (uint32_t i = 0; i < nodes; ++i) {
      if (md.nodes[i].op != OpKind::kConv2d || !allows(md.nodes[i], forced)) continue;
#if defined(SIFLOW_WITH_XNNPACK)
      xnn::destroy_conv(convs[i]);
      convs[i] = nullptr;
#endif
      node[i] = forced;
    }
  // The fusion rule, decided here once: a dense layer on simd (or on XNNPACK awaiting tuning)
  // whose only consumer is the activation right after it, also on simd.
  for (uint32_t i = 0; i + 1 < nodes; ++i) {
    const NodeData& n = md.nodes[i];
    const NodeData& next = md.nodes[i + 1];
    const bool dense_simd =
        node[i] == NodeKernel::kSimd || (out->tune && node[i] == NodeKernel::kXnnpack);
    fused[i] = n.op == OpKind::kFullyConnected && dense_simd && next.op == OpKind::kUnary &&
               node[i + 1] == NodeKernel::kSimd && next.inputs[0] == i + 2 &&
               md.tensors[i + 2].last_use == i + 1;
  }
  if (!out->tune) name_kernels(md, out);
  return Status();
}

void tune_kernels(const ModelData& md, size_t rows, float* const* values, float* scratch,
                  KernelChoice* choice) {
#if defined(SIFLOW_WITH_XNNPACK)
  NetKernels& k = choice->kernels;
  NodeKernel* node = const_cast<NodeKernel*>(k.node);
  bool* fused = const_cast<bool*>(k.fused);
  xnn::ConvLayer** convs = const_cast<xnn::ConvLayer**>(k.xnn_conv);
  bool moved = false;
  // Every convolution on XNNPACK sets up once here, on the plan's scratch: XNNPACK allocates its
  // buffers for the input size at the first setup, never at a run. One that fails goes to simd.
  for (uint32_t i = 0; node && i < md.node_count; ++i) {
    if (node[i] != NodeKernel::kXnnpack || !convs[i]) continue;
    if (!scratch || !xnn::prime_conv(convs[i], scratch).ok()) {
      xnn::destroy_conv(convs[i]);
      convs[i] = nullptr;
      node[i] = off_xnnpack(md.nodes[i]);
      moved = true;
    }
  }
  if (choice->tune) {
    for (uint32_t i = 0; i < md.node_count; ++i) {
      if (node[i] != NodeKernel::kXnnpack) continue;
      const NodeData& n = md.nodes[i];
      const uint32_t in = md.tensors[n.inputs[0]].width;
      float* x = values[n.inputs[0]];
      if (convs[i]) {
        // The whole layer, layout conversions included, through the op's run on either kernel.
        // A convolution reading the caller's x (bound only at a run) is not timed: simd.
        if (!x) {
          node[i] = off_xnnpack(n);
          xnn::destroy_conv(convs[i]);
          convs[i] = nullptr;
          continue;
        }
        for (size_t j = 0; j < rows * in; ++j) x[j] = 0.5f;
        const ops::NodeRun r{&md, i, values, nullptr, rows, 0, false, &k, scratch};
        const ops::OpModule& m = ops::op_module(n.op);
        node[i] = off_xnnpack(n);
        const double t_simd = best_of_three([&] { m.run(r); });
        // The simd NHWC implicit GEMM, where it runs, converting both sides like XNNPACK here.
        double t_nhwc = 1e300;
        if (allows(n, NodeKernel::kSimdNhwc)) {
          node[i] = NodeKernel::kSimdNhwc;
          t_nhwc = best_of_three([&] { m.run(r); });
        }
        // The Winograd kernel, for a 3x3 stride-1 layer.
        double t_wino = 1e300;
        if (allows(n, NodeKernel::kSimdWino)) {
          node[i] = NodeKernel::kSimdWino;
          t_wino = best_of_three([&] { m.run(r); });
        }
        node[i] = NodeKernel::kXnnpack;
        const double t_xnn = best_of_three([&] { m.run(r); });
        if (t_wino < t_xnn && t_wino < t_simd && t_wino < t_nhwc)
          node[i] = NodeKernel::kSimdWino;
        else if (t_nhwc < t_xnn && t_nhwc < t_simd)
          node[i] = NodeKernel::kSimdNhwc;
        else if (!(t_xnn < t_simd))
          node[i] = off_xnnpack(n);
        if (node[i] != NodeKernel::kXnnpack) {
          xnn::destroy_conv(convs[i]);
          convs[i] = nullptr;
        }
        continue;
      }
      float* y = values[i + 2];
      for (size_t j = 0; j < rows * in; ++j) x[j] = 0.5f;
      const simd::Dense d{n.packed, in, n.width, true, UnaryKind::kIdentity, 0.0f};
      const double t_simd = best_of_three([&] {
        parallel_rows(k.pool, rows, kRowGrain,
                      [&](size_t r0, size_t r1) { k.simd->dense(d, x, r0, r1, y, nullptr); });
      });
      const double t_xnn = best_of_three([&] { xnn::run_dense(k.xnn[i], x, rows, y, false); });
      if (!(t_xnn < t_simd)) node[i] = NodeKernel::kSimd;
    }
    // A layer left on XNNPACK runs its activation as a node of its own.
    for (uint32_t i = 0; i < md.node_count; ++i)
      if (node[i] == NodeKernel::kXnnpack) fused[i] = false;
  }
#else
  (void)rows, (void)values, (void)scratch;
  const bool moved = false;
  const NetKernels& k = choice->kernels;
#endif
  // The layouts, from the final kernels: NHWC between XNNPACK or simd NHWC convolutions.
  // SIFLOW_LAYOUT=nchw keeps every tensor NCHW (each such convolution converting both sides,
  // the layout before plan-time layouts existed): for comparisons and tests.
  const char* forced = std::getenv("SIFLOW_LAYOUT");
  const bool all_nchw = forced && std::strcmp(forced, "nchw") == 0;
  const uint32_t nhwc_tensors =
      all_nchw || !k.node ? 0
                          : choose_layouts(md, k.node, k.seed_column, choice->tangents,
                                           choice->component, const_cast<uint8_t*>(k.layout));
  // Names are rewritten only when the choice changed here (reduce_weights may have renamed them).
  if (choice->tune || moved || nhwc_tensors) name_kernels(md, choice);
}

void free_kernel_choice(const ModelData& md, KernelChoice* choice) {
#if defined(SIFLOW_WITH_XNNPACK)
  if (choice->kernels.xnn)
    for (uint32_t i = 0; i < md.node_count; ++i) {
      xnn::destroy_dense(choice->kernels.xnn[i]);
      xnn::destroy_conv(choice->kernels.xnn_conv[i]);
    }
#else
  (void)md;
#endif
  RowPool::destroy(choice->kernels.pool);
  *choice = KernelChoice();
}

}  // namespace siflow
