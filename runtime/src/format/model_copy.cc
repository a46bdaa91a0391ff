// SPDX-License-Identifier: Apache-2.0
// add_solvers (siflow/model_builder.hpp): a verified model file copied field by field with
// stored solvers added or replaced, and the Solver table writer ModelBuilder shares. Every
// field the schema names is copied; a table holding a later field is refused by name.
#include "format/model_copy.hpp"

#include <algorithm>
#include <memory>

#include "format/model_data.hpp"
#include "siflow/model_builder.hpp"

namespace siflow {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

namespace detail {

Offset<fb::Solver> write_solver(FlatBufferBuilder& fbb, const StoredSolver& s, uint32_t dim) {
  const uint32_t count = dim == 0 ? 0 : static_cast<uint32_t>(s.test_start.size() / dim);
  auto name = fbb.CreateString(s.name);
  auto method = fbb.CreateString(method_name(s.method));
  auto grid = fbb.CreateVector(s.grid);
  auto coefficients = s.coefficients.empty() ? 0 : fbb.CreateVector(s.coefficients);
  auto start = s.test_start.empty() ? 0 : fbb.CreateVector(s.test_start);
  auto end = s.test_end.empty() ? 0 : fbb.CreateVector(s.test_end);
  return fb::CreateSolver(fbb, name, method, grid, coefficients, s.nfe, s.sample_error, s.label,
                          s.guidance, count, start, end, s.test_tolerance);
}

}  // namespace detail

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
constexpr int kModelFields = 12, kGraphFields = 4, kNodeFields = 33, kWeightsFields = 7,
              kInterpolantFields = 3, kBaseFields = 5, kNormalizationFields = 2,
              kKeyValueFields = 2, kTestVectorsFields = 15, kSolverFields = 12;

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
    auto i8 = copy_vector(fbb, w->i8(), 64);
    auto bf16 = copy_vector(fbb, w->bf16(), 64);
    auto scale = copy_vector(fbb, w->scale());
    return fb::CreateWeights(fbb, w->dtype(), shape, f32, f16, i8, bf16, scale);
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
    // Format 1.4: shapes, window geometry, layout, math and conditioning fields.
    auto shape = copy_vector(fbb, n->shape());
    auto kernel = copy_vector(fbb, n->kernel());
    auto strides = copy_vector(fbb, n->strides());
    auto pads = copy_vector(fbb, n->pads());
    auto dilations = copy_vector(fbb, n->dilations());
    auto output_padding = copy_vector(fbb, n->output_padding());
    auto perm = copy_vector(fbb, n->perm());
    return fb::CreateNode(fbb, n->op(), inputs, name, n->unary(), n->alpha(), weight, bias,
                          constant, gamma, beta, n->epsilon(), shape, kernel, strides, pads,
                          dilations, output_padding, n->groups(), n->pool(), n->count_include_pad(),
                          n->resize(), perm, n->axis(), n->start(), n->end(), n->reduce(),
                          n->exponent(), n->low(), n->high(), n->transpose_b(), n->scale(),
                          n->classes(), n->null_label());
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
  auto graph = fb::CreateGraph(fbb, g->dim(), fbb.CreateVector(nodes), g->output(),
                               copy_vector(fbb, g->x_shape()));
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
        copy_vector(fbb, tv->trajectory_end()), tv->trajectory_tolerance(),
        copy_vector(fbb, tv->labels()), copy_vector(fbb, tv->cond()), tv->guidance(),
        copy_vector(fbb, tv->trajectory_labels()), copy_vector(fbb, tv->trajectory_cond()));
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
  for (const StoredSolver& n : solvers) kept.push_back(detail::write_solver(fbb, n, g->dim()));
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
