// SPDX-License-Identifier: Apache-2.0
// Writes the seed corpora of the fuzz targets: valid models covering every op, unary kind,
// interpolant, base, fp16 storage, normalisation and test vectors, a few corrupted variants, an
// image model and class-conditional models (labels, guidance, a solver tuned for a label), a
// solver with per-step coefficients, the same models with C API parameter tails, .npy/.csv inputs
// for the array readers, and training checkpoints of small runs (one with a [double] vector
// placed at an offset 4 mod 8).
// Usage: make_fuzz_corpus OUT_DIR   (writes OUT_DIR/{model,capi,arrays,checkpoint}/...)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint_generated.h"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "siflow/train.hpp"

namespace {

using siflow::ModelBuilder;
using siflow::UnaryKind;

bool write(const std::string& path, const std::vector<uint8_t>& bytes) {
  const siflow::Status s = siflow::write_file_atomic(path.c_str(), bytes.data(), bytes.size());
  if (!s.ok()) std::fprintf(stderr, "make_fuzz_corpus: %s\n", s.message());
  return s.ok();
}

std::vector<float> wave(size_t n, float scale, float phase) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.9f * static_cast<float>(i) + phase);
  return v;
}

// The plan the corpus' test vectors are computed with: the portable reference kernels on one
// thread, so regenerating the corpus gives the same bytes on every machine (the simd kernels
// the default backend picks differ between CPUs in the last bit).
siflow::PlanOptions corpus_plan() {
  siflow::PlanOptions po;
  po.backend = siflow::Backend::kReference;
  po.threads = 1;
  return po;
}

// Embeds velocity and trajectory test vectors computed by the runtime itself.
std::vector<uint8_t> with_tests(ModelBuilder b) {
  const std::vector<uint8_t> plain = b.finish();
  std::unique_ptr<siflow::Model> model;
  if (!siflow::Model::load(plain.data(), plain.size(), siflow::LoadOptions(), &model).ok())
    return plain;
  std::unique_ptr<siflow::Plan> plan;
  if (!siflow::Plan::create(*model, corpus_plan(), nullptr, 0, &plan).ok()) return plain;
  const uint32_t d = model->info().dim;
  const std::vector<float> t = {0.1f, 0.7f}, y = wave(2 * d, 1.0f, 0.3f);
  std::vector<float> v(2 * d), end(2 * d);
  siflow::OdeOptions ode;
  ode.steps = 4;
  if (!plan->velocity(2, t.data(), y.data(), v.data()).ok()) return plain;
  if (!plan->decode(2, y.data(), ode, siflow::DivergenceOptions(), end.data(), nullptr).ok())
    return plain;
  if (model->info().normalized) return plain;  // decode answers in data space; keep it simple
  b.set_velocity_tests(t, y, v, 1e-5f);
  b.set_trajectory_tests(4, y, end, 1e-4f);
  return b.finish();
}

// Velocity and trajectory test vectors of a class-conditional model computed by the runtime under
// guidance weight w with per-row labels, and a stored solver tuned for label 1 under the same
// weight with its test vector, so the fuzzer starts from every conditioned field the loader reads.
std::vector<uint8_t> with_conditioned_tests(ModelBuilder b, float w) {
  const std::vector<uint8_t> plain = b.finish();
  std::unique_ptr<siflow::Model> model;
  if (!siflow::Model::load(plain.data(), plain.size(), siflow::LoadOptions(), &model).ok())
    return plain;
  siflow::PlanOptions po = corpus_plan();
  po.guidance = w;
  std::unique_ptr<siflow::Plan> plan;
  if (!siflow::Plan::create(*model, po, nullptr, 0, &plan).ok()) return plain;
  const uint32_t d = model->info().dim;
  const std::vector<float> t = {0.1f, 0.7f}, y = wave(2 * d, 1.0f, 0.3f);
  const std::vector<int32_t> labels = {0, 1};
  siflow::Conditioning c;
  c.labels = labels.data();
  std::vector<float> v(2 * d), end(2 * d), solver_end(2 * d);
  siflow::OdeOptions ode;
  ode.steps = 4;
  if (!plan->velocity(2, t.data(), y.data(), c, v.data()).ok()) return plain;
  if (!plan->decode(2, y.data(), ode, siflow::DivergenceOptions(), c, end.data(), nullptr).ok())
    return plain;
  siflow::StoredSolver solver;
  solver.name = "tuned-6";
  solver.method = siflow::Method::kHeun;
  solver.grid = {0.0, 0.3, 0.7, 1.0};
  solver.nfe = 6;
  solver.sample_error = 0.01;
  solver.label = 1;
  solver.guidance = w;
  siflow::OdeOptions fixed;
  fixed.method = solver.method;
  fixed.grid = solver.grid.data();
  fixed.grid_size = solver.grid.size();
  siflow::Conditioning one;
  one.label = solver.label;
  if (!plan->decode(2, y.data(), fixed, siflow::DivergenceOptions(), one, solver_end.data(),
                    nullptr)
           .ok())
    return plain;
  b.set_velocity_tests(t, y, v, 1e-5f);
  b.set_trajectory_tests(4, y, end, 1e-4f);
  b.set_test_conditioning(labels, {}, w, labels);
  solver.test_start = y;
  solver.test_end = solver_end;
  solver.test_tolerance = 1e-4f;
  b.add_solver(solver);
  return b.finish();
}

