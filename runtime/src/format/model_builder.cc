// SPDX-License-Identifier: Apache-2.0
// Serialises a ModelBuilder description into .sif bytes with the generated FlatBuffers code.
// Never validates semantics: the loader does, and a builder may write bad files on purpose
// (the tests do).
#include "siflow/model_builder.hpp"

#include <algorithm>

#include "format/model_copy.hpp"
#include "format/model_data.hpp"
#include "math/half.hpp"
#include "math/reduced.hpp"
#include "siflow_generated.h"

namespace siflow {
namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

using WeightStorage = ModelBuilder::WeightStorage;

// One operand as `storage` (see WeightStorage): int8 applies to two-dimensional operands only.
// Sets *format_13 when it writes a BF16 or I8 vector (format 1.3).
Offset<fb::Weights> weights(FlatBufferBuilder& fbb, const std::vector<float>& values,
                            std::vector<uint32_t> shape, WeightStorage storage, bool* format_13) {
  if (values.empty()) return 0;
  auto shape_offset = fbb.CreateVector(shape);
  if (storage == WeightStorage::kF16 || storage == WeightStorage::kBf16) {
    const bool bf16 = storage == WeightStorage::kBf16;
    std::vector<uint16_t> halves(values.size());
    for (size_t i = 0; i < values.size(); ++i)
      halves[i] = bf16 ? detail::float_to_bf16(values[i]) : detail::float_to_half(values[i]);
    fbb.ForceVectorAlignment(halves.size(), sizeof(uint16_t), 64);
    auto data = fbb.CreateVector(halves);
    *format_13 = *format_13 || bf16;
    if (bf16) return fb::CreateWeights(fbb, fb::DType::BF16, shape_offset, 0, 0, 0, data);
    return fb::CreateWeights(fbb, fb::DType::F16, shape_offset, 0, data);
  }
  if (storage == WeightStorage::kI8 && shape.size() == 2 && shape[0] > 0 &&
      values.size() == size_t{shape[0]} * shape[1]) {
    // The plan's quantization rule (math/reduced.hpp), row by row; the format wants a positive
    // scale, so an all-zero row (plan scale 0, every q 0) stores the smallest normal float.
    const uint32_t rows = shape[0], columns = shape[1];
    std::vector<int8_t> q(values.size());
    std::vector<float> scales(rows);
    for (uint32_t r = 0; r < rows; ++r) {
      const float* row = values.data() + size_t{r} * columns;
      const float scale = detail::int8_scale(row, columns);
      for (uint32_t c = 0; c < columns; ++c)
        q[size_t{r} * columns + c] = detail::int8_quantize(row[c], scale);
      scales[r] = scale > 0.0f ? scale : 0x1p-126f;
    }
    auto scale_offset = fbb.CreateVector(scales);
    fbb.ForceVectorAlignment(q.size(), sizeof(int8_t), 64);
    auto data = fbb.CreateVector(q);
    *format_13 = true;
    return fb::CreateWeights(fbb, fb::DType::I8, shape_offset, 0, 0, data, 0, scale_offset);
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
  nodes_.push_back(std::move(node));
  widths_.push_back(width);
  shapes_.push_back(std::move(shape));
  output_ = static_cast<uint32_t>(widths_.size() - 1);
  return output_;
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

uint32_t ModelBuilder::reshape(uint32_t input, const std::vector<uint32_t>& shape) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Reshape);
  n.inputs = {input};
  n.shape = shape;
  return push(std::move(n), width(input));
}

uint32_t ModelBuilder::transpose(uint32_t input, const std::vector<uint32_t>& in_shape,
                                 const std::vector<uint32_t>& perm) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Transpose);
  n.inputs = {input};
  n.perm = perm;
  // The output shape is stored too (the loader checks it against the permuted input).
  if (perm.size() == in_shape.size())
    for (uint32_t p : perm) n.shape.push_back(p < in_shape.size() ? in_shape[p] : 0);
  return push(std::move(n), width(input));
}

