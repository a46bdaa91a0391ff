// SPDX-License-Identifier: Apache-2.0
// The per-sample axis of Reduce and Softmax: Node.axis (negative counts from the end) checked
// against the input's shape, and the input read as [outer, extent, inner] around it.
#pragma once

#include "ops/op.hpp"

namespace siflow::ops {

inline Status resolve_axis(NodeCheck& check, const fb::Node& node, detail::NodeData* out) {
  const detail::Shape in = check.shape_of(out->inputs[0]);
  const int32_t rank = static_cast<int32_t>(in.rank);
  const int32_t axis = node.axis() < 0 ? node.axis() + rank : node.axis();
  if (axis < 0 || axis >= rank)
    return Status::error(StatusCode::kInvalidModel, "%s: axis %d is outside the input's %s",
                         check.where(), static_cast<int>(node.axis()), detail::shape_text(in).text);
  out->outer = out->inner = 1;
  for (int32_t k = 0; k < axis; ++k) out->outer *= in.dims[k];
  out->extent = in.dims[axis];
  for (int32_t k = axis + 1; k < rank; ++k) out->inner *= in.dims[k];
  out->shape = in;
  return Status();
}

}  // namespace siflow::ops
