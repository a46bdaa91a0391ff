// SPDX-License-Identifier: Apache-2.0
// Serialises a ModelBuilder description into .sif bytes with the generated FlatBuffers code.
// Never validates semantics: the loader does, and a builder may write bad files on purpose
// (the tests do).
#include "siflow/model_builder.hpp"

#include <algorithm>

#include "math/half.hpp"
#include "siflow_generated.h"

namespace siflow {
namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

Offset<fb::Weights> weights(FlatBufferBuilder& fbb, const std::vector<float>& values,
                            std::vector<uint32_t> shape, bool f16) {
  if (values.empty()) return 0;
  auto shape_offset = fbb.CreateVector(shape);
  if (f16) {
    std::vector<uint16_t> halves(values.size());
    for (size_t i = 0; i < values.size(); ++i) halves[i] = detail::float_to_half(values[i]);
    fbb.ForceVectorAlignment(halves.size(), sizeof(uint16_t), 64);
    auto data = fbb.CreateVector(halves);
    return fb::CreateWeights(fbb, fb::DType::F16, shape_offset, 0, data);
  }
  fbb.ForceVectorAlignment(values.size(), sizeof(float), 64);
  auto data = fbb.CreateVector(values);
  return fb::CreateWeights(fbb, fb::DType::F32, shape_offset, data);
}

Offset<flatbuffers::Vector<float>> floats(FlatBufferBuilder& fbb, const std::vector<float>& v) {
  return v.empty() ? 0 : fbb.CreateVector(v);
}

}  // namespace

ModelBuilder::ModelBuilder(uint32_t dim) : dim_(dim), widths_{dim, 1}, output_(0) {}

uint32_t ModelBuilder::push(Node node, uint32_t width) {
  nodes_.push_back(std::move(node));
  widths_.push_back(width);
  output_ = static_cast<uint32_t>(widths_.size() - 1);
  return output_;
}

uint32_t ModelBuilder::fully_connected(uint32_t input, uint32_t out_features,
                                       const std::vector<float>& weight,
                                       const std::vector<float>& bias, const std::string& name) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::FullyConnected);
  n.inputs = {input};
  n.name = name;
  n.out_features = out_features;
  n.weight = weight;
  n.bias = bias;
  return push(std::move(n), out_features);
}

uint32_t ModelBuilder::unary(uint32_t input, UnaryKind kind, float alpha) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Unary);
  n.inputs = {input};
  n.unary = kind;
  n.alpha = alpha;
  return push(std::move(n), width(input));
}

uint32_t ModelBuilder::exp(uint32_t input) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Exp);
  n.inputs = {input};
  return push(std::move(n), width(input));
}

uint32_t ModelBuilder::concat(const std::vector<uint32_t>& inputs) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Concat);
  n.inputs = inputs;
  uint32_t w = 0;
  for (uint32_t id : inputs) w += width(id);
  return push(std::move(n), w);
}

uint32_t ModelBuilder::add(uint32_t a, uint32_t b) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Add);
  n.inputs = {a, b};
  return push(std::move(n), std::max(width(a), width(b)));
}

uint32_t ModelBuilder::mul(uint32_t a, uint32_t b) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Mul);
  n.inputs = {a, b};
  return push(std::move(n), std::max(width(a), width(b)));
}

uint32_t ModelBuilder::add_constant(uint32_t a, const std::vector<float>& constant) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Add);
  n.inputs = {a};
  n.constant = constant;
  return push(std::move(n), std::max<uint32_t>(width(a), constant.size()));
}

uint32_t ModelBuilder::mul_constant(uint32_t a, const std::vector<float>& constant) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Mul);
  n.inputs = {a};
  n.constant = constant;
  return push(std::move(n), std::max<uint32_t>(width(a), constant.size()));
}

uint32_t ModelBuilder::layer_norm(uint32_t input, const std::vector<float>& gamma,
                                  const std::vector<float>& beta, float epsilon) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::LayerNorm);
  n.inputs = {input};
  n.gamma = gamma;
  n.beta = beta;
  n.epsilon = epsilon;
  return push(std::move(n), width(input));
}

void ModelBuilder::add_metadata(const std::string& key, const std::string& value) {
  metadata_.emplace_back(key, value);
}

void ModelBuilder::set_interpolant(InterpolantKind kind, const std::vector<double>& alpha,
                                   const std::vector<double>& beta) {
  interpolant_ = kind;
  alpha_ = alpha;
  beta_ = beta;
}