uint32_t ModelBuilder::slice(uint32_t input, const std::vector<uint32_t>& in_shape, int32_t axis,
                             uint32_t start, uint32_t end) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Slice);
  n.inputs = {input};
  n.axis = axis;
  n.start = start;
  n.end = end;
  const int64_t a = axis < 0 ? int64_t{axis} + static_cast<int64_t>(in_shape.size()) : axis;
  uint64_t w = 0;
  if (a >= 0 && a < static_cast<int64_t>(in_shape.size()) && end > start) {
    w = 1;
    for (size_t i = 0; i < in_shape.size(); ++i)
      w *= static_cast<int64_t>(i) == a ? end - start : in_shape[i];
  }
  return push(std::move(n), static_cast<uint32_t>(w));
}

std::vector<uint32_t> ModelBuilder::shape(uint32_t tensor) const {
  if (tensor == x()) return x_shape_.empty() ? std::vector<uint32_t>{dim_} : x_shape_;
  if (tensor == t()) return {1};
  if (tensor >= widths_.size()) return {};
  if (!shapes_[tensor].empty()) return shapes_[tensor];  // given by the op's method
  const Node& n = nodes_[tensor - 2];
  if (n.image) return n.out_shape;
  const auto op = static_cast<fb::OpType>(n.op);
  if (op == fb::OpType::Reshape || op == fb::OpType::Transpose) return n.shape;
  if (op == fb::OpType::Slice) {
    std::vector<uint32_t> out = shape(n.inputs[0]);
    const int64_t a = n.axis < 0 ? int64_t{n.axis} + static_cast<int64_t>(out.size()) : n.axis;
    if (a < 0 || a >= static_cast<int64_t>(out.size()) || n.end <= n.start) return {};
    out[static_cast<size_t>(a)] = n.end - n.start;
    return out;
  }
  // As the loader: a dense layer is flat, other ops keep their first full-width input's shape.
  if (n.op != static_cast<uint8_t>(fb::OpType::FullyConnected))
    for (uint32_t in : n.inputs)
      if (in < tensor && width(in) == widths_[tensor]) return shape(in);
  return {widths_[tensor]};
}

namespace {

uint32_t at(const std::vector<uint32_t>& v, size_t i, uint32_t fallback) {
  return i < v.size() ? v[i] : fallback;
}

// floor((extent + lo + hi - d (k - 1) - 1) / s) + 1, or 0 when the window does not fit.
uint32_t window_outputs(uint64_t extent, uint64_t lo, uint64_t hi, uint64_t k, uint64_t s,
                        uint64_t d) {
  const uint64_t span = d * (k ? k - 1 : 0) + 1, padded = extent + lo + hi;
  return padded < span || s == 0 ? 0 : static_cast<uint32_t>((padded - span) / s + 1);
}

}  // namespace

// An image op's output shape from its input's (0 extents when the geometry does not fit; the
// loader refuses the file then).
uint32_t ModelBuilder::push_image(Node n) {
  const std::vector<uint32_t> in = n.inputs.empty() ? std::vector<uint32_t>{} : shape(n.inputs[0]);
  const Window& w = n.window;
  const uint32_t h = at(in, 1, 0), wd = at(in, 2, 0);
  const uint32_t kh = at(n.kernel, 0, 1), kw = at(n.kernel, 1, 1);
  const uint32_t sh = at(w.strides, 0, 1), sw = at(w.strides, 1, 1);
  const uint32_t dh = at(w.dilations, 0, 1), dw = at(w.dilations, 1, 1);
  const uint32_t pt = at(w.pads, 0, 0), pl = at(w.pads, 1, 0), pb = at(w.pads, 2, 0),
                 pr = at(w.pads, 3, 0);
  const auto op = static_cast<fb::OpType>(n.op);
  if (op == fb::OpType::ConvTranspose2d) {
    const int64_t oh =
        (int64_t{h} - 1) * sh - pt - pb + int64_t{dh} * (kh - 1) + at(w.output_padding, 0, 0) + 1;
    const int64_t ow =
        (int64_t{wd} - 1) * sw - pl - pr + int64_t{dw} * (kw - 1) + at(w.output_padding, 1, 0) + 1;
    n.out_shape[1] = oh > 0 ? static_cast<uint32_t>(oh) : 0;
    n.out_shape[2] = ow > 0 ? static_cast<uint32_t>(ow) : 0;
  } else if (op == fb::OpType::Conv2d || op == fb::OpType::Pool2d) {
    n.out_shape[1] = window_outputs(h, pt, pb, kh, sh, dh);
    n.out_shape[2] = window_outputs(wd, pl, pr, kw, sw, dw);
  } else if (op == fb::OpType::GroupNorm) {
    n.out_shape = in;
  }
  uint64_t width = 1;
  for (uint32_t d : n.out_shape) width *= d;
  n.image = true;
  return push(std::move(n), static_cast<uint32_t>(width));
}

