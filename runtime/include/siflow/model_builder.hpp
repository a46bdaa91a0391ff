// SPDX-License-Identifier: Apache-2.0
// Writing .sif models from C++: describe the velocity graph and the flow, get the file bytes.
// Used by tests, examples and on-device training. It checks nothing beyond tensor ids; the
// loader is the one judge of a model, so callers load what they build to verify it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "siflow/siflow.hpp"

namespace siflow {

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

  void set_name(const std::string& name) { name_ = name; }
  void add_metadata(const std::string& key, const std::string& value);
  void set_interpolant(InterpolantKind kind, const std::vector<double>& alpha = {},
                       const std::vector<double>& beta = {});
  void set_normal_base(const std::vector<float>& mean = {}, const std::vector<float>& std = {});
  void set_uniform_base(const std::vector<float>& low, const std::vector<float>& high);
  void set_normalization(const std::vector<float>& mean, const std::vector<float>& std);
  void set_time_range(double start, double end);
  // By default a file records the lowest format version its contents need (1.0, or 1.1 when a
  // node uses Exp), so older runtimes read every file they can; this overrides it.
  void set_format_version(uint16_t major, uint16_t minor);
  // Weight storage in the file: float32 (default) or fp16, rounded to nearest even. fp16 values
  // beyond its range become infinite, which the loader refuses.
  enum class WeightStorage { kF32, kF16 };
  void set_weight_storage(WeightStorage storage) { storage_ = storage; }
  // Velocity test points (flow coordinates) with their reference velocities.
  void set_velocity_tests(const std::vector<float>& t, const std::vector<float>& y,
                          const std::vector<float>& v, float tolerance);
  // One classic-RK4 trajectory test: starts (flow coordinates) at time_start, ends at time_end.
  void set_trajectory_tests(uint32_t steps, const std::vector<float>& start,
                            const std::vector<float>& end, float tolerance);

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
    // LabelInput, CondInput, Embedding.
    uint32_t classes = 0;
    int32_t null_label = -1;
    std::vector<uint32_t> cond_shape;
  };
  uint32_t push(Node node, uint32_t width);

  uint32_t dim_;
  std::vector<uint32_t> widths_;
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
};

}  // namespace siflow
