// SPDX-License-Identifier: Apache-2.0
// What an op module's verify() gets from the loader for one node: the node's place in the graph
// (for messages), the widths and shapes of the tensors before it, and the one way to read a weight
// vector (dtype, count, 64-byte file offset, finiteness, the parameter budget). Holds no state of
// its own beyond the node; never allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "format/model_data.hpp"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"

namespace siflow {

// The loader's weight reader (format/loader.cc): F32 used in place, F16 expanded into the
// model's table block; exact count, 64-byte offset, finite values, counted against
// Limits::kMaxParameters.
class WeightReader {
 public:
  virtual Status read(const char* what, const fb::Weights* w, size_t expected, bool required,
                      const float** out) = 0;

 protected:
  ~WeightReader() = default;
};

class NodeCheck;

// How the loader verifies a node of a given op type: the op modules' table (ops/registry.cc),
// handed to the loader by its caller because the format stage sits below the op modules.
struct OpVerifier {
  const char* name;  // the op's name, for messages
  Status (*verify)(NodeCheck& check, const fb::Node& node, detail::NodeData* out);
};
// Fills *out for a known op type; false for a type this runtime does not know.
typedef bool (*FindOpVerifier)(fb::OpType type, OpVerifier* out);

class NodeCheck {
 public:
  NodeCheck(uint32_t index, const fb::Node& node, const detail::Shape& x_shape,
            const detail::NodeData* nodes, WeightReader* reader)
      : index_(index),
        dim_(static_cast<uint32_t>(detail::shape_size(x_shape))),
        x_shape_(x_shape),
        nodes_(nodes),
        reader_(reader) {
    const char* op = fb::EnumNameOpType(node.op());
    std::snprintf(where_, sizeof where_, "node %u (%s%s%s)", index, (op && *op) ? op : "unknown",
                  node.name() ? ", " : "", node.name() ? node.name()->c_str() : "");
  }

  // "node 3 (FullyConnected, name)": the prefix of every message about this node.
  const char* where() const { return where_; }
  uint32_t index() const { return index_; }
  // Width of tensor `id` (0 is x, 1 is t, k + 2 the output of node k < index()).
  uint32_t width_of(uint32_t id) const {
    return id == 0 ? dim_ : id == 1 ? 1 : nodes_[id - 2].width;
  }
  // Per-sample shape of tensor `id` (x: the graph's x_shape, t: [1]).
  detail::Shape shape_of(uint32_t id) const {
    return id == 0 ? x_shape_ : id == 1 ? detail::flat_shape(1) : nodes_[id - 2].shape;
  }
  // The node producing tensor `id`, or nullptr for x and t (LabelInput/Embedding checks).
  const detail::NodeData* node_of(uint32_t id) const { return id < 2 ? nullptr : &nodes_[id - 2]; }
  Status expect_inputs(const detail::NodeData& n, uint32_t lo, uint32_t hi) const {
    if (n.input_count >= lo && n.input_count <= hi) return Status();
    if (hi == lo)
      return Status::error(StatusCode::kInvalidModel, "%s: has %u inputs, expected %u", where_,
                           n.input_count, lo);
    if (hi == Limits::kMaxNodeInputs)
      return Status::error(StatusCode::kInvalidModel, "%s: has %u inputs, expected %u or more",
                           where_, n.input_count, lo);
    return Status::error(StatusCode::kInvalidModel, "%s: has %u inputs, expected %u to %u", where_,
                         n.input_count, lo, hi);
  }
  // Reads weight vector `field` ("weight", "bias", ...) with `expected` values; a missing vector
  // is an error when `required`, else *out = nullptr.
  Status weights(const char* field, const fb::Weights* w, size_t expected, bool required,
                 const float** out) {
    char what[200];
    std::snprintf(what, sizeof what, "%s: %s", where_, field);
    return reader_->read(what, w, expected, required, out);
  }
  // The number of values `w` holds in the vector of its dtype (0 when that vector is absent), for
  // operands whose length the op reads from the file (binary constants).
  static size_t value_count(const fb::Weights& w) {
    switch (w.dtype()) {
      case fb::DType::F16:
        return w.f16() ? w.f16()->size() : 0;
      case fb::DType::BF16:
        return w.bf16() ? w.bf16()->size() : 0;
      case fb::DType::I8:
        return w.i8() ? w.i8()->size() : 0;
      case fb::DType::F32:
        break;
    }
    return w.f32() ? w.f32()->size() : 0;  // F32 (an unknown dtype is refused by weights())
  }
  // Refuses an output width outside [1, Limits::kMaxWidth].
  Status output_width(uint64_t width, uint32_t* out) const {
    if (width == 0 || width > Limits::kMaxWidth)
      return Status::error(StatusCode::kInvalidModel, "%s: output width %llu is outside [1, %u]",
                           where_, static_cast<unsigned long long>(width), Limits::kMaxWidth);
    *out = static_cast<uint32_t>(width);
    return Status();
  }

 private:
  uint32_t index_;
  uint32_t dim_;
  detail::Shape x_shape_;
  const detail::NodeData* nodes_;
  WeightReader* reader_;
  char where_[160];
};

}  // namespace siflow