uint32_t ModelBuilder::conv_node(bool transposed, uint32_t input, uint32_t out_channels,
                                 const std::vector<uint32_t>& kernel,
                                 const std::vector<float>& weight, const std::vector<float>& bias,
                                 const Window& window) {
  Node n;
  n.op = static_cast<uint8_t>(transposed ? fb::OpType::ConvTranspose2d : fb::OpType::Conv2d);
  n.inputs = {input};
  n.kernel = kernel;
  n.window = window;
  n.weight = weight;
  n.bias = bias;
  const uint32_t groups = window.groups ? window.groups : 1;
  const uint32_t in_channels = at(shape(input), 0, 0);
  // Conv2d: [out, in / groups, kh, kw]; ConvTranspose2d: [in, out / groups, kh, kw].
  n.weight_shape = {transposed ? in_channels : out_channels,
                    transposed ? out_channels / groups : in_channels / groups, at(kernel, 0, 0),
                    at(kernel, 1, 0)};
  n.out_shape = {out_channels, 0, 0};
  return push_image(std::move(n));
}

uint32_t ModelBuilder::conv2d(uint32_t input, uint32_t out_channels,
                              const std::vector<uint32_t>& kernel, const std::vector<float>& weight,
                              const std::vector<float>& bias, const Window& window) {
  return conv_node(false, input, out_channels, kernel, weight, bias, window);
}

uint32_t ModelBuilder::conv_transpose2d(uint32_t input, uint32_t out_channels,
                                        const std::vector<uint32_t>& kernel,
                                        const std::vector<float>& weight,
                                        const std::vector<float>& bias, const Window& window) {
  return conv_node(true, input, out_channels, kernel, weight, bias, window);
}

uint32_t ModelBuilder::pool2d(uint32_t input, Pool pool, const std::vector<uint32_t>& kernel,
                              const Window& window, bool count_include_pad) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Pool2d);
  n.inputs = {input};
  n.kernel = kernel;
  n.window = window;
  n.window.groups = 1;
  n.pool = static_cast<uint8_t>(pool);
  n.count_include_pad = count_include_pad;
  n.out_shape = {at(shape(input), 0, 0), 0, 0};
  return push_image(std::move(n));
}

uint32_t ModelBuilder::resize(uint32_t input, Resize mode, uint32_t out_h, uint32_t out_w) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::Resize);
  n.inputs = {input};
  n.resize = static_cast<uint8_t>(mode);
  n.out_shape = {at(shape(input), 0, 0), out_h, out_w};
  return push_image(std::move(n));
}

