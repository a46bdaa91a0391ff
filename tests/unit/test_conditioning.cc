// SPDX-License-Identifier: Apache-2.0
// Conditioning and classifier-free guidance (format 1.4): the LabelInput, CondInput and
// Embedding ops (loading, every refusal, ModelInfo), running with per-row labels and conditions
// (and every refused call), and guidance on analytic conditional models whose v(y) and v(null)
// are known in closed form: the guided velocity, w = 0 and w = 1, the one batched pass against
// two separate passes bit for bit, likelihoods of the guided ODE, probes shared by both halves,
// the arena it takes, the SDE refusal, the temperature of sample and the embedded test vectors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "format/model_data.hpp"
#include "ops/op.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"
#include "support/byte_span.hpp"

namespace {

using siflow::Conditioning;
using siflow::DivergenceMode;
using siflow::DivergenceOptions;
using siflow::LogProbOptions;
using siflow::Model;
using siflow::ModelBuilder;
using siflow::OdeOptions;
using siflow::Plan;
using siflow::PlanOptions;
using siflow::SampleOptions;
using siflow::Status;
using siflow::StatusCode;
namespace fb = siflow::fb;

std::string text(const Status& s) { return std::string(s.message()); }

void expect_error(const Status& s, StatusCode code, std::initializer_list<const char*> fragments) {
  INFO("message: " << text(s));
  CHECK(s.code() == code);
  for (const char* f : fragments) {
    INFO("expected fragment: " << f);
    CHECK(text(s).find(f) != std::string::npos);
  }
}

Status try_load(const std::vector<uint8_t>& bytes, std::unique_ptr<Model>* model) {
  const siflow_test::ByteSpan misaligned(bytes, 1);
  return Model::load(misaligned.data(), misaligned.size(), siflow::LoadOptions(), model);
}

std::unique_ptr<Model> load(const ModelBuilder& b) {
  std::unique_ptr<Model> model;
  const Status s = try_load(b.finish(), &model);
  REQUIRE_MESSAGE(s.ok(), text(s));
  return model;
}

void expect_refused(const std::vector<uint8_t>& bytes, StatusCode code,
                    std::initializer_list<const char*> fragments) {
  std::unique_ptr<Model> model;
  const Status s = try_load(bytes, &model);
  CHECK_FALSE(model);
  expect_error(s, code, fragments);
}

std::unique_ptr<Plan> make_plan(const Model& m, double guidance = 1.0, size_t max_batch = 8,
                                DivergenceMode mode = DivergenceMode::kExact, uint32_t probes = 4) {
  PlanOptions po;
  po.max_batch = max_batch;
  po.divergence = mode;
  po.max_probes = probes;
  po.guidance = guidance;
  po.backend = siflow::Backend::kReference;
  std::unique_ptr<Plan> plan;
  const Status s = Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), text(s));
  return plan;
}

// The analytic class-conditional model: v(t, x, y) = W x + tanh(W x) * s_y + e_y with embedding
// tables s [3][2] and e [3][2]; label 2 is the null label. Its divergence depends on the label:
// div = sum_k W_kk (1 + s_yk (1 - tanh(W x)_k^2)).
const std::vector<float> kW = {0.5f, -0.25f, 0.125f, -0.75f};
const std::vector<float> kS = {1.0f, 0.5f, -0.5f, 2.0f, 0.25f, -1.0f};
const std::vector<float> kE = {1.5f, -2.0f, -1.0f, 0.75f, 0.25f, 0.5f};

ModelBuilder label_builder(int32_t null_label = 2) {
  ModelBuilder b(2);
  const uint32_t wx = b.fully_connected(b.x(), 2, kW);
  const uint32_t y = b.label_input(3, null_label);
  const uint32_t s = b.embedding(y, 3, kS);
  const uint32_t e = b.embedding(y, 3, kE);
  b.set_output(b.add(b.add(wx, b.mul(b.unary(wx, siflow::UnaryKind::kTanh), s)), e));
  return b;
}

// v(y) in double for point x (flow coordinates).
void v_label(const float* x, int y, double* v) {
  for (int k = 0; k < 2; ++k) {
    const double wx = double(kW[2 * k]) * x[0] + double(kW[2 * k + 1]) * x[1];
    v[k] = wx + std::tanh(wx) * kS[2 * y + k] + kE[2 * y + k];
  }
}

// The linear conditional model v = W x + e_y (divergence tr W whatever the label), and the
// unconditional model v = W x + b that equals it under guidance weight w and label y.
ModelBuilder linear_builder() {
  ModelBuilder b(2);
  b.set_output(b.add(b.fully_connected(b.x(), 2, kW), b.embedding(b.label_input(3, 2), 3, kE)));
  return b;
}
ModelBuilder linear_equivalent(double w, int y) {
  ModelBuilder b(2);
  std::vector<float> bias(2);
  for (int k = 0; k < 2; ++k) {
    const double e0 = kE[2 * 2 + k], ey = kE[2 * y + k];
    bias[k] = static_cast<float>(e0 + w * (ey - e0));
  }
  b.set_output(b.fully_connected(b.x(), 2, kW, bias));
  return b;
}

