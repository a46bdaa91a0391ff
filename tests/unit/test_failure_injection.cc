// SPDX-License-Identifier: Apache-2.0
// Failure injection: every heap allocation the runtime makes while loading a model, planning a
// run, validating and through the C API is made to fail, one at a time (support/alloc_hooks.cc).
// Each must end in a clean error naming the cause (kOutOfMemory, or kIoError where the C
// library's fopen/fread is what failed), with nothing leaked and no crash; the run where no
// allocation fails must succeed, which proves every allocation site was visited.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.h"
#include "siflow/siflow.hpp"
#include "support/alloc_hooks.hpp"
#include "support/byte_span.hpp"

namespace {

using siflow::Model;
using siflow::Plan;
using siflow::Status;
using siflow::StatusCode;

// Outcome of one scenario run, in fixed storage: nothing here may allocate while watched.
struct Outcome {
  int failed_step = -1;  // index of the first step that failed, -1 if all succeeded
  int code = 0;          // its status code
  char message[256] = {};
};

void record(Outcome* o, int step, int code, const char* message) {
  if (o->failed_step >= 0) return;
  o->failed_step = step;
  o->code = code;
  std::snprintf(o->message, sizeof o->message, "%s", message);
}

// The steps: load_file, load of a misaligned span (the copy path), Plan::create with the plan's
// own arena, a sample with log-likelihoods, validate_embedded, and the C API's load_file and
// plan_create. Stops at the first failure and releases everything it made.
Outcome scenario(const char* path, const uint8_t* misaligned, size_t size) {
  Outcome o;
  std::unique_ptr<Model> from_file, copied;
  std::unique_ptr<Plan> plan;
  Status s = Model::load_file(path, siflow::LoadOptions(), &from_file);
  if (!s.ok()) record(&o, 0, static_cast<int>(s.code()), s.message());
  if (o.failed_step < 0) {
    s = Model::load(misaligned, size, siflow::LoadOptions(), &copied);
    if (!s.ok()) record(&o, 1, static_cast<int>(s.code()), s.message());
  }
  if (o.failed_step < 0) {
    siflow::PlanOptions po;
    po.max_batch = 8;
    s = Plan::create(*copied, po, nullptr, 0, &plan);
    if (!s.ok()) record(&o, 2, static_cast<int>(s.code()), s.message());
  }
  if (o.failed_step < 0) {
    float x[16 * 2];
    double logp[16];
    siflow::SampleOptions so;
    so.ode.steps = 3;
    s = plan->sample(16, so, x, logp);
    if (!s.ok()) record(&o, 3, static_cast<int>(s.code()), s.message());
  }
  if (o.failed_step < 0) {
    siflow::ValidationReport report;
    s = siflow::validate_embedded(*from_file, &report);
    if (!s.ok()) record(&o, 4, static_cast<int>(s.code()), s.message());
  }
  if (o.failed_step < 0) {
    siflow_model* model = nullptr;
    siflow_plan* cplan = nullptr;
    siflow_error err;
    siflow_status cs = siflow_model_load_file(path, &model, &err);
    if (cs != SIFLOW_OK) record(&o, 5, cs, err.message);
    if (o.failed_step < 0) {
      siflow_plan_options po;
      siflow_plan_options_init(&po);
      cs = siflow_plan_create(model, &po, nullptr, 0, &cplan, &err);
      if (cs != SIFLOW_OK) record(&o, 6, cs, err.message);
    }
    siflow_plan_free(cplan);
    siflow_model_free(model);
  }
  return o;
}

const char* const kStepNames[] = {"load_file",         "load (copy)", "Plan::create", "sample",
                                  "validate_embedded", "C load_file", "C plan_create"};

}  // namespace

TEST_CASE("every allocation at load, plan and validate fails cleanly, one at a time, no leak") {
  siflow::ModelBuilder b(2);
  const uint32_t h =
      b.unary(b.fully_connected(b.concat({b.x(), b.t()}), 8, std::vector<float>(8 * 3, 0.25f)),
              siflow::UnaryKind::kTanh);
  b.set_output(b.fully_connected(h, 2, std::vector<float>(2 * 8, -0.1f)));
  b.set_normalization({0.5f, -1.0f}, {2.0f, 3.0f});
  b.set_velocity_tests({0.5f}, {0.1f, 0.2f}, {0.0f, 0.0f}, 1e6f);
  const std::vector<uint8_t> bytes = b.finish();
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("siflow_inject_" + std::to_string(getpid()) + ".sif"))
                               .string();
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    REQUIRE(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    REQUIRE(std::fclose(f) == 0);
  }
  const siflow_test::ByteSpan misaligned(bytes, 1);  // loads through the copy path

  int failures_seen = 0, absorbed = 0, steps_hit[7] = {};
  for (long k = 0; k < 1000; ++k) {
    siflow_test::heap_watch_begin(k);
    const Outcome o = scenario(path.c_str(), misaligned.data(), misaligned.size());
    const siflow_test::HeapReport r = siflow_test::heap_watch_end();
    INFO("allocation " << k << " failed in step "
                       << std::string(o.failed_step >= 0 ? kStepNames[o.failed_step] : "(none)")
                       << ": " << std::string(o.message));
    CHECK(r.live == 0);  // everything made before the failure was released
    if (!r.injected) {   // k is past the last allocation: the whole scenario ran
      CHECK(o.failed_step == -1);
      CHECK(k > 10);  // loads, plans and validation do allocate: the hooks saw them
      break;
    }
    ++failures_seen;
    if (o.failed_step < 0) {
      // Absorbed: glibc's stdio reads unbuffered when it cannot allocate a FILE buffer, so the
      // scenario still succeeds with correct results. Only the two load_file calls use stdio.
      ++absorbed;
      continue;
    }
    ++steps_hit[o.failed_step];
    CHECK(o.failed_step != 3);  // a run never allocates, so it cannot fail for lack of memory
    const bool out_of_memory = o.code == static_cast<int>(StatusCode::kOutOfMemory);
    const bool io = o.code == static_cast<int>(StatusCode::kIoError);
    CHECK((out_of_memory || io));
    CHECK(std::strlen(o.message) > 10);
    if (out_of_memory)
      CHECK((std::strstr(o.message, "allocate") || std::strstr(o.message, "memory")));
  }
  CHECK(absorbed <= 2);
  MESSAGE("injected " << failures_seen << " allocation failures (" << absorbed
                      << " absorbed by stdio); per step: load_file " << steps_hit[0]
                      << ", load copy " << steps_hit[1] << ", Plan::create " << steps_hit[2]
                      << ", validate " << steps_hit[4] << ", C load_file " << steps_hit[5]
                      << ", C plan_create " << steps_hit[6]);
  for (int step : {0, 1, 2, 4, 5, 6}) {
    INFO("step " << std::string(kStepNames[step]));
    CHECK(steps_hit[step] > 0);
  }
  std::remove(path.c_str());
}
