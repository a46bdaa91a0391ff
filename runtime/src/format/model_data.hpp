// SPDX-License-Identifier: Apache-2.0
// The loaded, verified form of a model: node descriptors whose F32 weights point into the model
// bytes (F16 weights at their float expansion in the model's table block), tensor widths,
// interpolant, base and normalisation. Built only by the
// loader after every check passed; immutable afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "math/interpolant.hpp"
#include "siflow/siflow.hpp"

namespace siflow::detail {

// The op kinds, numbered as the file's fb::OpType (ops/registry.cc checks it); each has its
// module in runtime/src/ops/.
enum class OpKind : uint8_t {
  kFullyConnected = 0,
  kUnary = 1,
  kConcat = 2,
  kAdd = 3,
  kMul = 4,
  kLayerNorm = 5,
  kExp = 6,
  // Conditioning inputs (issue 14): the class label and the condition vector of each row.
  kLabelInput = 21,
  kCondInput = 22,
  kEmbedding = 23,
};

// The per-sample shape of a tensor (the batch is the leading dimension and not part of it):
// rank 1 to 3, e.g. [features], [T, C] or [C, H, W] in NCHW order. Its product is the tensor's
// width, so the flat [B, width] view of every tensor stays valid.
struct Shape {
  uint32_t rank = 0;
  uint32_t dims[3] = {0, 0, 0};
};
inline uint64_t shape_size(const Shape& s) {
  uint64_t n = s.rank ? 1 : 0;
  for (uint32_t i = 0; i < s.rank; ++i) n *= s.dims[i];
  return n;
}
inline Shape flat_shape(uint32_t width) {
  Shape s;
  s.rank = 1;
  s.dims[0] = width;
  return s;
}
// "[4, 8, 8]", for messages and `siflow info`.
struct ShapeText {
  char text[48];
};
inline ShapeText shape_text(const Shape& s) {
  ShapeText t;
  int n = std::snprintf(t.text, sizeof t.text, "[");
  for (uint32_t i = 0; i < s.rank && n > 0 && n < 40; ++i)
    n += std::snprintf(t.text + n, sizeof t.text - n, i ? ", %u" : "%u", s.dims[i]);
  if (n > 0 && n < 46) std::snprintf(t.text + n, sizeof t.text - n, "]");
  return t;
}
inline bool same_shape(const Shape& a, const Shape& b) {
  if (a.rank != b.rank) return false;
  for (uint32_t i = 0; i < a.rank; ++i)
    if (a.dims[i] != b.dims[i]) return false;
  return true;
}

struct NodeData {
  OpKind op;
  UnaryKind unary;
  float alpha;
  float epsilon;
  uint32_t input_count;
  const uint32_t* inputs;  // tensor ids, each smaller than this node's output id
  uint32_t width;          // output width
  // Per-sample output shape (product = width). An op's verify() sets it when the op defines
  // it; left at rank 0, the loader takes the shape of the first input as wide as the output,
  // else [width].
  Shape shape;
  const float* weight;    // FullyConnected [width][in_width]
  const float* bias;      // FullyConnected [width] or nullptr
  const float* constant;  // Add/Mul constant [constant_width] or nullptr
  uint32_t constant_width;
  const float* gamma;  // LayerNorm, nullable
  const float* beta;
  // FullyConnected weights and bias packed for the simd kernels (simd/kernels.hpp), in
  // ModelData::packed_block (the op module's pack()); nullptr in builds without the simd
  // backend.
  const float* packed;
  // LabelInput, CondInput, Embedding: labels 0 .. classes - 1 (LabelInput, Embedding); the
  // unconditional label or -1 (LabelInput). CondInput's null vector is `constant`, Embedding's
  // table [classes][width] is `weight`.
  uint32_t classes;
  int32_t null_label;
};

struct TensorData {
  uint32_t width;
  bool depends_on_x;  // carries a tangent in JVP passes
  uint32_t last_use;  // index of the last node reading it (node_count for the output)
  Shape shape;        // per-sample shape, product = width
};

struct ModelData {
  ModelInfo info;
  void* owned_bytes;   // aligned copy of the file, or nullptr when used in place
  void* packed_block;  // every FullyConnected node's packed weights, or nullptr
  bool in_region;      // every table lives in a caller's memory (or a measuring pass): free none
  const uint8_t* bytes;
  size_t size;
  uint32_t dim;
  Shape x_shape;  // per-sample shape of x and v (Graph.x_shape; [dim] when the file has none)
  uint32_t node_count;
  uint32_t output;  // tensor id of v
  NodeData* nodes;
  TensorData* tensors;  // node_count + 2
  InterpolantData interpolant;
  // Base: normal mean/std or uniform low/high, [dim] each, defaults filled in.
  double* base_a;
  double* base_b;
  double base_log_norm;  // normal: -sum log std - d/2 log 2 pi; uniform: -sum log(high - low)
  // Normalisation, [dim] each, or nullptr.
  const float* norm_mean;
  const float* norm_std;
  double norm_log_det;  // sum log std
  // Test vectors, flow coordinates.
  const float* test_t;
  const float* test_y;
  const float* test_v;
  float test_tolerance;
  uint32_t trajectory_steps;
  const float* trajectory_start;
  const float* trajectory_end;
  float trajectory_tolerance;
  // Conditioning (LabelInput / CondInput nodes; at most one of each): tensor ids or 0 when the
  // model has none, and what ModelInfo reports. Test vectors' labels [count] and conditions
  // [count, cond_width] (and the trajectories'), nullptr when absent; test_guidance is w.
  uint32_t label_tensor;
  uint32_t cond_tensor;
  const float* null_cond;  // [cond_width] or nullptr
  const int32_t* test_labels;
  const float* test_cond;
  const int32_t* trajectory_labels;
  const float* trajectory_cond;
  double test_guidance;
  const char** metadata_keys;
  const char** metadata_values;
};

void free_model_data(ModelData* data);

}  // namespace siflow::detail