uint32_t ModelBuilder::group_norm(uint32_t input, uint32_t groups, const std::vector<float>& gamma,
                                  const std::vector<float>& beta, float epsilon) {
  Node n;
  n.op = static_cast<uint8_t>(fb::OpType::GroupNorm);
  n.inputs = {input};
  n.window.groups = groups;
  n.gamma = gamma;
  n.beta = beta;
  n.epsilon = epsilon;
  return push_image(std::move(n));
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
  return push(std::move(n), width, shape);
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
  bool format_13 = false;
  std::vector<Offset<fb::Node>> nodes;
  for (const Node& n : nodes_) {
    if (is_conditioning_op(n.op)) {
      // LabelInput / CondInput / Embedding (format 1.4): the fields these ops read.
      auto inputs = fbb.CreateVector(n.inputs);
      auto name = n.name.empty() ? 0 : fbb.CreateString(n.name);
      auto table = weights(fbb, n.weight, {n.classes, n.out_features}, storage_, &format_13);
      auto null_vector = weights(fbb, n.constant, {static_cast<uint32_t>(n.constant.size())},
                                 storage_, &format_13);
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
    auto weight = weights(
        fbb, n.weight,
        n.weight_shape.empty() ? std::vector<uint32_t>{n.out_features, in_width} : n.weight_shape,
        storage_, &format_13);
    auto bias = weights(fbb, n.bias, {static_cast<uint32_t>(n.bias.size())}, storage_, &format_13);
    auto constant =
        weights(fbb, n.constant, {static_cast<uint32_t>(n.constant.size())}, storage_, &format_13);
    auto gamma =
        weights(fbb, n.gamma, {static_cast<uint32_t>(n.gamma.size())}, storage_, &format_13);
    auto beta = weights(fbb, n.beta, {static_cast<uint32_t>(n.beta.size())}, storage_, &format_13);
    auto vec = [&](const std::vector<uint32_t>& v) { return v.empty() ? 0 : fbb.CreateVector(v); };
    const auto op = static_cast<fb::OpType>(n.op);
    // Resize reads its output size from `shape` (the builder keeps it in out_shape); the other
    // image ops compute theirs, the layout ops store theirs in n.shape.
    auto shape = !n.shape.empty() ? vec(n.shape) : op == fb::OpType::Resize ? vec(n.out_shape) : 0;
    nodes.push_back(fb::CreateNode(
        fbb, op, inputs, name, static_cast<fb::UnaryKind>(n.unary), n.alpha, weight, bias, constant,
        gamma, beta, n.epsilon, shape, vec(n.kernel), vec(n.window.strides), vec(n.window.pads),
        vec(n.window.dilations), vec(n.window.output_padding), n.window.groups,
        static_cast<fb::PoolKind>(n.pool), n.count_include_pad,
        static_cast<fb::ResizeMode>(n.resize), vec(n.perm), n.axis, n.start, n.end,
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
    tests = fb::CreateTestVectors(
        fbb, static_cast<uint32_t>(test_t_.size()), floats(fbb, test_t_), floats(fbb, test_y_),
        floats(fbb, test_v_), test_tolerance_, trajectories, trajectory_steps_,
        floats(fbb, trajectory_start_), floats(fbb, trajectory_end_), trajectory_tolerance_,
        test_labels_.empty() ? 0 : fbb.CreateVector(test_labels_), floats(fbb, test_cond_),
        test_guidance_, trajectory_labels_.empty() ? 0 : fbb.CreateVector(trajectory_labels_),
        floats(fbb, trajectory_cond_));
  }
  auto name = name_.empty() ? 0 : fbb.CreateString(name_);
  std::vector<Offset<fb::Solver>> solver_offsets;
  for (const StoredSolver& sv : solvers_)
    solver_offsets.push_back(detail::write_solver(fbb, sv, dim_));
  auto solvers = solver_offsets.empty() ? 0 : fbb.CreateVector(solver_offsets);
  uint16_t minor = minor_;
  if (!version_set_) {
    for (const Node& n : nodes_)
      if (n.op == static_cast<uint8_t>(fb::OpType::Exp)) minor = std::max<uint16_t>(minor, 1);
    if (!solvers_.empty()) minor = std::max<uint16_t>(minor, 2);
    if (format_13) minor = std::max<uint16_t>(minor, 3);  // BF16 or I8 weights
    // Format 1.4: per-sample shapes, the op types from Conv2d on (layout, image, math and
    // conditioning ops), the unary kinds after Cos, and test-vector conditioning.
    bool v14 = !x_shape_.empty() || !test_labels_.empty() || !test_cond_.empty() ||
               test_guidance_ != 1.0f || !trajectory_labels_.empty() || !trajectory_cond_.empty();
    for (const Node& n : nodes_)
      v14 = v14 || !n.shape.empty() || n.image || is_conditioning_op(n.op) ||
            n.op >= static_cast<uint8_t>(fb::OpType::Conv2d) ||
            (n.op == static_cast<uint8_t>(fb::OpType::Unary) && n.unary > UnaryKind::kCos);
    if (v14) minor = std::max<uint16_t>(minor, 4);
  }
  auto model = fb::CreateModel(fbb, major_, minor, name, graph, interpolant, base, normalization,
                               time_start_, time_end_, metadata, tests, solvers);
  fbb.Finish(model, fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

}  // namespace siflow
