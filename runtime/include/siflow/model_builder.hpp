// SPDX-License-Identifier: Apache-2.0
// Writing .sif models from C++: describe the velocity graph and the flow, get the file bytes.
// Used by tests, examples and on-device training. It checks nothing beyond tensor ids; the
// loader is the one judge of a model, so callers load what they build to verify it.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "siflow/siflow.hpp"

namespace siflow {

// A solver to store in a model (format 1.2; docs/format.md, "Solvers").
struct StoredSolver {
  std::string name;
  Method method = Method::kRK4;
  std::vector<double> grid;  // absolute times, time_start to time_end
  // Per-step coefficients of ab2..ab4 (solver_coefficient_count(method, steps) values), or empty.
  std::vector<double> coefficients;
  uint32_t nfe = 0;
  double sample_error = 0.0;
  int32_t label = -1;
  double guidance = 1.0;
  std::vector<float> test_start;  // [test_count, dim] flow coordinates
  std::vector<float> test_end;    // [test_count, dim] data space
  float test_tolerance = 0.0f;
};

// A copy of the model file `bytes` (verified by loading it first) holding `solvers` in place of
// any stored solver of the same name; every other field and solver is copied as it is, weights
// byte for byte and 64-byte aligned. The copy records format 1.2 when it holds solvers. Refuses a
// file with fields this version does not know (it could not copy them).
Status add_solvers(const void* bytes, size_t size, const std::vector<StoredSolver>& solvers,
                   std::vector<uint8_t>* out);

// The window of an image op (ModelBuilder::conv2d, conv_transpose2d, pool2d): empty vectors
// mean stride 1, no padding, dilation 1; pads are {top, left, bottom, right}.
struct ImageWindow {
  std::vector<uint32_t> strides, pads, dilations;
  std::vector<uint32_t> output_padding;  // conv_transpose2d only
  uint32_t groups = 1;                   // conv2d, conv_transpose2d
};

class ModelBuilder {
 public:
  explicit ModelBuilder(uint32_t dim);

  static constexpr uint32_t x() { return 0; }  // tensor id of x [B, dim]
  static constexpr uint32_t t() { return 1; }  // tensor id of t [B, 1]
  // Width of a tensor, 0 for an unknown id (the loader then refuses the model).
  uint32_t width(uint32_t tensor) const { return tensor < widths_.size() ? widths_[tensor] : 0; }

  // Each returns the id of the tensor it produces. Weights are [out][in], row-major.
  uint32_t fully_connected(uint32_t input, uint32_t out_features, const std::vector<float>& weight,
                           const std::vector<float>& bias = {}, const std::string& name = "");
  // alpha: LeakyRelu's slope or Elu's alpha (PyTorch's Elu default is 1.0; pass it).
  uint32_t unary(uint32_t input, UnaryKind kind, float alpha = 0.01f);
  uint32_t exp(uint32_t input);  // y = exp(x) elementwise (format 1.1)
  uint32_t concat(const std::vector<uint32_t>& inputs);
  uint32_t add(uint32_t a, uint32_t b);
  uint32_t mul(uint32_t a, uint32_t b);
  uint32_t add_constant(uint32_t a, const std::vector<float>& constant);
  uint32_t mul_constant(uint32_t a, const std::vector<float>& constant);
  uint32_t layer_norm(uint32_t input, const std::vector<float>& gamma = {},
                      const std::vector<float>& beta = {}, float epsilon = 1e-5f);
  // Layout ops (format 1.4). reshape: the same values with per-sample shape `shape` (rank 1 to
  // 3); transpose: output axis i is input axis perm[i] of the input's shape; slice: [start, end)
  // of per-sample axis `axis` (negative counts from the end). `in_shape` is the input's shape,
  // which the builder does not track (the loader checks it).
  uint32_t reshape(uint32_t input, const std::vector<uint32_t>& shape);
  uint32_t transpose(uint32_t input, const std::vector<uint32_t>& in_shape,
                     const std::vector<uint32_t>& perm);
  uint32_t slice(uint32_t input, const std::vector<uint32_t>& in_shape, int32_t axis,
                 uint32_t start, uint32_t end);
  // Format 1.4 elementwise, reduction, softmax and matrix products (files using them need 1.4).
  // a / b, broadcasting as add/mul (and by per-sample shapes, docs/format.md); a / constant.
  uint32_t div(uint32_t a, uint32_t b);
  uint32_t div_constant(uint32_t a, const std::vector<float>& constant);
  uint32_t pow(uint32_t input, float exponent);                         // x^exponent
  uint32_t clip(uint32_t input, float low, float high);                 // min(max(x, low), high)
  uint32_t reduce(uint32_t input, ReduceKind kind, int32_t axis = -1);  // axis kept as size 1
  uint32_t softmax(uint32_t input, int32_t axis = -1);
  // [G, M, K] x [G, K, N] (b [G, N, K] with transpose_b) per sample, times scale.
  uint32_t matmul(uint32_t a, uint32_t b, bool transpose_b = false, float scale = 1.0f);
  // Conditioning inputs (format 1.4; a model has at most one of each). label_input: each row's
  // class label as a [B, 1] tensor, labels 0 .. classes - 1, null_label the unconditional one
  // (-1: none). cond_input: each row's condition vector of this per-sample shape, with the null
  // vector guidance uses (empty: none). embedding: rows of table [classes][E] selected by a
  // label_input tensor.
  uint32_t label_input(uint32_t classes, int32_t null_label = -1);
  uint32_t cond_input(const std::vector<uint32_t>& shape,
                      const std::vector<float>& null_vector = {});
  uint32_t embedding(uint32_t labels, uint32_t classes, const std::vector<float>& table);
  void set_output(uint32_t tensor) { output_ = tensor; }

