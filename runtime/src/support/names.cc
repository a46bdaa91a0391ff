// SPDX-License-Identifier: Apache-2.0
// The one place that spells the public enums (siflow.hpp): each enum's names in one table, with
// the name and parse functions built on it. Must never hold a `default:`; a new enum value
// without a name fails the static_asserts below.
#include <cstring>

#include "siflow/siflow.hpp"

namespace siflow {
namespace {

template <size_t N>
const char* name_in(const char* const (&names)[N], unsigned value, const char* unknown) {
  return value < N ? names[value] : unknown;
}

template <typename E, size_t N>
bool parse_in(const char* const (&names)[N], const char* text, E* out) {
  if (!text || !out) return false;
  for (size_t i = 0; i < N; ++i)
    if (std::strcmp(text, names[i]) == 0) {
      *out = static_cast<E>(i);
      return true;
    }
  return false;
}

const char* const kStatusNames[] = {"ok",
                                    "invalid argument",
                                    "invalid model",
                                    "unsupported",
                                    "arena too small",
                                    "out of memory",
                                    "numerical error",
                                    "i/o error",
                                    "cancelled"};
static_assert(sizeof kStatusNames / sizeof *kStatusNames ==
                  static_cast<size_t>(StatusCode::kCancelled) + 1,
              "every StatusCode has a name");

const char* const kUnaryNames[] = {"identity",   "relu",    "leaky_relu", "elu",      "selu",
                                   "tanh",       "sigmoid", "silu",       "gelu_erf", "gelu_tanh",
                                   "softplus",   "sin",     "cos",        "log",      "sqrt",
                                   "reciprocal", "abs",     "hard_swish", "mish"};
static_assert(sizeof kUnaryNames / sizeof *kUnaryNames == static_cast<size_t>(UnaryKind::kMish) + 1,
              "every UnaryKind has a name");

const char* const kMethodNames[] = {"euler", "heun", "midpoint", "rk4",   "rk4-38",
                                    "ab2",   "ab3",  "ab4",      "dopri5"};
static_assert(sizeof kMethodNames / sizeof *kMethodNames ==
                  static_cast<size_t>(Method::kDopri5) + 1,
              "every Method has a name");

const char* const kGridKindNames[] = {"uniform", "shift", "power", "cosine"};
static_assert(sizeof kGridKindNames / sizeof *kGridKindNames ==
                  static_cast<size_t>(GridKind::kCosine) + 1,
              "every GridKind has a name");

const char* const kBackendNames[] = {"auto", "reference", "simd", "xnnpack"};
static_assert(sizeof kBackendNames / sizeof *kBackendNames ==
                  static_cast<size_t>(Backend::kXnnpack) + 1,
              "every Backend has a name");

const char* const kPrecisionNames[] = {"fp32", "bf16", "fp16", "int8"};
static_assert(sizeof kPrecisionNames / sizeof *kPrecisionNames ==
                  static_cast<size_t>(Precision::kInt8) + 1,
              "every Precision has a name");

const char* const kDivergenceNames[] = {"none", "exact", "hutchinson"};
static_assert(sizeof kDivergenceNames / sizeof *kDivergenceNames ==
                  static_cast<size_t>(DivergenceMode::kHutchinson) + 1,
              "every DivergenceMode has a name");

const char* const kProbeNames[] = {"rademacher", "gaussian"};
static_assert(sizeof kProbeNames / sizeof *kProbeNames ==
                  static_cast<size_t>(ProbeKind::kGaussian) + 1,
              "every ProbeKind has a name");

const char* const kInterpolantNames[] = {"linear", "trig", "learned"};
static_assert(sizeof kInterpolantNames / sizeof *kInterpolantNames ==
                  static_cast<size_t>(InterpolantKind::kLearnedFourier) + 1,
              "every InterpolantKind has a name");

const char* const kBaseNames[] = {"normal", "uniform"};
static_assert(sizeof kBaseNames / sizeof *kBaseNames == static_cast<size_t>(BaseKind::kUniform) + 1,
              "every BaseKind has a name");

const char* const kSdeMethodNames[] = {"em", "heun"};
static_assert(sizeof kSdeMethodNames / sizeof *kSdeMethodNames ==
                  static_cast<size_t>(SdeMethod::kHeun) + 1,
              "every SdeMethod has a name");

const char* const kScheduleNames[] = {"constant", "a"};
static_assert(sizeof kScheduleNames / sizeof *kScheduleNames ==
                  static_cast<size_t>(EpsilonSchedule::kProportionalToA) + 1,
              "every EpsilonSchedule has a name");

}  // namespace

const char* status_code_name(StatusCode code) {
  return name_in(kStatusNames, static_cast<unsigned>(code), "unknown");
}
const char* unary_kind_name(UnaryKind kind) {
  return name_in(kUnaryNames, static_cast<unsigned>(kind), "?");
}
bool parse_unary_kind(const char* text, UnaryKind* out) { return parse_in(kUnaryNames, text, out); }
const char* method_name(Method method) {
  return name_in(kMethodNames, static_cast<unsigned>(method), "unknown");
}
bool parse_method(const char* text, Method* out) { return parse_in(kMethodNames, text, out); }
const char* grid_kind_name(GridKind kind) {
  return name_in(kGridKindNames, static_cast<unsigned>(kind), "?");
}
bool parse_grid_kind(const char* text, GridKind* out) {
  return parse_in(kGridKindNames, text, out);
}
const char* backend_name(Backend backend) {
  return name_in(kBackendNames, static_cast<unsigned>(backend), "?");
}
bool parse_backend(const char* text, Backend* out) { return parse_in(kBackendNames, text, out); }
const char* precision_name(Precision precision) {
  return name_in(kPrecisionNames, static_cast<unsigned>(precision), "?");
}
bool parse_precision(const char* text, Precision* out) {
  return parse_in(kPrecisionNames, text, out);
}
const char* divergence_mode_name(DivergenceMode mode) {
  return name_in(kDivergenceNames, static_cast<unsigned>(mode), "?");
}
bool parse_divergence_mode(const char* text, DivergenceMode* out) {
  return parse_in(kDivergenceNames, text, out);
}
const char* probe_kind_name(ProbeKind kind) {
  return name_in(kProbeNames, static_cast<unsigned>(kind), "?");
}
bool parse_probe_kind(const char* text, ProbeKind* out) { return parse_in(kProbeNames, text, out); }
const char* interpolant_kind_name(InterpolantKind kind) {
  return name_in(kInterpolantNames, static_cast<unsigned>(kind), "?");
}
bool parse_interpolant_kind(const char* text, InterpolantKind* out) {
  return parse_in(kInterpolantNames, text, out);
}
const char* base_kind_name(BaseKind kind) {
  return name_in(kBaseNames, static_cast<unsigned>(kind), "?");
}
const char* sde_method_name(SdeMethod method) {
  return name_in(kSdeMethodNames, static_cast<unsigned>(method), "?");
}
bool parse_sde_method(const char* text, SdeMethod* out) {
  return parse_in(kSdeMethodNames, text, out);
}
const char* epsilon_schedule_name(EpsilonSchedule schedule) {
  return name_in(kScheduleNames, static_cast<unsigned>(schedule), "?");
}
bool parse_epsilon_schedule(const char* text, EpsilonSchedule* out) {
  return parse_in(kScheduleNames, text, out);
}

}  // namespace siflow
