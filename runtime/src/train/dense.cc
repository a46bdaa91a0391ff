// SPDX-License-Identifier: Apache-2.0
// Training GEMMs on the simd dense kernel (see dense.hpp).
#include "train/dense.hpp"

#include <cstring>

namespace siflow::train {
namespace {
// Row ranges a multiple of both tile heights (6 rows on AVX2, 8 on AVX-512), so only the last
// range can have rows left over from whole tiles.
constexpr size_t kGrain = 48;
}  // namespace

void DenseOps::run(const simd::Dense& d, const float* x, size_t rows, float* pre, float* post) {
  const simd::Kernels* k = kernels_;
  parallel_rows(pool_, rows, kGrain,
                [&](size_t r0, size_t r1) { k->dense(d, x, r0, r1, pre, post); });
}

void DenseOps::forward(const float* x, size_t rows, uint32_t in, const float* w, const float* bias,
                       uint32_t out, UnaryKind act, float alpha, float* pre, float* post) {
  packed_.resize(simd::packed_floats(in, out));
  simd::pack_weights(w, bias, in, out, packed_.data());
  const simd::Dense d{packed_.data(), in, out, bias != nullptr, act, alpha};
  run(d, x, rows, pre, act == UnaryKind::kIdentity ? pre : post);
}

void DenseOps::input_gradient(const float* dy, size_t rows, uint32_t in, const float* w,
                              uint32_t out, float* dx) {
  // dx = dy W: a layer with `out` inputs and `in` outputs whose weights are W^T.
  packed_.resize(simd::packed_floats(out, in));
  simd::pack_transposed(w, out, in, packed_.data());
  const simd::Dense d{packed_.data(), out, in, false, UnaryKind::kIdentity, 0.0f};
  run(d, dy, rows, dx, dx);
}

void DenseOps::weight_gradient(const float* dy, const float* x, size_t rows, uint32_t in,
                               uint32_t out, float* dw, float* db) {
  // [dw | db] = dy^T [x | 1] in chunks of rows: x's chunk is packed once (shared by the threads)
  // with a column of ones for the bias, dy is read in place.
  const simd::Kernels* k = kernels_;
  const uint32_t strip = k->tn_strip;
  const uint32_t columns = in + (db ? 1 : 0);
  packed_.resize(simd::tn_packed_floats(simd::kTnMaxK, columns, strip));
  float* c = dw;
  if (db) {
    gradient_.resize(size_t{out} * columns);
    c = gradient_.data();
  }
  for (size_t r0 = 0; r0 < rows; r0 += simd::kTnMaxK) {
    const size_t n = rows - r0 < simd::kTnMaxK ? rows - r0 : simd::kTnMaxK;
    const bool accumulate = r0 > 0;
    simd::pack_tn(x + r0 * in, in, n, in, strip, packed_.data(), db != nullptr);
    parallel_rows(pool_, out, kGrain, [&](size_t o0, size_t o1) {
      k->gemm_tn(dy + r0 * out, out, packed_.data(), n, columns, c, columns, o0, o1, accumulate);
    });
  }
  if (db)
    for (uint32_t o = 0; o < out; ++o) {
      std::memcpy(dw + size_t{o} * in, c + size_t{o} * columns, in * sizeof(float));
      db[o] = c[size_t{o} * columns + in];
    }
}

void DenseOps::activation(UnaryKind kind, float alpha, const float* x, size_t rows, uint32_t width,
                          float* y) {
  const simd::Kernels* k = kernels_;
  parallel_rows(pool_, rows, kGrain,
                [&](size_t r0, size_t r1) { k->unary_forward(kind, alpha, x, r0, r1, width, y); });
}

void DenseOps::activation_gradient(UnaryKind kind, float alpha, const float* x, const float* dy,
                                   size_t rows, uint32_t width, float* dx) {
  const simd::Kernels* k = kernels_;
  parallel_rows(pool_, rows, kGrain, [&](size_t r0, size_t r1) {
    k->unary_jvp(kind, alpha, x, r0, r1, width, 1, dy, dx);
  });
}

}  // namespace siflow::train
