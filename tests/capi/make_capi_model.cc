// SPDX-License-Identifier: Apache-2.0
// Writes the models the C API test loads (the test itself is C only): MAIN.sif, the network of
// capi_model.h with a Gaussian base, trig interpolant and a normalisation, UNIFORM.sif,
// and LABELS.sif, a class-conditional model (v = W x + e_y).
// usage: make_capi_model MAIN.sif UNIFORM.sif [LABELS.sif]
#include <cstdio>
#include <memory>
#include <vector>

#include "capi_model.h"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

bool write(const char* path, const std::vector<uint8_t>& bytes) {
  // Load what was built: the loader is the judge of a model, not the builder.
  std::unique_ptr<siflow::Model> model;
  siflow::Status s = siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  if (s.ok()) s = siflow::write_file_atomic(path, bytes.data(), bytes.size());
  if (!s.ok()) {
    std::fprintf(stderr, "make_capi_model: %s: %s\n", path, s.message());
    return false;
  }
  return true;
}

std::vector<float> span(const float* p, size_t n) { return std::vector<float>(p, p + n); }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s MAIN.sif UNIFORM.sif [LABELS.sif]\n", argv[0]);
    return 2;
  }
  siflow::ModelBuilder main_model(CAPI_DIM);
  const uint32_t yt = main_model.concat({main_model.x(), main_model.t()});
  const uint32_t hidden = main_model.unary(
      main_model.fully_connected(yt, CAPI_HIDDEN, span(capi_w1, CAPI_HIDDEN * CAPI_IN),
                                 span(capi_b1, CAPI_HIDDEN), "hidden"),
      siflow::UnaryKind::kTanh);
  main_model.set_output(main_model.fully_connected(
      hidden, CAPI_DIM, span(capi_w2, CAPI_DIM * CAPI_HIDDEN), span(capi_b2, CAPI_DIM), "out"));
  main_model.set_name("capi-test");
  main_model.set_interpolant(siflow::InterpolantKind::kTrig);
  main_model.set_normal_base();
  main_model.set_normalization(span(capi_norm_mean, CAPI_DIM), span(capi_norm_std, CAPI_DIM));
  main_model.add_metadata("purpose", "C API test");

  siflow::ModelBuilder uniform(CAPI_DIM);
  uniform.set_output(uniform.mul(uniform.x(), uniform.x()));
  uniform.set_name("capi-uniform");
  uniform.set_interpolant(siflow::InterpolantKind::kLinear);
  uniform.set_uniform_base(std::vector<float>(CAPI_DIM, CAPI_UNIFORM_LOW),
                           std::vector<float>(CAPI_DIM, CAPI_UNIFORM_HIGH));
  const float y0 = CAPI_TRAJECTORY_START;
  uniform.set_trajectory_tests(CAPI_TRAJECTORY_STEPS, std::vector<float>(CAPI_DIM, y0),
                               std::vector<float>(CAPI_DIM, y0 / (1.0f - y0)), 1e-4f);

  // LABELS.sif (optional third path): v = W x + e_y, 3 classes, null label 2 (capi_model.h).
  bool labels_ok = true;
  if (argc == 4) {
    siflow::ModelBuilder labels(2);
    labels.set_output(
        labels.add(labels.fully_connected(labels.x(), 2, span(capi_label_w, 4)),
                   labels.embedding(labels.label_input(3, 2), 3, span(capi_label_table, 6))));
    labels.set_name("capi-labels");
    labels_ok = write(argv[3], labels.finish());
  }
  return write(argv[1], main_model.finish()) && write(argv[2], uniform.finish()) && labels_ok ? 0
                                                                                              : 1;
}
