// SPDX-License-Identifier: Apache-2.0
// The loader (format/loader.cc): every refusal names its cause with the right status code, the
// zero-copy and copy paths for aligned and misaligned spans, and a fuzz that truncates and flips
// the bytes of a valid model (also built as test_loader_asan under ASan and UBSan).
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "format/model_data.hpp"
#include "math/half.hpp"
#include "math/interpolant.hpp"
#include "ops/op.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"
#include "support/byte_span.hpp"

namespace {

using siflow::InterpolantKind;
using siflow::LoadOptions;
using siflow::Model;
using siflow::ModelBuilder;
using siflow::Plan;
using siflow::Status;
using siflow::StatusCode;
using siflow::UnaryKind;
namespace fb = siflow::fb;

using Span = siflow_test::ByteSpan;

// The span outlives the model: a model loaded in place points into it.
struct Loaded {
  explicit Loaded(const std::vector<uint8_t>& bytes, LoadOptions options = LoadOptions(),
                  size_t misalign = 0)
      : span(bytes, misalign) {
    status = Model::load(span.data(), span.size(), options, &model);
  }
  Span span;
  Status status;
  std::unique_ptr<Model> model;
};

void expect_refused(const std::vector<uint8_t>& bytes, StatusCode code,
                    std::initializer_list<const char*> fragments) {
  Loaded l(bytes);
  INFO("message: " << std::string(l.status.message()));
  CHECK(l.status.code() == code);
  CHECK_FALSE(l.model);
  for (const char* f : fragments) {
    INFO("expected fragment: " << f);
    CHECK(std::string(l.status.message()).find(f) != std::string::npos);
  }
}

// Loads through the copy path: the bytes are placed one byte past a 64-byte boundary, so the
// model owns an aligned copy and outlives `bytes` (a vector's own storage may be 64-byte
// aligned, and a model loaded from it in place would dangle once it is freed).
std::unique_ptr<Model> expect_loads(const std::vector<uint8_t>& bytes) {
  const Span misaligned(bytes, 1);
  std::unique_ptr<Model> model;
  const Status s = Model::load(misaligned.data(), misaligned.size(), LoadOptions(), &model);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  return model;
}

// A small valid model with most tables: two layers, layer norm, concat with t, constants,
// normalisation, a learned interpolant, metadata and velocity test vectors.
ModelBuilder rich_builder() {
  ModelBuilder b(2);
  const uint32_t h = b.fully_connected(
      b.concat({b.x(), b.t()}), 4,
      {0.5f, -0.25f, 0.1f, 0.3f, 0.2f, 0.4f, -0.6f, 0.05f, -0.1f, 0.7f, 0.3f, -0.2f},
      {0.1f, 0.0f, -0.1f, 0.2f}, "in");
  const uint32_t a = b.unary(b.layer_norm(h, {1.0f, 0.9f, 1.1f, 1.0f}, {0.0f, 0.1f, 0.0f, -0.1f}),
                             UnaryKind::kTanh);
  const uint32_t c =
      b.add_constant(b.mul_constant(a, {0.5f, 1.0f, 1.5f, 2.0f}), {0.1f, 0.1f, 0.2f, 0.2f});
  b.set_output(
      b.fully_connected(c, 2, {0.3f, -0.2f, 0.1f, 0.4f, -0.5f, 0.2f, 0.3f, -0.1f}, {}, "out"));
  b.set_name("rich");
  b.add_metadata("author", "unit test");
  b.set_interpolant(InterpolantKind::kLearnedFourier, {0.1}, {-0.05});
  b.set_normalization({1.0f, -1.0f}, {2.0f, 0.5f});
  b.set_velocity_tests({0.5f}, {0.1f, 0.2f}, {0.0f, 0.0f}, 1e6f);
  return b;
}

// The simplest valid model: v = W x with W 2x2.
ModelBuilder linear_builder() {
  ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, {0.5f, 0.1f, -0.2f, 0.3f}));
  return b;
}

size_t offset_in(const std::vector<uint8_t>& bytes, const void* p) {
  const size_t off = static_cast<size_t>(static_cast<const uint8_t*>(p) - bytes.data());
  REQUIRE(off < bytes.size());
  return off;
}

// The address of a scalar field that is present in the file (not defaulted).
template <typename T>
size_t field_offset(const std::vector<uint8_t>& bytes, const T* table, uint16_t field) {
  const uint8_t* p = ((const flatbuffers::Table*)table)->GetAddressOf(field);
  REQUIRE(p != nullptr);
  return offset_in(bytes, p);
}

void put_u32(std::vector<uint8_t>& bytes, size_t off, uint32_t v) {
  std::memcpy(bytes.data() + off, &v, sizeof v);
}

const fb::Node* node_of(const std::vector<uint8_t>& bytes, uint32_t i) {
  return fb::GetModel(bytes.data())->graph()->nodes()->Get(i);
}

// A one-node model v = W x (W = identity) written with the generated code directly, for what
// ModelBuilder cannot write: weights at a file offset that is not 64-byte aligned, an unknown
// dtype, or both the f32 and the f16 vector set.
std::vector<uint8_t> raw_fc_model(fb::DType dtype, bool aligned, bool both_vectors = false) {
  const bool half = dtype == fb::DType::F16;
  for (uint32_t pad = 0; pad < 64; ++pad) {
    flatbuffers::FlatBufferBuilder fbb;
    auto inputs = fbb.CreateVector(std::vector<uint32_t>{0});
    auto shape = fbb.CreateVector(std::vector<uint32_t>{2, 2});
    auto padding = fbb.CreateVector(std::vector<uint8_t>(pad, 0));
    (void)padding;
    flatbuffers::Offset<flatbuffers::Vector<uint16_t>> f16 = 0;
    flatbuffers::Offset<flatbuffers::Vector<float>> f32 = 0;
    if (half || both_vectors) {
      if (aligned) fbb.ForceVectorAlignment(4, sizeof(uint16_t), 64);
      f16 = fbb.CreateVector(std::vector<uint16_t>{0x3c00, 0, 0, 0x3c00});
    }
    if (!half || both_vectors) {
      if (aligned) fbb.ForceVectorAlignment(4, sizeof(float), 64);
      f32 = fbb.CreateVector(std::vector<float>{1.0f, 0.0f, 0.0f, 1.0f});
    }
    auto w = fb::CreateWeights(fbb, dtype, shape, f32, f16);
    auto node = fb::CreateNode(fbb, fb::OpType::FullyConnected, inputs, 0, fb::UnaryKind::Identity,
                               0.01f, w);
    auto graph = fb::CreateGraph(fbb, 2, fbb.CreateVector(std::vector<decltype(node)>{node}), 2);
    fbb.Finish(fb::CreateModel(fbb, 1, 0, 0, graph), fb::ModelIdentifier());
    std::vector<uint8_t> bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    if (aligned || both_vectors) return bytes;
    const fb::Weights* weights = node_of(bytes, 0)->weight();
    const void* data = half ? static_cast<const void*>(weights->f16()->data())
                            : static_cast<const void*>(weights->f32()->data());
    if (offset_in(bytes, data) % 64 != 0) return bytes;  // misaligned, as wanted
  }
  FAIL("could not place the weights off a 64-byte boundary");
  return {};
}