std::vector<float> points(size_t n) {
  std::vector<float> x(2 * n);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.37f * static_cast<float>(i % 11) - 1.6f;
  return x;
}

// A raw one-node file for refusals the builder cannot write.
std::vector<uint8_t> raw_node_model(fb::OpType op, std::vector<uint32_t> inputs, uint32_t classes,
                                    int32_t null_label, std::vector<uint32_t> shape,
                                    std::vector<float> constant, bool label_first = false) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<fb::Node>> nodes;
  if (label_first) {
    auto in = fbb.CreateVector(std::vector<uint32_t>{});
    fb::NodeBuilder nb(fbb);
    nb.add_op(fb::OpType::LabelInput);
    nb.add_inputs(in);
    nb.add_classes(3);
    nodes.push_back(nb.Finish());
  }
  auto in = fbb.CreateVector(inputs);
  auto sh = shape.empty() ? 0 : fbb.CreateVector(shape);
  flatbuffers::Offset<fb::Weights> c = 0;
  if (!constant.empty()) {
    fbb.ForceVectorAlignment(constant.size(), sizeof(float), 64);
    auto data = fbb.CreateVector(constant);
    auto cs = fbb.CreateVector(std::vector<uint32_t>{static_cast<uint32_t>(constant.size())});
    c = fb::CreateWeights(fbb, fb::DType::F32, cs, data);
  }
  fb::NodeBuilder nb(fbb);
  nb.add_op(op);
  nb.add_inputs(in);
  nb.add_classes(classes);
  nb.add_null_label(null_label);
  if (!shape.empty()) nb.add_shape(sh);
  if (!constant.empty()) nb.add_constant(c);
  nodes.push_back(nb.Finish());
  // Output x + 0 so the graph is complete: an Add of x and a constant.
  auto in2 = fbb.CreateVector(std::vector<uint32_t>{0});
  std::vector<float> zero(2, 0.0f);
  fbb.ForceVectorAlignment(2, sizeof(float), 64);
  auto zd = fbb.CreateVector(zero);
  auto zs = fbb.CreateVector(std::vector<uint32_t>{2});
  auto zc = fb::CreateWeights(fbb, fb::DType::F32, zs, zd);
  fb::NodeBuilder ab(fbb);
  ab.add_op(fb::OpType::Add);
  ab.add_inputs(in2);
  ab.add_constant(zc);
  nodes.push_back(ab.Finish());
  const uint32_t output = static_cast<uint32_t>(nodes.size() + 1);
  auto graph = fb::CreateGraph(fbb, 2, fbb.CreateVector(nodes), output);
  auto model = fb::CreateModel(fbb, 1, 4, 0, graph);
  fbb.Finish(model, fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

}  // namespace

TEST_CASE("a label-conditional model loads: ModelInfo, node names, format 1.4, no tangents") {
  const std::vector<uint8_t> bytes = label_builder().finish();
  auto m = load(label_builder());
  const siflow::ModelInfo& info = m->info();
  CHECK(info.format_minor == 4);
  CHECK(info.takes_labels);
  CHECK(info.label_classes == 3);
  CHECK(info.null_label == 2);
  CHECK(info.cond_width == 0);
  CHECK_FALSE(info.has_null_cond);
  const char* op = nullptr;
  uint32_t in = 0, width = 0;
  REQUIRE(m->node(1, &op, &in, &width));
  CHECK(std::string(op) == "label_input");
  CHECK(width == 1);
  REQUIRE(m->node(2, &op, &in, &width));
  CHECK(std::string(op) == "embedding");
  CHECK(width == 2);
  // Neither the label, nor its embeddings, depend on x.
  const siflow::detail::ModelData& md = m->data();
  CHECK_FALSE(md.tensors[3].depends_on_x);
  CHECK_FALSE(md.tensors[4].depends_on_x);
  CHECK(md.tensors[2].depends_on_x);
  // An unconditional model says so.
  ModelBuilder plain(2);
  plain.set_output(plain.fully_connected(plain.x(), 2, kW));
  auto p = load(plain);
  CHECK_FALSE(p->info().takes_labels);
  CHECK(p->info().cond_width == 0);
  CHECK(p->info().format_minor == 0);
}

