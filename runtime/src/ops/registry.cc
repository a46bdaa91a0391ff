// SPDX-License-Identifier: Apache-2.0
// The table of op modules: one entry per op kind, and the file's op types mapped onto them.
// The only switch over op kinds in the runtime; it has no default, so a kind without a module
// fails to compile (-Wswitch under -Werror).
#include "ops/op.hpp"

namespace siflow::ops {

extern const OpModule kFullyConnected, kUnary, kConcat, kAdd, kMul, kLayerNorm, kExp;

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
  }
  return kUnary;  // unreachable: every kind is listed above
}

const OpModule* op_module_for(fb::OpType type) {
  // OpKind numbers the file's op types (model_data.hpp), so a known type maps one to one.
  static_assert(static_cast<int>(detail::OpKind::kExp) == static_cast<int>(fb::OpType::Exp) &&
                    static_cast<int>(fb::OpType::MAX) == static_cast<int>(fb::OpType::Exp),
                "OpKind and fb::OpType must list the same ops in the same order");
  if (type > fb::OpType::MAX) return nullptr;
  return &op_module(static_cast<detail::OpKind>(type));
}

bool find_op_verifier(fb::OpType type, OpVerifier* out) {
  const OpModule* m = op_module_for(type);
  if (!m) return false;
  *out = OpVerifier{m->name, m->verify};
  return true;
}

}  // namespace siflow::ops