// A one-node model v = W y (dim 2, W 2x2, no bias) with W stored as I8 (`values` are q, with
// `scales`) or BF16 (`values` are the bit patterns), written with the generated code directly in
// format 1.`minor`.
std::vector<uint8_t> raw_stored_model(fb::DType dtype, const std::vector<int>& values,
                                      const std::vector<float>& scales, uint16_t minor = 3) {
  flatbuffers::FlatBufferBuilder fbb;
  auto shape = fbb.CreateVector(std::vector<uint32_t>{2, 2});
  flatbuffers::Offset<flatbuffers::Vector<int8_t>> i8 = 0;
  flatbuffers::Offset<flatbuffers::Vector<uint16_t>> bf16 = 0;
  flatbuffers::Offset<flatbuffers::Vector<float>> scale = 0;
  if (!scales.empty()) scale = fbb.CreateVector(scales);
  if (dtype == fb::DType::I8) {
    fbb.ForceVectorAlignment(values.size(), sizeof(int8_t), 64);
    std::vector<int8_t> q(values.begin(), values.end());
    i8 = fbb.CreateVector(q);
  } else {
    fbb.ForceVectorAlignment(values.size(), sizeof(uint16_t), 64);
    std::vector<uint16_t> h(values.begin(), values.end());
    bf16 = fbb.CreateVector(h);
  }
  auto w = fb::CreateWeights(fbb, dtype, shape, 0, 0, i8, bf16, scale);
  auto fc_inputs = fbb.CreateVector(std::vector<uint32_t>{0});  // tensor 0: y
  auto node = fb::CreateNode(fbb, fb::OpType::FullyConnected, fc_inputs, 0, fb::UnaryKind::Identity,
                             0.01f, w);
  auto graph = fb::CreateGraph(fbb, 2, fbb.CreateVector(std::vector<decltype(node)>{node}), 2);
  fbb.Finish(fb::CreateModel(fbb, 1, minor, 0, graph), fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

// A one-node model v = exp(x) of dim 2 written with the generated code directly, for what
// ModelBuilder cannot write: an Exp node with `inputs` (any count) and, when `operand` names
// one, a weight vector in that field ("weight", "bias", "constant", "gamma" or "beta").
std::vector<uint8_t> raw_exp_model(const std::vector<uint32_t>& inputs, const char* operand,
                                   uint16_t minor = 1) {
  flatbuffers::FlatBufferBuilder fbb;
  auto in = fbb.CreateVector(inputs);
  flatbuffers::Offset<fb::Weights> w = 0;
  if (operand) {
    auto shape = fbb.CreateVector(std::vector<uint32_t>{2});
    fbb.ForceVectorAlignment(2, sizeof(float), 64);
    auto f32 = fbb.CreateVector(std::vector<float>{1.0f, 2.0f});
    w = fb::CreateWeights(fbb, fb::DType::F32, shape, f32);
  }
  const std::string field = operand ? operand : "";
  auto pick = [&](const char* name) {
    return field == name ? w : flatbuffers::Offset<fb::Weights>(0);
  };
  auto node = fb::CreateNode(fbb, fb::OpType::Exp, in, fbb.CreateString("e"),
                             fb::UnaryKind::Identity, 0.01f, pick("weight"), pick("bias"),
                             pick("constant"), pick("gamma"), pick("beta"));
  auto graph = fb::CreateGraph(fbb, 2, fbb.CreateVector(std::vector<decltype(node)>{node}), 2);
  fbb.Finish(fb::CreateModel(fbb, 1, minor, 0, graph), fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

// A three-layer MLP on [x, t] with layer norm and a constant; every weight value passes through
// `f` (identity, or rounding to fp16) and is stored as `storage`.
std::vector<uint8_t> mlp_model(float (*f)(float), ModelBuilder::WeightStorage storage) {
  ModelBuilder b(3);
  uint32_t state = 12345;
  auto next = [&](float scale) {
    state = state * 1664525u + 1013904223u;
    return f(scale * (static_cast<float>(state >> 8) / 16777216.0f - 0.5f));
  };
  auto values = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (float& x : v) x = next(scale);
    return v;
  };
  const uint32_t h =
      b.fully_connected(b.concat({b.x(), b.t()}), 33, values(33 * 4, 1.3f), values(33, 0.2f));
  const uint32_t n = b.layer_norm(h, values(33, 2.0f), values(33, 0.1f));
  const uint32_t a = b.mul_constant(b.unary(n, UnaryKind::kSilu), values(33, 3.0f));
  const uint32_t g = b.unary(b.fully_connected(a, 17, values(17 * 33, 0.6f)), UnaryKind::kTanh);
  b.set_output(b.fully_connected(g, 3, values(3 * 17, 0.9f), values(3, 0.1f)));
  b.set_weight_storage(storage);
  return b.finish();
}

float keep(float x) { return x; }
float to_half_and_back(float x) {
  return siflow::detail::half_to_float(siflow::detail::float_to_half(x));
}

// Velocities of `bytes` at fixed points, through the copy path.
std::vector<float> velocities(const std::vector<uint8_t>& bytes) {
  auto model = expect_loads(bytes);
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  const std::vector<float> t = {0.0f, 0.3f, 0.9f, 1.0f};
  std::vector<float> y(4 * 3), v(4 * 3);
  for (size_t i = 0; i < y.size(); ++i) y[i] = 0.37f * static_cast<float>(i) - 2.0f;
  REQUIRE(plan->velocity(4, t.data(), y.data(), v.data()).ok());
  return v;
}

}  // namespace

TEST_CASE("fp16 round trip helpers: exact expansion, round to nearest even, overflow to inf") {
  using siflow::detail::float_to_half;
  using siflow::detail::half_to_float;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    const float f = half_to_float(bits);
    if (exponent == 0x1f) {
      CHECK((mantissa ? std::isnan(f) : std::isinf(f)));
      continue;
    }
    const double expected = exponent == 0 ? sign * std::ldexp(mantissa, -24)
                                          : sign * std::ldexp(1024 + mantissa, exponent - 25);
    REQUIRE(static_cast<double>(f) == expected);
    REQUIRE(float_to_half(f) == bits);  // every half survives the round trip
  }
  // Midpoints between neighbouring halves round to the even one; just above rounds up.
  for (uint32_t h = 0; h < 0x7bff; h += 37) {
    const double lo = half_to_float(static_cast<uint16_t>(h));
    const double hi = half_to_float(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>(0.5 * (lo + hi));
    const uint16_t even = static_cast<uint16_t>((h & 1) ? h + 1 : h);
    CHECK(float_to_half(mid) == even);
    CHECK(float_to_half(std::nextafter(mid, 1e9f)) == h + 1);
    CHECK(float_to_half(std::nextafter(mid, -1e9f)) == h);
  }
  CHECK(float_to_half(65504.0f) == 0x7bff);
  CHECK(float_to_half(65519.0f) == 0x7bff);
  CHECK(float_to_half(65520.0f) == 0x7c00);  // the tie above the largest half goes to inf
  CHECK(float_to_half(-1e9f) == 0xfc00);
  CHECK(float_to_half(1e-9f) == 0x0000);
}

TEST_CASE("F16 weights expand at load to exactly the half values, counted in ModelInfo") {
  const auto f32 = mlp_model(keep, ModelBuilder::WeightStorage::kF32);
  const auto f16 = mlp_model(keep, ModelBuilder::WeightStorage::kF16);
  const auto rounded = mlp_model(to_half_and_back, ModelBuilder::WeightStorage::kF32);
  auto m16 = expect_loads(f16);
  auto m32 = expect_loads(f32);
  const siflow::ModelInfo& info = m16->info();
  CHECK(info.parameter_count == m32->info().parameter_count);
  CHECK(info.f16_parameter_count == info.parameter_count);
  CHECK(info.weight_bytes == 2 * info.parameter_count);
  CHECK(info.expanded_bytes >= 4 * info.parameter_count);
  CHECK(info.expanded_bytes <= 4 * info.parameter_count + 64 * 16);  // one pad per operand
  CHECK(info.held_bytes >= info.expanded_bytes);
  CHECK(m32->info().f16_parameter_count == 0);
  CHECK(m32->info().expanded_bytes == 0);
  // Bit-identical to float32 weights holding the rounded values; different from the originals.
  CHECK(velocities(f16) == velocities(rounded));
  CHECK(velocities(f16) != velocities(f32));
}

TEST_CASE("a raw F16 identity model loads in place and computes v = x") {
  const auto bytes = raw_fc_model(fb::DType::F16, true);
  Loaded l(bytes, LoadOptions());
  REQUIRE_MESSAGE(l.status.ok(), std::string(l.status.message()));
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*l.model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  const float t = 0.5f, y[2] = {1.5f, -2.25f};
  float v[2] = {};
  REQUIRE(plan->velocity(1, &t, y, v).ok());
  CHECK(v[0] == 1.5f);
  CHECK(v[1] == -2.25f);
}

TEST_CASE("F16 weights beyond the half range are refused as not finite") {
  ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, {1.0f, 7e4f, 0.0f, 1.0f}));
  b.set_weight_storage(ModelBuilder::WeightStorage::kF16);
  expect_refused(b.finish(), StatusCode::kInvalidModel,
                 {"node 0 (FullyConnected): weight[1]", "not finite"});
}

