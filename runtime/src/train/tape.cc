// SPDX-License-Identifier: Apache-2.0
// Forward and reverse mode over a minibatch through the op modules (ops/op.hpp holds each op's
// forward and VJP rules; docs/training.md lists the formulas). In float, dense layers and
// activations run on the simd kernels (DenseOps) when the tape has them.
#include "train/tape.hpp"

#include <cstring>
#include <type_traits>

#include "ops/op.hpp"

namespace siflow::train {

using detail::OpKind;

namespace {

template <typename T>
struct TapeOps;
template <>
struct TapeOps<float> {
  static void forward(const ops::OpModule& m, const ops::Operands<float>& o) { m.forward_f32(o); }
  static void vjp(const ops::OpModule& m, const ops::Operands<float>& o,
                  const ops::Gradients<float>& g) {
    m.vjp_f32(o, g);
  }
};
template <>
struct TapeOps<double> {
  static void forward(const ops::OpModule& m, const ops::Operands<double>& o) { m.forward_f64(o); }
  static void vjp(const ops::OpModule& m, const ops::Operands<double>& o,
                  const ops::Gradients<double>& g) {
    m.vjp_f64(o, g);
  }
};

}  // namespace

template <typename T>
Tape<T>::Tape(const Graph& graph, size_t max_rows, DenseOps* dense, Precision precision)
    : graph_(graph), dense_(std::is_same<T, float>::value ? dense : nullptr) {
  bf16_ = dense_ && precision == Precision::kBf16 ? bf16_layers(graph)
                                                  : std::vector<bool>(graph.nodes().size(), false);
  const uint32_t n = graph.tensor_count();
  values_.resize(n);
  grads_.resize(n);
  needs_grad_.assign(n, false);
  has_grad_.assign(n, false);
  consumers_.assign(n, 0);
  widths_.resize(n);
  value_ptrs_.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    values_[i].resize(max_rows * graph.width(i));
    grads_[i].resize(max_rows * graph.width(i));
    widths_[i] = graph.width(i);
    value_ptrs_[i] = values_[i].data();
  }
  // The op modules read a node as the loader describes it (format/model_data.hpp).
  nodes_.resize(graph.nodes().size());
  for (size_t k = 0; k < graph.nodes().size(); ++k) {
    const GraphNode& g = graph.nodes()[k];
    detail::NodeData& d = nodes_[k];
    d = detail::NodeData();
    d.op = g.op;
    d.unary = g.unary;
    d.alpha = g.alpha;
    d.epsilon = g.epsilon;
    d.input_count = static_cast<uint32_t>(g.inputs.size());
    d.inputs = g.inputs.data();
    d.width = g.width;
    d.constant = g.constant.empty() ? nullptr : g.constant.data();
    d.constant_width = static_cast<uint32_t>(g.constant.size());
    d.shape = g.shape;
    for (int i = 0; i < 3; ++i) d.perm[i] = g.perm[i];
    const int64_t axis = g.axis < 0 ? int64_t{g.axis} + g.in_shape.size() : g.axis;
    d.axis = static_cast<uint32_t>(axis);
    d.start = g.start;
    d.end = g.end;
  }
  for (const GraphNode& node : graph.nodes())
    for (uint32_t in : node.inputs) ++consumers_[in];
  ++consumers_[graph.output()];
}

template <typename T>
ops::Operands<T> Tape<T>::operands(size_t k, const T* params, size_t rows) {
  const GraphNode& node = graph_.nodes()[k];
  auto at = [&](size_t offset) { return offset == kNoParameter ? nullptr : params + offset; };
  return ops::Operands<T>{&nodes_[k],
                          widths_.data(),
                          value_ptrs_.data(),
                          values_[k + 2].data(),
                          at(node.weight),
                          at(node.bias),
                          at(node.gamma),
                          at(node.beta),
                          rows};
}

template <typename T>
void Tape<T>::forward(const T* params, size_t rows) {
  const std::vector<GraphNode>& nodes = graph_.nodes();
  for (size_t k = 0; k < nodes.size(); ++k) {
    const GraphNode& node = nodes[k];
    const uint32_t id = static_cast<uint32_t>(k + 2);
    if constexpr (std::is_same<T, float>::value) {
      if (dense_ && node.op == OpKind::kFullyConnected) {
        const uint32_t aw = graph_.width(node.inputs[0]);
        const T* a = values_[node.inputs[0]].data();
        const T* w = params + node.weight;
        const T* b = node.bias == kNoParameter ? nullptr : params + node.bias;
        T* y = values_[id].data();
        // A dense layer whose only consumer is the activation after it runs that activation in
        // its epilogue.
        const bool fuse = k + 1 < nodes.size() && nodes[k + 1].op == OpKind::kUnary &&
                          nodes[k + 1].inputs[0] == id && consumers_[id] == 1;
        const UnaryKind act = fuse ? nodes[k + 1].unary : UnaryKind::kIdentity;
        const float alpha = fuse ? nodes[k + 1].alpha : 0.0f;
        T* post = fuse ? values_[id + 1].data() : y;
        if (bf16_[k])
          dense_->forward_bf16(a, rows, aw, w, b, node.width, act, alpha, y, post);
        else
          dense_->forward(a, rows, aw, w, b, node.width, act, alpha, y, post);
        if (fuse) ++k;
        continue;
      }
      if (dense_ && node.op == OpKind::kUnary) {
        dense_->activation(node.unary, node.alpha, values_[node.inputs[0]].data(), rows, node.width,
                           values_[id].data());
        continue;
      }
    }
    TapeOps<T>::forward(ops::op_module(node.op), operands(k, params, rows));
  }
}