  // Per-sample shape of x and v (format 1.4), e.g. {C, H, W} (product = dim; empty: [dim]), and
  // the image ops on [C, H, W] tensors (docs/format.md).
  void set_x_shape(const std::vector<uint32_t>& shape) { x_shape_ = shape; }
  using Window = ImageWindow;
  // weight [out_channels, C/groups, kh, kw], bias [out_channels] or empty.
  uint32_t conv2d(uint32_t input, uint32_t out_channels, const std::vector<uint32_t>& kernel,
                  const std::vector<float>& weight, const std::vector<float>& bias = {},
                  const Window& window = Window());
  // weight [C, out_channels/groups, kh, kw], bias [out_channels] or empty.
  uint32_t conv_transpose2d(uint32_t input, uint32_t out_channels,
                            const std::vector<uint32_t>& kernel, const std::vector<float>& weight,
                            const std::vector<float>& bias = {}, const Window& window = Window());
  enum class Pool : uint8_t { kAverage = 0, kMax = 1 };
  uint32_t pool2d(uint32_t input, Pool pool, const std::vector<uint32_t>& kernel,
                  const Window& window = Window(), bool count_include_pad = false);
  enum class Resize : uint8_t { kNearest = 0, kBilinear = 1 };
  uint32_t resize(uint32_t input, Resize mode, uint32_t out_h, uint32_t out_w);
  // gamma, beta: [C] or empty.
  uint32_t group_norm(uint32_t input, uint32_t groups, const std::vector<float>& gamma = {},
                      const std::vector<float>& beta = {}, float epsilon = 1e-5f);
  // The per-sample shape of a tensor as the loader will compute it (empty for an unknown id).
  std::vector<uint32_t> shape(uint32_t tensor) const;

  void set_name(const std::string& name) { name_ = name; }
  void add_metadata(const std::string& key, const std::string& value);
  void set_interpolant(InterpolantKind kind, const std::vector<double>& alpha = {},
                       const std::vector<double>& beta = {});
  void set_normal_base(const std::vector<float>& mean = {}, const std::vector<float>& std = {});
  void set_uniform_base(const std::vector<float>& low, const std::vector<float>& high);
  void set_normalization(const std::vector<float>& mean, const std::vector<float>& std);
  void set_time_range(double start, double end);
  // By default a file records the lowest format version its contents need (1.0, 1.1 when a node
  // uses Exp, 1.2 when it stores solvers, 1.3 with BF16 or I8 weights, 1.4 with any 1.4 op or
  // unary kind, an x shape or conditioned test vectors), so older runtimes read every file they
  // can; this overrides it.
  void set_format_version(uint16_t major, uint16_t minor);
  // Weight storage in the file: float32 (default); fp16 or bfloat16 (format 1.3), each rounded to
  // nearest even, values beyond the range becoming infinite (which the loader refuses); or int8
  // (format 1.3): every two-dimensional operand (fully connected weights, embedding tables) as
  // per-row symmetric int8 with float scales by the runtime's own plan-time rule (docs/math.md,
  // "Reduced precision"; an all-zero row gets the smallest normal float as its scale), the other
  // operands float32. These are what `siflow-convert --quantize fp16|bf16|int8` writes.
  enum class WeightStorage { kF32, kF16, kBf16, kI8 };
  void set_weight_storage(WeightStorage storage) { storage_ = storage; }
  // Velocity test points (flow coordinates) with their reference velocities.
  void set_velocity_tests(const std::vector<float>& t, const std::vector<float>& y,
                          const std::vector<float>& v, float tolerance);
  // One classic-RK4 trajectory test: starts (flow coordinates) at time_start, ends at time_end.
  void set_trajectory_tests(uint32_t steps, const std::vector<float>& start,
                            const std::vector<float>& end, float tolerance);

