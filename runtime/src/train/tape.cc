// SPDX-License-Identifier: Apache-2.0
// The VJP rules of the op set (docs/training.md lists them with their formulas):
//   fully connected y = x W^T + b:  dx = dy W,  dW = dy^T x,  db = sum_r dy
//   unary y = f(x):                 dx = dy f'(x)
//   concat:                         each input gets its columns of dy
//   add / mul (broadcast [B,1]):    da = dy (* b), summed over columns for a [B,1] operand
//   layer norm y = g xhat + beta:   dg = sum_r dy xhat, dbeta = sum_r dy,
//                                   dx = (h - mean(h) - xhat mean(h xhat)) / s,  h = dy g
#include "train/tape.hpp"

#include <cstring>
#include <type_traits>

#include "math/elementary.hpp"
#include "kernels/reference/ops.hpp"

namespace siflow::train {

using detail::OpKind;

namespace {

// Layer norm's row statistics, in double: the mean and 1 / sqrt(variance + epsilon).
template <typename T>
void row_moments(const T* x, uint32_t width, double epsilon, double* mean, double* inv) {
  double m = 0.0, var = 0.0;
  for (uint32_t c = 0; c < width; ++c) m += x[c];
  m /= width;
  for (uint32_t c = 0; c < width; ++c) var += (x[c] - m) * (x[c] - m);
  *mean = m;
  *inv = 1.0 / math::sqrt(var / width + epsilon);
}

}  // namespace

template <typename T>
Tape<T>::Tape(const Graph& graph, size_t max_rows, DenseOps* dense)
    : graph_(graph), dense_(std::is_same<T, float>::value ? dense : nullptr) {
  const uint32_t n = graph.tensor_count();
  values_.resize(n);
  grads_.resize(n);
  needs_grad_.assign(n, false);
  has_grad_.assign(n, false);
  consumers_.assign(n, 0);
  for (uint32_t i = 0; i < n; ++i) {
    values_[i].resize(max_rows * graph.width(i));
    grads_[i].resize(max_rows * graph.width(i));
  }
  for (const GraphNode& node : graph.nodes())
    for (uint32_t in : node.inputs) ++consumers_[in];
  ++consumers_[graph.output()];
}

template <typename T>
void Tape<T>::forward(const T* params, size_t rows) {
  const std::vector<GraphNode>& nodes = graph_.nodes();
  for (size_t k = 0; k < nodes.size(); ++k) {
    const GraphNode& node = nodes[k];
    const uint32_t id = static_cast<uint32_t>(k + 2);
    const uint32_t width = node.width;
    T* y = values_[id].data();
    const T* a = values_[node.inputs[0]].data();
    const uint32_t aw = graph_.width(node.inputs[0]);
    switch (node.op) {
      case OpKind::kFullyConnected: {
        const T* w = params + node.weight;
        const T* b = node.bias == kNoParameter ? nullptr : params + node.bias;
        if constexpr (std::is_same<T, float>::value) {
          if (dense_) {
            // A dense layer whose only consumer is the activation after it runs that activation
            // in its epilogue.
            const bool fuse = k + 1 < nodes.size() && nodes[k + 1].op == OpKind::kUnary &&
                              nodes[k + 1].inputs[0] == id && consumers_[id] == 1;
            if (fuse) {
              dense_->forward(a, rows, aw, w, b, width, nodes[k + 1].unary, nodes[k + 1].alpha, y,
                              values_[id + 1].data());
              ++k;
            } else {
              dense_->forward(a, rows, aw, w, b, width, UnaryKind::kIdentity, 0.0f, y, y);
            }
            break;
          }
          reference::fully_connected(a, rows, aw, w, b, width, y);
        } else {
          for (size_t r = 0; r < rows; ++r)
            for (uint32_t o = 0; o < width; ++o) {
              T acc = 0;
              for (uint32_t i = 0; i < aw; ++i) acc += a[r * aw + i] * w[size_t{o} * aw + i];
              y[r * width + o] = b ? acc + b[o] : acc;
            }
        }
        break;
      }
      case OpKind::kUnary:
        if constexpr (std::is_same<T, float>::value) {
          if (dense_) {
            dense_->activation(node.unary, node.alpha, a, rows, width, y);
            break;
          }
        }
        for (size_t i = 0; i < rows * width; ++i)
          y[i] = static_cast<T>(reference::unary_value(node.unary, node.alpha, a[i]));
        break;
      case OpKind::kConcat: {
        uint32_t offset = 0;
        for (uint32_t in : node.inputs) {
          const uint32_t iw = graph_.width(in);
          const T* src = values_[in].data();
          for (size_t r = 0; r < rows; ++r)
            std::memcpy(y + r * width + offset, src + r * iw, iw * sizeof(T));
          offset += iw;
        }
        break;
      }
      case OpKind::kAdd:
      case OpKind::kMul: {
        const bool multiply = node.op == OpKind::kMul;
        const bool constant = !node.constant.empty();
        const uint32_t bw =
            constant ? static_cast<uint32_t>(node.constant.size()) : graph_.width(node.inputs[1]);
        const T* bt = constant ? nullptr : values_[node.inputs[1]].data();
        for (size_t r = 0; r < rows; ++r)
          for (uint32_t c = 0; c < width; ++c) {
            const T av = a[r * aw + (aw == 1 ? 0 : c)];
            const uint32_t bc = bw == 1 ? 0 : c;
            const T bv = constant ? static_cast<T>(node.constant[bc]) : bt[r * bw + bc];
            y[r * width + c] = multiply ? av * bv : av + bv;
          }
        break;
      }
      case OpKind::kLayerNorm: {
        const T* g = node.gamma == kNoParameter ? nullptr : params + node.gamma;
        const T* be = node.gamma == kNoParameter ? nullptr : params + node.beta;
        for (size_t r = 0; r < rows; ++r) {
          const T* xr = a + r * width;
          double mean, inv;
          row_moments(xr, width, node.epsilon, &mean, &inv);
          for (uint32_t c = 0; c < width; ++c) {
            double v = (xr[c] - mean) * inv;
            if (g) v = v * g[c] + be[c];
            y[r * width + c] = static_cast<T>(v);
          }
        }
        break;
      }
    }
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

  for (size_t k = nodes.size(); k-- > 0;) {
    const GraphNode& node = nodes[k];
    const uint32_t id = static_cast<uint32_t>(k + 2);
    if (!has_grad_[id] || !needs_grad_[id]) continue;
    const uint32_t width = node.width;
    const T* dy = grads_[id].data();
    const uint32_t in0 = node.inputs[0];
    const uint32_t aw = graph_.width(in0);
    const T* a = values_[in0].data();
    switch (node.op) {
      case OpKind::kFullyConnected: {
        const T* w = params + node.weight;
        T* dw = d_params + node.weight;
        T* db = node.bias == kNoParameter ? nullptr : d_params + node.bias;
        if constexpr (std::is_same<T, float>::value) {
          if (dense_) {
            dense_->weight_gradient(dy, a, rows, aw, width, dw, db);
            if (needs_grad_[in0]) {
              T* dx = gradient_target(in0, rows * aw);
              dense_->input_gradient(dy, rows, aw, w, width, dx);
              commit(in0, rows * aw);
            }
            break;
          }
        }
        for (uint32_t o = 0; o < width; ++o) {
          for (uint32_t i = 0; i < aw; ++i) {
            T acc = 0;
            for (size_t r = 0; r < rows; ++r) acc += dy[r * width + o] * a[r * aw + i];
            dw[size_t{o} * aw + i] = acc;
          }
          if (db) {
            T acc = 0;
            for (size_t r = 0; r < rows; ++r) acc += dy[r * width + o];
            db[o] = acc;
          }
        }
        if (needs_grad_[in0]) {
          T* dx = gradient_target(in0, rows * aw);
          for (size_t r = 0; r < rows; ++r)
            for (uint32_t i = 0; i < aw; ++i) {
              T acc = 0;
              for (uint32_t o = 0; o < width; ++o) acc += dy[r * width + o] * w[size_t{o} * aw + i];
              dx[r * aw + i] = acc;
            }
          commit(in0, rows * aw);
        }
        break;
      }
      case OpKind::kUnary: {
        if (!needs_grad_[in0]) break;
        T* dx = gradient_target(in0, rows * width);
        bool done = false;
        if constexpr (std::is_same<T, float>::value) {
          if (dense_) {
            dense_->activation_gradient(node.unary, node.alpha, a, dy, rows, width, dx);
            done = true;
          }
        }
        if (!done)
          for (size_t i = 0; i < rows * width; ++i)
            dx[i] = dy[i] * static_cast<T>(reference::unary_slope(node.unary, node.alpha, a[i]));
        commit(in0, rows * width);
        break;
      }
      case OpKind::kConcat: {
        uint32_t offset = 0;
        for (uint32_t in : node.inputs) {
          const uint32_t iw = graph_.width(in);
          if (needs_grad_[in]) {
            T* dx = gradient_target(in, rows * iw);
            for (size_t r = 0; r < rows; ++r)
              std::memcpy(dx + r * iw, dy + r * width + offset, iw * sizeof(T));
            commit(in, rows * iw);
          }
          offset += iw;
        }
        break;
      }
      case OpKind::kAdd:
      case OpKind::kMul: {
        const bool multiply = node.op == OpKind::kMul;
        const bool constant = !node.constant.empty();
        const uint32_t in1 = constant ? 0 : node.inputs[1];
        const uint32_t bw =
            constant ? static_cast<uint32_t>(node.constant.size()) : graph_.width(in1);
        const T* b = constant ? nullptr : values_[in1].data();
        auto b_at = [&](size_t r, uint32_t c) {
          const uint32_t bc = bw == 1 ? 0 : c;
          return constant ? static_cast<T>(node.constant[bc]) : b[r * bw + bc];
        };
        if (needs_grad_[in0]) {
          T* da = gradient_target(in0, rows * aw);
          for (size_t r = 0; r < rows; ++r) {
            if (aw == 1) {
              T acc = 0;
              for (uint32_t c = 0; c < width; ++c)
                acc += multiply ? dy[r * width + c] * b_at(r, c) : dy[r * width + c];
              da[r] = acc;
            } else {
              for (uint32_t c = 0; c < width; ++c)
                da[r * aw + c] = multiply ? dy[r * width + c] * b_at(r, c) : dy[r * width + c];
            }
          }
          commit(in0, rows * aw);
        }
        if (!constant && needs_grad_[in1]) {
          T* db = gradient_target(in1, rows * bw);
          for (size_t r = 0; r < rows; ++r) {
            auto term = [&](uint32_t c) {
              return multiply ? dy[r * width + c] * a[r * aw + (aw == 1 ? 0 : c)]
                              : dy[r * width + c];
            };
            if (bw == 1) {
              T acc = 0;
              for (uint32_t c = 0; c < width; ++c) acc += term(c);
              db[r] = acc;
            } else {
              for (uint32_t c = 0; c < width; ++c) db[r * bw + c] = term(c);
            }
          }
          commit(in1, rows * bw);
        }
        break;
      }
      case OpKind::kLayerNorm: {
        const T* g = node.gamma == kNoParameter ? nullptr : params + node.gamma;
        T* dg = node.gamma == kNoParameter ? nullptr : d_params + node.gamma;
        T* dbeta = node.gamma == kNoParameter ? nullptr : d_params + node.beta;
        T* dx = needs_grad_[in0] ? gradient_target(in0, rows * width) : nullptr;
        for (size_t r = 0; r < rows; ++r) {
          const T* xr = a + r * width;
          const T* dyr = dy + r * width;
          double mean, inv;
          row_moments(xr, width, node.epsilon, &mean, &inv);
          double mean_h = 0.0, mean_hx = 0.0;
          for (uint32_t c = 0; c < width; ++c) {
            const double xhat = (xr[c] - mean) * inv;
            const double h = g ? dyr[c] * static_cast<double>(g[c]) : dyr[c];
            mean_h += h;
            mean_hx += h * xhat;
            if (dg) {
              dg[c] += static_cast<T>(dyr[c] * xhat);
              dbeta[c] += dyr[c];
            }
          }
          mean_h /= width;
          mean_hx /= width;
          if (dx)
            for (uint32_t c = 0; c < width; ++c) {
              const double xhat = (xr[c] - mean) * inv;
              const double h = g ? dyr[c] * static_cast<double>(g[c]) : dyr[c];
              dx[r * width + c] = static_cast<T>((h - mean_h - xhat * mean_hx) * inv);
            }
        }
        if (dx) commit(in0, rows * width);
        break;
      }
    }
  }
  if (want_dx && !has_grad_[Graph::x()])
    std::memset(grads_[Graph::x()].data(), 0, rows * graph_.dim() * sizeof(T));
}

template class Tape<float>;
template class Tape<double>;

}  // namespace siflow::train
