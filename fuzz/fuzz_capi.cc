// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the C API entry points with fuzzed options and inputs. Layout of an input:
// the model bytes, then (when the input is longer than kParams bytes) a kParams-byte tail of
// call parameters: which entry points run, plan and run options (including out-of-range enum
// values, struct sizes, step counts, SDE settings, batch 0), and NaN/Inf in the input points.
// Every call must return a status with a message; a successful call returns finite numbers.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz_common.hpp"
#include "siflow/siflow.h"

namespace {

constexpr size_t kParams = 32;

[[noreturn]] void finding(const char* what, const siflow_error& e) {
  std::fprintf(stderr, "fuzz finding: %s (status %d: %s)\n", what, static_cast<int>(e.code),
               e.message);
  std::abort();
}

// Reads parameter bytes in order; zeros past the end.
struct Params {
  const uint8_t* p;
  size_t n, at = 0;
  uint8_t u8() { return at < n ? p[at++] : 0; }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(u8()) << (8 * i);
    return v;
  }
  double unit() { return u8() / 255.0; }
};

void check(siflow_status s, const siflow_error& e, const float* x, size_t nx, const double* lp,
           size_t nl, bool allow_minus_inf = false) {
  if (s != SIFLOW_OK) {
    if (e.code != s || std::strlen(e.message) < 8) finding("error without code or message", e);
    return;
  }
  for (size_t i = 0; i < nx; ++i)
    if (!fuzz::finite(x[i])) finding("successful call returned a non-finite point", e);
  for (size_t i = 0; i < nl; ++i)
    if (!(fuzz::finite(lp[i]) || (allow_minus_inf && lp[i] < -1e308)))
      finding("successful call returned a bad log-likelihood", e);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t model_size = size > kParams ? size - kParams : size;
  Params prm{data + model_size, size - model_size};
  const uint8_t which = prm.u8();
  siflow_error err;
  siflow_model* model = nullptr;
  if (siflow_model_load(data, model_size, 1, &model, &err) != SIFLOW_OK) {
    if (std::strlen(err.message) < 8) finding("load error without a message", err);
    return 0;
  }
  const uint32_t dim = siflow_model_dim(model);
  // What a loaded model reports: the info struct agrees with siflow_model_dim, and every
  // metadata and node string is readable (ASan sees a string past its bytes).
  siflow_model_info info;
  info.struct_size = sizeof info;
  if (siflow_model_get_info(model, &info, &err) != SIFLOW_OK || info.dim != dim)
    finding("siflow_model_get_info failed on a loaded model", err);
  const char* key = nullptr;
  const char* value = nullptr;
  uint32_t entries = 0;
  for (; siflow_model_metadata(model, entries, &key, &value); ++entries)
    if (std::strlen(key) + std::strlen(value) > size) finding("metadata longer than the file", err);
  const char* op = nullptr;
  uint32_t nodes = 0, in_width = 0, width = 0;
  for (; siflow_model_node(model, nodes, &op, &in_width, &width); ++nodes)
    if (std::strlen(op) == 0) finding("a node without an op name", err);
  if (entries != info.metadata_count || nodes != info.node_count)
    finding("metadata or node count differs from siflow_model_info", err);
  siflow_plan_options po;
  siflow_plan_options_init(&po);
  if (which & 0x80) po.struct_size = prm.u32() % 64;             // mostly wrong sizes
  po.max_batch = prm.u8() % 6;                                   // 0 is refused
  po.divergence = static_cast<siflow_divergence>(prm.u8() % 4);  // 3 is out of range
  po.max_probes = prm.u8() % 4;
  size_t bytes = 0;
  siflow_plan* plan = nullptr;
  if (siflow_arena_bytes(model, &po, &bytes, &err) == SIFLOW_OK && bytes <= (size_t{64} << 20) &&
      dim <= 256) {
    const bool own_arena = which & 0x40;
    std::vector<uint8_t> arena(own_arena ? bytes + 63 - (prm.u8() % 2) * 64 + 64 : 0);
    const siflow_status s = siflow_plan_create(model, &po, own_arena ? arena.data() : nullptr,
                                               own_arena ? arena.size() - 64 : 0, &plan, &err);
    if (s != SIFLOW_OK && std::strlen(err.message) < 8) finding("plan error without message", err);
    if (s == SIFLOW_OK) {
      siflow_run_options ro;
      siflow_run_options_init(&ro);
      if (which & 0x20) ro.struct_size = prm.u32() % 256;
      ro.method = static_cast<siflow_method>(prm.u8() % 6);
      ro.steps = prm.u8() % 5;  // 0 is refused
      ro.seed = prm.u32();
      ro.divergence = static_cast<siflow_divergence>(prm.u8() % 4);
      ro.probes = prm.u8() % 4;
      ro.probe = static_cast<siflow_probe>(prm.u8() % 3);
      ro.time = prm.u8() % 3 == 0 ? -1.0 : prm.unit() * 1.2 - 0.1;
      ro.sde_epsilon = prm.u8() % 3 == 0 ? prm.unit() : 0.0;
      ro.sde_schedule = static_cast<siflow_eps_schedule>(prm.u8() % 3);
      ro.sde_stop_delta = prm.unit() * 0.6;
      ro.sde_method = static_cast<siflow_sde_method>(prm.u8() % 3);
      const size_t n = prm.u8() % 6;  // 0 is refused
      std::vector<float> x(n * dim + 1), y(n * dim + 1), t(n + 1);
      std::vector<double> lp(n + 1);
      for (size_t i = 0; i < n * dim; ++i) x[i] = static_cast<float>(prm.unit() * 6.0 - 3.0);
      for (size_t i = 0; i < n; ++i) t[i] = static_cast<float>(prm.unit() * 1.2 - 0.1);
      const uint8_t poison = prm.u8();
      if (n && (poison & 3) == 1) x[poison % (n * dim)] = NAN;
      if (n && (poison & 3) == 2) x[poison % (n * dim)] = -INFINITY;
      if (n && (poison & 12) == 4) t[poison % n] = NAN;
      const bool with_logp = which & 0x10;
      const size_t nl = with_logp ? n : 0;
      check(siflow_sample(plan, n, &ro, y.data(), with_logp ? lp.data() : nullptr, &err), err,
            y.data(), n * dim, lp.data(), nl);
      // Given base points may lie outside a uniform base's box: log-density -inf is the answer.
      if (which & 1)
        check(
            siflow_decode(plan, n, x.data(), &ro, y.data(), with_logp ? lp.data() : nullptr, &err),
            err, y.data(), n * dim, lp.data(), nl, true);
      if (which & 2)
        check(siflow_encode(plan, n, x.data(), &ro, y.data(), &err), err, y.data(), n * dim,
              nullptr, 0);
      if (which & 4)
        check(siflow_log_prob(plan, n, x.data(), &ro, lp.data(), &err), err, nullptr, 0, lp.data(),
              n, true);
      if (which & 8)
        check(siflow_velocity(plan, n, t.data(), x.data(), y.data(), &err), err, y.data(), n * dim,
              nullptr, 0);
      // Null pointers are refused, never dereferenced.
      if (n && siflow_velocity(plan, n, nullptr, x.data(), y.data(), &err) == SIFLOW_OK)
        finding("a null t was accepted", err);
      siflow_plan_free(plan);
    }
  }
  siflow_model_free(model);
  return 0;
}