  void add_solver(const StoredSolver& solver) { solvers_.push_back(solver); }

  // Labels [count] and conditions [count, cond width] of the velocity tests, the guidance weight
  // their v was computed with (it applies to the trajectories too), and the trajectories' labels
  // and conditions (format 1.4).
  void set_test_conditioning(const std::vector<int32_t>& labels, const std::vector<float>& cond,
                             float guidance, const std::vector<int32_t>& trajectory_labels = {},
                             const std::vector<float>& trajectory_cond = {});

  // The finished model file; its weight vectors are 64-byte aligned relative to the start.
  std::vector<uint8_t> finish() const;

 private:
  struct Node {
    uint8_t op = 0;
    std::vector<uint32_t> inputs;
    std::string name;
    UnaryKind unary = UnaryKind::kIdentity;
    float alpha = 0.01f, epsilon = 1e-5f;
    uint32_t out_features = 0;
    std::vector<float> weight, bias, constant, gamma, beta;
    // Reshape, Transpose, Slice.
    std::vector<uint32_t> shape, perm;
    int32_t axis = -1;  // Slice, Reduce, Softmax
    uint32_t start = 0, end = 0;
    // Image ops (format 1.4).
    std::vector<uint32_t> weight_shape, out_shape, kernel;
    Window window;
    uint8_t pool = 0, resize = 0;
    bool count_include_pad = false, image = false;
    // LabelInput, CondInput, Embedding.
    uint32_t classes = 0;
    int32_t null_label = -1;
    std::vector<uint32_t> cond_shape;
    // Reduce, Pow, Clip, MatMul.
    uint8_t reduce = 0;
    float exponent = 1.0f, low = -std::numeric_limits<float>::infinity(),
          high = std::numeric_limits<float>::infinity(), scale = 1.0f;
    bool transpose_b = false;
  };
  uint32_t push_image(Node node);
  // Conv2d (transposed false) or ConvTranspose2d: the two differ only in the weight's layout.
  uint32_t conv_node(bool transposed, uint32_t input, uint32_t out_channels,
                     const std::vector<uint32_t>& kernel, const std::vector<float>& weight,
                     const std::vector<float>& bias, const Window& window);
  // `shape` empty: shape() derives it as the loader does (the op's own, else the first input as
  // wide as the output, else [width]).
  uint32_t push(Node node, uint32_t width, std::vector<uint32_t> shape = {});

  uint32_t dim_;
  std::vector<uint32_t> x_shape_;  // empty: [dim]
  std::vector<uint32_t> widths_;
  std::vector<std::vector<uint32_t>> shapes_;  // per tensor, as given by the op's method
  std::vector<Node> nodes_;
  uint32_t output_ = 0;
  std::string name_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  InterpolantKind interpolant_ = InterpolantKind::kTrig;
  std::vector<double> alpha_, beta_;
  BaseKind base_ = BaseKind::kNormal;
  std::vector<float> base_a_, base_b_;  // mean/std or low/high
  std::vector<float> norm_mean_, norm_std_;
  double time_start_ = 0.0, time_end_ = 1.0;
  uint16_t major_ = kFormatMajor, minor_ = 0;
  bool version_set_ = false;  // else finish() writes the lowest minor the graph needs
  WeightStorage storage_ = WeightStorage::kF32;
  std::vector<float> test_t_, test_y_, test_v_;
  float test_tolerance_ = 0.0f;
  uint32_t trajectory_steps_ = 0;
  std::vector<float> trajectory_start_, trajectory_end_;
  float trajectory_tolerance_ = 0.0f;
  std::vector<int32_t> test_labels_, trajectory_labels_;
  std::vector<float> test_cond_, trajectory_cond_;
  float test_guidance_ = 1.0f;
  std::vector<StoredSolver> solvers_;
};

}  // namespace siflow
