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
  kConv2d = 7,
  kConvTranspose2d = 8,
  kPool2d = 9,
  kResize = 10,
  kGroupNorm = 11,
  kReshape = 12,
  kTranspose = 13,
  kSlice = 14,
  kSoftmax = 15,
  kMatMul = 16,
  kReduce = 17,
  kDiv = 18,
  kPow = 19,
  kClip = 20,
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
  const float* constant;  // Add/Mul/Div constant [constant_width] or nullptr
  uint32_t constant_width;
  const float* gamma;  // LayerNorm, nullable
  const float* beta;
  // FullyConnected weights and bias packed for the simd kernels (simd/kernels.hpp), in
  // ModelData::packed_block (the op module's pack()); nullptr in builds without the simd
  // backend.
  const float* packed;
  // Transpose, Slice (layout ops; Reshape reads only `shape`): output axis i is input axis
  // perm[i]; Slice keeps [start, end) of per-sample axis `axis` (counted from 0).
  uint32_t perm[3];
  uint32_t axis;
  uint32_t start;
  uint32_t end;
  // Conv2d, ConvTranspose2d, Pool2d, Resize, GroupNorm (ops/conv2d.cc, pool2d.cc, resize.cc,
  // group_norm.cc): the input's per-sample shape (rank 3 [C, H, W]; GroupNorm also [C] or
  // [C, L]) and the window geometry, defaults filled in by verify().
  Shape in_shape;
  uint32_t kernel[2];     // [kh, kw]
  uint32_t strides[2];    // [sh, sw]
  uint32_t pads[4];       // [top, left, bottom, right]
  uint32_t dilations[2];  // [dh, dw]
  uint32_t groups;        // Conv2d, ConvTranspose2d, GroupNorm
  uint8_t pool;           // fb::PoolKind: 0 average, 1 max
  bool count_include_pad;
  uint8_t resize;  // fb::ResizeMode: 0 nearest, 1 bilinear
  // Add, Mul, Div, Pow, Clip, Reduce, Softmax, MatMul (format 1.4), set by their verify().
  // Add/Mul/Div broadcasting by per-sample shapes (ops/binary.cc): with bcast_rank > 0, output
  // element (i0, i1, i2) of bcast_dims reads operand a at sum i_k a_stride[k] and b at
  // sum i_k b_stride[k] (stride 0 along a broadcast axis); bcast_rank 0: the flat rule.
  uint32_t bcast_rank;
  uint32_t bcast_dims[3];
  uint32_t a_stride[3];
  uint32_t b_stride[3];
  float exponent;  // Pow
  float low;       // Clip
  float high;
  uint8_t reduce;  // Reduce: fb::ReduceKind
  // Reduce, Softmax: the input read as [outer, extent, inner] around the per-sample axis.
  uint32_t outer;
  uint32_t extent;
  uint32_t inner;
  // MatMul: [G, M, K] x [G, K, N] (b stored [G, N, K] with transpose_b), times scale.
  uint32_t mm_g;
  uint32_t mm_m;
  uint32_t mm_k;
  uint32_t mm_n;
  bool transpose_b;
  float scale;
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

// A stored solver (format 1.2), verified by the loader: a fixed-grid method on `steps` steps
// of absolute times strictly increasing from time_start to time_end.
struct SolverData {
  const char* name;
  Method method;
  uint32_t steps;
  const double* grid;  // steps + 1 points, copied into the model's table block
  uint32_t nfe;        // fixed_grid_evaluations(method, steps)
  double sample_error;
  int32_t label;
  double guidance;
  uint32_t test_count;
  const float* test_start;  // [test_count, dim] flow coordinates, nullptr when test_count is 0
  const float* test_end;    // [test_count, dim] data space
  float test_tolerance;
  const double* coefficients;  // coefficient_count per-step coefficients after the grid, or null
  uint32_t coefficient_count;  // solver_coefficient_count(method, steps) or 0
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
  uint32_t solver_count;
  SolverData* solvers;
};

// The stored solver named `name`, or nullptr.
inline const SolverData* find_solver(const ModelData& md, const char* name) {
  for (uint32_t i = 0; name && i < md.solver_count; ++i) {
    const char* a = md.solvers[i].name;
    const char* b = name;
    while (*a && *a == *b) ++a, ++b;
    if (*a == *b) return &md.solvers[i];
  }
  return nullptr;
}

void free_model_data(ModelData* data);

}  // namespace siflow::detail