TEST_CASE("bad conditioning nodes are refused with a message naming the cause") {
  expect_refused(raw_node_model(fb::OpType::LabelInput, {0}, 3, -1, {}, {}),
                 StatusCode::kInvalidModel, {"node 0 (LabelInput)", "has 1 inputs, expected 0"});
  expect_refused(raw_node_model(fb::OpType::LabelInput, {}, 0, -1, {}, {}),
                 StatusCode::kInvalidModel, {"node 0 (LabelInput)", "classes 0 is outside"});
  expect_refused(raw_node_model(fb::OpType::LabelInput, {}, 3, 3, {}, {}),
                 StatusCode::kInvalidModel, {"null label 3 is neither -1"});
  expect_refused(raw_node_model(fb::OpType::LabelInput, {}, 3, -2, {}, {}),
                 StatusCode::kInvalidModel, {"null label -2 is neither -1"});
  expect_refused(raw_node_model(fb::OpType::CondInput, {}, 0, -1, {}, {}),
                 StatusCode::kInvalidModel, {"node 0 (CondInput)", "needs its condition's shape"});
  expect_refused(raw_node_model(fb::OpType::CondInput, {}, 0, -1, {2, 0}, {}),
                 StatusCode::kInvalidModel, {"condition shape dimension 1 is 0"});
  expect_refused(raw_node_model(fb::OpType::CondInput, {}, 0, -1, {1, 1, 1, 1}, {}),
                 StatusCode::kInvalidModel, {"needs its condition's shape", "rank 4"});
  expect_refused(raw_node_model(fb::OpType::CondInput, {1}, 0, -1, {2}, {}),
                 StatusCode::kInvalidModel, {"has 1 inputs, expected 0"});
  expect_refused(raw_node_model(fb::OpType::CondInput, {}, 0, -1, {3}, {1.0f, 2.0f}),
                 StatusCode::kInvalidModel, {"node 0 (CondInput)", "constant has 2 values"});
  expect_refused(raw_node_model(fb::OpType::CondInput, {}, 0, -1, {2}, {1.0f, NAN}),
                 StatusCode::kInvalidModel, {"constant[1] is not finite"});
  // Embedding: its input must be a LabelInput, its table [classes, E] with matching classes.
  expect_refused(raw_node_model(fb::OpType::Embedding, {0}, 3, -1, {}, {}),
                 StatusCode::kInvalidModel, {"node 0 (Embedding)", "is not a LabelInput"});
  expect_refused(raw_node_model(fb::OpType::Embedding, {2}, 3, -1, {}, {}, true),
                 StatusCode::kInvalidModel, {"node 1 (Embedding)", "weight must have shape"});
  expect_refused(raw_node_model(fb::OpType::Embedding, {}, 3, -1, {}, {}, true),
                 StatusCode::kInvalidModel, {"node 1 (Embedding)", "has 0 inputs, expected 1"});
  {
    ModelBuilder b(2);
    const uint32_t y = b.label_input(3);
    b.embedding(y, 4, std::vector<float>(8, 0.5f));  // 4 classes for a 3-class label
    b.set_output(b.fully_connected(b.x(), 2, kW));
    expect_refused(
        b.finish(), StatusCode::kInvalidModel,
        {"node 1 (Embedding)", "classes 4, weight rows 4 and the LabelInput's classes 3"});
  }
  {
    ModelBuilder b(2);
    b.label_input(3);
    b.label_input(3);
    b.set_output(b.fully_connected(b.x(), 2, kW));
    expect_refused(b.finish(), StatusCode::kInvalidModel,
                   {"node 1: a second LabelInput (node 0 is one)", "at most one"});
  }
  {
    ModelBuilder b(2);
    b.cond_input({2});
    b.cond_input({3});
    b.set_output(b.fully_connected(b.x(), 2, kW));
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"node 1: a second CondInput"});
  }
}

TEST_CASE("test vectors' labels, conditions and guidance weight are checked at load") {
  const std::vector<float> t = {0.5f}, y = {0.1f, 0.2f}, v = {0.0f, 0.0f};
  {
    ModelBuilder b = label_builder();
    b.set_velocity_tests(t, y, v, 1e-5f);  // no labels for a label model
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"labels has 0 values, expected 1"});
  }
  {
    ModelBuilder b = label_builder();
    b.set_velocity_tests(t, y, v, 1e-5f);
    b.set_test_conditioning({3}, {}, 1.0f);
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"labels[0] = 3 is outside [0, 3)"});
  }
  {
    ModelBuilder b(2);
    b.set_output(b.fully_connected(b.x(), 2, kW));
    b.set_velocity_tests(t, y, v, 1e-5f);
    b.set_test_conditioning({1}, {}, 1.0f);
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"labels given, but the model has no"});
  }
  {
    ModelBuilder b(2);
    b.set_output(b.fully_connected(b.x(), 2, kW));
    b.set_velocity_tests(t, y, v, 1e-5f);
    b.set_test_conditioning({}, {}, 2.0f);
    expect_refused(b.finish(), StatusCode::kInvalidModel,
                   {"guidance weight 2 for a model without a label or condition input"});
  }
  {
    ModelBuilder b = label_builder(-1);
    b.set_velocity_tests(t, y, v, 1e-5f);
    b.set_test_conditioning({1}, {}, 2.0f);
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"but the model has no null label"});
  }
  {
    ModelBuilder b = label_builder();
    b.set_velocity_tests(t, y, v, 1e-5f);
    b.set_test_conditioning({1}, {}, NAN);
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"guidance weight is not finite"});
  }
  {
    ModelBuilder b(2);
    const uint32_t c = b.cond_input({2});
    b.set_output(b.add(b.fully_connected(b.x(), 2, kW), c));
    b.set_velocity_tests(t, y, v, 1e-5f);
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"cond missing (1 x 2)"});
    b.set_test_conditioning({}, {1.0f}, 1.0f);
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"cond has 1 values, expected 2"});
    b.set_test_conditioning({}, {1.0f, 2.0f}, 2.0f);
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"but the model has no null condition"});
  }
}

