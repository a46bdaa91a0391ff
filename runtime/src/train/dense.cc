// SPDX-License-Identifier: Apache-2.0
// Training GEMMs on the simd dense kernels, f32 and bf16 (see dense.hpp).
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

namespace {
// Grows v to at least n elements (never shrinks: a resize back up would zero the elements again).
template <typename V>
void reserve_size(V& v, size_t n) {
  if (v.size() < n) v.resize(n);
}
}  // namespace

void* DenseOps::reduced(size_t bytes) {
  reserve_size(reduced_, (bytes + sizeof(Line) - 1) / sizeof(Line));
  return reduced_.data();
}

void DenseOps::run_bf16(uint32_t in, uint32_t out, bool bias, UnaryKind act, float alpha,
                        const float* x, size_t rows, float* pre, float* post) {
  reserve_size(x_bf16_, rows * simd::bf16_rows_words(in));
  const simd::DenseReduced d{Precision::kBf16, reduced_.data(), in, out, bias, act, alpha,
                             x_bf16_.data()};
  const simd::Kernels* k = kernels_;
  parallel_rows(pool_, rows, kGrain,
                [&](size_t r0, size_t r1) { k->dense_reduced(d, x, r0, r1, pre, post); });
}

void DenseOps::forward_bf16(const float* x, size_t rows, uint32_t in, const float* w,
                            const float* bias, uint32_t out, UnaryKind act, float alpha, float* pre,
                            float* post) {
  simd::pack_reduced(Precision::kBf16, w, bias, in, out,
                     reduced(simd::reduced_bytes(Precision::kBf16, in, out)));
  run_bf16(in, out, bias != nullptr, act, alpha, x, rows, pre,
           act == UnaryKind::kIdentity ? pre : post);
}

void DenseOps::input_gradient_bf16(const float* dy, size_t rows, uint32_t in, const float* w,
                                   uint32_t out, float* dx) {
  // dx = dy W: a layer with `out` inputs and `in` outputs whose weights are W^T.
  simd::pack_bf16_transposed(w, out, in, reduced(simd::reduced_bytes(Precision::kBf16, out, in)));
  run_bf16(out, in, false, UnaryKind::kIdentity, 0.0f, dy, rows, dx, dx);
}

void DenseOps::weight_gradient_bf16(const float* dy, const float* x, size_t rows, uint32_t in,
                                    uint32_t out, float* dw, float* db) {
  // dw = dy^T x: the rows of dy^T ([out][rows]) through a layer with `rows` inputs and `in`
  // outputs whose weights are x^T.
  const uint32_t k = static_cast<uint32_t>(rows);
  simd::pack_bf16_transposed(x, k, in, reduced(simd::reduced_bytes(Precision::kBf16, k, in)));
  reserve_size(transposed_, size_t{out} * rows);
  float* t = transposed_.data();
  constexpr size_t kBlock = 32;
  parallel_rows(pool_, out, kBlock, [&](size_t o0, size_t o1) {
    for (size_t r0 = 0; r0 < rows; r0 += kBlock) {
      const size_t r1 = rows - r0 < kBlock ? rows : r0 + kBlock;
      for (size_t o = o0; o < o1; ++o)
        for (size_t r = r0; r < r1; ++r) t[o * rows + r] = dy[r * out + o];
    }
  });
  run_bf16(k, in, false, UnaryKind::kIdentity, 0.0f, t, out, dw, dw);
  if (db) {
    for (uint32_t o = 0; o < out; ++o) db[o] = 0.0f;
    for (size_t r = 0; r < rows; ++r)
      for (uint32_t o = 0; o < out; ++o) db[o] += dy[r * out + o];
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
    k->unary_jvp(kind, alpha, x, r0, r1, width, 1, dy, dx, nullptr);
  });
}

}  // namespace siflow::train
