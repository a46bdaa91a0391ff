// SPDX-License-Identifier: Apache-2.0
// Install-tree consumer (C++): builds a tiny model with siflow::ModelBuilder, loads, plans and
// samples 4 points using only the installed headers and library. Exit 0 iff every step worked.
// With a path argument it also writes the model there (for the C consumer).
#include <cmath>
#include <cstdio>
#include <memory>
#include <siflow/model_builder.hpp>
#include <siflow/siflow.hpp>
#include <vector>

namespace {

int fail(const char* what, const siflow::Status& s) {
  std::fprintf(stderr, "consumer: %s failed: %s (%s)\n", what, s.message(),
               siflow::status_code_name(s.code()));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // v(t, x) = W2 tanh(W1 [x, t] + b1) + b2 with d = 2 and 4 hidden units.
  siflow::ModelBuilder builder(2);
  const uint32_t xt = builder.concat({builder.x(), builder.t()});
  const std::vector<float> w1 = {0.5f,  -0.25f, 0.1f, 0.3f,  0.2f, -0.4f,
                                 -0.6f, 0.1f,   0.2f, 0.05f, 0.5f, 0.3f};
  const uint32_t h = builder.unary(builder.fully_connected(xt, 4, w1, {0.1f, 0.0f, -0.1f, 0.2f}),
                                   siflow::UnaryKind::kTanh);
  const std::vector<float> w2 = {0.3f, -0.2f, 0.1f, 0.4f, -0.1f, 0.25f, 0.2f, -0.3f};
  builder.set_output(builder.fully_connected(h, 2, w2, {0.05f, -0.05f}));
  builder.set_name("install-consumer");
  builder.add_metadata("purpose", "install tree test");
  const std::vector<uint8_t> bytes = builder.finish();

  if (argc > 1) {
    const siflow::Status s = siflow::write_file_atomic(argv[1], bytes.data(), bytes.size());
    if (!s.ok()) return fail("write_file_atomic", s);
  }

  std::unique_ptr<siflow::Model> model;
  siflow::Status s = siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model);
  if (!s.ok()) return fail("Model::load", s);
  if (model->info().dim != 2 || model->info().node_count != 4) {
    std::fprintf(stderr, "consumer: unexpected model info (dim %u, %u nodes)\n", model->info().dim,
                 model->info().node_count);
    return 1;
  }

  siflow::PlanOptions plan_options;
  plan_options.max_batch = 4;
  size_t bytes_needed = 0;
  if (!(s = siflow::arena_bytes(*model, plan_options, &bytes_needed)).ok())
    return fail("arena_bytes", s);
  std::unique_ptr<siflow::Plan> plan;
  if (!(s = siflow::Plan::create(*model, plan_options, nullptr, 0, &plan)).ok())
    return fail("Plan::create", s);

  siflow::SampleOptions sample_options;
  sample_options.seed = 7;
  sample_options.ode.steps = 20;
  float x[4 * 2];
  double logp[4];
  if (!(s = plan->sample(4, sample_options, x, logp)).ok()) return fail("Plan::sample", s);
  for (int i = 0; i < 4; ++i) {
    if (!std::isfinite(x[2 * i]) || !std::isfinite(x[2 * i + 1]) || !std::isfinite(logp[i])) {
      std::fprintf(stderr, "consumer: sample %d is not finite\n", i);
      return 1;
    }
    std::printf("sample %d: %.6f %.6f logp %.6f\n", i, x[2 * i], x[2 * i + 1], logp[i]);
  }
  std::printf("siflow %d.%d.%d consumer ok (arena %zu bytes)\n", siflow::kVersionMajor,
              siflow::kVersionMinor, siflow::kVersionPatch, bytes_needed);
  return 0;
}