TEST_CASE("velocity with per-row labels, one label for every row, and each refused call") {
  auto m = load(label_builder());
  auto plan = make_plan(*m, 1.0, 3);  // chunks of 3 rows: labels follow their rows
  const size_t n = 7;
  std::vector<float> x = points(n), t(n, 0.5f), v(2 * n);
  std::vector<int32_t> labels = {0, 1, 2, 1, 0, 0, 2};
  Conditioning c;
  c.labels = labels.data();
  REQUIRE(plan->velocity(n, t.data(), x.data(), c, v.data()).ok());
  for (size_t i = 0; i < n; ++i) {
    double ref[2];
    v_label(&x[2 * i], labels[i], ref);
    CHECK(v[2 * i] == doctest::Approx(ref[0]).epsilon(1e-6));
    CHECK(v[2 * i + 1] == doctest::Approx(ref[1]).epsilon(1e-6));
  }
  Conditioning one;
  one.label = 1;
  std::vector<float> v1(2 * n);
  REQUIRE(plan->velocity(n, t.data(), x.data(), one, v1.data()).ok());
  for (size_t i = 0; i < n; ++i) {
    double ref[2];
    v_label(&x[2 * i], 1, ref);
    CHECK(v1[2 * i] == doctest::Approx(ref[0]).epsilon(1e-6));
    if (labels[i] == 1) CHECK(std::memcmp(&v1[2 * i], &v[2 * i], 2 * sizeof(float)) == 0);
  }
  expect_error(plan->velocity(n, t.data(), x.data(), v.data()), StatusCode::kInvalidArgument,
               {"velocity: this model takes a class label (0 to 2, or its null label"});
  labels[4] = 3;
  expect_error(plan->velocity(n, t.data(), x.data(), c, v.data()), StatusCode::kInvalidArgument,
               {"velocity: label 3 of row 4 is outside the model's classes [0, 3)"});
  labels[4] = -1;
  expect_error(plan->velocity(n, t.data(), x.data(), c, v.data()), StatusCode::kInvalidArgument,
               {"label -1 of row 4"});
  one.label = 7;
  expect_error(plan->velocity(n, t.data(), x.data(), one, v.data()), StatusCode::kInvalidArgument,
               {"velocity: label 7 is outside the model's classes [0, 3)"});
  std::vector<float> cond(2 * n, 0.0f);
  Conditioning with_cond;
  with_cond.label = 0;
  with_cond.cond = cond.data();
  expect_error(plan->velocity(n, t.data(), x.data(), with_cond, v.data()),
               StatusCode::kInvalidArgument, {"a condition vector was given, but this model"});
  Conditioning bad_size;
  bad_size.label = 0;
  bad_size.struct_size = 2;
  expect_error(plan->velocity(n, t.data(), x.data(), bad_size, v.data()),
               StatusCode::kInvalidArgument, {"Conditioning.struct_size 2"});

  // Every call refuses a label for an unconditional model.
  ModelBuilder pb(2);
  pb.set_output(pb.fully_connected(pb.x(), 2, kW));
  auto plain = load(pb);
  auto pp = make_plan(*plain);
  Conditioning l0;
  l0.label = 0;
  const char* msg = "a class label was given, but this model takes no class label";
  expect_error(pp->velocity(n, t.data(), x.data(), l0, v.data()), StatusCode::kInvalidArgument,
               {"velocity: ", msg});
  expect_error(pp->sample(n, SampleOptions(), l0, v.data(), nullptr), StatusCode::kInvalidArgument,
               {"sample: ", msg});
  expect_error(pp->decode(n, x.data(), OdeOptions(), DivergenceOptions(), l0, v.data(), nullptr),
               StatusCode::kInvalidArgument, {"decode: ", msg});
  expect_error(pp->encode(n, x.data(), OdeOptions(), l0, v.data()), StatusCode::kInvalidArgument,
               {"encode: ", msg});
  std::vector<double> logp(n);
  expect_error(pp->log_prob(n, x.data(), LogProbOptions(), l0, logp.data()),
               StatusCode::kInvalidArgument, {"log_prob: ", msg});
  // And every call of a label model refuses missing labels.
  expect_error(plan->sample(n, SampleOptions(), v.data(), nullptr), StatusCode::kInvalidArgument,
               {"sample: this model takes a class label"});
  expect_error(plan->decode(n, x.data(), OdeOptions(), DivergenceOptions(), v.data(), nullptr),
               StatusCode::kInvalidArgument, {"decode: this model takes a class label"});
  expect_error(plan->encode(n, x.data(), OdeOptions(), v.data()), StatusCode::kInvalidArgument,
               {"encode: this model takes a class label"});
  expect_error(plan->log_prob(n, x.data(), LogProbOptions(), logp.data()),
               StatusCode::kInvalidArgument, {"log_prob: this model takes a class label"});
}

