// SPDX-License-Identifier: Apache-2.0
// The table of op modules: one entry per op kind, and the file's op types mapped onto them.
// The only switch over op kinds in the runtime; it has no default, so a kind without a module
// fails to compile (-Wswitch under -Werror).
#include "ops/op.hpp"

namespace siflow::ops {

extern const OpModule kFullyConnected, kUnary, kConcat, kAdd, kMul, kLayerNorm, kExp, kReshape,
    kTranspose, kSlice;
extern const OpModule kConv2d, kConvTranspose2d, kPool2d, kResize, kGroupNorm;
// Format 1.4's elementwise, reduction, softmax and matrix-product modules.
extern const OpModule kSoftmax, kMatMul, kReduce, kDiv, kPow, kClip;
// Conditioning inputs (format 1.4).
extern const OpModule kLabelInput, kCondInput, kEmbedding;

const OpModule& op_module(detail::OpKind kind) {
  switch (kind) {
    case detail::OpKind::kFullyConnected:
      return kFullyConnected;
    case detail::OpKind::kUnary:
      return kUnary;
    case detail::OpKind::kConcat:
      return kConcat;
    case detail::OpKind::kAdd:
      return kAdd;
    case detail::OpKind::kMul:
      return kMul;
    case detail::OpKind::kLayerNorm:
      return kLayerNorm;
    case detail::OpKind::kExp:
      return kExp;
    case detail::OpKind::kReshape:
      return kReshape;
    case detail::OpKind::kTranspose:
      return kTranspose;
    case detail::OpKind::kSlice:
      return kSlice;
    case detail::OpKind::kConv2d:
      return kConv2d;
    case detail::OpKind::kConvTranspose2d:
      return kConvTranspose2d;
    case detail::OpKind::kPool2d:
      return kPool2d;
    case detail::OpKind::kResize:
      return kResize;
    case detail::OpKind::kGroupNorm:
      return kGroupNorm;
    case detail::OpKind::kSoftmax:
      return kSoftmax;
    case detail::OpKind::kMatMul:
      return kMatMul;
    case detail::OpKind::kReduce:
      return kReduce;
    case detail::OpKind::kDiv:
      return kDiv;
    case detail::OpKind::kPow:
      return kPow;
    case detail::OpKind::kClip:
      return kClip;
    case detail::OpKind::kLabelInput:
      return kLabelInput;
    case detail::OpKind::kCondInput:
      return kCondInput;
    case detail::OpKind::kEmbedding:
      return kEmbedding;
  }
  return kUnary;  // unreachable: every kind is listed above
}

const OpModule* op_module_for(fb::OpType type) {
  // OpKind numbers the file's op types (model_data.hpp); a type without a module yet is refused
  // by name by the loader. No default: a new fb::OpType must be listed here.
  switch (type) {
    case fb::OpType::FullyConnected:
    case fb::OpType::Unary:
    case fb::OpType::Concat:
    case fb::OpType::Add:
    case fb::OpType::Mul:
    case fb::OpType::LayerNorm:
    case fb::OpType::Exp:
    case fb::OpType::Softmax:
    case fb::OpType::MatMul:
    case fb::OpType::Reduce:
    case fb::OpType::Div:
    case fb::OpType::Pow:
    case fb::OpType::Clip:
    case fb::OpType::LabelInput:
    case fb::OpType::CondInput:
    case fb::OpType::Embedding:
    case fb::OpType::Conv2d:
    case fb::OpType::ConvTranspose2d:
    case fb::OpType::Pool2d:
    case fb::OpType::Resize:
    case fb::OpType::GroupNorm:
    case fb::OpType::Reshape:
    case fb::OpType::Transpose:
    case fb::OpType::Slice:
      return &op_module(static_cast<detail::OpKind>(type));
  }
  return nullptr;  // a value outside the enum (a newer format's op)
}

uint32_t alias_root(const detail::ModelData& model, uint32_t tensor) {
  while (tensor >= 2 && op_module(model.nodes[tensor - 2].op).aliases_input)
    tensor = model.nodes[tensor - 2].inputs[0];
  return tensor;
}

bool output_diagonal(const NodeRun& run) {
  if (run.diagonal_first == SIZE_MAX || !run.directions) return false;
  const detail::ModelData& md = *run.model;
  const uint32_t id = run.node + 2;
  if (alias_root(md, md.output) != id) return false;
  for (uint32_t j = run.node + 1; j < md.node_count; ++j) {
    const detail::NodeData& n = md.nodes[j];
    if (op_module(n.op).aliases_input) continue;
    for (uint32_t i = 0; i < n.input_count; ++i)
      if (alias_root(md, n.inputs[i]) == id) return false;
  }
  return true;
}

bool find_op_verifier(fb::OpType type, OpVerifier* out) {
  const OpModule* m = op_module_for(type);
  if (!m) return false;
  *out = OpVerifier{m->name, m->verify};
  return true;
}

}  // namespace siflow::ops
