// SPDX-License-Identifier: Apache-2.0
// Seeded random test data shared by the unit tests: n floats drawn from N(0, scale^2) by
// std::mt19937 (the same values on every platform's standard library for a given seed), or
// uniform in [lo, hi) from a caller's generator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace test_support {

inline std::vector<float> random_normals(size_t n, uint32_t seed, double scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(g(rng));
  return v;
}

// std::uniform_real_distribution's algorithm is not specified, so these values may differ
// between standard libraries: for tests that compare two computations on the same draws.
inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

}  // namespace test_support