TEST_CASE("a condition-vector model: velocity, NaN and missing conditions refused") {
  // v = W x + U c with c of width 3.
  const std::vector<float> U = {1.0f, -0.5f, 0.25f, 0.5f, 2.0f, -1.0f};
  ModelBuilder b(2);
  const uint32_t c = b.cond_input({3}, {0.0f, 0.0f, 0.0f});
  b.set_output(b.add(b.fully_connected(b.x(), 2, kW), b.fully_connected(c, 2, U)));
  auto m = load(b);
  CHECK(m->info().cond_width == 3);
  CHECK(m->info().has_null_cond);
  CHECK_FALSE(m->info().takes_labels);
  auto plan = make_plan(*m, 1.0, 2);
  const size_t n = 5;
  std::vector<float> x = points(n), t(n, 0.25f), v(2 * n), cond(3 * n);
  for (size_t i = 0; i < cond.size(); ++i) cond[i] = 0.1f * static_cast<float>(i) - 0.7f;
  Conditioning cc;
  cc.cond = cond.data();
  REQUIRE(plan->velocity(n, t.data(), x.data(), cc, v.data()).ok());
  for (size_t i = 0; i < n; ++i)
    for (int k = 0; k < 2; ++k) {
      double ref = double(kW[2 * k]) * x[2 * i] + double(kW[2 * k + 1]) * x[2 * i + 1];
      for (int j = 0; j < 3; ++j) ref += double(U[3 * k + j]) * cond[3 * i + j];
      CHECK(v[2 * i + k] == doctest::Approx(ref).epsilon(1e-6));
    }
  expect_error(plan->velocity(n, t.data(), x.data(), v.data()), StatusCode::kInvalidArgument,
               {"velocity: this model takes a condition vector of width 3 per row; none"});
  cond[3 * 3 + 1] = NAN;
  expect_error(plan->velocity(n, t.data(), x.data(), cc, v.data()), StatusCode::kInvalidArgument,
               {"velocity: the condition of row 3 holds NaN or Inf"});
  Conditioning label;
  label.label = 0;
  expect_error(plan->velocity(n, t.data(), x.data(), label, v.data()), StatusCode::kInvalidArgument,
               {"this model takes no class label"});
  // Guidance with a null vector: v_w = W x + U (c0 + w (c - c0)) with c0 = 0.
  cond[3 * 3 + 1] = 0.3f;
  auto guided = make_plan(*m, 3.0, 2);
  std::vector<float> vg(2 * n);
  REQUIRE(guided->velocity(n, t.data(), x.data(), cc, vg.data()).ok());
  for (size_t i = 0; i < n; ++i)
    for (int k = 0; k < 2; ++k) {
      const double wx = double(kW[2 * k]) * x[2 * i] + double(kW[2 * k + 1]) * x[2 * i + 1];
      double uc = 0.0;
      for (int j = 0; j < 3; ++j) uc += double(U[3 * k + j]) * cond[3 * i + j];
      CHECK(vg[2 * i + k] == doctest::Approx(wx + 3.0 * uc).epsilon(1e-5));
    }
}