// A 2-D model with an ab2 solver carrying per-step coefficients (docs/math.md, "Per-step
// coefficients") and its test vector, so the fuzzer starts from the coefficients the loader checks.
std::vector<uint8_t> with_coefficient_solver() {
  ModelBuilder b(2);
  const uint32_t h = b.unary(b.fully_connected(b.concat({b.x(), b.t()}), 6, wave(18, 0.5f, 0.3f)),
                             UnaryKind::kTanh);
  b.set_output(b.fully_connected(h, 2, wave(12, 0.6f, 0.7f), {0.1f, -0.1f}));
  const std::vector<uint8_t> plain = b.finish();
  std::unique_ptr<siflow::Model> model;
  if (!siflow::Model::load(plain.data(), plain.size(), siflow::LoadOptions(), &model).ok())
    return plain;
  std::unique_ptr<siflow::Plan> plan;
  if (!siflow::Plan::create(*model, corpus_plan(), nullptr, 0, &plan).ok()) return plain;
  siflow::StoredSolver solver;
  solver.name = "tuned-4";
  solver.method = siflow::Method::kAB2;
  solver.grid = {0.0, 0.3, 0.6, 0.85, 1.0};
  solver.coefficients = {1.6, -0.6, 1.2, -0.2, 1.5, -0.5};  // steps 1, 2, 3
  solver.nfe = 4;
  solver.sample_error = 0.01;
  const std::vector<float> y = wave(4, 1.0f, 0.3f);
  std::vector<float> end(4);
  siflow::OdeOptions ode;
  ode.method = solver.method;
  ode.grid = solver.grid.data();
  ode.grid_size = solver.grid.size();
  ode.coefficients = solver.coefficients.data();
  ode.coefficient_count = solver.coefficients.size();
  if (!plan->decode(2, y.data(), ode, siflow::DivergenceOptions(), end.data(), nullptr).ok())
    return plain;
  solver.test_start = y;
  solver.test_end = end;
  solver.test_tolerance = 1e-4f;
  b.add_solver(solver);
  return b.finish();
}

// Every op and unary kind, on [x, t] with Fourier time features.
ModelBuilder every_op(uint32_t d) {
  ModelBuilder b(d);
  const uint32_t f = b.mul_constant(b.t(), {1.0f, 3.0f});
  const uint32_t feats =
      b.concat({b.x(), b.unary(f, UnaryKind::kSin), b.unary(f, UnaryKind::kCos), b.t()});
  const uint32_t w = d + 5;
  uint32_t h = b.fully_connected(feats, 12, wave(12 * w, 0.4f, 0.1f), wave(12, 0.1f, 0.5f), "in");
  h = b.layer_norm(h, wave(12, 0.2f, 1.0f), wave(12, 0.1f, 2.0f), 1e-5f);
  const UnaryKind kinds[] = {UnaryKind::kIdentity, UnaryKind::kRelu,    UnaryKind::kLeakyRelu,
                             UnaryKind::kElu,      UnaryKind::kSelu,    UnaryKind::kTanh,
                             UnaryKind::kSigmoid,  UnaryKind::kSilu,    UnaryKind::kGeluErf,
                             UnaryKind::kGeluTanh, UnaryKind::kSoftplus};
  for (UnaryKind k : kinds) h = b.add(h, b.unary(b.mul_constant(h, wave(12, 0.5f, 0.2f)), k, 0.2f));
  h = b.mul(h, b.add_constant(b.t(), {0.5f}));
  b.set_output(b.fully_connected(h, d, wave(d * 12, 0.3f, 0.7f), {}, "out"));
  return b;
}

