// SPDX-License-Identifier: Apache-2.0
// Counter-based randomness: Philox4x32-10 and the draw layout of docs/math.md ("Randomness"),
// so that sample i gets the same numbers whatever the batch, chunking or thread count.
// Never keeps state between calls: every draw is a pure function of (seed, counter).
#pragma once

#include <cstdint>
#include <cstring>

#include "math/elementary.hpp"

namespace siflow {

// Every Philox stream the project draws from, in one list (docs/math.md, "Randomness"): the
// runtime's (0-2) and training's (10-23). A new use of randomness takes a new number here.
enum RandomStream : uint32_t {
  kStreamBase = 0,        // base draws x0 of sample i
  kStreamProbe = 1,       // Hutchinson probes of sample i
  kStreamSdeNoise = 2,    // SDE noise of sample i, step n from block n * ceil(d/4)
  kStreamToyData = 10,    // training: the built-in toy data sets, point i
  kStreamInit = 12,       // training: parameter initialisation (weights; 13: biases)
  kStreamTrainBase = 20,  // training: base draws of a minibatch row
  kStreamTrainTime = 21,  // training: the row's time t
  kStreamTrainData = 22,  // training: which data row a minibatch row takes
  kStreamHoldout = 23,    // training: the held-out split
};

struct PhiloxBlock {
  uint32_t v[4];
};

// Philox4x32 with 10 rounds (Salmon et al., SC'11).
inline PhiloxBlock philox4x32_10(const uint32_t counter[4], const uint32_t key[2]) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return PhiloxBlock{{c0, c1, c2, c3}};
}

// The block for (seed, block index, sample index, stream).
inline PhiloxBlock random_block(uint64_t seed, uint32_t block, uint64_t sample, uint32_t stream) {
  const uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  const uint32_t counter[4] = {block, static_cast<uint32_t>(sample),
                               static_cast<uint32_t>(sample >> 32), stream};
  return philox4x32_10(counter, key);
}

// A lane as a uniform in (0, 1): ((x >> 8) + 0.5) * 2^-24, exact in double.
inline double lane_uniform(uint32_t x) { return ((x >> 8) + 0.5) * (1.0 / 16777216.0); }

// The largest float strictly below v (v finite, not the smallest float).
inline float float_below(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  if (v > 0.0f)
    --bits;
  else if (v < 0.0f)
    ++bits;
  else
    bits = 0x80000001u;  // -denorm_min
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// low + (high - low) * u computed in double and rounded to T, kept strictly below high: a
// uniform draw never lands on the open end even when rounding to float would put it there.
template <typename T>
T uniform_in(double low, double high, double u) {
  T v = static_cast<T>(low + (high - low) * u);
  if (v >= static_cast<T>(high)) {
    if constexpr (sizeof(T) == sizeof(float))
      v = float_below(static_cast<float>(high));
    else
      v = static_cast<T>(low + (high - low) * 0.5);  // unreachable in double: u < 1 is exact
  }
  return v;
}

// A lane as a Rademacher sign: top bit set gives -1.
inline double lane_sign(uint32_t x) { return (x & 0x80000000u) ? -1.0 : 1.0; }

// Fills out[0..n) with standard normals for `sample` in `stream`, starting at block
// `first_block`: component k uses block first_block + k/4, lanes (0,1) and (2,3) form
// Box-Muller pairs (r cos 2 pi u_b, r sin 2 pi u_b) with r = sqrt(-2 ln u_a).
template <typename T>
void fill_normals(uint64_t seed, uint64_t sample, uint32_t stream, uint32_t first_block, T* out,
                  uint32_t n) {
  for (uint32_t k0 = 0; k0 < n; k0 += 4) {
    const PhiloxBlock b = random_block(seed, first_block + k0 / 4, sample, stream);
    for (uint32_t pair = 0; pair < 2; ++pair) {
      const uint32_t k = k0 + 2 * pair;
      if (k >= n) break;
      const double r = math::sqrt(-2.0 * math::log(lane_uniform(b.v[2 * pair])));
      const double angle = 2.0 * math::kPi * lane_uniform(b.v[2 * pair + 1]);
      out[k] = static_cast<T>(r * math::cos(angle));
      if (k + 1 < n) out[k + 1] = static_cast<T>(r * math::sin(angle));
    }
  }
}

// Fills out[k] with uniforms on [low[k], high[k]) (in (0, 1) when low/high are null), component
// k from block first_block + k/4, lane k%4.
template <typename T>
void fill_uniforms(uint64_t seed, uint64_t sample, uint32_t stream, uint32_t first_block, T* out,
                   uint32_t n, const double* low = nullptr, const double* high = nullptr) {
  for (uint32_t k = 0; k < n; k += 4) {
    const PhiloxBlock b = random_block(seed, first_block + k / 4, sample, stream);
    for (uint32_t lane = 0; lane < 4 && k + lane < n; ++lane)
      out[k + lane] = uniform_in<T>(low ? low[k + lane] : 0.0, high ? high[k + lane] : 1.0,
                                    lane_uniform(b.v[lane]));
  }
}

// Fills out[0..n) with Rademacher signs, component k from block first_block + k/4, lane k%4.
template <typename T>
void fill_signs(uint64_t seed, uint64_t sample, uint32_t stream, uint32_t first_block, T* out,
                uint32_t n) {
  for (uint32_t k = 0; k < n; k += 4) {
    const PhiloxBlock b = random_block(seed, first_block + k / 4, sample, stream);
    for (uint32_t lane = 0; lane < 4 && k + lane < n; ++lane)
      out[k + lane] = static_cast<T>(lane_sign(b.v[lane]));
  }
}

inline uint32_t blocks_per_vector(uint32_t dim) { return (dim + 3) / 4; }

}  // namespace siflow
