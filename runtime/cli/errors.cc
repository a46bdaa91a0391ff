// SPDX-License-Identifier: Apache-2.0
// Formatting helpers for the CLI's error types. Never prints or exits: callers throw and
// main() reports.
#include "errors.hpp"

#include <cstdarg>
#include <cstdio>

namespace siflow::cli {

std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, args);
  va_end(args);
  return out;
}

void check(const Status& status) {
  if (!status.ok()) throw RunError(status.message());
}

}  // namespace siflow::cli
