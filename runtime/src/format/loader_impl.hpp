// SPDX-License-Identifier: Apache-2.0
// The loader's internals, shared by its two files: format/loader.cc (header, graph, nodes and
// weights, the run) and format/loader_checks.cc (interpolant, base, normalisation, test
// vectors). Only those two include it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "format/loader.hpp"
#include "format/model_data.hpp"
#include "format/solvers.hpp"
#include "math/elementary.hpp"
#include "math/half.hpp"
#include "math/interpolant.hpp"
#include "math/reduced.hpp"
#include "siflow_generated.h"
#include "support/aligned_memory.hpp"
#include "support/memory.hpp"

namespace siflow {
namespace detail {
namespace load {

constexpr size_t kAlignment = 64;
// Bump allocator over one block sized in a first pass, so the model holds one allocation.
struct Bump {
  uint8_t* base = nullptr;
  size_t used = 0;
  template <typename T>
  T* take(size_t count, size_t alignment = alignof(T)) {
    used = align_up(used, alignment);
    T* p = base ? reinterpret_cast<T*>(base + used) : nullptr;
    used += count * sizeof(T);
    return p;
  }
};

inline bool all_finite(const float* v, size_t n, size_t* bad) {
  for (size_t i = 0; i < n; ++i) {
    if (!math::is_finite(v[i])) {
      *bad = i;
      return false;
    }
  }
  return true;
}

// The values of a Weights table: the vector its dtype names (f32, f16, bf16 or i8), and how many
// values the other vectors hold (which must be none; for dtypes other than I8 the scale vector
// counts as another).
struct WeightValues {
  const void* data;
  size_t count;
  size_t other_count;
};

// Floats a stored (non-F32) vector of n values takes once expanded: rounded up to 16 (64 bytes),
// so every expanded vector starts 64-byte aligned.
constexpr size_t expanded_floats(size_t n) { return (n + 15) / 16 * 16; }

inline WeightValues weight_values(const fb::Weights& w) {
  const auto* f32 = w.f32();
  const auto* f16 = w.f16();
  const auto* bf16 = w.bf16();
  const auto* i8 = w.i8();
  const auto* scale = w.scale();
  const size_t n32 = f32 ? f32->size() : 0, n16 = f16 ? f16->size() : 0;
  const size_t nb = bf16 ? bf16->size() : 0, n8 = i8 ? i8->size() : 0;
  const size_t ns = scale ? scale->size() : 0;
  if (w.dtype() == fb::DType::F16) return {n16 ? f16->data() : nullptr, n16, n32 + nb + n8 + ns};
  if (w.dtype() == fb::DType::BF16) return {nb ? bf16->data() : nullptr, nb, n32 + n16 + n8 + ns};
  if (w.dtype() == fb::DType::I8) return {n8 ? i8->data() : nullptr, n8, n32 + n16 + nb};
  return {n32 ? f32->data() : nullptr, n32, n16 + nb + n8 + ns};  // F32 (others are refused)
}

// A stored per-sample shape: absent or empty leaves *out at rank 0; else rank 1 to 3, every
// extent at least 1, product `width`.
inline Status read_shape(const char* what, const flatbuffers::Vector<uint32_t>* v, uint32_t width,
                         Shape* out) {
  *out = Shape();
  if (!v || v->size() == 0) return Status();
  if (v->size() > 3)
    return Status::error(StatusCode::kInvalidModel, "%s has rank %u, the limit is 3", what,
                         v->size());
  uint64_t n = 1;
  for (uint32_t i = 0; i < v->size(); ++i) {
    const uint32_t e = v->Get(i);
    if (e == 0)
      return Status::error(StatusCode::kInvalidModel, "%s has extent 0 on axis %u", what, i);
    n *= e;
    if (n > width) break;
    out->dims[i] = e;
  }
  if (n != width)
    return Status::error(StatusCode::kInvalidModel,
                         "%s holds %llu values per sample, but the tensor is %u wide", what,
                         static_cast<unsigned long long>(n), width);
  out->rank = v->size();
  return Status();
}

class Loader final : public WeightReader {
 public:
  // memory: where the model's tables go (a caller's region, or measuring); nullptr: the heap.
  Loader(const uint8_t* bytes, size_t size, Memory* memory, FindOpVerifier find)
      : bytes_(bytes), size_(size), memory_(memory), find_(find) {}

  Status run(ModelData** out);

 private:
  Status check_header();
  Status check_graph_shape();
  Status check_node(uint32_t index, const fb::Node* node, NodeData* out);
  Status read(const char* what, const fb::Weights* w, size_t expected, bool required,
              const float** out) override;
  Status floats(const char* what, const flatbuffers::Vector<float>* v, size_t expected,
                const float** out);
  Status check_interpolant(ModelData* data);
  Status check_base(ModelData* data);
  Status check_normalization(ModelData* data);
  Status check_tests(ModelData* data);
  size_t count_f16_floats() const;
  size_t offset_of(const void* p) const {
    return static_cast<size_t>(static_cast<const uint8_t*>(p) - bytes_);
  }

  const uint8_t* bytes_;
  size_t size_;
  Memory* memory_;
  FindOpVerifier find_;
  const fb::Model* model_ = nullptr;
  const fb::Graph* graph_ = nullptr;
  uint32_t dim_ = 0;
  Shape x_shape_;
  uint32_t node_count_ = 0;
  uint64_t parameters_ = 0;
  uint64_t f16_parameters_ = 0;
  uint64_t bf16_parameters_ = 0;
  uint64_t i8_parameters_ = 0;
  uint64_t scale_count_ = 0;           // I8 scales
  float* expanded_ = nullptr;          // where fp16 weights are expanded to float, 64-byte aligned
  size_t expanded_used_ = 0;           // floats of expanded_ taken so far
  size_t expanded_capacity_ = 0;       // floats reserved by count_f16_floats
  double* coefficients_ = nullptr;     // learned interpolant alpha then beta, copied from the file
  uint32_t coefficient_capacity_ = 0;  // terms reserved for them
  uint32_t solver_count_ = 0;          // stored solvers (format 1.2)
  size_t solver_points_ = 0;           // their grid points, copied into the table block
  double* solver_grids_ = nullptr;     // where (format/solvers.cc)
};

}  // namespace load
}  // namespace detail
}  // namespace siflow
