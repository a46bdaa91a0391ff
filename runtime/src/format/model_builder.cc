// SPDX-License-Identifier: Apache-2.0
// Serialises a ModelBuilder description into .sif bytes with the generated FlatBuffers code.
// Never validates semantics: the loader does, and a builder may write bad files on purpose
// (the tests do).
#include "siflow/model_builder.hpp"

#include <algorithm>

#include "format/model_data.hpp"
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

Offset<fb::Solver> solver(FlatBufferBuilder& fbb, const StoredSolver& s, uint32_t dim) {
  const uint32_t count = dim == 0 ? 0 : static_cast<uint32_t>(s.test_start.size() / dim);
  auto name = fbb.CreateString(s.name);
  auto method = fbb.CreateString(method_name(s.method));
  auto grid = fbb.CreateVector(s.grid);
  auto start = floats(fbb, s.test_start);
  auto end = floats(fbb, s.test_end);
  return fb::CreateSolver(fbb, name, method, grid, 0, s.nfe, s.sample_error, s.label, s.guidance,
                          count, start, end, s.test_tolerance);
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
    auto shape = n.shape.empty() ? 0 : fbb.CreateVector(n.shape);
    auto perm = n.perm.empty() ? 0 : fbb.CreateVector(n.perm);
    nodes.push_back(fb::CreateNode(
        fbb, static_cast<fb::OpType>(n.op), inputs, name, static_cast<fb::UnaryKind>(n.unary),
        n.alpha, weight, bias, constant, gamma, beta, n.epsilon, shape, 0, 0, 0, 0, 0, 1,
        fb::PoolKind::Average, false, fb::ResizeMode::Nearest, perm, n.axis, n.start, n.end));
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
  std::vector<Offset<fb::Solver>> solver_offsets;
  for (const StoredSolver& sv : solvers_) solver_offsets.push_back(solver(fbb, sv, dim_));
  auto solvers = solver_offsets.empty() ? 0 : fbb.CreateVector(solver_offsets);
  uint16_t minor = minor_;
  if (!version_set_) {
    for (const Node& n : nodes_)
      if (n.op == static_cast<uint8_t>(fb::OpType::Exp)) minor = std::max<uint16_t>(minor, 1);
    if (!solvers_.empty()) minor = std::max<uint16_t>(minor, 2);
    // Format 1.4: the layout ops and per-sample shapes.
    bool shaped = !x_shape_.empty();
    for (const Node& n : nodes_)
      shaped = shaped || n.op == static_cast<uint8_t>(fb::OpType::Reshape) ||
               n.op == static_cast<uint8_t>(fb::OpType::Transpose) ||
               n.op == static_cast<uint8_t>(fb::OpType::Slice) || !n.shape.empty();
    if (shaped) minor = std::max<uint16_t>(minor, 4);
  }
  auto model = fb::CreateModel(fbb, major_, minor, name, graph, interpolant, base, normalization,
                               time_start_, time_end_, metadata, tests, solvers);
  fbb.Finish(model, fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

namespace {

// True when table `t` sets a field with an id of `known` or more: one this code cannot copy.
bool unknown_fields(const flatbuffers::Table* t, int known) {
  if (!t) return false;
  const uint8_t* vtable = t->GetVTable();
  const uint16_t vsize = flatbuffers::ReadScalar<uint16_t>(vtable);
  for (int id = known; 4 + 2 * id + 2 <= vsize; ++id)
    if (flatbuffers::ReadScalar<uint16_t>(vtable + 4 + 2 * id) != 0) return true;
  return false;
}

template <typename T>
Offset<flatbuffers::Vector<T>> copy_vector(FlatBufferBuilder& fbb, const flatbuffers::Vector<T>* v,
                                           size_t align = 0) {
  if (!v) return 0;
  if (align) fbb.ForceVectorAlignment(v->size(), sizeof(T), align);
  return fbb.CreateVector(v->data(), v->size());
}

Offset<flatbuffers::String> copy_string(FlatBufferBuilder& fbb, const flatbuffers::String* s) {
  return s ? fbb.CreateString(s) : 0;
}

// Field counts of the tables this version writes; a file setting a later field is refused.
constexpr int kModelFields = 12, kGraphFields = 3, kNodeFields = 11, kWeightsFields = 4,
              kInterpolantFields = 3, kBaseFields = 5, kNormalizationFields = 2,
              kKeyValueFields = 2, kTestVectorsFields = 10, kSolverFields = 12;

struct Copier {
  FlatBufferBuilder& fbb;
  const char* unknown = nullptr;  // the first table holding fields this code cannot copy

  // Generated tables inherit flatbuffers::Table privately; their bytes are the table.
  template <typename T>
  void check(const T* t, int known, const char* what) {
    if (!unknown && unknown_fields(reinterpret_cast<const flatbuffers::Table*>(t), known))
      unknown = what;
  }
  Offset<fb::Weights> weights(const fb::Weights* w) {
    if (!w) return 0;
    check(w, kWeightsFields, "Weights");
    auto shape = copy_vector(fbb, w->shape());
    auto f32 = copy_vector(fbb, w->f32(), 64);
    auto f16 = copy_vector(fbb, w->f16(), 64);
    return fb::CreateWeights(fbb, w->dtype(), shape, f32, f16);
  }
  Offset<fb::Node> node(const fb::Node* n) {
    check(n, kNodeFields, "Node");
    auto inputs = copy_vector(fbb, n->inputs());
    auto name = copy_string(fbb, n->name());
    auto weight = weights(n->weight());
    auto bias = weights(n->bias());
    auto constant = weights(n->constant());
    auto gamma = weights(n->gamma());
    auto beta = weights(n->beta());
    return fb::CreateNode(fbb, n->op(), inputs, name, n->unary(), n->alpha(), weight, bias,
                          constant, gamma, beta, n->epsilon());
  }
};

}  // namespace

Status add_solvers(const void* bytes, size_t size, const std::vector<StoredSolver>& solvers,
                   std::vector<uint8_t>* out) {
  if (!out) return Status::error(StatusCode::kInvalidArgument, "add_solvers: out is null");
  std::unique_ptr<Model> loaded;
  Status s = Model::load(bytes, size, LoadOptions(), &loaded);
  if (!s.ok()) return s.prefix("add_solvers");
  // The loaded model used the bytes in place or an aligned copy; read the file through it.
  const detail::ModelData& md = loaded->data();
  const fb::Model* m = fb::GetModel(md.bytes);
  FlatBufferBuilder fbb(md.size + 4096);
  Copier c{fbb};
  c.check(m, kModelFields, "Model");
  const fb::Graph* g = m->graph();
  c.check(g, kGraphFields, "Graph");
  std::vector<Offset<fb::Node>> nodes;
  for (uint32_t i = 0; i < g->nodes()->size(); ++i) nodes.push_back(c.node(g->nodes()->Get(i)));
  auto graph = fb::CreateGraph(fbb, g->dim(), fbb.CreateVector(nodes), g->output());
  Offset<fb::Interpolant> interpolant = 0;
  if (const fb::Interpolant* i = m->interpolant()) {
    c.check(i, kInterpolantFields, "Interpolant");
    interpolant = fb::CreateInterpolant(fbb, i->kind(), copy_vector(fbb, i->alpha()),
                                        copy_vector(fbb, i->beta()));
  }
  Offset<fb::Base> base = 0;
  if (const fb::Base* b = m->base()) {
    c.check(b, kBaseFields, "Base");
    base = fb::CreateBase(fbb, b->kind(), copy_vector(fbb, b->mean()), copy_vector(fbb, b->std()),
                          copy_vector(fbb, b->low()), copy_vector(fbb, b->high()));
  }
  Offset<fb::Normalization> normalization = 0;
  if (const fb::Normalization* n = m->normalization()) {
    c.check(n, kNormalizationFields, "Normalization");
    normalization =
        fb::CreateNormalization(fbb, copy_vector(fbb, n->mean()), copy_vector(fbb, n->std()));
  }
  Offset<flatbuffers::Vector<Offset<fb::KeyValue>>> metadata = 0;
  if (m->metadata()) {
    std::vector<Offset<fb::KeyValue>> kvs;
    for (uint32_t i = 0; i < m->metadata()->size(); ++i) {
      const fb::KeyValue* kv = m->metadata()->Get(i);
      c.check(kv, kKeyValueFields, "KeyValue");
      kvs.push_back(
          fb::CreateKeyValue(fbb, copy_string(fbb, kv->key()), copy_string(fbb, kv->value())));
    }
    metadata = fbb.CreateVector(kvs);  // already sorted: the file's order is kept
  }
  Offset<fb::TestVectors> tests = 0;
  if (const fb::TestVectors* tv = m->test_vectors()) {
    c.check(tv, kTestVectorsFields, "TestVectors");
    tests = fb::CreateTestVectors(
        fbb, tv->count(), copy_vector(fbb, tv->t()), copy_vector(fbb, tv->y()),
        copy_vector(fbb, tv->v()), tv->velocity_tolerance(), tv->trajectory_count(),
        tv->trajectory_steps(), copy_vector(fbb, tv->trajectory_start()),
        copy_vector(fbb, tv->trajectory_end()), tv->trajectory_tolerance());
  }
  std::vector<Offset<fb::Solver>> kept;
  if (m->solvers())
    for (uint32_t i = 0; i < m->solvers()->size(); ++i) {
      const fb::Solver* sv = m->solvers()->Get(i);
      c.check(sv, kSolverFields, "Solver");
      bool replaced = false;
      for (const StoredSolver& n : solvers) replaced = replaced || n.name == sv->name()->str();
      if (replaced) continue;
      kept.push_back(fb::CreateSolver(fbb, copy_string(fbb, sv->name()),
                                      copy_string(fbb, sv->method()), copy_vector(fbb, sv->grid()),
                                      copy_vector(fbb, sv->coefficients()), sv->nfe(),
                                      sv->sample_error(), sv->label(), sv->guidance(),
                                      sv->test_count(), copy_vector(fbb, sv->test_start()),
                                      copy_vector(fbb, sv->test_end()), sv->test_tolerance()));
    }
  for (const StoredSolver& n : solvers) kept.push_back(solver(fbb, n, g->dim()));
  if (c.unknown)
    return Status::error(StatusCode::kUnsupported,
                         "add_solvers: the model's %s table holds fields this version does not "
                         "know, so it cannot copy the file",
                         c.unknown);
  auto solver_vector = kept.empty() ? 0 : fbb.CreateVector(kept);
  const uint16_t minor =
      kept.empty() ? m->format_minor() : std::max<uint16_t>(m->format_minor(), 2);
  auto model = fb::CreateModel(fbb, m->format_major(), minor, copy_string(fbb, m->name()), graph,
                               interpolant, base, normalization, m->time_start(), m->time_end(),
                               metadata, tests, solver_vector);
  fbb.Finish(model, fb::ModelIdentifier());
  out->assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  return Status();
}

}  // namespace siflow
