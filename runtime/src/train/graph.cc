// SPDX-License-Identifier: Apache-2.0
// The trainable graph: parameter bookkeeping, initialisation and export to a ModelBuilder.
#include "train/graph.hpp"

#include "math/random.hpp"

namespace siflow::train {

using detail::OpKind;

namespace {
// Parameters are initialised from their own stream, so a net's initial weights do not share
// draws with the minibatches.
}  // namespace

Graph::Graph(uint32_t dim) : widths_{dim, 1} {}

uint32_t Graph::push(GraphNode node) {
  widths_.push_back(node.width);
  nodes_.push_back(std::move(node));
  output_ = static_cast<uint32_t>(widths_.size() - 1);
  return output_;
}

uint32_t Graph::fully_connected(uint32_t input, uint32_t out, bool bias) {
  GraphNode n;
  n.op = OpKind::kFullyConnected;
  n.inputs = {input};
  n.width = out;
  n.weight = parameters_;
  parameters_ += size_t{out} * widths_[input];
  if (bias) {
    n.bias = parameters_;
    parameters_ += out;
  }
  return push(std::move(n));
}

uint32_t Graph::unary(uint32_t input, UnaryKind kind, float alpha) {
  GraphNode n;
  n.op = OpKind::kUnary;
  n.unary = kind;
  n.alpha = alpha;
  n.inputs = {input};
  n.width = widths_[input];
  return push(std::move(n));
}

uint32_t Graph::exp(uint32_t input) {
  GraphNode n;
  n.op = OpKind::kExp;
  n.inputs = {input};
  n.width = widths_[input];
  return push(std::move(n));
}

uint32_t Graph::concat(const std::vector<uint32_t>& inputs) {
  GraphNode n;
  n.op = OpKind::kConcat;
  n.inputs = inputs;
  for (uint32_t i : inputs) n.width += widths_[i];
  return push(std::move(n));
}

uint32_t Graph::add(uint32_t a, uint32_t b) {
  GraphNode n;
  n.op = OpKind::kAdd;
  n.inputs = {a, b};
  n.width = widths_[a] > widths_[b] ? widths_[a] : widths_[b];
  return push(std::move(n));
}

uint32_t Graph::mul(uint32_t a, uint32_t b) {
  GraphNode n;
  n.op = OpKind::kMul;
  n.inputs = {a, b};
  n.width = widths_[a] > widths_[b] ? widths_[a] : widths_[b];
  return push(std::move(n));
}

uint32_t Graph::add_constant(uint32_t a, const std::vector<float>& constant) {
  GraphNode n;
  n.op = OpKind::kAdd;
  n.inputs = {a};
  n.constant = constant;
  const uint32_t cw = static_cast<uint32_t>(constant.size());
  n.width = widths_[a] > cw ? widths_[a] : cw;
  return push(std::move(n));
}

uint32_t Graph::mul_constant(uint32_t a, const std::vector<float>& constant) {
  const uint32_t id = add_constant(a, constant);
  nodes_.back().op = OpKind::kMul;
  return id;
}

uint32_t Graph::layer_norm(uint32_t input, bool affine, float epsilon) {
  GraphNode n;
  n.op = OpKind::kLayerNorm;
  n.inputs = {input};
  n.width = widths_[input];
  n.epsilon = epsilon;
  if (affine) {
    n.gamma = parameters_;
    n.beta = parameters_ + n.width;
    parameters_ += 2 * size_t{n.width};
  }
  return push(std::move(n));
}

namespace {
detail::Shape to_shape(const std::vector<uint32_t>& dims) {
  detail::Shape s;
  s.rank = dims.size() <= 3 ? static_cast<uint32_t>(dims.size()) : 0;
  for (uint32_t i = 0; i < s.rank; ++i) s.dims[i] = dims[i];
  return s;
}
}  // namespace

uint32_t Graph::reshape(uint32_t input, const std::vector<uint32_t>& shape) {
  GraphNode n;
  n.op = OpKind::kReshape;
  n.inputs = {input};
  n.width = widths_[input];
  n.shape = to_shape(shape);
  return push(std::move(n));
}

uint32_t Graph::transpose(uint32_t input, const std::vector<uint32_t>& in_shape,
                          const std::vector<uint32_t>& perm) {
  GraphNode n;
  n.op = OpKind::kTranspose;
  n.inputs = {input};
  n.width = widths_[input];
  n.in_shape = in_shape;
  std::vector<uint32_t> dims;
  for (size_t i = 0; i < perm.size() && i < 3; ++i) {
    n.perm[i] = perm[i];
    dims.push_back(perm[i] < in_shape.size() ? in_shape[perm[i]] : 0);
  }
  n.shape = to_shape(dims);
  return push(std::move(n));
}

uint32_t Graph::slice(uint32_t input, const std::vector<uint32_t>& in_shape, int32_t axis,
                      uint32_t start, uint32_t end) {
  GraphNode n;
  n.op = OpKind::kSlice;
  n.inputs = {input};
  n.in_shape = in_shape;
  n.axis = axis;
  n.start = start;
  n.end = end;
  std::vector<uint32_t> dims = in_shape;
  const int64_t a = axis < 0 ? int64_t{axis} + static_cast<int64_t>(dims.size()) : axis;
  if (a >= 0 && a < static_cast<int64_t>(dims.size())) dims[a] = end > start ? end - start : 0;
  n.shape = to_shape(dims);
  n.width = static_cast<uint32_t>(detail::shape_size(n.shape));
  return push(std::move(n));
}

void Graph::initialize(uint64_t seed, float* params) const {
  uint64_t node_index = 0;
  for (const GraphNode& n : nodes_) {
    if (n.op == OpKind::kFullyConnected) {
      const uint32_t in = widths_[n.inputs[0]];
      const double bound = 1.0 / math::sqrt(static_cast<double>(in));
      const size_t count = size_t{n.width} * in;
      // Parameter k of node j: block k/4 of sample j in the init stream (weights, then bias).
      for (size_t k = 0; k < count; k += 4) {
        const PhiloxBlock b =
            random_block(seed, static_cast<uint32_t>(k / 4), node_index, kStreamInit);
        for (size_t lane = 0; lane < 4 && k + lane < count; ++lane)
          params[n.weight + k + lane] = uniform_in<float>(-bound, bound, lane_uniform(b.v[lane]));
      }
      if (n.bias != kNoParameter) {
        for (uint32_t k = 0; k < n.width; k += 4) {
          const PhiloxBlock b = random_block(seed, k / 4, node_index, kStreamInit + 1);
          for (uint32_t lane = 0; lane < 4 && k + lane < n.width; ++lane)
            params[n.bias + k + lane] = uniform_in<float>(-bound, bound, lane_uniform(b.v[lane]));
        }
      }
    } else if (n.op == OpKind::kLayerNorm && n.gamma != kNoParameter) {
      for (uint32_t k = 0; k < n.width; ++k) {
        params[n.gamma + k] = 1.0f;
        params[n.beta + k] = 0.0f;
      }
    }
    ++node_index;
  }
}

void Graph::emit(const float* params, ModelBuilder* builder) const {
  for (const GraphNode& n : nodes_) {
    switch (n.op) {
      case OpKind::kFullyConnected: {
        const size_t count = size_t{n.width} * widths_[n.inputs[0]];
        std::vector<float> w(params + n.weight, params + n.weight + count), b;
        if (n.bias != kNoParameter) b.assign(params + n.bias, params + n.bias + n.width);
        builder->fully_connected(n.inputs[0], n.width, w, b);
        break;
      }
      case OpKind::kUnary:
        builder->unary(n.inputs[0], n.unary, n.alpha);
        break;
      case OpKind::kConcat:
        builder->concat(n.inputs);
        break;
      case OpKind::kExp:
        builder->exp(n.inputs[0]);
        break;
      case OpKind::kAdd:
        if (n.constant.empty())
          builder->add(n.inputs[0], n.inputs[1]);
        else
          builder->add_constant(n.inputs[0], n.constant);
        break;
      case OpKind::kMul:
        if (n.constant.empty())
          builder->mul(n.inputs[0], n.inputs[1]);
        else
          builder->mul_constant(n.inputs[0], n.constant);
        break;
      case OpKind::kLayerNorm: {
        std::vector<float> g, b;
        if (n.gamma != kNoParameter) {
          g.assign(params + n.gamma, params + n.gamma + n.width);
          b.assign(params + n.beta, params + n.beta + n.width);
        }
        builder->layer_norm(n.inputs[0], g, b, n.epsilon);
        break;
      }
      case OpKind::kReshape:
        builder->reshape(n.inputs[0],
                         std::vector<uint32_t>(n.shape.dims, n.shape.dims + n.shape.rank));
        break;
      case OpKind::kTranspose:
        builder->transpose(n.inputs[0], n.in_shape,
                           std::vector<uint32_t>(n.perm, n.perm + n.in_shape.size()));
        break;
      case OpKind::kSlice:
        builder->slice(n.inputs[0], n.in_shape, n.axis, n.start, n.end);
        break;
      case OpKind::kConv2d:
      case OpKind::kConvTranspose2d:
      case OpKind::kPool2d:
      case OpKind::kResize:
      case OpKind::kGroupNorm:
        break;  // no Graph builder makes the image ops (their VJPs serve a future image trainer)
      case OpKind::kSoftmax:
      case OpKind::kMatMul:
      case OpKind::kReduce:
      case OpKind::kDiv:
      case OpKind::kPow:
      case OpKind::kClip:
        break;  // format 1.4's ops: the training graph builds none of them
      case OpKind::kLabelInput:
      case OpKind::kCondInput:
      case OpKind::kEmbedding:
        break;  // no trainer graph builds conditioning inputs (make_mlp and the tape take none)
    }
  }
  builder->set_output(output_);
}

std::vector<bool> bf16_layers(const Graph& graph) {
  const std::vector<GraphNode>& nodes = graph.nodes();
  std::vector<bool> bf16(nodes.size(), false);
  size_t first = nodes.size(), last = nodes.size();
  for (size_t k = 0; k < nodes.size(); ++k)
    if (nodes[k].op == OpKind::kFullyConnected) {
      if (first == nodes.size()) first = k;
      last = k;
    }
  constexpr uint32_t kNarrow = 16;
  for (size_t k = 0; k < nodes.size(); ++k)
    bf16[k] = nodes[k].op == OpKind::kFullyConnected && k != first && k != last &&
              graph.width(nodes[k].inputs[0]) > kNarrow && nodes[k].width > kNarrow;
  return bf16;
}

Graph make_mlp(uint32_t dim, const std::vector<uint32_t>& hidden, UnaryKind activation,
               uint32_t time_frequencies) {
  Graph g(dim);
  uint32_t time = Graph::t();
  if (time_frequencies > 0) {
    std::vector<float> freq(time_frequencies);
    for (uint32_t k = 0; k < time_frequencies; ++k)
      freq[k] = static_cast<float>(math::kPi * (k + 1));
    const uint32_t scaled = g.mul_constant(Graph::t(), freq);
    time =
        g.concat({Graph::t(), g.unary(scaled, UnaryKind::kSin), g.unary(scaled, UnaryKind::kCos)});
  }
  uint32_t h = g.concat({Graph::x(), time});
  for (uint32_t width : hidden) h = g.unary(g.fully_connected(h, width), activation);
  g.set_output(g.fully_connected(h, dim));
  return g;
}

}  // namespace siflow::train