void ModelBuilder::set_normal_base(const std::vector<float>& mean, const std::vector<float>& std) {
  base_ = BaseKind::kNormal;
  base_a_ = mean;
  base_b_ = std;
}

void ModelBuilder::set_uniform_base(const std::vector<float>& low, const std::vector<float>& high) {
  base_ = BaseKind::kUniform;
  base_a_ = low;
  base_b_ = high;
}

void ModelBuilder::set_normalization(const std::vector<float>& mean,
                                     const std::vector<float>& std) {
  norm_mean_ = mean;
  norm_std_ = std;
}

void ModelBuilder::set_time_range(double start, double end) {
  time_start_ = start;
  time_end_ = end;
}

void ModelBuilder::set_format_version(uint16_t major, uint16_t minor) {
  major_ = major;
  minor_ = minor;
  version_set_ = true;
}

void ModelBuilder::set_velocity_tests(const std::vector<float>& t, const std::vector<float>& y,
                                      const std::vector<float>& v, float tolerance) {
  test_t_ = t;
  test_y_ = y;
  test_v_ = v;
  test_tolerance_ = tolerance;
}

void ModelBuilder::set_trajectory_tests(uint32_t steps, const std::vector<float>& start,
                                        const std::vector<float>& end, float tolerance) {
  trajectory_steps_ = steps;
  trajectory_start_ = start;
  trajectory_end_ = end;
  trajectory_tolerance_ = tolerance;
}

uint32_t ModelBuilder::label_input(uint32_t classes, int32_t null_label) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::LabelInput);
  n.classes = classes;
  n.null_label = null_label;
  return push(std::move(n), 1);
}

uint32_t ModelBuilder::cond_input(const std::vector<uint32_t>& shape,
                                  const std::vector<float>& null_vector) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::CondInput);
  n.cond_shape = shape;
  n.constant = null_vector;
  uint32_t width = shape.empty() ? 0 : 1;
  for (uint32_t d : shape) width *= d;
  return push(std::move(n), width);
}

uint32_t ModelBuilder::embedding(uint32_t labels, uint32_t classes,
                                 const std::vector<float>& table) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Embedding);
  n.inputs = {labels};
  n.classes = classes;
  n.weight = table;
  n.out_features = classes ? static_cast<uint32_t>(table.size() / classes) : 0;
  return push(std::move(n), n.out_features);
}

void ModelBuilder::set_test_conditioning(const std::vector<int32_t>& labels,
                                         const std::vector<float>& cond, float guidance,
                                         const std::vector<int32_t>& trajectory_labels,
                                         const std::vector<float>& trajectory_cond) {
  test_labels_ = labels;
  test_cond_ = cond;
  test_guidance_ = guidance;
  trajectory_labels_ = trajectory_labels;
  trajectory_cond_ = trajectory_cond;
}

namespace {

bool is_conditioning_op(uint8_t op) {
  return op == static_cast<uint8_t>(fb::OpType::LabelInput) ||
         op == static_cast<uint8_t>(fb::OpType::CondInput) ||
         op == static_cast<uint8_t>(fb::OpType::Embedding);
}

}  // namespace