TEST_CASE("an unknown weight dtype is unsupported and named") {
  expect_refused(
      raw_fc_model(static_cast<fb::DType>(7), true), StatusCode::kUnsupported,
      {"node 0 (FullyConnected): weight", "dtype unknown", "F32, F16, BF16 and I8 weights only"});
}

TEST_CASE("weights holding both an f32 and an f16 vector are refused") {
  expect_refused(raw_fc_model(fb::DType::F16, true, true), StatusCode::kInvalidModel,
                 {"dtype F16 but also holds 4 values in other vectors"});
  expect_refused(raw_fc_model(fb::DType::F32, true, true), StatusCode::kInvalidModel,
                 {"dtype F32 but also holds 4 values in other vectors"});
}

TEST_CASE("I8 weights load as scale * q per row and BF16 weights as their bfloat16 value") {
  // The 2x2 weight [[2 * 1, 2 * -3], [0.5 * 4, 0.5 * 0]] as I8 with scales {2, 0.5}: v = W y.
  Loaded l8(raw_stored_model(fb::DType::I8, {1, -3, 4, 0}, {2.0f, 0.5f}), LoadOptions());
  REQUIRE_MESSAGE(l8.status.ok(), std::string(l8.status.message()));
  // bf16 0x3fc0 = 1.5, 0xc000 = -2, 0x3e80 = 0.25, 0x0000 = 0.
  Loaded lb(raw_stored_model(fb::DType::BF16, {0x3fc0, 0xc000, 0x3e80, 0}, {}), LoadOptions());
  REQUIRE_MESSAGE(lb.status.ok(), std::string(lb.status.message()));
  const float t = 0.5f, y[2] = {1.0f, 2.0f};
  for (auto* l : {&l8, &lb}) {
    std::unique_ptr<Plan> plan;
    REQUIRE(Plan::create(*l->model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
    float v[2] = {};
    REQUIRE(plan->velocity(1, &t, y, v).ok());
    if (l == &l8) {
      CHECK(v[0] == 2.0f * 1 * 1.0f + 2.0f * -3 * 2.0f);
      CHECK(v[1] == 0.5f * 4 * 1.0f);
      CHECK(l->model->info().weight_bytes == 4 + 2 * sizeof(float));
    } else {
      CHECK(v[0] == 1.5f - 4.0f);
      CHECK(v[1] == 0.25f);
      CHECK(l->model->info().weight_bytes == 8);
    }
  }
}

TEST_CASE("I8 weights need one finite positive scale per row; BF16 and I8 need format 1.3") {
  expect_refused(raw_stored_model(fb::DType::I8, {1, 2, 3, 4}, {1.0f}), StatusCode::kInvalidModel,
                 {"I8 weights have 1 scales, expected one per row (2)"});
  expect_refused(raw_stored_model(fb::DType::I8, {1, 2, 3, 4}, {}), StatusCode::kInvalidModel,
                 {"I8 weights have 0 scales"});
  expect_refused(raw_stored_model(fb::DType::I8, {1, 2, 3, 4}, {1.0f, 0.0f}),
                 StatusCode::kInvalidModel, {"scale[1] = 0 is not a finite positive number"});
  expect_refused(raw_stored_model(fb::DType::I8, {1, 2, 3, 4}, {-1.0f, 1.0f}),
                 StatusCode::kInvalidModel, {"scale[0] = -1 is not a finite positive number"});
  expect_refused(raw_stored_model(fb::DType::I8, {1, 2, 3, 4}, {INFINITY, 1.0f}),
                 StatusCode::kInvalidModel, {"scale[0] = inf"});
  expect_refused(raw_stored_model(fb::DType::BF16, {0x3f80, 0, 0, 0x3f80}, {1.0f, 1.0f}),
                 StatusCode::kInvalidModel, {"dtype BF16 but also holds 2 values"});
  expect_refused(raw_stored_model(fb::DType::BF16, {0x3f80, 0, 0, 0x3f80}, {}, 1),
                 StatusCode::kInvalidModel, {"dtype BF16, which needs format 1.3", "says 1.1"});
  expect_refused(raw_stored_model(fb::DType::I8, {1, 0, 0, 1}, {1.0f, 1.0f}, 2),
                 StatusCode::kInvalidModel, {"dtype I8, which needs format 1.3", "says 1.2"});
  expect_refused(raw_stored_model(fb::DType::BF16, {0x7f80, 0, 0, 0x3f80}, {}),
                 StatusCode::kInvalidModel, {"weight[0] is not finite"});
}

TEST_CASE("F16 weights off a 64-byte file boundary are refused") {
  expect_refused(raw_fc_model(fb::DType::F16, false), StatusCode::kInvalidModel,
                 {"not 64-byte aligned"});
}

TEST_CASE("a valid model loads and ModelInfo describes it") {
  const std::vector<uint8_t> bytes = rich_builder().finish();
  auto model = expect_loads(bytes);
  const siflow::ModelInfo& info = model->info();
  CHECK(std::string(info.name) == "rich");
  CHECK(info.format_major == 1);
  CHECK(info.format_minor == 0);  // the lowest version its contents need (no Exp)
  CHECK(info.dim == 2);
  CHECK(info.node_count == 7);
  CHECK(info.parameter_count == 12 + 4 + 4 + 4 + 4 + 4 + 8);
  CHECK(info.weight_bytes == info.parameter_count * sizeof(float));
  CHECK(info.f16_parameter_count == 0);
  CHECK(info.expanded_bytes == 0);
  CHECK(info.interpolant == InterpolantKind::kLearnedFourier);
  CHECK(info.fourier_terms == 1);
  CHECK(info.base == siflow::BaseKind::kNormal);
  CHECK(info.normalized);
  CHECK(info.score_available);
  CHECK(info.time_start == 0.0);
  CHECK(info.time_end == 1.0);
  CHECK(info.test_vector_count == 1);
  CHECK(info.metadata_count == 1);
  const char *key = nullptr, *value = nullptr;
  CHECK(model->metadata(0, &key, &value));
  CHECK(std::string(key) == "author");
  CHECK(std::string(value) == "unit test");
  CHECK_FALSE(model->metadata(1, &key, &value));
}

TEST_CASE("a wrong file identifier is refused and named") {
  std::vector<uint8_t> bytes = linear_builder().finish();
  std::memcpy(bytes.data() + 4, "ONNX", 4);
  expect_refused(bytes, StatusCode::kInvalidModel, {"file identifier is 'ONNX'", "'SIFL'"});
}

TEST_CASE("a file shorter than 8 bytes is refused as too small") {
  const std::vector<uint8_t> bytes = {'a', 'b', 'c'};
  expect_refused(bytes, StatusCode::kInvalidModel, {"too small", "3 bytes"});
}

TEST_CASE("a truncated file fails FlatBuffers verification") {
  std::vector<uint8_t> bytes = linear_builder().finish();
  bytes.resize(bytes.size() / 2);
  expect_refused(bytes, StatusCode::kInvalidModel, {"verification failed", "truncated or corrupt"});
}

TEST_CASE("a newer major format version is unsupported and the message names both versions") {
  ModelBuilder b = linear_builder();
  b.set_format_version(2, 3);
  expect_refused(b.finish(), StatusCode::kUnsupported, {"2.3", "newer", "1.x"});
}

TEST_CASE("an older major format version is unsupported and named") {
  ModelBuilder b = linear_builder();
  b.set_format_version(0, 9);
  expect_refused(b.finish(), StatusCode::kUnsupported, {"0.9", "older", "1.x"});
}

TEST_CASE("a newer minor format version of the same major loads") {
  ModelBuilder b = linear_builder();
  b.set_format_version(1, 7);
  auto model = expect_loads(b.finish());
  CHECK(model->info().format_minor == 7);
}

TEST_CASE("graph dim 0 and dim above the limit are refused") {
  expect_refused(ModelBuilder(0).finish(), StatusCode::kInvalidModel,
                 {"graph dim 0", "[1, 12288]"});
  ModelBuilder big(12289);
  big.set_output(big.unary(big.x(), UnaryKind::kIdentity));
  expect_refused(big.finish(), StatusCode::kInvalidModel, {"graph dim 12289"});
}

TEST_CASE("a graph without nodes is refused") {
  expect_refused(ModelBuilder(2).finish(), StatusCode::kInvalidModel, {"graph has no nodes"});
}

TEST_CASE("a node reading a tensor produced later (or itself) is refused: no cycles") {
  std::vector<uint8_t> bytes;
  {
    ModelBuilder b(2);
    const uint32_t a = b.unary(b.x(), UnaryKind::kTanh);  // node 0 -> tensor 2
    const uint32_t c = b.unary(a, UnaryKind::kTanh);      // node 1 -> tensor 3
    b.set_output(b.unary(c, UnaryKind::kTanh));           // node 2 -> tensor 4
    bytes = b.finish();
  }
  // Node 0 reads tensor 3 (use before definition), then node 1 reads itself (tensor 3).
  std::vector<uint8_t> forward = bytes, self = bytes;
  put_u32(forward, offset_in(forward, node_of(forward, 0)->inputs()->data()), 3);
  expect_refused(forward, StatusCode::kInvalidModel,
                 {"node 0", "reads tensor 3", "not produced before it"});
  put_u32(self, offset_in(self, node_of(self, 1)->inputs()->data()), 3);
  expect_refused(self, StatusCode::kInvalidModel, {"node 1", "reads tensor 3"});
}

TEST_CASE("a fully connected weight whose shape does not match its input width is refused") {
  std::vector<uint8_t> bytes = linear_builder().finish();
  // Shape [2, 2] -> [2, 3]: the input x has width 2.
  const auto* shape = node_of(bytes, 0)->weight()->shape();
  put_u32(bytes, offset_in(bytes, shape->data()) + 4, 3);
  expect_refused(bytes, StatusCode::kInvalidModel,
                 {"node 0 (FullyConnected)", "weight shape [2,3]", "input width 2"});
}

TEST_CASE("a fully connected weight with the wrong number of values is refused") {
  ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, {1.0f, 2.0f, 3.0f}));
  expect_refused(b.finish(), StatusCode::kInvalidModel, {"weight has 3 values, expected 4"});
}