void models(const std::string& dir, std::vector<std::vector<uint8_t>>* all) {
  auto keep = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    if (write(dir + "/" + name + ".sif", bytes)) all->push_back(bytes);
  };
  {
    ModelBuilder b(2);
    b.set_output(b.fully_connected(b.x(), 2, {0.5f, 0.1f, -0.2f, 0.3f}));
    keep("linear", with_tests(b));
  }
  keep("every_op", with_tests(every_op(3)));
  {
    ModelBuilder b = every_op(3);
    b.set_weight_storage(ModelBuilder::WeightStorage::kF16);
    keep("every_op_f16", with_tests(b));
  }
  {
    ModelBuilder b = every_op(2);
    b.set_interpolant(siflow::InterpolantKind::kLearnedFourier, {0.1, -0.05}, {0.02, 0.1});
    b.set_normalization({1.0f, -1.0f}, {2.0f, 0.5f});
    b.add_metadata("dataset", "corpus");
    keep("learned_normalized", b.finish());
  }
  {
    ModelBuilder b = every_op(2);
    b.set_interpolant(siflow::InterpolantKind::kLinear);
    b.set_uniform_base({-1.0f, -2.0f}, {1.0f, 2.0f});
    b.set_time_range(0.1, 0.9);
    keep("uniform_linear", b.finish());
  }
  {
    ModelBuilder b(1);
    b.set_output(b.fully_connected(b.unary(b.concat({b.x(), b.t()}), UnaryKind::kTanh), 1,
                                   {0.7f, -0.3f}, {0.1f}));
    b.set_normal_base({0.5f}, {2.0f});
    keep("dim1", with_tests(b));
  }
  // Corrupted variants of every_op: truncated, wrong identifier, flipped bytes.
  const std::vector<uint8_t> base = (*all)[1];
  std::vector<uint8_t> v(base.begin(), base.begin() + base.size() / 2);
  keep("corrupt_truncated", v);
  v = base;
  v[4] = 'X';
  keep("corrupt_identifier", v);
  for (size_t k = 0; k < 4; ++k) {
    v = base;
    for (size_t i = 17 + k * 131; i < v.size(); i += 257) v[i] ^= static_cast<uint8_t>(0x5a + k);
    keep("corrupt_flips" + std::to_string(k), v);
  }
  // Conditioned models (format 1.4), after the others so their corpus names stay put: class
  // labels through an embedding with a null label and test vectors under guidance 2, and a
  // condition vector with its null vector.
  {
    ModelBuilder b(2);
    const uint32_t e = b.embedding(b.label_input(3, 2), 3, wave(6, 0.8f, 0.4f));
    b.set_output(b.add(b.fully_connected(b.concat({b.x(), b.t()}), 2, wave(6, 0.5f, 0.2f)), e));
    b.set_velocity_tests({0.2f, 0.6f}, wave(4, 1.0f, 0.3f), wave(4, 0.5f, 0.9f), 1e-5f);
    b.set_test_conditioning({0, 1}, {}, 2.0f);
    keep("labels_guided", b.finish());
  }
  {
    ModelBuilder b(2);
    const uint32_t c = b.cond_input({3}, {0.0f, 0.0f, 0.0f});
    b.set_output(b.add(b.fully_connected(b.x(), 2, wave(4, 0.5f, 0.2f)),
                       b.fully_connected(c, 2, wave(6, 0.3f, 0.7f))));
    keep("cond_vector", b.finish());
  }
  // An image model on x of shape [1, 4, 4]: conv, group norm, SiLU, average pooling, nearest
  // up-sampling, a time embedding reshaped to the feature map, a max-pooled skip and a 1x1 conv
  // out; test vectors computed by the runtime.
  {
    ModelBuilder b(16);
    b.set_x_shape({1, 4, 4});
    ModelBuilder::Window same;
    same.pads = {1, 1, 1, 1};
    uint32_t h = b.conv2d(b.x(), 4, {3, 3}, wave(4 * 9, 0.4f, 0.1f), wave(4, 0.1f, 0.3f), same);
    h = b.unary(b.group_norm(h, 2, wave(4, 0.5f, 1.0f), wave(4, 0.1f, 0.2f)), UnaryKind::kSilu);
    ModelBuilder::Window down;
    down.strides = {2, 2};
    const uint32_t low = b.pool2d(h, ModelBuilder::Pool::kAverage, {2, 2}, down);
    const uint32_t up = b.resize(low, ModelBuilder::Resize::kNearest, 4, 4);
    const uint32_t time = b.reshape(b.fully_connected(b.t(), 64, wave(64, 0.3f, 0.6f)), {4, 4, 4});
    ModelBuilder::Window keep_size;
    keep_size.pads = {0, 0, 1, 1};
    const uint32_t skip = b.pool2d(h, ModelBuilder::Pool::kMax, {2, 2}, keep_size);
    h = b.add(b.add(up, time), skip);
    b.set_output(b.conv2d(h, 1, {1, 1}, wave(4, 0.5f, 0.9f), {0.05f}));
    keep("image_unet", with_tests(b));
  }
  // A class-conditional model (4 classes, null label 3) whose test vectors carry labels and
  // guidance weight 2 and whose stored solver was tuned for label 1 under that weight.
  {
    ModelBuilder b(2);
    const uint32_t e = b.embedding(b.label_input(4, 3), 4, wave(32, 0.8f, 0.4f));
    uint32_t h = b.fully_connected(b.concat({b.x(), b.t()}), 8, wave(24, 0.5f, 0.2f));
    h = b.unary(b.add(h, e), UnaryKind::kTanh);
    b.set_output(b.fully_connected(h, 2, wave(16, 0.6f, 0.8f), {0.1f, -0.1f}));
    keep("labels_solver", with_conditioned_tests(b, 2.0f));
  }
  keep("coefficient_solver", with_coefficient_solver());
}

