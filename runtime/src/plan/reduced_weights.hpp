// SPDX-License-Identifier: Apache-2.0
// A plan's reduced-precision weights (PlanOptions::precision): which dense layers run in the
// reduced format, their weights converted once at plan creation into the plan's memory, and the
// bf16 activation buffer. Never touched again after planning except by the kernels reading them.
#pragma once

#include "format/model_data.hpp"
#include "plan/kernel_choice.hpp"
#include "siflow/siflow.hpp"
#include "support/memory.hpp"

namespace siflow::detail {

// For a precision other than fp32: every node whose op module converts weights (dense layers and
// convolutions), except the first and the last such node and layers with 16 or fewer inputs or
// outputs (for a convolution: reduction length or output channels per group; the layers reading t
// and x or time features and the one writing v stay f32: together about 1 % of M1's work, and the
// ends of the network where rounding costs the most accuracy; docs/math.md has the measurements),
// gets its weights converted for its kernel; the kernel names
// gain "/<precision>". `net_rows` (the layout's network rows: twice max_batch when guided) and
// `directions` (its tangent directions) size the bf16 buffer.
// A measuring `memory` only counts the bytes.
Status reduce_weights(const ModelData& model, const PlanOptions& options, size_t net_rows,
                      size_t directions, Memory& memory, KernelChoice* choice);

}  // namespace siflow::detail