TEST_CASE(
    "guidance: the closed form, w = 0 and w = 1, and one batched pass = two passes, bit "
    "for bit") {
  auto m = load(label_builder());
  const size_t n = 9;
  std::vector<float> x = points(n), t(n);
  for (size_t i = 0; i < n; ++i) t[i] = 0.1f * static_cast<float>(i);
  std::vector<int32_t> labels = {0, 1, 0, 1, 1, 0, 0, 1, 0};
  Conditioning c;
  c.labels = labels.data();
  std::vector<int32_t> nulls(n, 2);
  Conditioning c0;
  c0.labels = nulls.data();
  auto plain = make_plan(*m, 1.0, 4);
  std::vector<float> vy(2 * n), vn(2 * n);
  REQUIRE(plain->velocity(n, t.data(), x.data(), c, vy.data()).ok());
  REQUIRE(plain->velocity(n, t.data(), x.data(), c0, vn.data()).ok());
  for (double w : {2.5, -1.0, 0.5, 4.0}) {
    INFO("w = " << w);
    auto guided = make_plan(*m, w, 4);
    std::vector<float> vw(2 * n);
    REQUIRE(guided->velocity(n, t.data(), x.data(), c, vw.data()).ok());
    for (size_t i = 0; i < n; ++i) {
      double ry[2], r0[2];
      v_label(&x[2 * i], labels[i], ry);
      v_label(&x[2 * i], 2, r0);
      for (int k = 0; k < 2; ++k) {
        CHECK(vw[2 * i + k] == doctest::Approx(r0[k] + w * (ry[k] - r0[k])).epsilon(2e-6));
        // The same bits as the two separate passes combined the same way.
        const double a = vy[2 * i + k], b = vn[2 * i + k];
        const float separate = static_cast<float>(b + w * (a - b));
        CHECK(std::memcmp(&vw[2 * i + k], &separate, sizeof(float)) == 0);
      }
    }
  }
  // w = 0: the null-label model, whatever labels are given (and none are needed).
  auto zero = make_plan(*m, 0.0, 4);
  std::vector<float> v0(2 * n);
  REQUIRE(zero->velocity(n, t.data(), x.data(), c, v0.data()).ok());
  CHECK(std::memcmp(v0.data(), vn.data(), v0.size() * sizeof(float)) == 0);
  REQUIRE(zero->velocity(n, t.data(), x.data(), v0.data()).ok());
  CHECK(std::memcmp(v0.data(), vn.data(), v0.size() * sizeof(float)) == 0);
  // w = 1 is the conditional model itself.
  std::vector<float> v1(2 * n);
  REQUIRE(make_plan(*m, 1.0, 4)->velocity(n, t.data(), x.data(), c, v1.data()).ok());
  CHECK(std::memcmp(v1.data(), vy.data(), v1.size() * sizeof(float)) == 0);
  // Guided sampling: the same samples as decoding the same base draws (w = 2).
  auto guided = make_plan(*m, 2.0, 4);
  SampleOptions so;
  so.seed = 11;
  so.ode.steps = 8;
  std::vector<float> xs(2 * n), xs2(2 * n);
  std::vector<double> lp(n), lp2(n);
  REQUIRE(guided->sample(n, so, c, xs.data(), lp.data()).ok());
  REQUIRE(guided->sample(n, so, c, xs2.data(), lp2.data()).ok());
  CHECK(std::memcmp(xs.data(), xs2.data(), xs.size() * sizeof(float)) == 0);
  for (size_t i = 0; i < n; ++i) CHECK(std::isfinite(lp[i]));
}

