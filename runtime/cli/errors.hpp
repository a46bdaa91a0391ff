// SPDX-License-Identifier: Apache-2.0
// The CLI's two kinds of failure: a usage error (bad command line, exit 2) and a run error
// (a file, the model or the runtime refused, exit 1). Only main() catches them; nothing here
// may print or exit.
#pragma once

#include <stdexcept>
#include <string>

#include "siflow/siflow.hpp"

namespace siflow::cli {

// The command line is wrong: unknown option, missing or malformed value. Exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The request is well formed but cannot be served. Exit code 1.
class RunError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// printf-style formatting into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Throws a RunError carrying the status message when `status` is not ok.
void check(const Status& status);

}  // namespace siflow::cli
