// SPDX-License-Identifier: Apache-2.0
// A trainable velocity graph: the format's op set with every parameter (weights, biases, layer
// norm scales and shifts) in one flat vector, so the optimiser, clipping and checkpoints see one
// array. It describes the net; tape.hpp evaluates it. Never touches a loaded Model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "format/model_data.hpp"
#include "siflow/model_builder.hpp"

namespace siflow::train {

constexpr size_t kNoParameter = static_cast<size_t>(-1);

struct GraphNode {
  detail::OpKind op = detail::OpKind::kUnary;
  UnaryKind unary = UnaryKind::kIdentity;
  float alpha = 0.01f;
  float epsilon = 1e-5f;
  std::vector<uint32_t> inputs;
  uint32_t width = 0;
  // Offsets into the parameter vector, or kNoParameter.
  size_t weight = kNoParameter;  // FullyConnected [width][in]
  size_t bias = kNoParameter;    // FullyConnected [width]
  size_t gamma = kNoParameter;   // LayerNorm [width]
  size_t beta = kNoParameter;
  // Add/Mul with a fixed operand [1, n] (time-feature frequencies, say); not trained.
  std::vector<float> constant;
  // Reshape, Transpose, Slice: the output's per-sample shape and the op's fields as the loader
  // fills them (NodeData), and the input shape the builder writes them against.
  detail::Shape shape;
  std::vector<uint32_t> in_shape;
  uint32_t perm[3] = {0, 1, 2};
  int32_t axis = -1;  // Slice as given (negative from the end)
  uint32_t start = 0, end = 0;
};

class Graph {
 public:
  explicit Graph(uint32_t dim);

  static constexpr uint32_t x() { return 0; }  // [B, dim]
  static constexpr uint32_t t() { return 1; }  // [B, 1]
  uint32_t dim() const { return widths_[0]; }
  uint32_t width(uint32_t tensor) const { return widths_[tensor]; }
  uint32_t tensor_count() const { return static_cast<uint32_t>(widths_.size()); }
  const std::vector<GraphNode>& nodes() const { return nodes_; }
  uint32_t output() const { return output_; }
  size_t parameter_count() const { return parameters_; }

  // Each returns the tensor it produces (node k produces tensor k + 2, as in the format).
  uint32_t fully_connected(uint32_t input, uint32_t out, bool bias = true);
  uint32_t unary(uint32_t input, UnaryKind kind, float alpha = 0.01f);
  uint32_t exp(uint32_t input);
  uint32_t concat(const std::vector<uint32_t>& inputs);
  uint32_t add(uint32_t a, uint32_t b);
  uint32_t mul(uint32_t a, uint32_t b);
  uint32_t add_constant(uint32_t a, const std::vector<float>& constant);
  uint32_t mul_constant(uint32_t a, const std::vector<float>& constant);
  uint32_t layer_norm(uint32_t input, bool affine = true, float epsilon = 1e-5f);
  // Layout ops, as ModelBuilder's (the graph does not track shapes: in_shape is the input's).
  uint32_t reshape(uint32_t input, const std::vector<uint32_t>& shape);
  uint32_t transpose(uint32_t input, const std::vector<uint32_t>& in_shape,
                     const std::vector<uint32_t>& perm);
  uint32_t slice(uint32_t input, const std::vector<uint32_t>& in_shape, int32_t axis,
                 uint32_t start, uint32_t end);
  void set_output(uint32_t tensor) { output_ = tensor; }

  // PyTorch's defaults from the seed: Linear weights and biases U(-1/sqrt(in), 1/sqrt(in)),
  // layer norm gamma 1, beta 0. params has parameter_count() entries.
  void initialize(uint64_t seed, float* params) const;
  // Adds every node, with these parameter values, to a builder that starts empty (dim()).
  void emit(const float* params, ModelBuilder* builder) const;

 private:
  uint32_t push(GraphNode node);
  std::vector<GraphNode> nodes_;
  std::vector<uint32_t> widths_;
  uint32_t output_ = 0;
  size_t parameters_ = 0;
};

// The dense layers a bf16 run computes in bf16 (docs/math.md, "Reduced precision", training):
// the fully connected nodes other than the first and the last, with more than 16 inputs and
// outputs (the plan's rule for inference). Indexed by node.
std::vector<bool> bf16_layers(const Graph& graph);

// The network `siflow train` fits: concat(x, features(t)) -> [Linear -> activation] per hidden
// width -> Linear(dim). features(t) is t, or t with sin(k pi t), cos(k pi t) for k = 1..K.
Graph make_mlp(uint32_t dim, const std::vector<uint32_t>& hidden, UnaryKind activation,
               uint32_t time_frequencies);

}  // namespace siflow::train