TEST_CASE("a NaN weight or an infinite bias is refused with its index") {
  ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 2, {1.0f, 2.0f, NAN, 4.0f}));
  expect_refused(b.finish(), StatusCode::kInvalidModel, {"weight[2] is not finite"});
  ModelBuilder c(2);
  c.set_output(c.fully_connected(c.x(), 2, {1.0f, 2.0f, 3.0f, 4.0f}, {0.0f, INFINITY}));
  expect_refused(c.finish(), StatusCode::kInvalidModel, {"bias[1] is not finite"});
}

TEST_CASE("an unknown unary kind is refused and named") {
  ModelBuilder b(2);
  b.set_output(b.unary(b.x(), UnaryKind::kRelu));  // non-default, so the byte is in the file
  std::vector<uint8_t> bytes = b.finish();
  bytes[field_offset(bytes, node_of(bytes, 0), fb::Node::VT_UNARY)] = 200;
  expect_refused(bytes, StatusCode::kInvalidModel, {"node 0 (Unary)", "unknown unary kind 200"});
}

TEST_CASE("an unknown op type is refused and named") {
  ModelBuilder b(2);
  b.set_output(b.unary(b.x(), UnaryKind::kRelu));  // op Unary = 1 is stored
  std::vector<uint8_t> bytes = b.finish();
  bytes[field_offset(bytes, node_of(bytes, 0), fb::Node::VT_OP)] = 77;
  expect_refused(bytes, StatusCode::kInvalidModel, {"node 0", "unknown op type 77"});
}

TEST_CASE("an Exp node with 0 or 2 inputs is refused naming the node and the count") {
  expect_refused(raw_exp_model({}, nullptr), StatusCode::kInvalidModel,
                 {"node 0 (Exp, e)", "has 0 inputs, expected 1"});
  expect_refused(raw_exp_model({0, 0}, nullptr), StatusCode::kInvalidModel,
                 {"node 0 (Exp, e)", "has 2 inputs, expected 1"});
}

TEST_CASE("an Exp node carrying a weight vector is refused: exp reads none") {
  for (const char* operand : {"weight", "bias", "constant", "gamma", "beta"}) {
    CAPTURE(operand);
    expect_refused(
        raw_exp_model({0}, operand), StatusCode::kInvalidModel,
        {"node 0 (Exp, e)", (std::string("has a ") + operand).c_str(), "which exp does not read"});
  }
}