template <typename T>
T* Tape<T>::gradient_target(uint32_t tensor, size_t count) {
  if (!has_grad_[tensor]) {
    scratch_used_ = false;
    return grads_[tensor].data();
  }
  if (scratch_.size() < count) scratch_.resize(count);
  scratch_used_ = true;
  return scratch_.data();
}

template <typename T>
void Tape<T>::commit(uint32_t tensor, size_t count) {
  if (scratch_used_) {
    T* g = grads_[tensor].data();
    for (size_t i = 0; i < count; ++i) g[i] += scratch_[i];
    scratch_used_ = false;
  }
  has_grad_[tensor] = true;
}

template <typename T>
void Tape<T>::backward(const T* params, const T* d_output, size_t rows, T* d_params, bool want_dx) {
  const std::vector<GraphNode>& nodes = graph_.nodes();
  // A tensor needs a gradient when it depends on a parameter (or is x and dx is wanted).
  std::fill(needs_grad_.begin(), needs_grad_.end(), false);
  needs_grad_[Graph::x()] = want_dx;
  for (size_t k = 0; k < nodes.size(); ++k) {
    const GraphNode& node = nodes[k];
    bool needs = node.weight != kNoParameter || node.gamma != kNoParameter;
    for (uint32_t in : node.inputs) needs = needs || needs_grad_[in];
    needs_grad_[k + 2] = needs;
  }
  std::fill(has_grad_.begin(), has_grad_.end(), false);
  std::memset(d_params, 0, graph_.parameter_count() * sizeof(T));
  const uint32_t out = graph_.output();
  std::memcpy(grads_[out].data(), d_output, rows * graph_.width(out) * sizeof(T));
  has_grad_[out] = true;

  ops::Gradients<T> g{};
  g.tape = this;
  g.needs = [](void* t, uint32_t tensor) {
    return static_cast<bool>(static_cast<Tape*>(t)->needs_grad_[tensor]);
  };
  g.target = [](void* t, uint32_t tensor, size_t count) {
    return static_cast<Tape*>(t)->gradient_target(tensor, count);
  };
  g.commit = [](void* t, uint32_t tensor, size_t count) {
    static_cast<Tape*>(t)->commit(tensor, count);
  };
  auto at = [&](size_t offset) { return offset == kNoParameter ? nullptr : d_params + offset; };
  for (size_t k = nodes.size(); k-- > 0;) {
    const GraphNode& node = nodes[k];
    const uint32_t id = static_cast<uint32_t>(k + 2);
    if (!has_grad_[id] || !needs_grad_[id]) continue;
    const T* dy = grads_[id].data();
    if constexpr (std::is_same<T, float>::value) {
      if (dense_ && (node.op == OpKind::kFullyConnected || node.op == OpKind::kUnary)) {
        const uint32_t in0 = node.inputs[0], aw = graph_.width(in0);
        const T* a = values_[in0].data();
        if (node.op == OpKind::kFullyConnected) {
          if (bf16_[k])
            dense_->weight_gradient_bf16(dy, a, rows, aw, node.width, d_params + node.weight,
                                         at(node.bias));
          else
            dense_->weight_gradient(dy, a, rows, aw, node.width, d_params + node.weight,
                                    at(node.bias));
          if (needs_grad_[in0]) {
            T* dx = gradient_target(in0, rows * aw);
            if (bf16_[k])
              dense_->input_gradient_bf16(dy, rows, aw, params + node.weight, node.width, dx);
            else
              dense_->input_gradient(dy, rows, aw, params + node.weight, node.width, dx);
            commit(in0, rows * aw);
          }
        } else if (needs_grad_[in0]) {
          T* dx = gradient_target(in0, rows * node.width);
          dense_->activation_gradient(node.unary, node.alpha, a, dy, rows, node.width, dx);
          commit(in0, rows * node.width);
        }
        continue;
      }
    }
    g.dy = dy;
    g.d_weight = at(node.weight);
    g.d_bias = at(node.bias);
    g.d_gamma = at(node.gamma);
    g.d_beta = at(node.beta);
    TapeOps<T>::vjp(ops::op_module(node.op), operands(k, params, rows), g);
  }
  if (want_dx && !has_grad_[Graph::x()])
    std::memset(grads_[Graph::x()].data(), 0, rows * graph_.dim() * sizeof(T));
}

template class Tape<float>;
template class Tape<double>;

}  // namespace siflow::train
