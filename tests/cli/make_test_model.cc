// SPDX-License-Identifier: Apache-2.0
// Writes the small 2-D models the CLI tests run on: concat [t, x] -> FC 3->16 -> tanh -> FC 16->2
// with fixed LCG weights and a trig interpolant. A test fixture: public API only, and its output
// must depend on nothing but the code (no clock, no system randomness).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

constexpr int kHidden = 16;
constexpr int kInputs = 3;  // t, x0, x1

// A 64-bit LCG (Knuth's MMIX constants) giving floats uniform in [-scale, scale).
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : state_(seed) {}
  float next(float scale) {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    return scale * (static_cast<float>(state_ >> 40) / 8388608.0f - 1.0f);
  }

 private:
  uint64_t state_;
};

struct Net {
  std::vector<float> w1, b1, w2, b2;

  // v(t, x) in double from the float weights.
  void velocity(double t, const double* x, double* v) const {
    const double in[kInputs] = {t, x[0], x[1]};
    double h[kHidden];
    for (int j = 0; j < kHidden; ++j) {
      double s = b1[j];
      for (int i = 0; i < kInputs; ++i) s += static_cast<double>(w1[j * kInputs + i]) * in[i];
      h[j] = std::tanh(s);
    }
    for (int o = 0; o < 2; ++o) {
      double s = b2[o];
      for (int j = 0; j < kHidden; ++j) s += static_cast<double>(w2[o * kHidden + j]) * h[j];
      v[o] = s;
    }
  }
};

Net make_net(Lcg& rng) {
  Net net;
  for (int k = 0; k < kHidden * kInputs; ++k) net.w1.push_back(rng.next(1.0f));
  for (int k = 0; k < kHidden; ++k) net.b1.push_back(rng.next(0.5f));
  for (int k = 0; k < 2 * kHidden; ++k) net.w2.push_back(rng.next(0.4f));
  for (int k = 0; k < 2; ++k) net.b2.push_back(rng.next(0.2f));
  return net;
}

siflow::ModelBuilder graph(const Net& net, const std::string& name) {
  siflow::ModelBuilder b(2);
  const uint32_t in = b.concat({b.t(), b.x()});
  const uint32_t h =
      b.unary(b.fully_connected(in, kHidden, net.w1, net.b1, "hidden"), siflow::UnaryKind::kTanh);
  b.set_output(b.fully_connected(h, 2, net.w2, net.b2, "velocity"));
  b.set_name(name);
  b.set_interpolant(siflow::InterpolantKind::kTrig);
  b.add_metadata("purpose", "siflow CLI tests");
  return b;
}

// Velocity points and classic-RK4 trajectories computed in double; `bias` is added to every
// reference value (nonzero makes a model that fails validation).
void add_test_vectors(const Net& net, Lcg& rng, double bias, siflow::ModelBuilder* b) {
  std::vector<float> t, y, v;
  for (int i = 0; i < 8; ++i) {
    const double ti = (i + 0.5) / 8, x[2] = {rng.next(2.0f), rng.next(2.0f)};
    double vi[2];
    net.velocity(ti, x, vi);
    t.push_back(static_cast<float>(ti));
    for (int k = 0; k < 2; ++k) {
      y.push_back(static_cast<float>(x[k]));
      v.push_back(static_cast<float>(vi[k] + bias));
    }
  }
  b->set_velocity_tests(t, y, v, 1e-5f);
  constexpr int kSteps = 20;
  std::vector<float> start, end;
  for (int i = 0; i < 3; ++i) {
    double x[2] = {rng.next(1.5f), rng.next(1.5f)};
    start.push_back(static_cast<float>(x[0]));
    start.push_back(static_cast<float>(x[1]));
    const double h = 1.0 / kSteps;
    for (int n = 0; n < kSteps; ++n) {
      double k1[2], k2[2], k3[2], k4[2], s[2];
      net.velocity(n * h, x, k1);
      for (int d = 0; d < 2; ++d) s[d] = x[d] + 0.5 * h * k1[d];
      net.velocity((n + 0.5) * h, s, k2);
      for (int d = 0; d < 2; ++d) s[d] = x[d] + 0.5 * h * k2[d];
      net.velocity((n + 0.5) * h, s, k3);
      for (int d = 0; d < 2; ++d) s[d] = x[d] + h * k3[d];
      net.velocity((n + 1) * h, s, k4);
      for (int d = 0; d < 2; ++d) x[d] += h / 6 * (k1[d] + 2 * k2[d] + 2 * k3[d] + k4[d]);
    }
    end.push_back(static_cast<float>(x[0] + bias));
    end.push_back(static_cast<float>(x[1] + bias));
  }
  b->set_trajectory_tests(kSteps, start, end, 1e-4f);
}

