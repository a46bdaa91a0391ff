// SPDX-License-Identifier: Apache-2.0
// The C API over the C++ one: converts options and statuses; owns nothing of its own beyond
// the handles. Never lets an exception or a null pointer through.
#include <cstring>
#include <new>
#include <type_traits>

#include "siflow/siflow.h"
#include "siflow/siflow.hpp"

// The C handles are the C++ objects themselves (a siflow_model* is a siflow::Model*, a
// siflow_plan* a siflow::Plan*): no wrapper is allocated, so a plan made in the caller's memory
// takes no heap at all. The structs are never defined; only pointers are converted.
namespace {
siflow::Model* cpp(siflow_model* m) { return reinterpret_cast<siflow::Model*>(m); }
const siflow::Model* cpp(const siflow_model* m) {
  return reinterpret_cast<const siflow::Model*>(m);
}
siflow::Plan* cpp(siflow_plan* p) { return reinterpret_cast<siflow::Plan*>(p); }
const siflow::Plan* cpp(const siflow_plan* p) { return reinterpret_cast<const siflow::Plan*>(p); }
}  // namespace

namespace {

// The integer in a C enum field. A C caller may store any value of the enum's storage type
// there (int on most ABIs, one byte with the short enums of bare-metal Arm EABI); reading it
// through the C++ enum type would be undefined for values outside the enumerators, so copy the
// bytes into an integer of the field's own size. The C++ option enums are 8-bit; a value outside
// [0, 255] becomes 255, which no enumerator uses, so the runtime's option checks refuse it
// instead of wrapping it onto a valid value.
template <typename To, typename E>
To from_c_enum(const E& field) {
  using Raw = std::conditional_t<sizeof(E) == 1, int8_t,
                                 std::conditional_t<sizeof(E) == 2, int16_t, int32_t>>;
  static_assert(sizeof(E) == sizeof(Raw), "unexpected C enum size");
  Raw raw;
  std::memcpy(&raw, &field, sizeof raw);
  const long v = raw;
  return static_cast<To>(v < 0 || v > 255 ? 255 : v);
}

using siflow::Status;
using siflow::StatusCode;

siflow_status report(const Status& s, siflow_error* error) {
  if (error) {
    error->code = static_cast<siflow_status>(s.code());
    std::memcpy(error->message, s.message(), sizeof error->message);
    error->message[sizeof error->message - 1] = '\0';
  }
  return static_cast<siflow_status>(s.code());
}

siflow_status invalid(const char* what, siflow_error* error) {
  return report(Status::error(StatusCode::kInvalidArgument, "%s", what), error);
}

bool options_ok(const siflow_run_options* o) {
  return o && o->struct_size >= sizeof(uint32_t) && o->struct_size <= sizeof(siflow_run_options);
}

struct Converted {
  siflow::Conditioning conditioning;
  double temperature;
  siflow::OdeOptions ode;
  siflow::DivergenceOptions divergence;
  siflow::SdeOptions sde;
  double time;
  uint64_t seed;
};

struct ProgressBridge {
  siflow_progress_fn fn;
  void* user;
  static bool call(void* self, uint64_t done, uint64_t total) {
    const ProgressBridge* b = static_cast<const ProgressBridge*>(self);
    return b->fn(b->user, done, total) != 0;
  }
};

// Reads the options a caller's struct_size covers; fields past it keep their defaults.
Converted convert(const siflow_run_options* in, ProgressBridge* bridge) {
  siflow_run_options o;
  siflow_run_options_init(&o);
  std::memcpy(&o, in, in->struct_size);
  Converted c;
  c.ode.method = from_c_enum<siflow::Method>(o.method);
  c.ode.steps = o.steps;
  c.ode.grid = o.grid;
  c.ode.grid_size = o.grid_size;
  c.ode.grid_kind = from_c_enum<siflow::GridKind>(o.grid_kind);
  c.ode.grid_param = o.grid_param;
  c.ode.rtol = o.rtol;
  c.ode.atol = o.atol;
  c.ode.max_steps = o.max_steps;
  c.ode.solver = o.solver;
  if (o.progress) {
    *bridge = ProgressBridge{o.progress, o.progress_user};
    c.ode.progress = &ProgressBridge::call;
    c.ode.progress_user = bridge;
  }
  c.divergence.mode = from_c_enum<siflow::DivergenceMode>(o.divergence);
  c.divergence.probes = o.probes;
  c.divergence.probe = from_c_enum<siflow::ProbeKind>(o.probe);
  c.divergence.seed = o.seed;
  c.sde.epsilon = o.sde_epsilon;
  c.sde.schedule = from_c_enum<siflow::EpsilonSchedule>(o.sde_schedule);
  c.sde.stop_delta = o.sde_stop_delta;
  c.sde.method = from_c_enum<siflow::SdeMethod>(o.sde_method);
  c.time = o.time;
  c.seed = o.seed;
  c.conditioning.labels = o.labels;
  c.conditioning.label = o.label;
  c.conditioning.cond = o.cond;
  c.temperature = o.temperature;
  return c;
}

siflow::PlanOptions convert(const siflow_plan_options* in) {
  siflow_plan_options o;
  siflow_plan_options_init(&o);
  std::memcpy(&o, in, in->struct_size);
  siflow::PlanOptions p;
  p.max_batch = o.max_batch;
  p.divergence = from_c_enum<siflow::DivergenceMode>(o.divergence);
  p.max_probes = o.max_probes;
  p.threads = o.threads;
  p.backend = from_c_enum<siflow::Backend>(o.backend);
  p.tune = o.tune != 0;
  p.precision = from_c_enum<siflow::Precision>(o.precision);
  p.tangent_block = o.tangent_block;
  p.guidance = o.guidance;
  p.block_rows = o.block_rows;
  return p;
}

bool plan_options_ok(const siflow_plan_options* o) {
  return o && o->struct_size >= sizeof(uint32_t) && o->struct_size <= sizeof(siflow_plan_options);
}

}  // namespace

