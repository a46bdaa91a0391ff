// SPDX-License-Identifier: Apache-2.0
// Editing with a class-conditional flow: encode a point with its label y, decode the base point
// with another label y'. A toy model built in place (v(t, x, y) = W x + e_y, 3 classes, label 2
// the null label) stands in for a trained one; the calls are those a real model takes.
// Prints the points, checks the round trip with the same label, and exits non-zero on failure.
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

bool ok(const siflow::Status& s, const char* what) {
  if (!s.ok()) std::fprintf(stderr, "conditional_edit: %s: %s\n", what, s.message());
  return s.ok();
}

}  // namespace

int main() {
  // The toy model: a rotation-like linear part and one offset per class.
  siflow::ModelBuilder b(2);
  const uint32_t wx = b.fully_connected(b.x(), 2, {0.0f, -0.5f, 0.5f, 0.0f});
  const uint32_t y = b.label_input(3, 2);
  b.set_output(b.add(wx, b.embedding(y, 3, {2.0f, 0.0f, -2.0f, 0.0f, 0.0f, 0.0f})));
  b.set_name("toy-conditional");
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<siflow::Model> model;
  if (!ok(siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model), "load"))
    return 1;
  siflow::PlanOptions po;
  po.max_batch = 4;
  po.divergence = siflow::DivergenceMode::kNone;
  std::unique_ptr<siflow::Plan> plan;
  if (!ok(siflow::Plan::create(*model, po, nullptr, 0, &plan), "plan")) return 1;

  // Three samples of class 0.
  const size_t n = 3;
  siflow::Conditioning class0;
  class0.label = 0;
  siflow::SampleOptions so;
  so.seed = 7;
  std::vector<float> x(2 * n), z(2 * n), back(2 * n), edited(2 * n);
  if (!ok(plan->sample(n, so, class0, x.data(), nullptr), "sample")) return 1;
  // Encode with the label they were drawn with, then decode with the same label and with label 1.
  siflow::OdeOptions ode;
  if (!ok(plan->encode(n, x.data(), ode, class0, z.data()), "encode")) return 1;
  if (!ok(plan->decode(n, z.data(), ode, siflow::DivergenceOptions(), class0, back.data(), nullptr),
          "decode"))
    return 1;
  siflow::Conditioning class1;
  class1.label = 1;
  if (!ok(plan->decode(n, z.data(), ode, siflow::DivergenceOptions(), class1, edited.data(),
                       nullptr),
          "decode"))
    return 1;
  double round_trip = 0.0;
  for (size_t i = 0; i < n; ++i) {
    std::printf("class 0 (%7.4f, %7.4f) -> base (%7.4f, %7.4f) -> class 1 (%7.4f, %7.4f)\n",
                x[2 * i], x[2 * i + 1], z[2 * i], z[2 * i + 1], edited[2 * i], edited[2 * i + 1]);
    for (int k = 0; k < 2; ++k)
      round_trip = std::fmax(round_trip, std::fabs(back[2 * i + k] - x[2 * i + k]));
  }
  std::printf("round trip with the same label: max error %.3g\n", round_trip);
  return round_trip < 1e-4 ? 0 : 1;
}