TEST_CASE("a format 1.1 file with Exp loads and computes v = exp(x)") {
  auto model = expect_loads(raw_exp_model({0}, nullptr));
  CHECK(model->info().format_major == 1);
  CHECK(model->info().format_minor == 1);
  std::unique_ptr<Plan> plan;
  REQUIRE(Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  const float t[1] = {0.5f}, y[2] = {0.0f, -1.5f};
  float v[2];
  REQUIRE(plan->velocity(1, t, y, v).ok());
  CHECK(v[0] == 1.0f);
  CHECK(v[1] == static_cast<float>(std::exp(-1.5)));
}

TEST_CASE("ModelBuilder records format 1.1 for a graph with Exp and 1.0 for one without") {
  ModelBuilder with(2);
  with.set_output(with.exp(with.unary(with.x(), UnaryKind::kTanh)));
  const std::vector<uint8_t> bytes = with.finish();
  CHECK(fb::GetModel(bytes.data())->format_minor() == 1);
  CHECK(expect_loads(bytes)->info().format_minor == 1);
  const std::vector<uint8_t> plain = linear_builder().finish();
  CHECK(fb::GetModel(plain.data())->format_major() == 1);
  CHECK(fb::GetModel(plain.data())->format_minor() == 0);
  CHECK(expect_loads(plain)->info().format_minor == 0);
}

TEST_CASE("a non-finite alpha or a non-positive layer norm epsilon is refused") {
  ModelBuilder b(2);
  b.set_output(b.unary(b.x(), UnaryKind::kLeakyRelu, NAN));
  expect_refused(b.finish(), StatusCode::kInvalidModel, {"alpha is not finite"});
  ModelBuilder c(2);
  c.set_output(c.layer_norm(c.x(), {}, {}, 0.0f));
  expect_refused(c.finish(), StatusCode::kInvalidModel,
                 {"LayerNorm", "epsilon 0 must be positive"});
}

TEST_CASE("tensor operands that cannot broadcast are refused") {
  ModelBuilder b(2);
  const uint32_t wide = b.fully_connected(b.x(), 3, std::vector<float>(6, 0.1f));
  b.set_output(b.add(b.x(), wide));  // [B,2] + [B,3]
  expect_refused(b.finish(), StatusCode::kInvalidModel,
                 {"Add", "[B,2] and [B,3] cannot broadcast"});
}

TEST_CASE("a constant that cannot broadcast with its input is refused") {
  ModelBuilder b(2);
  b.set_output(b.mul_constant(b.x(), {1.0f, 2.0f, 3.0f}));  // [B,2] * [1,3]
  expect_refused(b.finish(), StatusCode::kInvalidModel,
                 {"Mul", "constant [1,3] cannot broadcast with input [B,2]"});
}

TEST_CASE("an output tensor whose width differs from dim is refused") {
  ModelBuilder b(2);
  b.set_output(b.fully_connected(b.x(), 5, std::vector<float>(10, 0.1f)));
  expect_refused(b.finish(), StatusCode::kInvalidModel, {"output tensor 2 has width 5", "dim 2"});
}

TEST_CASE("an output id that no node produces is refused") {
  ModelBuilder b = linear_builder();
  b.set_output(9);
  expect_refused(b.finish(), StatusCode::kInvalidModel, {"graph output is tensor 9"});
  ModelBuilder c = linear_builder();
  c.set_output(0);  // x itself is not a node's output
  expect_refused(c.finish(), StatusCode::kInvalidModel, {"graph output is tensor 0"});
}

TEST_CASE("too many node inputs or metadata entries are refused with the limit") {
  ModelBuilder b(1);
  b.set_output(b.concat(std::vector<uint32_t>(65, ModelBuilder::x())));
  expect_refused(b.finish(), StatusCode::kInvalidModel, {"node 0 has 65 inputs", "limit is 64"});
  ModelBuilder c = linear_builder();
  for (int i = 0; i < 257; ++i) c.add_metadata("k" + std::to_string(1000 + i), "v");
  expect_refused(c.finish(), StatusCode::kInvalidModel, {"257 metadata entries", "256"});
}

TEST_CASE("a learned interpolant whose a(t) and b(t) vanish together is refused") {
  // One term: a = cos(pi t/2) (1 + 2 alpha sin(pi t/2)), b = sin(pi t/2) (1 + 2 beta cos(pi t/2)).
  // alpha = beta = -1/sqrt(2) zeroes both at t = 1/2, a point of the loader's grid.
  ModelBuilder b = linear_builder();
  b.set_interpolant(InterpolantKind::kLearnedFourier, {-M_SQRT1_2}, {-M_SQRT1_2});
  expect_refused(b.finish(), StatusCode::kInvalidModel,
                 {"interpolant", "both vanish near t = 0.500000"});
}

// Regression test (this was a bug, now fixed): Loader::check_interpolant
// (runtime/src/format/loader.cc) looks for a common zero of a and b only at the 2001 grid points t
// = i/2000, with tolerance 1e-6. A common zero between grid points passes: with alpha = -1/(2
// sin(pi t*/2)), beta = -1/(2 cos(pi t*/2)) both vanish at t* = 0.50025, yet |a|, |b| ~ 5e-4 at the
// neighbouring grid points.
TEST_CASE("a learned interpolant whose a and b vanish together between grid points is refused ") {
  const double t_star = 0.50025;
  const double alpha = -1.0 / (2.0 * std::sin(M_PI * t_star / 2));
  const double beta = -1.0 / (2.0 * std::cos(M_PI * t_star / 2));
  // The witness: a(t*) and b(t*) are zero to rounding.
  REQUIRE(std::fabs(std::cos(M_PI * t_star / 2) + alpha * std::sin(M_PI * t_star)) < 1e-15);
  REQUIRE(std::fabs(std::sin(M_PI * t_star / 2) + beta * std::sin(M_PI * t_star)) < 1e-15);
  ModelBuilder b = linear_builder();
  b.set_interpolant(InterpolantKind::kLearnedFourier, {alpha}, {beta});
  expect_refused(b.finish(), StatusCode::kInvalidModel, {"interpolant", "both vanish"});
}

TEST_CASE("a learned interpolant whose a b' - a' b vanishes loads without a score") {
  // With beta = 0: a b' - a' b = pi/2 (1 + 2 alpha sin^3(pi t/2)), which changes sign on (0, 1)
  // for alpha = -1 while a and b never vanish together (a = 0 at t = 1/3, where b = 1/2).
  ModelBuilder b = linear_builder();
  b.set_interpolant(InterpolantKind::kLearnedFourier, {-1.0}, {0.0});
  auto model = expect_loads(b.finish());
  CHECK(model->info().interpolant == InterpolantKind::kLearnedFourier);
  CHECK_FALSE(model->info().score_available);
  // The same family with alpha = 0.1 keeps the factor positive: the score is available.
  ModelBuilder c = linear_builder();
  c.set_interpolant(InterpolantKind::kLearnedFourier, {0.1}, {0.0});
  CHECK(expect_loads(c.finish())->info().score_available);
}

TEST_CASE("malformed interpolant coefficients are refused") {
  ModelBuilder counts = linear_builder();
  counts.set_interpolant(InterpolantKind::kLearnedFourier, {0.1, 0.2}, {0.1});
  expect_refused(counts.finish(), StatusCode::kInvalidModel,
                 {"equal alpha and beta counts", "got 2 and 1"});
  ModelBuilder linear = linear_builder();
  linear.set_interpolant(InterpolantKind::kLinear, {0.1}, {0.1});
  expect_refused(linear.finish(), StatusCode::kInvalidModel, {"linear has no coefficients"});
  ModelBuilder nan = linear_builder();
  nan.set_interpolant(InterpolantKind::kLearnedFourier, {0.1, NAN}, {0.0, 0.0});
  expect_refused(nan.finish(), StatusCode::kInvalidModel, {"coefficient 2 is not finite"});
}

TEST_CASE("the interpolant proof's work is bounded whatever the coefficients' values") {
  // Coefficients of 1e7 (one term) and 64 terms of 1e5 once took 12 s and 92 s to load: the
  // Lipschitz bounds grow with the values and the bisection with them. Now each proof spends at
  // most kProofBudget term evaluations and a proof that runs out fails.
  const std::vector<double> big{1e7}, many(64, 1e5);
  const siflow::detail::InterpolantData one{InterpolantKind::kLearnedFourier, 1, big.data(),
                                            big.data()};
  const siflow::detail::InterpolantData wide{InterpolantKind::kLearnedFourier, 64, many.data(),
                                             many.data()};
  for (const auto* interp : {&one, &wide}) {
    const siflow::InterpolantProof proof = siflow::prove_interpolant(*interp);
    CHECK(proof.spent <= siflow::kProofBudget);
    CHECK_FALSE(proof.apart);
  }
  // An ordinary learned path proves well inside the budget, with its score.
  const std::vector<double> a{0.1, -0.02}, b{-0.05, 0.01};
  const siflow::detail::InterpolantData usual{InterpolantKind::kLearnedFourier, 2, a.data(),
                                              b.data()};
  const siflow::InterpolantProof proof = siflow::prove_interpolant(usual);
  CHECK(proof.apart);
  CHECK(proof.score_ok);
  CHECK(proof.spent < siflow::kProofBudget / 100);
  // Through the loader: refused, naming the bounded check.
  ModelBuilder m = linear_builder();
  m.set_interpolant(InterpolantKind::kLearnedFourier, {1e7}, {1e7});
  expect_refused(m.finish(), StatusCode::kInvalidModel, {"interpolant", "bounded check"});
}

TEST_CASE("learned interpolant coefficients at 4 mod 8 in the file are read without a double*") {
  // FlatBuffers verifies only the 4-byte alignment of a vector's length, so [double] data may sit
  // at 4 mod 8. The file is written with the generated code: each coefficient vector holds two
  // 32-bit words (one double) and says length 1. UBSan's alignment check flags any double* read.
  const double alpha = 0.1, beta = -0.05;
  for (uint32_t pad = 0; pad < 2; ++pad) {
    flatbuffers::FlatBufferBuilder fbb;
    auto coefficient = [&](double v) {
      uint64_t bits = 0;
      std::memcpy(&bits, &v, sizeof bits);
      fbb.StartVector(2, sizeof(uint32_t));
      fbb.PushElement(static_cast<uint32_t>(bits >> 32));  // written back to front
      fbb.PushElement(static_cast<uint32_t>(bits));
      return flatbuffers::Offset<flatbuffers::Vector<double>>(fbb.EndVector(1));
    };
    auto av = coefficient(alpha);
    if (pad) fbb.PushElement(uint32_t{0});
    auto bv = coefficient(beta);
    auto interp = fb::CreateInterpolant(fbb, fb::InterpolantKind::LearnedFourier, av, bv);
    auto inputs = fbb.CreateVector(std::vector<uint32_t>{0});
    auto node = fb::CreateNode(fbb, fb::OpType::Unary, inputs);
    auto graph = fb::CreateGraph(fbb, 2, fbb.CreateVector(std::vector<decltype(node)>{node}), 2);
    fbb.Finish(fb::CreateModel(fbb, 1, 0, 0, graph, interp), fb::ModelIdentifier());
    std::vector<uint8_t> bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    const auto* fi = fb::GetModel(bytes.data())->interpolant();
    REQUIRE(fi);
    if (offset_in(bytes, fi->alpha()->data()) % 8 == 0 &&
        offset_in(bytes, fi->beta()->data()) % 8 == 0)
      continue;
    auto model = expect_loads(bytes);
    const siflow::detail::InterpolantData& loaded = model->data().interpolant;
    REQUIRE(loaded.terms == 1);
    CHECK(loaded.alpha[0] == alpha);
    CHECK(loaded.beta[0] == beta);
    CHECK(reinterpret_cast<uintptr_t>(loaded.alpha) % alignof(double) == 0);
    return;
  }
  FAIL("could not place a coefficient vector at 4 mod 8");
}

TEST_CASE("a normal base with a zero or negative std is refused") {
  ModelBuilder zero = linear_builder();
  zero.set_normal_base({0.0f, 0.0f}, {1.0f, 0.0f});
  expect_refused(zero.finish(), StatusCode::kInvalidModel, {"base std[1] = 0 must be positive"});
  ModelBuilder negative = linear_builder();
  negative.set_normal_base({}, {-2.0f, 1.0f});
  expect_refused(negative.finish(), StatusCode::kInvalidModel, {"base std[0] = -2"});
  ModelBuilder count = linear_builder();
  count.set_normal_base({0.0f, 0.0f, 0.0f}, {});
  expect_refused(count.finish(), StatusCode::kInvalidModel, {"base mean has 3 values, expected 2"});
}

TEST_CASE("a uniform base with low >= high or without bounds is refused") {
  ModelBuilder equal = linear_builder();
  equal.set_uniform_base({0.0f, 1.0f}, {1.0f, 1.0f});
  expect_refused(equal.finish(), StatusCode::kInvalidModel,
                 {"uniform base", "high[1] = 1 must exceed low[1] = 1"});
  ModelBuilder missing = linear_builder();
  missing.set_uniform_base({}, {});
  expect_refused(missing.finish(), StatusCode::kInvalidModel, {"uniform base needs low and high"});
}

TEST_CASE("a normalisation with a zero std or a missing half is refused") {
  ModelBuilder zero = linear_builder();
  zero.set_normalization({0.0f, 0.0f}, {1.0f, 0.0f});
  expect_refused(zero.finish(), StatusCode::kInvalidModel,
                 {"normalization std[1] = 0 must be positive"});
  ModelBuilder half = linear_builder();
  half.set_normalization({1.0f, 2.0f}, {});
  expect_refused(half.finish(), StatusCode::kInvalidModel,
                 {"normalization needs both mean and std"});
}

TEST_CASE("a time range outside 0 <= start < end <= 1 is refused") {
  const double ranges[][2] = {{0.5, 0.5}, {0.7, 0.2}, {-0.1, 1.0},
                              {0.0, 1.5}, {NAN, 1.0}, {0.0, NAN}};
  for (const auto& r : ranges) {
    INFO("range " << r[0] << ", " << r[1]);
    ModelBuilder b = linear_builder();
    b.set_time_range(r[0], r[1]);
    expect_refused(b.finish(), StatusCode::kInvalidModel, {"time range", "0 <= start < end <= 1"});
  }
  ModelBuilder ok = linear_builder();
  ok.set_time_range(0.25, 0.75);
  CHECK(expect_loads(ok.finish())->info().time_start == 0.25);
}

TEST_CASE("inconsistent embedded test vectors are refused") {
  ModelBuilder count = linear_builder();
  count.set_velocity_tests({0.5f, 0.6f}, {0.1f, 0.2f, 0.3f}, {0.0f, 0.0f, 0.0f, 0.0f}, 1e-3f);
  expect_refused(count.finish(), StatusCode::kInvalidModel, {"test vectors y has 3 values"});
  ModelBuilder tolerance = linear_builder();
  tolerance.set_velocity_tests({0.5f}, {0.1f, 0.2f}, {0.0f, 0.0f}, -1.0f);
  expect_refused(tolerance.finish(), StatusCode::kInvalidModel, {"bad velocity tolerance"});
  ModelBuilder steps = linear_builder();
  steps.set_trajectory_tests(0, {0.1f, 0.2f}, {0.1f, 0.2f}, 1e-3f);
  steps.set_velocity_tests({0.5f}, {0.1f, 0.2f}, {0.0f, 0.0f}, 1e-3f);
  expect_refused(steps.finish(), StatusCode::kInvalidModel, {"trajectory steps 0"});
}

TEST_CASE("test vectors asking for more validation work than the limit are refused") {
  static_assert(siflow::Limits::kMaxValidationEvaluations == (1u << 22),
                "the numbers below assume 2^22");
  // One trajectory of 2^20 RK4 steps is 2^22 evaluations of the network: exactly the limit.
  ModelBuilder at_limit = linear_builder();
  at_limit.set_trajectory_tests(1u << 20, {0.1f, 0.2f}, {0.1f, 0.2f}, 1e-3f);
  const std::unique_ptr<Model> loaded = expect_loads(at_limit.finish());
  REQUIRE(loaded);
  CHECK(loaded->info().test_trajectory_count == 1);
  // One velocity point more is over it.
  ModelBuilder over = linear_builder();
  over.set_trajectory_tests(1u << 20, {0.1f, 0.2f}, {0.1f, 0.2f}, 1e-3f);
  over.set_velocity_tests({0.5f}, {0.1f, 0.2f}, {0.0f, 0.0f}, 1e-3f);
  expect_refused(over.finish(), StatusCode::kInvalidModel,
                 {"1 points and 1 trajectories of 1048576 steps",
                  "ask for 4194305 network evaluations", "limit 4194304"});
  // The red-team file: 65536 trajectories of 2^20 steps in about 1 MB (hours of validation).
  ModelBuilder huge = linear_builder();
  const std::vector<float> points(2 * 65536, 0.25f);
  huge.set_trajectory_tests(1u << 20, points, points, 1e-3f);
  expect_refused(huge.finish(), StatusCode::kInvalidModel,
                 {"0 points and 65536 trajectories of 1048576 steps", "274877906944"});
}

TEST_CASE("F32 weights off a 64-byte file boundary are refused (written without force_align)") {
  // The aligned variant of the same raw file loads: only the alignment differs.
  expect_loads(raw_fc_model(fb::DType::F32, true));
  expect_refused(raw_fc_model(fb::DType::F32, false), StatusCode::kInvalidModel,
                 {"not 64-byte aligned", "force_align"});
}

TEST_CASE("an aligned span is used in place without a copy") {
  const std::vector<uint8_t> bytes = rich_builder().finish();
  Loaded l(bytes);
  REQUIRE_MESSAGE(l.status.ok(), std::string(l.status.message()));
  CHECK(l.model->data().owned_bytes == nullptr);
  CHECK(l.model->data().bytes == l.span.data());
  // Weights point into the caller's span.
  const uint8_t* w = reinterpret_cast<const uint8_t*>(l.model->data().nodes[1].weight);
  CHECK(w >= l.span.data());
  CHECK(w < l.span.data() + l.span.size());
  // Descriptors only, besides the weights repacked for the simd kernels: a misaligned load of
  // the same bytes, which copies them, holds at least the file's size more.
  Loaded copied(bytes, LoadOptions(), 8);
  REQUIRE_MESSAGE(copied.status.ok(), std::string(copied.status.message()));
  CHECK(copied.model->info().held_bytes - l.model->info().held_bytes >= bytes.size());
}

TEST_CASE("a misaligned span is copied when allow_copy is set, and refused when it is not") {
  const std::vector<uint8_t> bytes = rich_builder().finish();
  LoadOptions copy;
  Loaded copied(bytes, copy, 8);
  REQUIRE_MESSAGE(copied.status.ok(), std::string(copied.status.message()));
  CHECK(copied.model->data().owned_bytes != nullptr);
  CHECK(copied.model->data().bytes != copied.span.data());
  CHECK(copied.model->info().held_bytes >= bytes.size());
  CHECK(copied.model->info().dim == 2);

  LoadOptions no_copy;
  no_copy.allow_copy = false;
  Loaded refused(bytes, no_copy, 8);
  INFO(std::string(refused.status.message()));
  CHECK(refused.status.code() == StatusCode::kInvalidArgument);
  CHECK_FALSE(refused.model);
  CHECK(std::string(refused.status.message()).find("not 64-byte aligned") != std::string::npos);
  CHECK(std::string(refused.status.message()).find("copies are not allowed") != std::string::npos);

  Loaded aligned(bytes, no_copy, 0);  // the same bytes aligned need no copy
  CHECK(aligned.status.ok());
}

TEST_CASE("load refuses null bytes, a null out pointer and an unknown LoadOptions size") {
  std::unique_ptr<Model> model;
  const std::vector<uint8_t> bytes = linear_builder().finish();
  Status s = Model::load(nullptr, 100, LoadOptions(), &model);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("bytes is null") != std::string::npos);
  s = Model::load(bytes.data(), bytes.size(), LoadOptions(), nullptr);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("out is null") != std::string::npos);
  for (uint32_t size : {0u, 3u, uint32_t(sizeof(LoadOptions) + 1)}) {
    LoadOptions o;
    o.struct_size = size;
    s = Model::load(bytes.data(), bytes.size(), o, &model);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("struct_size") != std::string::npos);
  }
}

