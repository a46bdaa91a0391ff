// SPDX-License-Identifier: Apache-2.0
// The three GEMMs of a fully connected layer in training, on the simd kernels: forward
// y = x W^T + b, input gradient dx = dy W, weight gradient dW = dy^T x (and db = column sums of
// dy). Weights change every step, so the first two pack W afresh each call (O(in * out) against
// O(rows * in * out) multiply-adds); the weight gradient (gemm_tn) reads dy in place and x from
// strips packed once per 256-row chunk, with a column of ones that yields db. Rows are split over
// the pool; every output is computed the same way whatever the split, so results do not depend
// on threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "support/parallel.hpp"

namespace siflow::train {

class DenseOps {
 public:
  DenseOps(const simd::Kernels* kernels, RowPool* pool) : kernels_(kernels), pool_(pool) {}

  // pre = x W^T + b ([rows][out]); with act != kIdentity also post = act(pre).
  void forward(const float* x, size_t rows, uint32_t in, const float* w, const float* bias,
               uint32_t out, UnaryKind act, float alpha, float* pre, float* post);
  // dx = dy W ([rows][in]).
  void input_gradient(const float* dy, size_t rows, uint32_t in, const float* w, uint32_t out,
                      float* dx);
  // dw = dy^T x ([out][in]); db[o] = sum over rows of dy[r][o] in row order (db nullable).
  // Both sums run in 256-row chunks, each added to the previous chunks' sum.
  void weight_gradient(const float* dy, const float* x, size_t rows, uint32_t in, uint32_t out,
                       float* dw, float* db);
  // y = f(x) elementwise over rows x width.
  void activation(UnaryKind kind, float alpha, const float* x, size_t rows, uint32_t width,
                  float* y);
  // dx = dy * f'(x) elementwise over rows x width.
  void activation_gradient(UnaryKind kind, float alpha, const float* x, const float* dy,
                           size_t rows, uint32_t width, float* dx);

 private:
  void run(const simd::Dense& d, const float* x, size_t rows, float* pre, float* post);
  const simd::Kernels* kernels_;
  RowPool* pool_;
  std::vector<float> packed_;
  std::vector<float> gradient_;  // [dW | db] before it is split
};

}  // namespace siflow::train
