// SPDX-License-Identifier: Apache-2.0
// The three GEMMs of a fully connected layer in training, on the simd kernels: forward
// y = x W^T + b, input gradient dx = dy W, weight gradient dW = dy^T x (and db = column sums of
// dy). Weights change every step, so the first two pack W afresh each call (O(in * out) against
// O(rows * in * out) multiply-adds); the weight gradient (gemm_tn) reads dy in place and x from
// strips packed once per 256-row chunk, with a column of ones that yields db. Rows are split over
// the pool; every output is computed the same way whatever the split, so results do not depend
// on threads. Each has a bf16 twin on the reduced-precision kernels.
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
  // The same three products in bf16 (docs/math.md, "Reduced precision", training): both operands
  // rounded to bfloat16, products added in pairs into f32 as vdpbf16ps does (the simd kernels'
  // dense_reduced, whatever the instruction set). The bias is added in f32 (subnormals flushed);
  // db is the f32 sum of dy's rows in row order. The weight gradient's sum runs over all rows
  // in one chain.
  void forward_bf16(const float* x, size_t rows, uint32_t in, const float* w, const float* bias,
                    uint32_t out, UnaryKind act, float alpha, float* pre, float* post);
  void input_gradient_bf16(const float* dy, size_t rows, uint32_t in, const float* w, uint32_t out,
                           float* dx);
  void weight_gradient_bf16(const float* dy, const float* x, size_t rows, uint32_t in, uint32_t out,
                            float* dw, float* db);
  // y = f(x) elementwise over rows x width.
  void activation(UnaryKind kind, float alpha, const float* x, size_t rows, uint32_t width,
                  float* y);
  // dx = dy * f'(x) elementwise over rows x width.
  void activation_gradient(UnaryKind kind, float alpha, const float* x, const float* dy,
                           size_t rows, uint32_t width, float* dx);

 private:
  void run(const simd::Dense& d, const float* x, size_t rows, float* pre, float* post);
  void run_bf16(uint32_t in, uint32_t out, bool bias, UnaryKind act, float alpha, const float* x,
                size_t rows, float* pre, float* post);
  void* reduced(size_t bytes);
  const simd::Kernels* kernels_;
  RowPool* pool_;
  std::vector<float> packed_;
  std::vector<float> gradient_;  // [dW | db] before it is split
  // bf16: packed weights (64-byte lines), the rows as bf16 pairs, dy transposed.
  struct alignas(64) Line {
    unsigned char bytes[64];
  };
  std::vector<Line> reduced_;
  std::vector<uint32_t> x_bf16_;
  std::vector<float> transposed_;
};

}  // namespace siflow::train
