// SPDX-License-Identifier: Apache-2.0
// The largest difference between two runs' outputs and the reference's scale: what the backend
// and layout comparisons bound as worst <= bound * scale.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace test_support {

struct VelocityGap {
  double worst = 0;  // max |fast[i] - ref[i]|
  double scale = 0;  // max |ref[i]|
};

inline VelocityGap velocity_gap(const std::vector<float>& fast, const std::vector<float>& ref) {
  VelocityGap g;
  for (size_t i = 0; i < ref.size(); ++i) {
    g.worst = std::max(g.worst, double{std::fabs(fast[i] - ref[i])});
    g.scale = std::max(g.scale, double{std::fabs(ref[i])});
  }
  return g;
}

}  // namespace test_support