std::vector<uint8_t> ModelBuilder::finish() const {
  FlatBufferBuilder fbb(4096);
  const bool f16 = storage_ == WeightStorage::kF16;
  std::vector<Offset<fb::Node>> nodes;
  for (const Node& n : nodes_) {
    if (is_conditioning_op(n.op)) {
      // LabelInput / CondInput / Embedding (format 1.4): the fields these ops read.
      auto inputs = fbb.CreateVector(n.inputs);
      auto name = n.name.empty() ? 0 : fbb.CreateString(n.name);
      auto table = weights(fbb, n.weight, {n.classes, n.out_features}, f16);
      auto null_vector = weights(fbb, n.constant, {static_cast<uint32_t>(n.constant.size())}, f16);
      auto shape = n.cond_shape.empty() ? 0 : fbb.CreateVector(n.cond_shape);
      fb::NodeBuilder b(fbb);
      b.add_op(static_cast<fb::OpType>(n.op));
      b.add_inputs(inputs);
      if (!n.name.empty()) b.add_name(name);
      if (!n.weight.empty()) b.add_weight(table);
      if (!n.constant.empty()) b.add_constant(null_vector);
      if (!n.cond_shape.empty()) b.add_shape(shape);
      b.add_classes(n.classes);
      b.add_null_label(n.null_label);
      nodes.push_back(b.Finish());
      continue;
    }
    auto inputs = fbb.CreateVector(n.inputs);
    auto name = n.name.empty() ? 0 : fbb.CreateString(n.name);
    const uint32_t in_width = n.inputs.empty() ? 0 : width(n.inputs[0]);
    auto weight = weights(fbb, n.weight, {n.out_features, in_width}, f16);
    auto bias = weights(fbb, n.bias, {static_cast<uint32_t>(n.bias.size())}, f16);
    auto constant = weights(fbb, n.constant, {static_cast<uint32_t>(n.constant.size())}, f16);
    auto gamma = weights(fbb, n.gamma, {static_cast<uint32_t>(n.gamma.size())}, f16);
    auto beta = weights(fbb, n.beta, {static_cast<uint32_t>(n.beta.size())}, f16);
    nodes.push_back(fb::CreateNode(fbb, static_cast<fb::OpType>(n.op), inputs, name,
                                   static_cast<fb::UnaryKind>(n.unary), n.alpha, weight, bias,
                                   constant, gamma, beta, n.epsilon));
  }
  auto graph = fb::CreateGraph(fbb, dim_, fbb.CreateVector(nodes), output_);
  auto interpolant = fb::CreateInterpolant(fbb, static_cast<fb::InterpolantKind>(interpolant_),
                                           alpha_.empty() ? 0 : fbb.CreateVector(alpha_),
                                           beta_.empty() ? 0 : fbb.CreateVector(beta_));
  Offset<fb::Base> base;
  if (base_ == BaseKind::kNormal) {
    base = fb::CreateBase(fbb, fb::BaseKind::Normal, floats(fbb, base_a_), floats(fbb, base_b_));
  } else {
    base = fb::CreateBase(fbb, fb::BaseKind::Uniform, 0, 0, floats(fbb, base_a_),
                          floats(fbb, base_b_));
  }
  Offset<fb::Normalization> normalization = 0;
  if (!norm_mean_.empty() || !norm_std_.empty())
    normalization = fb::CreateNormalization(fbb, floats(fbb, norm_mean_), floats(fbb, norm_std_));
  std::vector<Offset<fb::KeyValue>> kvs;
  for (const auto& kv : metadata_)
    kvs.push_back(fb::CreateKeyValue(fbb, fbb.CreateString(kv.first), fbb.CreateString(kv.second)));
  auto metadata = kvs.empty() ? 0 : fbb.CreateVectorOfSortedTables(&kvs);
  Offset<fb::TestVectors> tests = 0;
  if (!test_t_.empty() || trajectory_steps_ > 0) {
    const uint32_t trajectories =
        dim_ == 0 ? 0 : static_cast<uint32_t>(trajectory_start_.size() / dim_);
    tests = fb::CreateTestVectors(
        fbb, static_cast<uint32_t>(test_t_.size()), floats(fbb, test_t_), floats(fbb, test_y_),
        floats(fbb, test_v_), test_tolerance_, trajectories, trajectory_steps_,
        floats(fbb, trajectory_start_), floats(fbb, trajectory_end_), trajectory_tolerance_,
        test_labels_.empty() ? 0 : fbb.CreateVector(test_labels_), floats(fbb, test_cond_),
        test_guidance_, trajectory_labels_.empty() ? 0 : fbb.CreateVector(trajectory_labels_),
        floats(fbb, trajectory_cond_));
  }
  auto name = name_.empty() ? 0 : fbb.CreateString(name_);
  uint16_t minor = minor_;
  if (!version_set_)
    for (const Node& n : nodes_)
      if (n.op == static_cast<uint8_t>(fb::OpType::Exp)) minor = minor > 1 ? minor : 1;
  // Conditioning ops and test-vector conditioning need format 1.4.
  const bool conditioned = !test_labels_.empty() || !test_cond_.empty() || test_guidance_ != 1.0f ||
                           !trajectory_labels_.empty() || !trajectory_cond_.empty();
  if (!version_set_ && (conditioned || std::any_of(nodes_.begin(), nodes_.end(), [](const Node& n) {
                          return is_conditioning_op(n.op);
                        })))
    minor = 4;
  auto model = fb::CreateModel(fbb, major_, minor, name, graph, interpolant, base, normalization,
                               time_start_, time_end_, metadata, tests);
  fbb.Finish(model, fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

}  // namespace siflow