extern "C" {

// The version is stated in both public headers: they must agree.
static_assert(sizeof(SIFLOW_VERSION_STRING) == 6 &&
                  SIFLOW_VERSION_STRING[0] - '0' == siflow::kVersionMajor &&
                  SIFLOW_VERSION_STRING[2] - '0' == siflow::kVersionMinor &&
                  SIFLOW_VERSION_STRING[4] - '0' == siflow::kVersionPatch,
              "SIFLOW_VERSION_STRING (siflow.h) differs from kVersion* (siflow.hpp)");
const char* siflow_version(void) { return SIFLOW_VERSION_STRING; }

void siflow_plan_options_init(siflow_plan_options* o) {
  if (!o) return;
  std::memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->max_batch = 256;
  o->divergence = SIFLOW_DIVERGENCE_EXACT;
  o->max_probes = 1;
  o->threads = 1;
  o->backend = SIFLOW_BACKEND_AUTO;
  o->tune = 0;
  o->precision = SIFLOW_PRECISION_FP32;
  o->tangent_block = 0;
  o->guidance = 1.0;
  o->block_rows = 0;
}

void siflow_run_options_init(siflow_run_options* o) {
  if (!o) return;
  std::memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->method = SIFLOW_RK4;
  o->steps = 50;
  o->divergence = SIFLOW_DIVERGENCE_EXACT;
  o->probes = 1;
  o->probe = SIFLOW_PROBE_RADEMACHER;
  o->time = -1.0;
  o->label = -1;
  o->temperature = 1.0;
  o->sde_schedule = SIFLOW_EPS_PROPORTIONAL_TO_A;
  o->sde_method = SIFLOW_SDE_HEUN;
  o->grid_kind = SIFLOW_GRID_UNIFORM;
  o->grid_param = 0.0;
  o->rtol = 1e-6;
  o->atol = 1e-6;
  o->max_steps = 100000;
}

siflow_status siflow_model_load(const void* bytes, size_t size, int allow_copy, siflow_model** out,
                                siflow_error* error) {
  if (!out) return invalid("siflow_model_load: out is null", error);
  *out = nullptr;
  siflow::LoadOptions options;
  options.allow_copy = allow_copy != 0;
  std::unique_ptr<siflow::Model> model;
  Status s = siflow::Model::load(bytes, size, options, &model);
  if (!s.ok()) return report(s, error);
  *out = reinterpret_cast<siflow_model*>(model.release());
  return SIFLOW_OK;
}

siflow_status siflow_model_memory_bytes(const void* bytes, size_t size, size_t* out,
                                        siflow_error* error) {
  if (!out) return invalid("siflow_model_memory_bytes: out is null", error);
  *out = 0;
  return report(siflow::Model::memory_bytes(bytes, size, siflow::LoadOptions(), out), error);
}

siflow_status siflow_model_load_in(const void* bytes, size_t size, void* memory, size_t memory_size,
                                   siflow_model** out, siflow_error* error) {
  if (!out) return invalid("siflow_model_load_in: out is null", error);
  *out = nullptr;
  if (!memory) return invalid("siflow_model_load_in: memory is null", error);
  siflow::LoadOptions options;
  options.memory = memory;
  options.memory_size = memory_size;
  std::unique_ptr<siflow::Model> model;
  Status s = siflow::Model::load(bytes, size, options, &model);
  if (!s.ok()) return report(s, error);
  *out = reinterpret_cast<siflow_model*>(model.release());
  return SIFLOW_OK;
}

siflow_status siflow_model_load_file(const char* path, siflow_model** out, siflow_error* error) {
  if (!out) return invalid("siflow_model_load_file: out is null", error);
  *out = nullptr;
  std::unique_ptr<siflow::Model> model;
  Status s = siflow::Model::load_file(path, siflow::LoadOptions(), &model);
  if (!s.ok()) return report(s, error);
  *out = reinterpret_cast<siflow_model*>(model.release());
  return SIFLOW_OK;
}

void siflow_model_free(siflow_model* model) { delete cpp(model); }

uint32_t siflow_model_dim(const siflow_model* model) { return model ? cpp(model)->info().dim : 0; }

siflow_status siflow_arena_bytes(const siflow_model* model, const siflow_plan_options* options,
                                 size_t* bytes, siflow_error* error) {
  if (!model) return invalid("siflow_arena_bytes: model is null", error);
  if (!plan_options_ok(options))
    return invalid("siflow_arena_bytes: options are null or struct_size is wrong", error);
  return report(siflow::arena_bytes(*cpp(model), convert(options), bytes), error);
}

siflow_status siflow_plan_create(const siflow_model* model, const siflow_plan_options* options,
                                 void* arena, size_t arena_size, siflow_plan** out,
                                 siflow_error* error) {
  if (!out) return invalid("siflow_plan_create: out is null", error);
  *out = nullptr;
  if (!model) return invalid("siflow_plan_create: model is null", error);
  if (!plan_options_ok(options))
    return invalid("siflow_plan_create: options are null or struct_size is wrong", error);
  std::unique_ptr<siflow::Plan> plan;
  Status s = siflow::Plan::create(*cpp(model), convert(options), arena, arena_size, &plan);
  if (!s.ok()) return report(s, error);
  *out = reinterpret_cast<siflow_plan*>(plan.release());
  return SIFLOW_OK;
}

void siflow_plan_free(siflow_plan* plan) { delete cpp(plan); }

uint64_t siflow_plan_evaluations(const siflow_plan* plan) {
  return plan ? cpp(plan)->evaluations() : 0;
}

const char* siflow_plan_node_kernel(const siflow_plan* plan, uint32_t node) {
  return plan ? cpp(plan)->node_kernel(node) : "";
}

siflow_status siflow_sample(siflow_plan* plan, size_t n, const siflow_run_options* options,
                            float* x, double* logp, siflow_error* error) {
  if (!plan) return invalid("siflow_sample: plan is null", error);
  if (!options_ok(options))
    return invalid("siflow_sample: options are null or struct_size is wrong", error);
  ProgressBridge bridge{};
  const Converted c = convert(options, &bridge);
  siflow::SampleOptions s;
  s.seed = c.seed;
  s.ode = c.ode;
  s.sde = c.sde;
  s.divergence = c.divergence;
  s.temperature = c.temperature;
  return report(cpp(plan)->sample(n, s, c.conditioning, x, logp), error);
}

siflow_status siflow_decode(siflow_plan* plan, size_t n, const float* x0,
                            const siflow_run_options* options, float* x1, double* logp,
                            siflow_error* error) {
  if (!plan) return invalid("siflow_decode: plan is null", error);
  if (!options_ok(options))
    return invalid("siflow_decode: options are null or struct_size is wrong", error);
  ProgressBridge bridge{};
  const Converted c = convert(options, &bridge);
  return report(cpp(plan)->decode(n, x0, c.ode, c.divergence, c.conditioning, x1, logp), error);
}

siflow_status siflow_encode(siflow_plan* plan, size_t n, const float* x1,
                            const siflow_run_options* options, float* x0, siflow_error* error) {
  if (!plan) return invalid("siflow_encode: plan is null", error);
  if (!options_ok(options))
    return invalid("siflow_encode: options are null or struct_size is wrong", error);
  ProgressBridge bridge{};
  const Converted c = convert(options, &bridge);
  return report(cpp(plan)->encode(n, x1, c.ode, c.conditioning, x0), error);
}

siflow_status siflow_log_prob(siflow_plan* plan, size_t n, const float* x,
                              const siflow_run_options* options, double* logp,
                              siflow_error* error) {
  if (!plan) return invalid("siflow_log_prob: plan is null", error);
  if (!options_ok(options))
    return invalid("siflow_log_prob: options are null or struct_size is wrong", error);
  ProgressBridge bridge{};
  const Converted c = convert(options, &bridge);
  siflow::LogProbOptions o;
  o.ode = c.ode;
  o.divergence = c.divergence;
  o.time = c.time;
  return report(cpp(plan)->log_prob(n, x, o, c.conditioning, logp), error);
}

siflow_status siflow_velocity(siflow_plan* plan, size_t n, const float* t, const float* y, float* v,
                              siflow_error* error) {
  if (!plan) return invalid("siflow_velocity: plan is null", error);
  return report(cpp(plan)->velocity(n, t, y, v), error);
}

siflow_status siflow_velocity_conditioned(siflow_plan* plan, size_t n, const float* t,
                                          const float* y, const siflow_run_options* options,
                                          float* v, siflow_error* error) {
  if (!plan) return invalid("siflow_velocity_conditioned: plan is null", error);
  if (!options_ok(options))
    return invalid("siflow_velocity_conditioned: options are null or struct_size is wrong", error);
  ProgressBridge bridge{};
  const Converted c = convert(options, &bridge);
  return report(cpp(plan)->velocity(n, t, y, c.conditioning, v), error);
}

siflow_status siflow_model_get_info(const siflow_model* model, siflow_model_info* info,
                                    siflow_error* error) {
  if (!model) return invalid("siflow_model_get_info: model is null", error);
  if (!info || info->struct_size < sizeof(uint32_t) || info->struct_size > sizeof *info)
    return invalid("siflow_model_get_info: info is null or struct_size is wrong", error);
  const siflow::ModelInfo& m = cpp(model)->info();
  siflow_model_info o;
  std::memset(&o, 0, sizeof o);
  o.struct_size = info->struct_size;
  o.dim = m.dim;
  o.name = m.name;
  o.format_major = m.format_major;
  o.format_minor = m.format_minor;
  o.node_count = m.node_count;
  o.parameter_count = m.parameter_count;
  o.f16_parameter_count = m.f16_parameter_count;
  o.weight_bytes = m.weight_bytes;
  o.expanded_bytes = m.expanded_bytes;
  o.held_bytes = m.held_bytes;
  o.packed_bytes = m.packed_bytes;
  o.interpolant = static_cast<siflow_interpolant>(m.interpolant);
  o.fourier_terms = m.fourier_terms;
  o.base = static_cast<siflow_base>(m.base);
  o.normalized = m.normalized ? 1 : 0;
  o.score_available = m.score_available ? 1 : 0;
  o.time_start = m.time_start;
  o.time_end = m.time_end;
  o.test_vector_count = m.test_vector_count;
  o.test_trajectory_count = m.test_trajectory_count;
  o.metadata_count = m.metadata_count;
  o.solver_count = m.solver_count;
  o.takes_labels = m.takes_labels ? 1 : 0;
  o.label_classes = m.label_classes;
  o.null_label = m.null_label;
  o.cond_width = m.cond_width;
  o.has_null_cond = m.has_null_cond ? 1 : 0;
  o.sample_rank = m.x_rank;
  for (int k = 0; k < 3; ++k) o.sample_shape[k] = m.x_shape[k];
  std::memcpy(info, &o, info->struct_size);
  return SIFLOW_OK;
}

int siflow_model_metadata(const siflow_model* model, uint32_t i, const char** key,
                          const char** value) {
  const char* k = "";
  const char* v = "";
  const bool found = model && cpp(model)->metadata(i, &k, &v);
  if (key) *key = found ? k : "";
  if (value) *value = found ? v : "";
  return found ? 1 : 0;
}

int siflow_model_solver(const siflow_model* model, uint32_t i, const char** name, uint32_t* nfe,
                        double* sample_error) {
  siflow::SolverInfo info;
  const bool found = model && cpp(model)->solver(i, &info);
  if (name) *name = found ? info.name : "";
  if (nfe) *nfe = found ? info.nfe : 0;
  if (sample_error) *sample_error = found ? info.sample_error : 0.0;
  return found ? 1 : 0;
}

int siflow_model_node(const siflow_model* model, uint32_t i, const char** op, uint32_t* in_width,
                      uint32_t* width) {
  const char* o = "";
  uint32_t in = 0, out = 0;
  const bool found = model && cpp(model)->node(i, &o, &in, &out);
  if (op) *op = found ? o : "";
  if (in_width) *in_width = found ? in : 0;
  if (width) *width = found ? out : 0;
  return found ? 1 : 0;
}

siflow_status siflow_validate(const siflow_model* model, const siflow_plan_options* options,
                              siflow_progress_fn progress, void* progress_user,
                              siflow_validation_report* out, siflow_error* error) {
  if (!model) return invalid("siflow_validate: model is null", error);
  if (options && !plan_options_ok(options))
    return invalid("siflow_validate: options struct_size is wrong", error);
  if (!out || out->struct_size < sizeof(uint32_t) || out->struct_size > sizeof *out)
    return invalid("siflow_validate: report is null or struct_size is wrong", error);
  siflow_plan_options defaults;
  siflow_plan_options_init(&defaults);
  siflow::ValidationReport r;
  ProgressBridge bridge = {progress, progress_user};
  const Status s =
      siflow::validate_embedded(*cpp(model), convert(options ? options : &defaults), &r,
                                progress ? &ProgressBridge::call : nullptr, &bridge);
  if (!s.ok()) return report(s, error);
  siflow_validation_report o;
  std::memset(&o, 0, sizeof o);
  o.struct_size = out->struct_size;
  o.velocity_count = r.velocity_count;
  o.velocity_max_error = r.velocity_max_error;
  o.velocity_tolerance = r.velocity_tolerance;
  o.velocity_ok = r.velocity_ok ? 1 : 0;
  o.trajectory_count = r.trajectory_count;
  o.trajectory_steps = r.trajectory_steps;
  o.trajectory_max_error = r.trajectory_max_error;
  o.trajectory_tolerance = r.trajectory_tolerance;
  o.trajectory_ok = r.trajectory_ok ? 1 : 0;
  o.solver_count = r.solver_count;
  o.solver_max_error = r.solver_max_error;
  o.solver_tolerance = r.solver_tolerance;
  o.solver_ok = r.solver_ok ? 1 : 0;
  o.solver_worst = r.solver_worst;
  std::memcpy(out, &o, out->struct_size);
  return SIFLOW_OK;
}

}  // extern "C"
