// SPDX-License-Identifier: Apache-2.0
// Counter-based randomness (math/random.hpp): Philox4x32-10 known answers, the documented
// counter/key layout, lane -> uniform/sign mapping, normal moments and per-sample reproducibility.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "math/random.hpp"
#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"

namespace {

using siflow::PhiloxBlock;

void check_philox(std::vector<uint32_t> counter, std::vector<uint32_t> key,
                  std::vector<uint32_t> expected) {
  const PhiloxBlock b = siflow::philox4x32_10(counter.data(), key.data());
  for (int i = 0; i < 4; ++i) {
    INFO("lane " << i);
    CHECK(b.v[i] == expected[i]);
  }
}

}  // namespace

TEST_CASE("Philox4x32-10 reproduces the Random123 known-answer vectors") {
  check_philox({0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  check_philox({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
               {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  check_philox({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
               {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE(
    "random_block keys Philox with the seed and counts (block, sample lo, sample hi, "
    "stream)") {
  const uint64_t seed = 0x0123456789abcdefull, sample = 0xfedcba9876543210ull;
  const uint32_t key[2] = {0x89abcdefu, 0x01234567u};
  const uint32_t counter[4] = {7u, 0x76543210u, 0xfedcba98u, siflow::kStreamSdeNoise};
  const PhiloxBlock want = siflow::philox4x32_10(counter, key);
  const PhiloxBlock got = siflow::random_block(seed, 7, sample, siflow::kStreamSdeNoise);
  for (int i = 0; i < 4; ++i) CHECK(got.v[i] == want.v[i]);
  // Every coordinate matters: changing any one of them changes the block.
  const PhiloxBlock others[] = {siflow::random_block(seed + 1, 7, sample, 2),
                                siflow::random_block(seed, 8, sample, 2),
                                siflow::random_block(seed, 7, sample + 1, 2),
                                siflow::random_block(seed, 7, sample ^ (1ull << 40), 2),
                                siflow::random_block(seed, 7, sample, 1)};
  for (const PhiloxBlock& o : others) CHECK(o.v[0] != want.v[0]);
}

TEST_CASE("lane_uniform maps every 32-bit lane into the open interval (0, 1) in double") {
  using siflow::lane_uniform;
  CHECK(lane_uniform(0u) == std::ldexp(0.5, -24));  // smallest: half a step above 0
  CHECK(lane_uniform(0xffu) == lane_uniform(0u));   // the low 8 bits are dropped
  CHECK(lane_uniform(0xffffffffu) == 1.0 - std::ldexp(0.5, -24));
  CHECK(lane_uniform(0x80000000u) == 0.5 + std::ldexp(0.5, -24));
  for (uint64_t x = 0; x <= 0xffffffffull; x += 0x10001ull) {
    const double u = lane_uniform(static_cast<uint32_t>(x));
    REQUIRE(u > 0.0);
    REQUIRE(u < 1.0);
  }
}

// Regression test (this was a bug, now fixed): random.hpp says lane_uniform is "exact in float and
// double", but
// ((x >> 8) + 0.5) * 2^-24 = (2m + 1) 2^-25 needs 25 significant bits once u >= 0.5, so the
// float conversion in fill_uniforms<float> (used by Plan::sample for uniform bases) rounds, and
// the top lane values 0xffffff00..0xffffffff round to exactly 1.0f, outside (0, 1). Seed 0,
// sample 5150801, stream 0, block 0 has lane 0 = 0xffffff88: a 1-d uniform base then draws
// exactly `high`.
TEST_CASE("fill_uniforms<float> stays inside the open interval (0, 1)") {
  const PhiloxBlock b = siflow::random_block(0, 0, 5150801, siflow::kStreamBase);
  REQUIRE(b.v[0] == 0xffffff88u);  // the witness is what this test says it is
  float u = 0.0f;
  siflow::fill_uniforms(0, 5150801, siflow::kStreamBase, 0, &u, 1);
  CHECK(u > 0.0f);
  CHECK(u < 1.0f);
}

// The same bug seen through the API: a 1-d uniform base on [0, 1] with a zero velocity samples
// its upper bound exactly (x = 1, log p = 0) for seed 0, sample 5150801.
TEST_CASE("Plan::sample never draws a uniform base's upper bound") {
  siflow::ModelBuilder b(1);
  b.set_output(b.fully_connected(b.x(), 1, {0.0f}));  // v = 0: samples are the base draws
  b.set_uniform_base({0.0f}, {1.0f});
  const std::vector<uint8_t> bytes = b.finish();
  std::unique_ptr<siflow::Model> model;
  REQUIRE(siflow::Model::load(bytes.data(), bytes.size(), siflow::LoadOptions(), &model).ok());
  std::unique_ptr<siflow::Plan> plan;
  REQUIRE(siflow::Plan::create(*model, siflow::PlanOptions(), nullptr, 0, &plan).ok());
  siflow::SampleOptions so;
  so.seed = 0;
  so.first_index = 5150801;
  so.ode.steps = 1;
  float x = -1.0f;
  REQUIRE(plan->sample(1, so, &x, nullptr).ok());
  CHECK(x > 0.0f);
  CHECK(x < 1.0f);
}

TEST_CASE("fill_uniforms<double> takes component k from block k/4, lane k%4") {
  const uint64_t seed = 99, sample = 12345;
  std::vector<double> u(11);
  siflow::fill_uniforms(seed, sample, siflow::kStreamBase, 3, u.data(), 11);
  for (uint32_t k = 0; k < 11; ++k) {
    const PhiloxBlock b = siflow::random_block(seed, 3 + k / 4, sample, siflow::kStreamBase);
    CHECK(u[k] == siflow::lane_uniform(b.v[k % 4]));
  }
}

TEST_CASE("lane_sign is -1 exactly when the top bit is set, and fill_signs follows the layout") {
  CHECK(siflow::lane_sign(0u) == 1.0);
  CHECK(siflow::lane_sign(0x7fffffffu) == 1.0);
  CHECK(siflow::lane_sign(0x80000000u) == -1.0);
  CHECK(siflow::lane_sign(0xffffffffu) == -1.0);
  std::vector<float> z(9);
  siflow::fill_signs(5, 6, siflow::kStreamProbe, 2, z.data(), 9);
  for (uint32_t k = 0; k < 9; ++k) {
    const PhiloxBlock b = siflow::random_block(5, 2 + k / 4, 6, siflow::kStreamProbe);
    CHECK(z[k] == static_cast<float>(siflow::lane_sign(b.v[k % 4])));
  }
}

TEST_CASE("Rademacher signs are +-1 and balanced within 5 standard errors") {
  // 10^6 signs from 1000 samples x 1000 components: a fair sign has count(+1) ~ n/2 with
  // standard deviation sqrt(n)/2; 5 of those leave a false-failure chance below 1e-6.
  const uint32_t d = 1000;
  std::vector<double> z(d);
  double plus = 0, n = 0, lag_product = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    siflow::fill_signs(2024, i, siflow::kStreamProbe, 0, z.data(), d);
    for (uint32_t k = 0; k < d; ++k) {
      REQUIRE((z[k] == 1.0 || z[k] == -1.0));
      plus += z[k] > 0;
      if (k > 0) lag_product += z[k] * z[k - 1];
      ++n;
    }
  }
  CHECK(std::fabs(plus - n / 2) < 5 * std::sqrt(n) / 2);
  // Neighbouring components uncorrelated: the mean of z_k z_{k-1} has standard error 1/sqrt(n).
  CHECK(std::fabs(lag_product / n) < 5 / std::sqrt(n));
}

TEST_CASE("fill_normals has mean 0, variance 1 and normal kurtosis within 5 standard errors") {
  // 10^6 draws: sample mean has standard error 1/sqrt(n); the sample variance sqrt(2/n)
  // (Var(z^2) = 2); the fourth moment sqrt(96/n) (Var(z^4) = E z^8 - 9 = 96). 5 standard errors
  // keep the false-failure chance below 1e-6 per check.
  const uint32_t d = 100;
  std::vector<double> z(d);
  double s1 = 0, s2 = 0, s4 = 0, cross = 0, n = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    siflow::fill_normals(7, i, siflow::kStreamBase, 0, z.data(), d);
    for (uint32_t k = 0; k < d; ++k) {
      REQUIRE(std::isfinite(z[k]));
      s1 += z[k];
      s2 += z[k] * z[k];
      s4 += z[k] * z[k] * z[k] * z[k];
      if (k % 2 == 1) cross += z[k] * z[k - 1];  // the two halves of a Box-Muller pair
      ++n;
    }
  }
  CHECK(std::fabs(s1 / n) < 5 / std::sqrt(n));
  CHECK(std::fabs(s2 / n - 1.0) < 5 * std::sqrt(2.0 / n));
  CHECK(std::fabs(s4 / n - 3.0) < 5 * std::sqrt(96.0 / n));
  // Pair components are independent: E[z_a z_b] = 0 with standard error 1/sqrt(n/2).
  CHECK(std::fabs(cross / (n / 2)) < 5 / std::sqrt(n / 2));
}

TEST_CASE("fill_normals forms Box-Muller pairs from lanes (0,1) and (2,3) as documented") {
  const uint64_t seed = 3, sample = 77;
  std::vector<double> z(6);
  siflow::fill_normals(seed, sample, siflow::kStreamBase, 0, z.data(), 6);
  for (uint32_t k = 0; k < 6; k += 2) {
    const PhiloxBlock b = siflow::random_block(seed, k / 4, sample, siflow::kStreamBase);
    const uint32_t pair = (k % 4) / 2;
    const double r = std::sqrt(-2.0 * std::log(siflow::lane_uniform(b.v[2 * pair])));
    const double angle = 2.0 * M_PI * siflow::lane_uniform(b.v[2 * pair + 1]);
    // The runtime's own log/sin/cos are within a few ulp of libm's; r <= 5.8 and the angle
    // < 2 pi, so 1e-13 absolute bounds the difference.
    CHECK(std::fabs(z[k] - r * std::cos(angle)) < 1e-13);
    CHECK(std::fabs(z[k + 1] - r * std::sin(angle)) < 1e-13);
  }
}

TEST_CASE("a sample's draws depend only on its index: the same whatever other samples exist") {
  // Draw samples 0..63 in one sweep, then sample 41 alone, in a different order, with an odd
  // width and from a later first block: each must repeat the same numbers bit for bit.
  const uint32_t d = 7;
  std::vector<float> all(64 * d), alone(d), tail(d - 4);
  for (uint64_t i = 0; i < 64; ++i)
    siflow::fill_normals(11, i, siflow::kStreamBase, 0, all.data() + i * d, d);
  siflow::fill_normals(11, 41, siflow::kStreamBase, 0, alone.data(), d);
  for (uint32_t k = 0; k < d; ++k) CHECK(alone[k] == all[41 * d + k]);
  // Components 4.. come from block 1 onwards: starting at first_block 1 reproduces them.
  siflow::fill_normals(11, 41, siflow::kStreamBase, 1, tail.data(), d - 4);
  for (uint32_t k = 0; k < d - 4; ++k) CHECK(tail[k] == all[41 * d + 4 + k]);
  // A prefix is the same draws: asking for fewer components does not shift anything.
  std::vector<float> prefix(3);
  siflow::fill_normals(11, 41, siflow::kStreamBase, 0, prefix.data(), 3);
  for (uint32_t k = 0; k < 3; ++k) CHECK(prefix[k] == all[41 * d + k]);
}

TEST_CASE("streams and seeds give different draws for the same sample") {
  std::vector<double> base(8), probe(8), noise(8), other_seed(8);
  siflow::fill_normals(1, 5, siflow::kStreamBase, 0, base.data(), 8);
  siflow::fill_normals(1, 5, siflow::kStreamProbe, 0, probe.data(), 8);
  siflow::fill_normals(1, 5, siflow::kStreamSdeNoise, 0, noise.data(), 8);
  siflow::fill_normals(2, 5, siflow::kStreamBase, 0, other_seed.data(), 8);
  size_t equal = 0;
  for (int k = 0; k < 8; ++k)
    equal += (base[k] == probe[k]) + (base[k] == noise[k]) + (base[k] == other_seed[k]);
  CHECK(equal == 0);
}

TEST_CASE("blocks_per_vector is ceil(d / 4)") {
  CHECK(siflow::blocks_per_vector(1) == 1);
  CHECK(siflow::blocks_per_vector(4) == 1);
  CHECK(siflow::blocks_per_vector(5) == 2);
  CHECK(siflow::blocks_per_vector(4096) == 1024);
}
