// SPDX-License-Identifier: Apache-2.0
// ModelBuilder's BF16 and I8 weight storage (format 1.3): what it writes is the plan-time rule of
// math/reduced.hpp (bfloat16 rounding; per-row int8 scale and q), files load back to the
// velocities of the decoded weights, and an I8 file equals its f32 original planned in int8.
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "math/reduced.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "siflow_generated.h"

namespace {

using siflow::Backend;
using siflow::Model;
using siflow::ModelBuilder;
using siflow::Plan;
using siflow::PlanOptions;
using siflow::Precision;
using siflow::UnaryKind;
namespace fb = siflow::fb;
namespace detail = siflow::detail;

// Deterministic values in (-scale/2, scale/2).
struct Values {
  uint32_t state = 2024;
  std::vector<float> operator()(size_t n, float scale) {
    std::vector<float> v(n);
    for (float& x : v) {
      state = state * 1664525u + 1013904223u;
      x = scale * (static_cast<float>(state >> 8) / 16777216.0f - 0.5f);
    }
    return v;
  }
};

// The weights of an MLP on [x, t] (d = 3): 4 -> 40 -> 24 -> 3, SiLU between, with layer norm
// and a constant (1-D operands), a zero row in the middle layer.
struct Mlp {
  std::vector<float> w0, b0, gamma, beta, w1, b1, scale, w2, b2;
  Mlp() {
    Values next;
    w0 = next(40 * 4, 1.3f), b0 = next(40, 0.2f), gamma = next(40, 2.0f), beta = next(40, 0.1f);
    w1 = next(24 * 40, 0.6f), b1 = next(24, 0.1f), scale = next(24, 3.0f);
    w2 = next(3 * 24, 0.9f), b2 = next(3, 0.1f);
    for (size_t i = 0; i < 40; ++i) w1[5 * 40 + i] = 0.0f;
  }
  std::vector<uint8_t> build(ModelBuilder::WeightStorage storage) const {
    ModelBuilder b(3);
    const uint32_t h = b.fully_connected(b.concat({b.x(), b.t()}), 40, w0, b0);
    const uint32_t n = b.unary(b.layer_norm(h, gamma, beta), UnaryKind::kSilu);
    const uint32_t g =
        b.mul_constant(b.unary(b.fully_connected(n, 24, w1, b1), UnaryKind::kSilu), scale);
    b.set_output(b.fully_connected(g, 3, w2, b2));
    b.set_weight_storage(storage);
    return b.finish();
  }
};

// The model uses the bytes in place: they must outlive it.
std::unique_ptr<Model> load(const std::vector<uint8_t>& bytes) {
  std::unique_ptr<Model> model;
  const siflow::Status s = Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  return model;
}

std::vector<float> velocities(const Model& model, Backend backend, Precision precision) {
  PlanOptions options;
  options.backend = backend;
  options.precision = precision;
  std::unique_ptr<Plan> plan;
  const siflow::Status s = Plan::create(model, options, nullptr, 0, &plan);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  const std::vector<float> t = {0.0f, 0.3f, 0.9f, 1.0f, 0.5f};
  std::vector<float> y(t.size() * 3), v(t.size() * 3);
  for (size_t i = 0; i < y.size(); ++i) y[i] = 0.37f * static_cast<float>(i) - 2.0f;
  REQUIRE(plan->velocity(t.size(), t.data(), y.data(), v.data()).ok());
  return v;
}

std::vector<float> to_bf16(std::vector<float> v) {
  for (float& x : v) x = detail::bf16_to_float(detail::float_to_bf16(x));
  return v;
}

// Per-row int8 of w [rows][columns] decoded as scale * q: the plan's int8 weights.
std::vector<float> to_int8(std::vector<float> w, size_t columns) {
  for (size_t r = 0; r < w.size() / columns; ++r) {
    float* row = w.data() + r * columns;
    const float scale = detail::int8_scale(row, static_cast<uint32_t>(columns));
    for (size_t c = 0; c < columns; ++c)
      row[c] = scale * static_cast<float>(detail::int8_quantize(row[c], scale));
  }
  return w;
}

const fb::Weights* weight_of(const std::vector<uint8_t>& bytes, uint32_t node) {
  return fb::GetModel(bytes.data())->graph()->nodes()->Get(node)->weight();
}

}  // namespace