#if defined(__EMSCRIPTEN__)
// Emscripten's file system (NODERAWFS) has no FIFOs: mkfifo makes an ordinary empty file there.
constexpr bool kHasFifos = false;
#else
constexpr bool kHasFifos = true;
#endif

TEST_CASE("load_file refuses a FIFO at once instead of blocking in open" *
          doctest::skip(!kHasFifos)) {
  // No writer ever opens the FIFO: a blocking open would hang this test.
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("siflow_fifo_" + std::to_string(getpid()) + ".sif"))
                               .string();
  std::remove(path.c_str());
  REQUIRE(mkfifo(path.c_str(), 0600) == 0);
  std::unique_ptr<Model> model;
  const Status s = Model::load_file(path.c_str(), LoadOptions(), &model);
  std::remove(path.c_str());
  CHECK(s.code() == StatusCode::kIoError);
  CHECK(std::string(s.message()).find("not a regular file") != std::string::npos);
}

TEST_CASE("load_file honours LoadOptions::memory: the file and its tables live in caller memory") {
  const std::vector<uint8_t> bytes = linear_builder().finish();
  const std::string path =
      (std::filesystem::temp_directory_path() / ("siflow_mem_" + std::to_string(getpid()) + ".sif"))
          .string();
  FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f);
  REQUIRE(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
  std::fclose(f);
  std::vector<uint8_t> memory(1 << 20);
  LoadOptions options;
  options.memory = memory.data();
  options.memory_size = memory.size();
  std::unique_ptr<Model> model;
  REQUIRE(Model::load_file(path.c_str(), options, &model).ok());
  // Every byte the model holds is inside the caller's region, the file's copy included.
  const auto* data = &model->data();
  const uint8_t* lo = memory.data();
  const uint8_t* hi = memory.data() + memory.size();
  CHECK(reinterpret_cast<const uint8_t*>(data) >= lo);
  CHECK(reinterpret_cast<const uint8_t*>(data) < hi);
  CHECK(data->bytes >= lo);
  CHECK(data->bytes < hi);
  CHECK(data->owned_bytes == nullptr);
  model.reset();
  // Too little memory is named, with what it needs.
  LoadOptions small = options;
  small.memory_size = 256;
  const Status s = Model::load_file(path.c_str(), small, &model);
  std::remove(path.c_str());
  CHECK(s.code() == StatusCode::kArenaTooSmall);
}