// Class-conditional: v(t, x, y) = net(t, x) + e_y with a 3-class embedding whose label 2 is the
// null label; its test vectors carry labels and were computed under guidance weight 2 in double.
const std::vector<float> kEmbedding = {1.5f, -0.5f, -1.0f, 0.75f, 0.0f, 0.0f};
siflow::ModelBuilder labeled(const Net& net) {
  siflow::ModelBuilder b(2);
  const uint32_t in = b.concat({b.t(), b.x()});
  const uint32_t h =
      b.unary(b.fully_connected(in, kHidden, net.w1, net.b1, "hidden"), siflow::UnaryKind::kTanh);
  const uint32_t v = b.fully_connected(h, 2, net.w2, net.b2, "velocity");
  b.set_output(b.add(v, b.embedding(b.label_input(3, 2), 3, kEmbedding)));
  b.set_name("cli-labels");
  b.set_normal_base();
  std::vector<float> t, y, ref;
  std::vector<int32_t> labels;
  Lcg rng(5);
  const double w = 2.0;
  for (int i = 0; i < 6; ++i) {
    const double ti = (i + 0.5) / 6, x[2] = {rng.next(2.0f), rng.next(2.0f)};
    double vi[2];
    net.velocity(ti, x, vi);
    const int label = i % 3;
    t.push_back(static_cast<float>(ti));
    labels.push_back(label);
    for (int k = 0; k < 2; ++k) {
      y.push_back(static_cast<float>(x[k]));
      const double e0 = kEmbedding[4 + k], ey = kEmbedding[2 * label + k];
      ref.push_back(static_cast<float>(vi[k] + e0 + w * (ey - e0)));
    }
  }
  b.set_velocity_tests(t, y, ref, 1e-5f);
  b.set_test_conditioning(labels, {}, static_cast<float>(w));
  return b;
}

// The class-conditional model without a null label (no guidance possible) and no test vectors.
siflow::ModelBuilder labeled_no_null(const Net& net) {
  siflow::ModelBuilder b(2);
  const uint32_t in = b.concat({b.t(), b.x()});
  const uint32_t h =
      b.unary(b.fully_connected(in, kHidden, net.w1, net.b1, "hidden"), siflow::UnaryKind::kTanh);
  const uint32_t v = b.fully_connected(h, 2, net.w2, net.b2, "velocity");
  b.set_output(b.add(v, b.embedding(b.label_input(3, -1), 3, kEmbedding)));
  b.set_name("cli-labels-no-null");
  b.set_normal_base();
  return b;
}

// A condition-vector model: v(t, x, c) = net(t, x) + U c, c of width 2, null vector 0.
siflow::ModelBuilder conditioned(const Net& net) {
  siflow::ModelBuilder b(2);
  const uint32_t in = b.concat({b.t(), b.x()});
  const uint32_t h =
      b.unary(b.fully_connected(in, kHidden, net.w1, net.b1, "hidden"), siflow::UnaryKind::kTanh);
  const uint32_t v = b.fully_connected(h, 2, net.w2, net.b2, "velocity");
  const uint32_t c = b.cond_input({2}, {0.0f, 0.0f});
  b.set_output(b.add(v, b.fully_connected(c, 2, {1.0f, 0.0f, 0.5f, -1.0f})));
  b.set_name("cli-cond");
  b.set_normal_base();
  return b;
}