TEST_CASE("ModelBuilder BF16 storage: format 1.3, bfloat16 operands, velocities of the rounded") {
  const Mlp mlp;
  const std::vector<uint8_t> bytes = mlp.build(ModelBuilder::WeightStorage::kBf16);
  const fb::Model* file = fb::GetModel(bytes.data());
  CHECK(file->format_minor() == 3);
  const fb::Weights* w = weight_of(bytes, 1);  // the first fully connected layer
  REQUIRE(w != nullptr);
  CHECK(w->dtype() == fb::DType::BF16);
  REQUIRE(w->bf16() != nullptr);
  CHECK(w->f32() == nullptr);
  for (size_t i = 0; i < mlp.w0.size(); ++i)
    REQUIRE(w->bf16()->Get(static_cast<flatbuffers::uoffset_t>(i)) ==
            detail::float_to_bf16(mlp.w0[i]));
  Mlp rounded = mlp;
  for (std::vector<float>* v : {&rounded.w0, &rounded.b0, &rounded.gamma, &rounded.beta,
                                &rounded.w1, &rounded.b1, &rounded.scale, &rounded.w2, &rounded.b2})
    *v = to_bf16(*v);
  const std::vector<uint8_t> expected_bytes = rounded.build(ModelBuilder::WeightStorage::kF32);
  const std::vector<uint8_t> original_bytes = mlp.build(ModelBuilder::WeightStorage::kF32);
  const auto stored = load(bytes);
  const auto expected = load(expected_bytes);
  const auto original = load(original_bytes);
  for (Backend backend : {Backend::kReference, Backend::kSimd}) {
    CAPTURE(static_cast<int>(backend));
    CHECK(velocities(*stored, backend, Precision::kFp32) ==
          velocities(*expected, backend, Precision::kFp32));
    CHECK(velocities(*stored, backend, Precision::kFp32) !=
          velocities(*original, backend, Precision::kFp32));
  }
}

TEST_CASE("ModelBuilder I8 storage: 2-D weights as the plan's int8, 1-D operands f32, format 1.3") {
  const Mlp mlp;
  const std::vector<uint8_t> bytes = mlp.build(ModelBuilder::WeightStorage::kI8);
  CHECK(fb::GetModel(bytes.data())->format_minor() == 3);
  const fb::Weights* w = weight_of(bytes, 4);  // the middle fully connected layer, 24 x 40
  REQUIRE(w != nullptr);
  CHECK(w->dtype() == fb::DType::I8);
  REQUIRE(w->i8() != nullptr);
  REQUIRE(w->scale() != nullptr);
  REQUIRE(w->scale()->size() == 24);
  for (uint32_t r = 0; r < 24; ++r) {
    const float* row = mlp.w1.data() + size_t{r} * 40;
    const float scale = detail::int8_scale(row, 40);
    // The zero row stores the smallest normal float (the format wants a positive scale).
    CHECK(w->scale()->Get(r) == (r == 5 ? 0x1p-126f : scale));
    for (uint32_t c = 0; c < 40; ++c)
      REQUIRE(w->i8()->Get(r * 40 + c) == detail::int8_quantize(row[c], scale));
  }
  const fb::Model* file = fb::GetModel(bytes.data());
  const fb::Node* fc = file->graph()->nodes()->Get(4);
  CHECK(fc->bias()->dtype() == fb::DType::F32);
  // Layer norm's gamma (1-D) stays float32.
  CHECK(file->graph()->nodes()->Get(2)->gamma()->dtype() == fb::DType::F32);

  Mlp decoded = mlp;
  decoded.w0 = to_int8(mlp.w0, 4);
  decoded.w1 = to_int8(mlp.w1, 40);
  decoded.w2 = to_int8(mlp.w2, 24);
  const std::vector<uint8_t> expected_bytes = decoded.build(ModelBuilder::WeightStorage::kF32);
  const auto stored = load(bytes);
  const auto expected = load(expected_bytes);
  for (Backend backend : {Backend::kReference, Backend::kSimd}) {
    CAPTURE(static_cast<int>(backend));
    CHECK(velocities(*stored, backend, Precision::kFp32) ==
          velocities(*expected, backend, Precision::kFp32));
  }
}

// The plan quantizes only the layers between the first and the last (and none of 16 or fewer
// inputs or outputs); with end layers whose int8 is exact (multiples of 1/64 with 127/64 in every
// row) the I8 file and the plan-time int8 hold the same weights everywhere.
TEST_CASE("an I8 file from ModelBuilder gives the velocities of its f32 original planned in int8") {
  Mlp mlp;
  auto exact = [](std::vector<float>& w, size_t columns) {
    for (size_t i = 0; i < w.size(); ++i) {
      const float k = static_cast<float>(static_cast<int>(w[i] * 100.0f) % 127);
      w[i] = (i % columns == 0 ? 127.0f : k) / 64.0f;
    }
  };
  exact(mlp.w0, 4);
  exact(mlp.w2, 24);
  const std::vector<uint8_t> stored_bytes = mlp.build(ModelBuilder::WeightStorage::kI8);
  const std::vector<uint8_t> original_bytes = mlp.build(ModelBuilder::WeightStorage::kF32);
  const auto stored = load(stored_bytes);
  const auto original = load(original_bytes);
  for (Backend backend : {Backend::kReference, Backend::kSimd}) {
    CAPTURE(static_cast<int>(backend));
    const std::vector<float> planned = velocities(*original, backend, Precision::kInt8);
    CHECK(velocities(*stored, backend, Precision::kFp32) == planned);
    CHECK(velocities(*original, backend, Precision::kFp32) != planned);
  }
}
