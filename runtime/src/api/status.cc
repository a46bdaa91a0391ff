// SPDX-License-Identifier: Apache-2.0
// Status: an error code plus a fixed-size message, formatted without heap allocation.
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "siflow/siflow.hpp"

namespace siflow {

Status Status::error(StatusCode code, const char* format, ...) {
  Status s;
  s.code_ = code;
  va_list args;
  va_start(args, format);
  std::vsnprintf(s.message_, sizeof s.message_, format, args);
  va_end(args);
  return s;
}

Status& Status::prefix(const char* format, ...) {
  char head[sizeof message_];
  va_list args;
  va_start(args, format);
  std::vsnprintf(head, sizeof head, format, args);
  va_end(args);
  // Truncation is intended: a message keeps its first 255 characters.
  char joined[2 * sizeof message_ + 2];
  std::snprintf(joined, sizeof joined, "%s: %s", head, message_);
  std::memcpy(message_, joined, sizeof message_ - 1);
  message_[sizeof message_ - 1] = '\0';
  return *this;
}

}  // namespace siflow
