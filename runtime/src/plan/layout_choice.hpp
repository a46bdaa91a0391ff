// SPDX-License-Identifier: Apache-2.0
// The plan's layout per tensor (ops::TensorLayout): NCHW, or NHWC within each row for image
// tensors that only XNNPACK convolutions and ops with an NHWC form touch, so that the
// convolutions between them convert nothing. Decided once at plan creation, after the kernel
// choice (and its tuning); runs read it through FastKernels::layout.
#pragma once

#include <cstdint>

#include "format/model_data.hpp"
#include "ops/op.hpp"

namespace siflow {

// Fills layout[tensors] (and uses component[tensors] as its union-find scratch) from the plan's
// kernels `node` and exact divergence's `seed_column`:
//  - image tensors ([C, H, W], C > 1, H x W > 1) joined by a node whose module runs them in one
//    shared layout (OpModule::layout_form kShared on its kernel: unary, Add/Mul/Div of equal
//    shapes or an NHWC broadcast form, GroupNorm on simd) form one component;
//  - a component is NHWC when every other node reading or writing one of its tensors reads and
//    writes either layout (kEither: a convolution on XNNPACK) and none of its tensors is x, the
//    times, the network output or an alias of it (a Reshape reading it makes its node kNchw), a
//    tensor with identity seed columns, or, in a plan with tangents (`tangents`), the input of a
//    convolution writing the network output (exact divergence's diagonal-only JVP reads that
//    input NCHW);
//  - a tensor with C = 1 or H x W = 1 (the same memory in both layouts) stays marked NCHW, so
//    no other op reading it takes an NHWC path (a GroupNorm over more channels than its NHWC
//    kernel holds, a bilinear Resize, a full-width constant operand); a convolution converting
//    it makes a copy.
// Returns the number of tensors laid out NHWC.
uint32_t choose_layouts(const detail::ModelData& model, const ops::NodeKernel* node,
                        const int32_t* seed_column, bool tangents, uint32_t* component,
                        uint8_t* layout);

}  // namespace siflow