void capi(const std::string& dir, const std::vector<std::vector<uint8_t>>& all) {
  for (size_t m = 0; m < all.size(); ++m) {
    for (uint32_t variant = 0; variant < 3; ++variant) {
      std::vector<uint8_t> bytes = all[m];
      // which, max_batch, divergence, max_probes, then run options (see fuzz_capi.cc).
      const uint8_t which = static_cast<uint8_t>(variant == 0 ? 0x1f : variant == 1 ? 0x5f : 0x0f);
      const uint8_t tail[32] = {which,
                                3,
                                1,
                                2,
                                static_cast<uint8_t>(variant + 3),
                                2,
                                1,
                                0,
                                0,
                                0,
                                static_cast<uint8_t>(variant),
                                1,
                                0,
                                0,
                                90,
                                1,
                                0,
                                0,
                                0,
                                4,
                                0,
                                0,
                                9,
                                200,
                                17,
                                3,
                                250,
                                128,
                                64,
                                32,
                                1,
                                0};
      bytes.insert(bytes.end(), tail, tail + 32);
      write(dir + "/m" + std::to_string(m) + "_v" + std::to_string(variant) + ".bin", bytes);
    }
  }
}

std::vector<uint8_t> npy(const std::string& descr, const std::string& shape, size_t values,
                         size_t item) {
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<uint8_t> b = {0,
                            0x93,
                            'N',
                            'U',
                            'M',
                            'P',
                            'Y',
                            1,
                            0,
                            static_cast<uint8_t>(header.size() & 0xff),
                            static_cast<uint8_t>(header.size() >> 8)};
  b.insert(b.end(), header.begin(), header.end());
  for (size_t i = 0; i < values; ++i) {
    if (item == 4) {
      const float f = 0.25f * static_cast<float>(i) - 1.0f;
      const auto* p = reinterpret_cast<const uint8_t*>(&f);
      b.insert(b.end(), p, p + 4);
    } else {
      const double f = 0.5 * static_cast<double>(i) - 2.0;
      const auto* p = reinterpret_cast<const uint8_t*>(&f);
      b.insert(b.end(), p, p + 8);
    }
  }
  return b;  // first byte 0 selects .npy in fuzz_arrays
}

std::vector<uint8_t> csv(const std::string& text) {
  std::vector<uint8_t> b = {1};  // first byte 1 selects .csv
  b.insert(b.end(), text.begin(), text.end());
  return b;
}

