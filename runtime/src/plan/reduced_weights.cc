// SPDX-License-Identifier: Apache-2.0
// Plan-time conversion of dense weights to the plan's precision; see reduced_weights.hpp.
#include "plan/reduced_weights.hpp"

#include <cstdio>
#include <cstring>

#include "ops/op.hpp"
#include "plan/plan_layout.hpp"
#if defined(SIFLOW_WITH_SIMD)
#include "kernels/simd/kernels.hpp"
#endif

namespace siflow::detail {

namespace {
size_t round64(size_t bytes) { return (bytes + 63) / 64 * 64; }
}  // namespace

Status reduce_weights(const ModelData& md, const PlanOptions& options, size_t net_rows,
                      size_t directions, Memory& memory, KernelChoice* choice) {
  NetKernels& k = choice->kernels;
  const Precision precision = plan_precision(options);
  k.precision = precision;
  if (precision == Precision::kFp32) return Status();
  const uint32_t nodes = md.node_count;
  uint32_t first = nodes, last = nodes;
  for (uint32_t i = 0; i < nodes; ++i)
    if (ops::op_module(md.nodes[i].op).reduce) {
      if (first == nodes) first = i;
      last = i;
    }
  // Narrow layers (16 or fewer inputs or outputs: time features, the layer reading a small x, the
  // one writing v) stay f32 as well: they cost at most 16 multiply-adds per output or input.
  // A convolution is narrow by its reduction length (input channels per group times taps) or
  // its output channels per group (OpModule::reduced_extent).
  constexpr uint32_t kNarrow = 16;
  auto converted = [&](uint32_t i) {
    const NodeData& n = md.nodes[i];
    const ops::OpModule& m = ops::op_module(n.op);
    if (!m.reduce || i == first || i == last) return false;
    if (m.reduced_extent) return m.reduced_extent(md, i) > kNarrow;
    return md.tensors[n.inputs[0]].width > kNarrow && n.width > kNarrow;
  };
  // One block: the pointer table, each node's weights, the bf16 or fp16 activation buffer.
  size_t bytes = round64(size_t{nodes} * sizeof(void*));
  size_t widest = 0, conv_words = 0;
  // A converted ConvTranspose2d in bf16 runs the reference loops (ops/conv2d.cc: bf16_gather's
  // bits have no simd kernel), and is named so.
  for (uint32_t i = 0; i < nodes; ++i)
    if (converted(i) && precision == Precision::kBf16 &&
        md.nodes[i].op == detail::OpKind::kConvTranspose2d && k.node &&
        k.node[i] == ops::NodeKernel::kSimd) {
      const_cast<ops::NodeKernel*>(k.node)[i] = ops::NodeKernel::kReference;
      std::snprintf(choice->names[i], kKernelNameBytes, "reference");
    }
  for (uint32_t i = 0; i < nodes; ++i) {
    if (!converted(i)) continue;
    bytes += round64(ops::op_module(md.nodes[i].op).reduced_bytes(md, i, precision, k.node[i]));
    // The row buffer serves the dense kernels and the simd Conv2d's im2col rows (one
    // sample at a time); other convolutions round as they read.
    if (md.nodes[i].op == detail::OpKind::kConv2d && k.node &&
        k.node[i] == ops::NodeKernel::kSimd) {
      const size_t words = ops::conv_bf16_words(md, i);
      conv_words = words > conv_words ? words : conv_words;
    }
    if (md.nodes[i].op != detail::OpKind::kFullyConnected) continue;
    const uint32_t in = md.tensors[md.nodes[i].inputs[0]].width;
    widest = in > widest ? in : widest;
  }
  size_t rows_bytes = 0;
#if defined(SIFLOW_WITH_SIMD)
  if (widest > 0) {
    // The most rows one dense call converts: the network's rows (twice max_batch when guided),
    // times the tangent directions.
    const size_t rows = net_rows * (directions > 1 ? directions : 1);
    rows_bytes = rows * simd::reduced_rows_words(precision, static_cast<uint32_t>(widest)) *
                 sizeof(uint32_t);
  }
  if (precision == Precision::kBf16 && conv_words * sizeof(uint32_t) > rows_bytes)
    rows_bytes = conv_words * sizeof(uint32_t);
#else
  (void)net_rows, (void)directions, (void)conv_words;
#endif
  uint8_t* block =
      static_cast<uint8_t*>(memory.allocate(bytes + rows_bytes, 64, !memory.is_measuring()));
  if (memory.is_measuring()) return Status();
  if (!block)
    return Status::error(StatusCode::kOutOfMemory, "plan: no memory for the %s weights (%zu bytes)",
                         precision_name(precision), bytes + rows_bytes);
  const void** table = reinterpret_cast<const void**>(block);
  uint8_t* at = block + round64(size_t{nodes} * sizeof(void*));
  for (uint32_t i = 0; i < nodes; ++i) {
    if (!converted(i)) continue;
    const ops::OpModule& m = ops::op_module(md.nodes[i].op);
    m.reduce(md, i, precision, k.node[i], at);
    table[i] = at;
    at += round64(m.reduced_bytes(md, i, precision, k.node[i]));
    char* name = choice->names[i];
    const size_t used = std::strlen(name);
    // "simd/avx2+silu" becomes "simd/avx2/bf16+silu".
    char* plus = std::strchr(name, '+');
    char tail[kKernelNameBytes] = "";
    if (plus) {
      std::snprintf(tail, sizeof tail, "%s", plus);
      *plus = '\0';
    }
    std::snprintf(name + (plus ? plus - name : used),
                  kKernelNameBytes - (plus ? plus - name : used), "/%s%s",
                  precision_name(precision), tail);
  }
  k.reduced = table;
  k.reduced_rows = rows_bytes ? reinterpret_cast<uint32_t*>(block + bytes) : nullptr;
  return Status();
}

}  // namespace siflow::detail