// Writes the model and loads it back, so a fixture the loader refuses fails here.
bool write(const std::string& path, const siflow::ModelBuilder& b) {
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<siflow::Model> model;
  siflow::Status s = siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  if (s.ok()) s = siflow::write_file_atomic(path.c_str(), bytes.data(), bytes.size());
  if (!s.ok()) std::fprintf(stderr, "make_test_model: %s: %s\n", path.c_str(), s.message());
  return s.ok();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  Lcg rng(20240601);
  const Net net = make_net(rng);

  siflow::ModelBuilder normal = graph(net, "cli-normal");
  normal.set_normal_base();
  Lcg tests_rng(7);
  add_test_vectors(net, tests_rng, 0.0, &normal);

  siflow::ModelBuilder bad = graph(net, "cli-bad-tests");
  bad.set_normal_base();
  Lcg bad_rng(7);
  add_test_vectors(net, bad_rng, 0.1, &bad);

  siflow::ModelBuilder uniform = graph(net, "cli-uniform");
  uniform.set_uniform_base({-1.0f, -1.0f}, {1.0f, 1.0f});

  siflow::ModelBuilder normalized = graph(net, "cli-normalized");
  normalized.set_normal_base();
  normalized.set_normalization({1.0f, -2.0f}, {2.0f, 0.5f});

  // A model whose embedded trajectory test is as long as the loader allows (64 trajectories of
  // 16384 steps: 2^22 network evaluations) through two 512-wide layers: validating it takes
  // tens of seconds, for the test that a stop signal cancels validation. The references are
  // never reached, so they are simply the starts.
  constexpr uint32_t kWide = 512, kTrajectories = 64, kLongSteps = 16384;
  siflow::ModelBuilder slow(2);
  {
    Lcg slow_rng(11);
    auto values = [&](size_t n, float scale) {
      std::vector<float> v(n);
      for (float& x : v) x = slow_rng.next(scale);
      return v;
    };
    const uint32_t in = slow.concat({slow.t(), slow.x()});
    uint32_t h = slow.unary(slow.fully_connected(in, kWide, values(kWide * 3, 1.0f)),
                            siflow::UnaryKind::kTanh);
    h = slow.unary(slow.fully_connected(h, kWide, values(kWide * kWide, 0.04f)),
                   siflow::UnaryKind::kTanh);
    slow.set_output(slow.fully_connected(h, 2, values(2 * kWide, 0.04f)));
    slow.set_name("cli-slow-validate");
    slow.set_normal_base();
    const std::vector<float> start = values(2 * kTrajectories, 1.0f);
    slow.set_trajectory_tests(kLongSteps, start, start, 1e-4f);
  }

  // An image model: x of shape [1, 2, 2] (d = 4), v = -x through a transpose and reshapes, for
  // the .npy shapes and `siflow info`.
  siflow::ModelBuilder image(4);
  image.set_name("cli-image");
  image.set_x_shape({1, 2, 2});
  {
    const uint32_t hw = image.transpose(image.reshape(image.x(), {2, 2}), {2, 2}, {1, 0});
    const uint32_t back =
        image.transpose(image.mul_constant(hw, {-1.0f, -1.0f, -1.0f, -1.0f}), {2, 2}, {1, 0});
    image.set_output(image.reshape(back, {1, 2, 2}));
  }

  const bool ok =
      write(dir + "/normal.sif", normal) && write(dir + "/bad_tests.sif", bad) &&
      write(dir + "/uniform.sif", uniform) && write(dir + "/normalized.sif", normalized) &&
      write(dir + "/slow_validate.sif", slow) && write(dir + "/image.sif", image) &&
      write(dir + "/labels.sif", labeled(net)) && write(dir + "/cond.sif", conditioned(net)) &&
      write(dir + "/labels_no_null.sif", labeled_no_null(net));
  return ok ? 0 : 1;
}
