// SPDX-License-Identifier: Apache-2.0
// Shared checks of the fuzz targets: what "no silent garbage" means for a call's result.
// A violated expectation aborts, which libFuzzer reports as a crash with the input saved.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "siflow/siflow.hpp"

namespace fuzz {

// Plans whose arena exceeds this are skipped (the runtime would serve them; the fuzzer's RSS
// limit would not).
constexpr size_t kMaxArenaBytes = size_t{64} << 20;

[[noreturn]] inline void finding(const char* what, const siflow::Status& s) {
  std::fprintf(stderr, "fuzz finding: %s (status %d: %s)\n", what, static_cast<int>(s.code()),
               s.message());
  std::abort();
}

// Every failure names its cause.
inline void expect_message(const siflow::Status& s) {
  if (!s.ok() && std::strlen(s.message()) < 8) finding("error without a message", s);
}

inline bool finite(double v) { return v == v && v - v == 0.0; }

// A successful call returns only finite numbers.
inline void expect_finite(const siflow::Status& s, const float* x, size_t n,
                          const double* logp = nullptr, size_t m = 0) {
  expect_message(s);
  if (!s.ok()) return;
  for (size_t i = 0; i < n; ++i)
    if (!finite(x[i])) finding("successful call returned a non-finite point", s);
  for (size_t i = 0; i < m; ++i)
    if (!finite(logp[i])) finding("successful call returned a non-finite log-likelihood", s);
}

// log_prob may return -inf (a point outside a uniform base's box), never NaN or +inf.
inline void expect_finite_or_minus_inf(const siflow::Status& s, const double* logp, size_t n) {
  expect_message(s);
  if (!s.ok()) return;
  for (size_t i = 0; i < n; ++i)
    if (!(finite(logp[i]) || logp[i] < -1e308)) finding("log_prob returned NaN or +inf", s);
}

}  // namespace fuzz