TEST_CASE("guided likelihoods are those of the guided ODE (exact and Hutchinson; probes shared)") {
  auto m = load(linear_builder());
  const size_t n = 6;
  std::vector<float> x = points(n);
  for (double w : {2.0, -0.5}) {
    for (int y = 0; y < 2; ++y) {
      INFO("w = " << w << ", y = " << y);
      auto eq = load(linear_equivalent(w, y));
      Conditioning c;
      c.label = y;
      LogProbOptions lo;
      lo.ode.steps = 20;
      std::vector<double> lg(n), le(n);
      REQUIRE(make_plan(*m, w, 4)->log_prob(n, x.data(), lo, c, lg.data()).ok());
      REQUIRE(make_plan(*eq, 1.0, 4)->log_prob(n, x.data(), lo, le.data()).ok());
      for (size_t i = 0; i < n; ++i) CHECK(lg[i] == doctest::Approx(le[i]).epsilon(1e-5));
      // Hutchinson: both halves use sample i's probes, so with a label-independent Jacobian the
      // guided estimate is the equivalent model's with the same seed.
      lo.divergence.mode = DivergenceMode::kHutchinson;
      lo.divergence.probes = 2;
      lo.divergence.seed = 5;
      REQUIRE(make_plan(*m, w, 4, DivergenceMode::kHutchinson, 2)
                  ->log_prob(n, x.data(), lo, c, lg.data())
                  .ok());
      REQUIRE(make_plan(*eq, 1.0, 4, DivergenceMode::kHutchinson, 2)
                  ->log_prob(n, x.data(), lo, le.data())
                  .ok());
      for (size_t i = 0; i < n; ++i) CHECK(lg[i] == doctest::Approx(le[i]).epsilon(1e-5));
      // Decode with log-likelihoods and encode agree with the equivalent model too.
      std::vector<float> dg(2 * n), de(2 * n);
      REQUIRE(make_plan(*m, w, 4)
                  ->decode(n, x.data(), lo.ode, DivergenceOptions(), c, dg.data(), lg.data())
                  .ok());
      REQUIRE(make_plan(*eq, 1.0, 4)
                  ->decode(n, x.data(), lo.ode, DivergenceOptions(), de.data(), le.data())
                  .ok());
      for (size_t i = 0; i < 2 * n; ++i) CHECK(dg[i] == doctest::Approx(de[i]).epsilon(1e-5));
      for (size_t i = 0; i < n; ++i) CHECK(lg[i] == doctest::Approx(le[i]).epsilon(1e-5));
      REQUIRE(make_plan(*m, w, 4)->encode(n, x.data(), lo.ode, c, dg.data()).ok());
      REQUIRE(make_plan(*eq, 1.0, 4)->encode(n, x.data(), lo.ode, de.data()).ok());
      for (size_t i = 0; i < 2 * n; ++i) CHECK(dg[i] == doctest::Approx(de[i]).epsilon(1e-5));
    }
  }
  // The label-dependent divergence of the nonlinear model: guided exact log-likelihood against
  // the guided ODE integrated here in double with RK4 (div_w = div_0 + w (div_y - div_0)).
  auto nl = load(label_builder());
  const double w = 2.0;
  const int steps = 40;
  LogProbOptions lo;
  lo.ode.steps = steps;
  Conditioning c;
  c.label = 1;
  std::vector<double> lg(n);
  REQUIRE(make_plan(*nl, w, 4)->log_prob(n, x.data(), lo, c, lg.data()).ok());
  auto field = [&](const double* z, double* v, double* div) {
    double d = 0.0;
    for (int k = 0; k < 2; ++k) {
      const double wx = double(kW[2 * k]) * z[0] + double(kW[2 * k + 1]) * z[1];
      const double th = std::tanh(wx), dth = 1.0 - th * th;
      const double sy = kS[2 * 1 + k], s0 = kS[2 * 2 + k], ey = kE[2 * 1 + k], e0 = kE[2 * 2 + k];
      const double s = s0 + w * (sy - s0), e = e0 + w * (ey - e0);
      v[k] = wx + th * s + e;
      d += double(kW[2 * k + k]) * (1.0 + s * dth);
    }
    *div = d;
  };
  for (size_t i = 0; i < n; ++i) {
    // Backward from t = 1 to 0: ell = int_1^0 div dt, so log rho_1(x) = log rho_0(X0) + ell.
    double z[2] = {x[2 * i], x[2 * i + 1]}, ell = 0.0;
    const double h = -1.0 / steps;
    for (int s = 0; s < steps; ++s) {
      double k1[2], k2[2], k3[2], k4[2], d1, d2, d3, d4, tmp[2];
      field(z, k1, &d1);
      for (int k = 0; k < 2; ++k) tmp[k] = z[k] + 0.5 * h * k1[k];
      field(tmp, k2, &d2);
      for (int k = 0; k < 2; ++k) tmp[k] = z[k] + 0.5 * h * k2[k];
      field(tmp, k3, &d3);
      for (int k = 0; k < 2; ++k) tmp[k] = z[k] + h * k3[k];
      field(tmp, k4, &d4);
      for (int k = 0; k < 2; ++k) z[k] += h / 6 * (k1[k] + 2 * k2[k] + 2 * k3[k] + k4[k]);
      ell += h / 6 * (d1 + 2 * d2 + 2 * d3 + d4);
    }
    const double base = -0.5 * (z[0] * z[0] + z[1] * z[1]) - std::log(2 * M_PI);
    CHECK(lg[i] == doctest::Approx(base + ell).epsilon(1e-4));
  }
}

TEST_CASE("guidance: the arena holds 2B rows and twice the tangents; refusals") {
  auto m = load(label_builder());
  PlanOptions po;
  po.max_batch = 32;
  po.backend = siflow::Backend::kReference;
  po.max_probes = 4;  // as make_plan
  size_t plain = 0, guided = 0, zero = 0;
  REQUIRE(siflow::arena_bytes(*m, po, &plain).ok());
  po.guidance = 0.0;
  REQUIRE(siflow::arena_bytes(*m, po, &zero).ok());
  po.guidance = 2.0;
  REQUIRE(siflow::arena_bytes(*m, po, &guided).ok());
  CHECK(zero == plain);
  // At least the seed directions of the second half: B rows x dim directions x dim floats.
  CHECK(guided >= plain + 32 * 2 * 2 * sizeof(float));
  auto plan = make_plan(*m, 2.0, 32);
  CHECK(plan->arena_bytes() == guided);
  std::unique_ptr<Plan> out;
  po.guidance = NAN;
  expect_error(Plan::create(*m, po, nullptr, 0, &out), StatusCode::kInvalidArgument,
               {"plan: guidance weight is not finite"});
  // No null label: refused, with the way out.
  auto no_null = load(label_builder(-1));
  po.guidance = 2.0;
  expect_error(Plan::create(*no_null, po, nullptr, 0, &out), StatusCode::kInvalidArgument,
               {"needs the model's null label, and this model has none", "--null-label"});
  po.guidance = 0.0;
  expect_error(Plan::create(*no_null, po, nullptr, 0, &out), StatusCode::kInvalidArgument,
               {"guidance weight 0 needs the model's null label"});
  ModelBuilder pb(2);
  pb.set_output(pb.fully_connected(pb.x(), 2, kW));
  auto unconditional = load(pb);
  po.guidance = 2.0;
  expect_error(Plan::create(*unconditional, po, nullptr, 0, &out), StatusCode::kInvalidArgument,
               {"this model takes no class label or condition"});
  // SDE sampling with w != 1 is refused, saying why.
  SampleOptions so;
  so.sde.epsilon = 0.5;
  Conditioning c;
  c.label = 0;
  std::vector<float> xs(2 * 4);
  expect_error(plan->sample(4, so, c, xs.data(), nullptr), StatusCode::kUnsupported,
               {"SDE sampling with guidance weight 2 is refused", "not the score of the guided"});
  CHECK(make_plan(*m, 1.0, 4)->sample(4, so, c, xs.data(), nullptr).ok());
}

