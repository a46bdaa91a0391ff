// SPDX-License-Identifier: Apache-2.0
// The plan's layout per tensor; see layout_choice.hpp.
#include "plan/layout_choice.hpp"

#include "net/executor.hpp"

namespace siflow {
namespace {

using detail::ModelData;
using detail::NodeData;
using ops::LayoutForm;
using ops::TensorLayout;

bool is_image(const detail::Shape& s) {
  return s.rank == 3 && s.dims[0] > 1 && size_t{s.dims[1]} * s.dims[2] > 1;
}

uint32_t find(uint32_t* parent, uint32_t t) {
  while (parent[t] != t) t = parent[t] = parent[parent[t]];
  return t;
}

constexpr uint8_t kBad = 1;  // in layout[root] while components are built

}  // namespace

uint32_t choose_layouts(const ModelData& md, const ops::NodeKernel* node,
                        const int32_t* seed_column, bool tangents, uint32_t* parent,
                        uint8_t* layout) {
  const uint32_t tensors = md.node_count + 2;
  for (uint32_t t = 0; t < tensors; ++t) {
    parent[t] = t;
    layout[t] = 0;
  }
  auto bad = [&](uint32_t t) { layout[find(parent, t)] = kBad; };
  auto join = [&](uint32_t a, uint32_t b) {
    a = find(parent, a), b = find(parent, b);
    if (a == b) return;
    parent[b] = a;
    layout[a] = layout[a] | layout[b];
  };
  const uint32_t output_root = alias_root(md, md.output);
  // Pass 1: components, and the tensors that must stay NCHW.
  for (uint32_t i = 0; i < md.node_count; ++i) {
    const NodeData& n = md.nodes[i];
    const ops::OpModule& m = ops::op_module(n.op);
    const LayoutForm form = m.layout_form ? m.layout_form(md, i, node[i]) : LayoutForm::kNchw;
    const uint32_t out = i + 2;
    for (uint32_t j = 0; j <= n.input_count; ++j) {
      const uint32_t t = j < n.input_count ? n.inputs[j] : out;
      if (!is_image(ops::image_shape_of(md, t))) continue;
      if (form == LayoutForm::kNchw) bad(t);
      if (form == LayoutForm::kShared && is_image(ops::image_shape_of(md, out))) join(out, t);
      if (form == LayoutForm::kShared && !is_image(ops::image_shape_of(md, out))) bad(t);
      // The diagonal-only JVP of a convolution writing the output reads its input NCHW.
      if (tangents && form == LayoutForm::kEither && j < n.input_count && out == output_root)
        bad(t);
    }
  }
  bad(0);
  bad(1);
  bad(md.output);
  bad(output_root);
  for (uint32_t t = 0; t < tensors; ++t)
    if (seed_column && seed_column[t] >= 0) bad(t);
  // Pass 2: the layouts. Each tensor's root first (parent[t]), then whether that root is bad
  // (parent's top bit, since layout[] is overwritten below), then the layouts.
  uint32_t count = 0;
  constexpr uint32_t kFlag = 0x80000000u;  // tensor ids stay below kMaxNodes + 2
  for (uint32_t t = 0; t < tensors; ++t) parent[t] = find(parent, t);
  for (uint32_t t = 0; t < tensors; ++t)
    if (layout[parent[t]] == kBad) parent[t] |= kFlag;
  for (uint32_t t = 0; t < tensors; ++t) {
    const bool nhwc = !(parent[t] & kFlag) && is_image(ops::image_shape_of(md, t));
    layout[t] = static_cast<uint8_t>(nhwc ? TensorLayout::kNhwc : TensorLayout::kNchw);
    count += nhwc;
  }
  // A tensor with C = 1 or H x W = 1 is the same memory in both layouts but stays marked NCHW:
  // the other ops reading it (GroupNorm over many channels, a bilinear Resize, a constant
  // operand) must not take their NHWC paths for it, and an XNNPACK convolution's conversion of
  // it is a copy.
  return count;
}

}  // namespace siflow