TEST_CASE("load_file reads a model, names a missing file, and prefixes refusals with the path") {
  const std::string dir = std::filesystem::temp_directory_path().string();
  const std::string good = dir + "/siflow_unit_" + std::to_string(getpid()) + "_good.sif";
  const std::string bad = dir + "/siflow_unit_" + std::to_string(getpid()) + "_bad.sif";
  std::vector<uint8_t> bytes = linear_builder().finish();
  REQUIRE(siflow::write_file_atomic(good.c_str(), bytes.data(), bytes.size()).ok());
  std::memcpy(bytes.data() + 4, "XXXX", 4);
  REQUIRE(siflow::write_file_atomic(bad.c_str(), bytes.data(), bytes.size()).ok());
  std::unique_ptr<Model> model;
  Status s = Model::load_file(good.c_str(), LoadOptions(), &model);
  CHECK_MESSAGE(s.ok(), std::string(s.message()));
  CHECK(model);
  s = Model::load_file(bad.c_str(), LoadOptions(), &model);
  CHECK(s.code() == StatusCode::kInvalidModel);
  CHECK(std::string(s.message()).find(bad) == 0);
  CHECK(std::string(s.message()).find("file identifier") != std::string::npos);
  s = Model::load_file((dir + "/siflow_unit_does_not_exist.sif").c_str(), LoadOptions(), &model);
  CHECK(s.code() == StatusCode::kIoError);
  CHECK(std::string(s.message()).find("cannot open model") != std::string::npos);
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

namespace {

// The fuzz seed: the rich model (every table kind) within the 4 KB budget.
std::vector<uint8_t> fuzz_seed() {
  std::vector<uint8_t> bytes = rich_builder().finish();
  REQUIRE(bytes.size() <= 4096);
  return bytes;
}

// Runs a loaded model through every Plan call; each must return ok or an error, never crash.
void exercise(const Model& model) {
  siflow::PlanOptions po;
  po.max_batch = 2;
  std::unique_ptr<Plan> plan;
  if (!Plan::create(model, po, nullptr, 0, &plan).ok()) return;
  const uint32_t d = model.info().dim;
  std::vector<float> x(3 * d), y(3 * d), t = {0.1f, 0.5f, 0.9f};
  std::vector<double> logp(3);
  siflow::SampleOptions so;
  so.ode.steps = 2;
  so.seed = 5;
  (void)plan->sample(3, so, x.data(), logp.data());
  for (float& v : x)
    if (!std::isfinite(v)) v = 0.5f;
  siflow::LogProbOptions lp;
  lp.ode.steps = 2;
  (void)plan->log_prob(3, x.data(), lp, logp.data());
  siflow::OdeOptions ode;
  ode.steps = 2;
  (void)plan->encode(3, x.data(), ode, y.data());
  (void)plan->decode(3, x.data(), ode, siflow::DivergenceOptions(), y.data(), logp.data());
  (void)plan->velocity(3, t.data(), x.data(), y.data());
}

// Outcomes of loading corrupted models: a model that loads is run through every call; a refusal
// must be an invalid (or unsupported) model with a message saying why.
struct FuzzTally {
  size_t loaded = 0, refused = 0, bad_codes = 0, empty_messages = 0;
  void feed(const std::vector<uint8_t>& mutated) {
    Loaded l(mutated);
    if (l.status.ok()) {
      ++loaded;
      exercise(*l.model);
      return;
    }
    ++refused;
    const StatusCode c = l.status.code();
    bad_codes += c != StatusCode::kInvalidModel && c != StatusCode::kUnsupported;
    empty_messages += l.status.message()[0] == '\0';
  }
};

}  // namespace

TEST_CASE("fuzz: every truncation of a valid model is refused") {
  const std::vector<uint8_t> bytes = fuzz_seed();
  REQUIRE(expect_loads(bytes));
  size_t loaded = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    Loaded l(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
    if (l.status.ok()) {
      ++loaded;
      MESSAGE("a prefix of " << n << " bytes loads");
    } else {
      CHECK(l.status.code() == StatusCode::kInvalidModel);
    }
  }
  CHECK(loaded == 0);
}

TEST_CASE("fuzz: byte flips at every offset either load and run, or are refused; never crash") {
  const std::vector<uint8_t> bytes = fuzz_seed();
  FuzzTally tally;
  for (size_t off = 0; off < bytes.size(); ++off) {
    for (uint8_t pattern : {0x01, 0x08, 0x40, 0x80, 0xff}) {
      std::vector<uint8_t> mutated = bytes;
      mutated[off] ^= pattern;
      tally.feed(mutated);
    }
  }
  MESSAGE(bytes.size() << " bytes x 5 patterns: " << tally.loaded << " loaded and ran, "
                       << tally.refused << " refused");
  CHECK(tally.bad_codes == 0);       // a corrupt file is an invalid (or unsupported) model
  CHECK(tally.empty_messages == 0);  // and every refusal says why
  CHECK(tally.loaded > 0);  // flips in weights and padding still load: the run path is covered
  CHECK(tally.refused > 0);
}

TEST_CASE("fuzz: every aligned 32-bit word set to 0, 1, 2^31 - 1 or 2^32 - 1 never crashes") {
  // Words hold offsets, vector lengths, dims, widths and input ids: boundary values there probe
  // the verifier's bounds and the loader's limits.
  const std::vector<uint8_t> bytes = fuzz_seed();
  FuzzTally tally;
  for (size_t off = 0; off + 4 <= bytes.size(); off += 4) {
    for (uint32_t value : {0u, 1u, 0x7fffffffu, 0xffffffffu}) {
      std::vector<uint8_t> mutated = bytes;
      put_u32(mutated, off, value);
      tally.feed(mutated);
    }
  }
  MESSAGE("word fuzz: " << tally.loaded << " loaded and ran, " << tally.refused << " refused");
  CHECK(tally.bad_codes == 0);
  CHECK(tally.refused > 0);
}

TEST_CASE("fuzz: random multi-byte corruptions never crash") {
  const std::vector<uint8_t> bytes = fuzz_seed();
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&state] {  // splitmix64: a fixed, portable sequence
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  FuzzTally tally;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> mutated = bytes;
    const int changes = 1 + static_cast<int>(next() % 8);
    for (int k = 0; k < changes; ++k) mutated[next() % mutated.size()] = next() & 0xff;
    tally.feed(mutated);
  }
  MESSAGE("random fuzz: " << tally.loaded << " of 3000 loaded and ran");
  CHECK(tally.bad_codes == 0);
}

