// SPDX-License-Identifier: Apache-2.0
// The small convolution chain test_conv_nhwc and test_conv_wino run in plans: x [3, 7, 5];
// h1 = conv 3 -> 20 (3x3, pad 1); silu; h2 = conv 20 -> 37 (3x3, stride 2: 4 x 3); silu;
// h3 = conv 37 -> 70 (`middle`: 1x1 without padding, or 3x3 with pad 1); silu; h4 = conv 70 -> 20
// (3x3) on 4 x 3; silu; output = transposed conv 20 -> 3 stride 2 back to 7 x 5, plus a conv of h1
// 20 -> 3 (the skip) added. Channel counts not multiples of a vector, odd H and W.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "siflow/model_builder.hpp"
#include "support/conv_cases.hpp"

namespace test_support {

inline std::vector<uint8_t> conv_chain_model(uint32_t seed, uint32_t middle) {
  std::mt19937 rng(seed);
  siflow::ModelBuilder b(3 * 7 * 5);
  b.set_x_shape({3, 7, 5});
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  siflow::ImageWindow down = same;
  down.strides = {2, 2};
  auto conv = [&](uint32_t in, uint32_t cin, uint32_t cout, uint32_t k,
                  const siflow::ImageWindow& win) {
    return b.conv2d(in, cout, {k, k}, random_floats(size_t{cout} * cin * k * k, rng, 0.6f / cin),
                    random_floats(cout, rng, 0.1f), win);
  };
  const uint32_t h1 = b.unary(conv(b.x(), 3, 20, 3, same), siflow::UnaryKind::kSilu);
  uint32_t h = b.unary(conv(h1, 20, 37, 3, down), siflow::UnaryKind::kSilu);
  h = b.unary(conv(h, 37, 70, middle, middle == 1 ? siflow::ImageWindow() : same),
              siflow::UnaryKind::kSilu);
  h = b.unary(conv(h, 70, 20, 3, same), siflow::UnaryKind::kSilu);
  siflow::ImageWindow up = same;
  up.strides = {2, 2};
  const uint32_t back = b.conv_transpose2d(h, 3, {3, 3}, random_floats(20 * 3 * 9, rng, 0.05f),
                                           random_floats(3, rng, 0.1f), up);
  b.set_output(b.add(back, conv(h1, 20, 3, 3, same)));
  return b.finish();
}

}  // namespace test_support
