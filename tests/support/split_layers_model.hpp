// SPDX-License-Identifier: Apache-2.0
// The models of test_layer_threads, test_noalloc's within-layer case and test_conv_xnnpack's
// parts case: image layers sized so that each one (GroupNorm, the attention MatMuls and softmax,
// both Resizes, the broadcast Add/Mul, Concat; NHWC GroupNorm, SiLU and XNNPACK convolutions)
// splits a batch-1 sample between threads.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "siflow/model_builder.hpp"

namespace test_support {

inline std::vector<float> split_random_floats(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

// x [48, 16, 16]: GroupNorm (8 groups) plus a per-channel time embedding, attention over the 256
// positions, the residual, nearest up-sampling to 32 x 32, another per-channel embedding and a
// square there, bilinear back to 16 x 16, times x, a Concat of three and a Slice of it. Sizes
// are such that every one of these layers splits a batch-1 sample between threads.
inline std::vector<uint8_t> split_layers_model() {
  std::mt19937 rng(91);
  siflow::ModelBuilder b(48 * 16 * 16);
  b.set_x_shape({48, 16, 16});
  uint32_t h = b.group_norm(b.x(), 8, split_random_floats(48, rng, 0.5f, 1.5f),
                            split_random_floats(48, rng, -0.5f, 0.5f));
  const uint32_t e =
      b.reshape(b.mul_constant(b.t(), split_random_floats(48, rng, -1, 1)), {48, 1, 1});
  h = b.add(h, e);
  const uint32_t flat = b.reshape(h, {48, 256});
  const uint32_t qt = b.transpose(flat, {48, 256}, {1, 0});  // [256, 48]
  const uint32_t attn = b.softmax(b.matmul(qt, qt, true, 0.1f));
  const uint32_t out = b.matmul(flat, attn, true);  // [48, 256]
  h = b.add(b.reshape(out, {48, 16, 16}), b.x());
  h = b.resize(h, siflow::ModelBuilder::Resize::kNearest, 32, 32);
  const uint32_t e2 =
      b.reshape(b.mul_constant(b.t(), split_random_floats(48, rng, -1, 1)), {48, 1, 1});
  h = b.add(h, e2);
  h = b.mul(h, h);
  h = b.resize(h, siflow::ModelBuilder::Resize::kBilinear, 16, 16);
  h = b.mul(h, b.x());
  // A three-input Concat ([144, 16, 16], split between threads by input); the Slice keeps half of
  // h and half of x.
  const uint32_t cat = b.reshape(b.concat({h, b.x(), h}), {144, 16, 16});
  b.set_output(b.slice(cat, {144, 16, 16}, 0, 24, 72));
  return b.finish();
}

// x [3, 23, 21] -> conv 40 + a per-channel time embedding up-sampled (nearest) to 23 x 21 ->
// GroupNorm(10) -> SiLU -> conv 64 -> GroupNorm(8) -> SiLU -> conv 16 -> conv 3
// (test_layer_threads, test_conv_xnnpack): on the XNNPACK backend the Resize, the Add, the
// GroupNorms and the SiLUs run on NHWC tensors between the convolutions. Sized so that a batch-1
// sample splits: the Resize by output rows, the 40-channel GroupNorm into parts of 16, 16 and 8
// channels (4 channels a group, parts on whole vectors of channels), the 64-channel one into 4
// parts of 16, each SiLU into ranges of whole value chunks, the 40 -> 64 and 64 -> 16 convs into
// parts.
inline std::vector<uint8_t> nhwc_split_model() {
  std::mt19937 rng(17);
  siflow::ModelBuilder b(3 * 23 * 21);
  b.set_x_shape({3, 23, 21});
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h = b.conv2d(b.x(), 40, {3, 3}, split_random_floats(40 * 27, rng, -0.3f, 0.3f),
                        split_random_floats(40, rng, -0.1f, 0.1f), same);
  const uint32_t e =
      b.reshape(b.mul_constant(b.t(), split_random_floats(40, rng, -1, 1)), {40, 1, 1});
  h = b.add(h, b.resize(e, siflow::ModelBuilder::Resize::kNearest, 23, 21));
  h = b.group_norm(h, 10, split_random_floats(40, rng, 0.5f, 1.5f),
                   split_random_floats(40, rng, -0.5f, 0.5f));
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.conv2d(h, 64, {3, 3}, split_random_floats(64 * 40 * 9, rng, -0.1f, 0.1f),
               split_random_floats(64, rng, -0.1f, 0.1f), same);
  h = b.group_norm(h, 8, split_random_floats(64, rng, 0.5f, 1.5f),
                   split_random_floats(64, rng, -0.5f, 0.5f));
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.conv2d(h, 16, {3, 3}, split_random_floats(16 * 64 * 9, rng, -0.05f, 0.05f),
               split_random_floats(16, rng, -0.1f, 0.1f), same);
  b.set_output(b.conv2d(h, 3, {3, 3}, split_random_floats(3 * 16 * 9, rng, -0.1f, 0.1f), {}, same));
  return b.finish();
}

}  // namespace test_support