TEST_CASE("sample: temperature scales the base draws; bad temperatures refused") {
  // v = 0: samples are the base draws themselves.
  ModelBuilder b(3);
  b.set_output(b.mul_constant(b.x(), {0.0f, 0.0f, 0.0f}));
  auto m = load(b);
  auto plan = make_plan(*m, 1.0, 4);
  const size_t n = 6;
  SampleOptions so;
  so.seed = 3;
  so.ode.steps = 2;
  std::vector<float> x1(3 * n), xt(3 * n);
  REQUIRE(plan->sample(n, so, x1.data(), nullptr).ok());
  so.temperature = 0.5;
  REQUIRE(plan->sample(n, so, xt.data(), nullptr).ok());
  for (size_t i = 0; i < x1.size(); ++i) CHECK(xt[i] == doctest::Approx(0.5 * x1[i]).epsilon(1e-6));
  for (double bad : {0.0, -1.0, double(NAN), double(INFINITY)}) {
    so.temperature = bad;
    expect_error(plan->sample(n, so, xt.data(), nullptr), StatusCode::kInvalidArgument,
                 {"sample: temperature", "must be positive and finite"});
  }
}

TEST_CASE("embedded test vectors with labels and guidance: validate passes, and fails when wrong") {
  const size_t n = 4;
  std::vector<float> x = points(n), t(n, 0.3f), v(2 * n);
  std::vector<int32_t> labels = {0, 1, 1, 0};
  const double w = 1.5;
  for (size_t i = 0; i < n; ++i) {
    double ry[2], r0[2];
    v_label(&x[2 * i], labels[i], ry);
    v_label(&x[2 * i], 2, r0);
    for (int k = 0; k < 2; ++k) v[2 * i + k] = static_cast<float>(r0[k] + w * (ry[k] - r0[k]));
  }
  ModelBuilder b = label_builder();
  b.set_velocity_tests(t, x, v, 1e-5f);
  b.set_test_conditioning(labels, {}, static_cast<float>(w));
  auto m = load(b);
  siflow::ValidationReport r;
  REQUIRE(siflow::validate_embedded(*m, &r).ok());
  CHECK(r.velocity_ok);
  CHECK(r.velocity_max_error < 1e-6);
  // The same references under another weight or other labels fail.
  b.set_test_conditioning(labels, {}, 1.0f);
  auto m1 = load(b);
  REQUIRE(siflow::validate_embedded(*m1, &r).ok());
  CHECK_FALSE(r.velocity_ok);
  b.set_test_conditioning({1, 1, 1, 1}, {}, static_cast<float>(w));
  auto m2 = load(b);
  REQUIRE(siflow::validate_embedded(*m2, &r).ok());
  CHECK_FALSE(r.velocity_ok);
}

TEST_CASE("Embedding's VJP goes into its table (double), rows selected by label") {
  using siflow::detail::NodeData;
  const siflow::ops::OpModule& mod = siflow::ops::op_module(siflow::detail::OpKind::kEmbedding);
  NodeData n{};
  n.op = siflow::detail::OpKind::kEmbedding;
  n.width = 2;
  n.classes = 3;
  const uint32_t inputs[1] = {0};
  n.inputs = inputs;
  n.input_count = 1;
  const double labels[4] = {2, 0, 2, 1};
  const double table[6] = {1, 2, 3, 4, 5, 6};
  double out[8];
  const uint32_t widths[1] = {1};
  const double* values[1] = {labels};
  siflow::ops::Operands<double> op{&n, widths, values, out, table, nullptr, nullptr, nullptr, 4};
  mod.forward_f64(op);
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < 2; ++k) CHECK(out[2 * r + k] == table[2 * int(labels[r]) + k]);
  const double dy[8] = {1, 10, 100, 1000, 2, 20, 3, 30};
  double dw[6] = {9, 9, 9, 9, 9, 9};
  siflow::ops::Gradients<double> g{dy,      nullptr, [](void*, uint32_t) { return false; },
                                   nullptr, nullptr, dw,
                                   nullptr, nullptr, nullptr};
  mod.vjp_f64(op, g);
  const double expected[6] = {100, 1000, 3, 30, 3, 30};
  for (int i = 0; i < 6; ++i) CHECK(dw[i] == expected[i]);
}
