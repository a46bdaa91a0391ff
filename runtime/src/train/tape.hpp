// SPDX-License-Identifier: Apache-2.0
// Forward and reverse-mode (VJP) evaluation of a trainable graph over a minibatch. Every tensor's
// value is kept for the backward pass. In double (gradient checks) and float (training) through
// the op modules' rules; float can run its dense layers and activations on the simd kernels
// (DenseOps).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/op.hpp"
#include "train/dense.hpp"
#include "train/graph.hpp"

namespace siflow::train {

template <typename T>
class Tape {
 public:
  // Buffers for up to max_rows rows; `dense` (float only, nullable) runs dense layers and
  // activations on the simd kernels. With precision kBf16 (which needs `dense`), the layers
  // bf16_layers() names run their three GEMMs in bf16; every other node stays f32.
  Tape(const Graph& graph, size_t max_rows, DenseOps* dense = nullptr,
       Precision precision = Precision::kFp32);

  // The inputs of the next forward pass: x [rows][dim] and t [rows].
  T* x() { return values_[Graph::x()].data(); }
  T* t() { return values_[Graph::t()].data(); }
  void forward(const T* params, size_t rows);
  const T* value(uint32_t tensor) const { return values_[tensor].data(); }
  const T* output() const { return values_[graph_.output()].data(); }

  // Reverse mode from d_output = dL/dv [rows][dim] of the last forward pass: writes dL/dparams
  // (every entry) and, with want_dx, dL/dx (d_x()).
  void backward(const T* params, const T* d_output, size_t rows, T* d_params, bool want_dx);
  const T* d_x() const { return grads_[Graph::x()].data(); }

 private:
  // Adds (or, for the first contribution to a tensor in this pass, writes) into its gradient.
  T* gradient_target(uint32_t tensor, size_t count);
  void commit(uint32_t tensor, size_t count);
  // Node k's operands for its op module, with parameters from `params`.
  ops::Operands<T> operands(size_t k, const T* params, size_t rows);

  const Graph& graph_;
  DenseOps* dense_;
  std::vector<bool> bf16_;  // [nodes]: runs in bf16
  std::vector<std::vector<T>> values_, grads_;
  std::vector<bool> needs_grad_, has_grad_;
  std::vector<uint32_t> consumers_;
  std::vector<detail::NodeData> nodes_;  // the graph's nodes as the op modules read them
  std::vector<uint32_t> widths_;         // [tensors]
  std::vector<const T*> value_ptrs_;     // [tensors]: values_[i].data()
  std::vector<T> scratch_;
  bool scratch_used_ = false;
};

}  // namespace siflow::train
