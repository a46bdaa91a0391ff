// SPDX-License-Identifier: Apache-2.0
// Sets an environment variable for a scope (the plan reads SIFLOW_SIMD_ISA, SIFLOW_CONV,
// SIFLOW_LAYOUT and SIFLOW_VELOCITY_ON_CALLER at creation) and restores it, set or unset, when
// the scope ends, also when a REQUIRE leaves it early.
#pragma once

#include <cstdlib>
#include <string>

namespace test_support {

struct EnvGuard {
  std::string name, saved;
  bool had;
  explicit EnvGuard(const char* n) : name(n) {
    const char* s = std::getenv(n);
    had = s != nullptr;
    if (s) saved = s;
  }
  ~EnvGuard() { set(had ? saved.c_str() : nullptr); }
  // Sets the variable to value, or unsets it for nullptr.
  void set(const char* value) const {
    if (value)
      setenv(name.c_str(), value, 1);
    else
      unsetenv(name.c_str());
  }
};

}  // namespace test_support