void arrays(const std::string& dir) {
  write(dir + "/npy_f32_2d", npy("<f4", "(3, 2)", 6, 4));
  write(dir + "/npy_f64_1d", npy("<f8", "(5,)", 5, 8));
  write(dir + "/npy_f64_empty", npy("<f8", "(0, 3)", 0, 8));
  write(dir + "/npy_big_endian", npy(">f4", "(2, 2)", 4, 4));
  write(dir + "/npy_3d", npy("<f4", "(2, 1, 2)", 4, 4));
  write(dir + "/csv_header", csv("x0,x1\n0.5,1.5\n-2,3e-3\n"));
  write(dir + "/csv_plain", csv("1,2,3\n4,5,6\n"));
  write(dir + "/csv_nan", csv("x0\nnan\n"));
  write(dir + "/csv_ragged", csv("1,2\n3\n"));
  write(dir + "/csv_crlf", csv("a,b\r\n1, 2\r\n\r\n"));
}

// Checkpoints of small runs on a built-in dataset, one per interpolant, after a few steps.
size_t checkpoints(const std::string& dir) {
  size_t count = 0;
  for (siflow::InterpolantKind kind :
       {siflow::InterpolantKind::kLinear, siflow::InterpolantKind::kTrig,
        siflow::InterpolantKind::kLearnedFourier}) {
    siflow::TrainOptions o;
    o.hidden = {8, 8};
    o.batch = 16;
    o.steps = 6;
    o.warmup = 1;
    o.eval_every = 0;
    o.holdout_points = 32;
    o.threads = 1;
    o.kernels = siflow::TrainKernels::kReference;  // the same bytes on every machine
    o.interpolant = kind;
    o.fourier_terms = 2;
    siflow::TrainData data;
    data.toy_kind = siflow::ToyData::kMoons;
    data.name = "moons";
    std::unique_ptr<siflow::Trainer> t;
    if (!siflow::Trainer::create(o, data, &t).ok()) continue;
    for (int i = 0; i < 3; ++i) t->step(nullptr);
    const std::string path = dir + "/run_" + std::to_string(static_cast<int>(kind)) + ".sifckpt";
    if (t->save_checkpoint(path.c_str()).ok()) ++count;
  }
  return count;
}

// A checkpoint whose `alpha` [double] data sits at an offset 4 mod 8 from the buffer start: the
// FlatBuffers verifier accepts it (it checks only the 4-byte alignment of a vector's length), so
// the reader must not load its doubles through a double pointer. Written as a [uint32] of the
// doubles' bits whose length is then set to the count of doubles.
std::vector<uint8_t> misaligned_checkpoint() {
  const std::vector<double> alpha = {0.125, -3.5};
  for (uint32_t pad = 0; pad < 4; ++pad) {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<uint32_t> words(2 * alpha.size());
    std::memcpy(words.data(), alpha.data(), alpha.size() * sizeof(double));
    const auto hidden = fbb.CreateVector(std::vector<uint32_t>(pad, 1));
    const auto raw = fbb.CreateVector(words);
    siflow::fb::TrainCheckpointBuilder b(fbb);
    b.add_hidden(hidden);
    b.add_alpha(flatbuffers::Offset<flatbuffers::Vector<double>>(raw.o));
    b.add_steps(10);
    fbb.Finish(b.Finish(), siflow::fb::TrainCheckpointIdentifier());
    std::vector<uint8_t> bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    const auto* c = siflow::fb::GetTrainCheckpoint(bytes.data());
    const size_t at = static_cast<size_t>(c->alpha()->Data() - bytes.data());
    if (at % 8 != 4) continue;
    const uint32_t count = static_cast<uint32_t>(alpha.size());  // little-endian, as the format
    for (size_t i = 0; i < 4; ++i) bytes[at - 4 + i] = static_cast<uint8_t>(count >> (8 * i));
    return bytes;
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_corpus OUT_DIR\n");
    return 2;
  }
  const std::string out = argv[1];
  std::vector<std::vector<uint8_t>> all;
  models(out + "/model", &all);
  capi(out + "/capi", all);
  arrays(out + "/arrays");
  const size_t runs = checkpoints(out + "/checkpoint");
  const std::vector<uint8_t> misaligned = misaligned_checkpoint();
  if (misaligned.empty() ||
      !write(out + "/checkpoint/misaligned-double-vector.sifckpt", misaligned))
    return 1;
  std::printf(
      "wrote %zu models (%zu with C API tails), the array inputs and %zu checkpoints under %s\n",
      all.size(), all.size() * 3, runs + 1, out.c_str());
  return 0;
}