TEST_CASE("a model loads into exactly Model::memory_bytes of caller memory, and not into less") {
  const std::vector<uint8_t> bytes = rich_builder().finish();
  Loaded heap(bytes);
  REQUIRE(heap.status.ok());
  const Span span(bytes);
  size_t need = 0;
  REQUIRE(Model::memory_bytes(span.data(), span.size(), LoadOptions(), &need).ok());
  CHECK(need % 64 == 0);
  alignas(64) static uint8_t memory[1 << 16];
  REQUIRE(need <= sizeof memory);
  LoadOptions lo;
  lo.memory = memory;
  lo.memory_size = need;
  std::unique_ptr<Model> model;
  REQUIRE(Model::load(span.data(), span.size(), lo, &model).ok());
  // Everything it holds is in the caller's memory, and it computes what the heap model does.
  const uint8_t* data = reinterpret_cast<const uint8_t*>(&model->data());
  CHECK(data >= memory);
  CHECK(data < memory + need);
  CHECK(model->info().held_bytes <= need);
  CHECK(model->info().dim == heap.model->info().dim);
  std::unique_ptr<siflow::Plan> p1, p2;
  siflow::PlanOptions po;
  po.backend = siflow::Backend::kReference;
  REQUIRE(siflow::Plan::create(*model, po, nullptr, 0, &p1).ok());
  REQUIRE(siflow::Plan::create(*heap.model, po, nullptr, 0, &p2).ok());
  const uint32_t d = model->info().dim;
  std::vector<float> t(3, 0.5f), y(3 * d, 0.25f), v1(3 * d), v2(3 * d);
  REQUIRE(p1->velocity(3, t.data(), y.data(), v1.data()).ok());
  REQUIRE(p2->velocity(3, t.data(), y.data(), v2.data()).ok());
  CHECK(v1 == v2);
  p1.reset();
  model.reset();
  lo.memory_size = need - 1;
  const siflow::Status s = Model::load(span.data(), span.size(), lo, &model);
  CHECK(s.code() == siflow::StatusCode::kArenaTooSmall);
  CHECK(std::string(s.message()).find("this model needs " + std::to_string(need)) !=
        std::string::npos);
  CHECK_FALSE(model);
}

// A model v = exp(x) of dim 4 written with the generated code, with per-sample shapes: `x_shape`
// on the graph and `node_shape` on the Exp node (empty vectors leave the field out), and the
// node's op type `op` (Exp unless a test asks for another).
std::vector<uint8_t> raw_shaped_model(const std::vector<uint32_t>& x_shape,
                                      const std::vector<uint32_t>& node_shape,
                                      fb::OpType op = fb::OpType::Exp) {
  flatbuffers::FlatBufferBuilder fbb;
  auto in = fbb.CreateVector(std::vector<uint32_t>{0});
  auto ns = node_shape.empty() ? 0 : fbb.CreateVector(node_shape);
  auto xs = x_shape.empty() ? 0 : fbb.CreateVector(x_shape);
  fb::NodeBuilder nb(fbb);
  nb.add_op(op);
  nb.add_inputs(in);
  if (!node_shape.empty()) nb.add_shape(ns);
  auto node = nb.Finish();
  auto nodes = fbb.CreateVector(std::vector<decltype(node)>{node});
  fb::GraphBuilder gb(fbb);
  gb.add_dim(4);
  gb.add_nodes(nodes);
  gb.add_output(2);
  if (!x_shape.empty()) gb.add_x_shape(xs);
  auto graph = gb.Finish();
  fbb.Finish(fb::CreateModel(fbb, 1, 4, 0, graph), fb::ModelIdentifier());
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

TEST_CASE("per-sample shapes: x's shape is kept and passed through elementwise ops") {
  Loaded l(raw_shaped_model({1, 2, 2}, {1, 2, 2}));
  REQUIRE_MESSAGE(l.status.ok(), std::string(l.status.message()));
  const auto& d = l.model->data();
  CHECK(d.x_shape.rank == 3);
  CHECK(d.tensors[0].shape.rank == 3);
  CHECK(d.tensors[2].shape.dims[0] == 1);
  CHECK(d.tensors[2].shape.dims[1] == 2);
  CHECK(d.tensors[2].shape.dims[2] == 2);
  CHECK(std::string(siflow::detail::shape_text(d.tensors[2].shape).text) == "[1, 2, 2]");
  // Without shapes every tensor is flat.
  Loaded flat(raw_shaped_model({}, {}));
  REQUIRE_MESSAGE(flat.status.ok(), std::string(flat.status.message()));
  CHECK(flat.model->data().tensors[2].shape.rank == 1);
  CHECK(flat.model->data().tensors[2].shape.dims[0] == 4);
}

TEST_CASE("per-sample shapes that do not fit are refused by name") {
  expect_refused(raw_shaped_model({3, 2}, {}), StatusCode::kInvalidModel,
                 {"graph x_shape", "holds 6 values per sample", "4 wide"});
  expect_refused(raw_shaped_model({1, 1, 2, 2}, {}), StatusCode::kInvalidModel,
                 {"graph x_shape has rank 4", "limit is 3"});
  expect_refused(raw_shaped_model({4, 0}, {}), StatusCode::kInvalidModel,
                 {"graph x_shape has extent 0 on axis 1"});
  expect_refused(raw_shaped_model({}, {2, 3}), StatusCode::kInvalidModel,
                 {"node 0 (Exp): shape holds 6 values per sample"});
  expect_refused(raw_shaped_model({1, 2, 2}, {2, 2}), StatusCode::kInvalidModel,
                 {"node 0 (Exp)", "as [2, 2], but the op produces [1, 2, 2]", "Reshape"});
}

TEST_CASE("every op type the schema names has an op module; the value after the last is refused") {
  for (fb::OpType type : fb::EnumValuesOpType()) {
    INFO(fb::EnumNameOpType(type));
    const siflow::ops::OpModule* m = siflow::ops::op_module_for(type);
    REQUIRE(m != nullptr);
    CHECK(static_cast<int>(m->kind) == static_cast<int>(type));
    CHECK((m->verify != nullptr));
    CHECK((m->run != nullptr));
    CHECK(std::strlen(m->name) > 0);
  }
  const auto past = static_cast<fb::OpType>(static_cast<int>(fb::OpType::MAX) + 1);
  CHECK(siflow::ops::op_module_for(past) == nullptr);
  const std::string value = std::to_string(static_cast<int>(past));
  expect_refused(raw_shaped_model({}, {}, past), StatusCode::kInvalidModel,
                 {"node 0", ("unknown op type " + value).c_str()});
}
