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

ModelBuilder::ModelBuilder(uint32_t dim)
    : dim_(dim), widths_{dim, 1}, shapes_{{dim}, {1}}, output_(0) {}

uint32_t ModelBuilder::push(Node node, uint32_t width, std::vector<uint32_t> shape) {
  if (shape.empty()) {
    for (uint32_t id : node.inputs)
      if (this->width(id) == width) {
        shape = this->shape(id);
        break;
      }
    if (shape.empty()) shape = {width};
  }
  nodes_.push_back(std::move(node));
  widths_.push_back(width);
  shapes_.push_back(std::move(shape));
  output_ = static_cast<uint32_t>(widths_.size() - 1);
  return output_;
}

std::vector<uint32_t> ModelBuilder::shape(uint32_t tensor) const {
  if (tensor >= shapes_.size()) return {};
  return shapes_[tensor];
}

void ModelBuilder::set_x_shape(const std::vector<uint32_t>& shape) {
  x_shape_ = shape;
  shapes_[0] = shape.empty() ? std::vector<uint32_t>{dim_} : shape;
}

namespace {

// NumPy broadcasting of two shapes from the last axis (empty when they do not broadcast).
std::vector<uint32_t> broadcast_shape(const std::vector<uint32_t>& a,
                                      const std::vector<uint32_t>& b) {
  const size_t rank = std::max(a.size(), b.size());
  std::vector<uint32_t> out(rank);
  for (size_t k = 0; k < rank; ++k) {
    const uint32_t da = k + a.size() >= rank ? a[k + a.size() - rank] : 1;
    const uint32_t db = k + b.size() >= rank ? b[k + b.size() - rank] : 1;
    if (da != db && da != 1 && db != 1) return {};
    out[k] = std::max(da, db);
  }
  return out;
}

uint32_t product(const std::vector<uint32_t>& s) {
  uint64_t n = s.empty() ? 0 : 1;
  for (uint32_t d : s) n *= d;
  return n > 0xffffffffu ? 0 : static_cast<uint32_t>(n);
}

}  // namespace

uint32_t ModelBuilder::div(uint32_t a, uint32_t b) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Div);
  n.inputs = {a, b};
  const uint32_t wa = width(a), wb = width(b);
  if (wa == wb || wa == 1 || wb == 1) return push(std::move(n), std::max(wa, wb));
  const std::vector<uint32_t> s = broadcast_shape(shape(a), shape(b));
  return push(std::move(n), product(s), s);
}

uint32_t ModelBuilder::div_constant(uint32_t a, const std::vector<float>& constant) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Div);
  n.inputs = {a};
  n.constant = constant;
  const uint32_t wa = width(a), wb = static_cast<uint32_t>(constant.size());
  if (wa == wb || wa == 1 || wb == 1) return push(std::move(n), std::max(wa, wb));
  const std::vector<uint32_t> s = broadcast_shape(shape(a), {wb});
  return push(std::move(n), product(s), s);
}

uint32_t ModelBuilder::pow(uint32_t input, float exponent) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Pow);
  n.inputs = {input};
  n.exponent = exponent;
  return push(std::move(n), width(input));
}

uint32_t ModelBuilder::clip(uint32_t input, float low, float high) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Clip);
  n.inputs = {input};
  n.low = low;
  n.high = high;
  return push(std::move(n), width(input));
}

uint32_t ModelBuilder::reduce(uint32_t input, ReduceKind kind, int32_t axis) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Reduce);
  n.inputs = {input};
  n.reduce = static_cast<uint8_t>(kind);
  n.axis = axis;
  std::vector<uint32_t> s = shape(input);
  const int64_t rank = static_cast<int64_t>(s.size());
  const int64_t at = axis < 0 ? axis + rank : axis;
  if (at >= 0 && at < rank) s[static_cast<size_t>(at)] = 1;
  return push(std::move(n), product(s), s);
}

uint32_t ModelBuilder::softmax(uint32_t input, int32_t axis) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Softmax);
  n.inputs = {input};
  n.axis = axis;
  return push(std::move(n), width(input), shape(input));
}

uint32_t ModelBuilder::matmul(uint32_t a, uint32_t b, bool transpose_b, float scale) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::MatMul);
  n.inputs = {a, b};
  n.transpose_b = transpose_b;
  n.scale = scale;
  std::vector<uint32_t> s = shape(a);
  const std::vector<uint32_t> sb = shape(b);
  if (s.size() >= 2 && sb.size() == s.size())
    s.back() = transpose_b ? sb[sb.size() - 2] : sb.back();
  return push(std::move(n), product(s), s);
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

std::vector<uint8_t> ModelBuilder::finish() const {
  FlatBufferBuilder fbb(4096);
  const bool f16 = storage_ == WeightStorage::kF16;
  std::vector<Offset<fb::Node>> nodes;
  for (const Node& n : nodes_) {
    auto inputs = fbb.CreateVector(n.inputs);
    auto name = n.name.empty() ? 0 : fbb.CreateString(n.name);
    const uint32_t in_width = n.inputs.empty() ? 0 : width(n.inputs[0]);
    auto weight = weights(fbb, n.weight, {n.out_features, in_width}, f16);
    auto bias = weights(fbb, n.bias, {static_cast<uint32_t>(n.bias.size())}, f16);
    auto constant = weights(fbb, n.constant, {static_cast<uint32_t>(n.constant.size())}, f16);
    auto gamma = weights(fbb, n.gamma, {static_cast<uint32_t>(n.gamma.size())}, f16);
    auto beta = weights(fbb, n.beta, {static_cast<uint32_t>(n.beta.size())}, f16);
    nodes.push_back(fb::CreateNode(
        fbb, static_cast<fb::OpType>(n.op), inputs, name, static_cast<fb::UnaryKind>(n.unary),
        n.alpha, weight, bias, constant, gamma, beta, n.epsilon, 0, 0, 0, 0, 0, 0, 1,
        fb::PoolKind::Average, false, fb::ResizeMode::Nearest, 0, n.axis, 0, 0,
        static_cast<fb::ReduceKind>(n.reduce), n.exponent, n.low, n.high, n.transpose_b, n.scale));
  }
  auto graph = fb::CreateGraph(fbb, dim_, fbb.CreateVector(nodes), output_,
                               x_shape_.empty() ? 0 : fbb.CreateVector(x_shape_));
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
    tests = fb::CreateTestVectors(fbb, static_cast<uint32_t>(test_t_.size()), floats(fbb, test_t_),
                                  floats(fbb, test_y_), floats(fbb, test_v_), test_tolerance_,
                                  trajectories, trajectory_steps_, floats(fbb, trajectory_start_),
                                  floats(fbb, trajectory_end_), trajectory_tolerance_);
  }
  auto name = name_.empty() ? 0 : fbb.CreateString(name_);
  uint16_t minor = minor_;
  if (!version_set_) {
    if (!x_shape_.empty()) minor = 4;
    for (const Node& n : nodes_) {
      uint16_t need = 0;
      if (n.op == static_cast<uint8_t>(fb::OpType::Exp)) need = 1;
      // Format 1.4: the op types from Conv2d on, and the unary kinds after Cos.
      if (n.op >= static_cast<uint8_t>(fb::OpType::Conv2d)) need = 4;
      if (n.op == static_cast<uint8_t>(fb::OpType::Unary) && n.unary > UnaryKind::kCos) need = 4;
      if (need > minor) minor = need;
    }
  }
  auto model = fb::CreateModel(fbb, major_, minor, name, graph, interpolant, base, normalization,
                               time_start_, time_end_, metadata, tests);
  fbb.Finish(model, fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

}  // namespace siflow
