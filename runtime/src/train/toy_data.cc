// SPDX-License-Identifier: Apache-2.0
// FFJORD's 2D toy datasets drawn point by point from counter-based Philox (stream 10), with the
// runtime's own sin/cos/exp/log so every platform draws the same bits. Never allocates, never
// keeps state and never calls libm.
#include "train/toy_data.hpp"

#include <cstring>
#include <limits>

#include "math/elementary.hpp"
#include "math/random.hpp"

namespace siflow::train {
namespace {

// Indexed by the enum's value.
constexpr size_t kKinds = 6;
constexpr const char* kNames[kKinds] = {"checkerboard", "8gaussians", "moons",
                                        "rings",        "2spirals",   "pinwheel"};

constexpr double kTwoPi = 2.0 * math::kPi;
constexpr double kInf = std::numeric_limits<double>::infinity();

// FFJORD's 8gaussians: scale 4 times (1,0), (-1,0), (0,1), (0,-1), then the four diagonals
// (+-1/sqrt 2, +-1/sqrt 2) in the order (+,+), (+,-), (-,+), (-,-).
void eight_centres(double c[8][2]) {
  const double d = 1.0 / math::sqrt(2.0);
  const double unit[8][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}, {d, d}, {d, -d}, {-d, d}, {-d, -d}};
  for (int k = 0; k < 8; ++k) {
    c[k][0] = 4.0 * unit[k][0];
    c[k][1] = 4.0 * unit[k][1];
  }
}

// One point of the dataset in double. b = block 0 (uniforms and discrete choices, lanes 0-3),
// z = the standard normal pair from block 1.
void draw_point(ToyData kind, const PhiloxBlock& b, const double z[2], const double centres[8][2],
                double p[2]) {
  switch (kind) {
    case ToyData::kCheckerboard: {
      // x1 = U*4 - 2; x2 = U - 2*randint{0,1} + (floor(x1) mod 2); both times 2. x1 + 2 = 4u is
      // positive and never an integer (u = (2m+1) 2^-25), so truncating it is floor(x1) + 2,
      // which has the parity of floor(x1).
      const double x1 = lane_uniform(b.v[0]) * 4.0 - 2.0;
      const double parity = static_cast<double>(static_cast<int>(x1 + 2.0) % 2);
      const double x2 = lane_uniform(b.v[1]) - 2.0 * static_cast<double>(b.v[2] >> 31) + parity;
      p[0] = x1 * 2.0;
      p[1] = x2 * 2.0;
      return;
    }
    case ToyData::kEightGaussians: {
      // randn(2)*0.5 + centres[randint(8)], the whole point divided by 1.414.
      const uint32_t k = b.v[0] >> 29;
      p[0] = (z[0] * 0.5 + centres[k][0]) / 1.414;
      p[1] = (z[1] * 0.5 + centres[k][1]) / 1.414;
      return;
    }
    case ToyData::kMoons: {
      // sklearn make_moons(noise=0.1): outer (cos t, sin t), inner (1 - cos t, 1 - sin t - 0.5),
      // t in [0, pi]; then *2 + (-1, -0.2). Deviation: make_moons spaces t by linspace over each
      // half of the batch (n//2 outer); here the moon is a fair coin and t ~ U(0, pi) per point,
      // the large-batch limit of the same construction, so point i does not depend on the batch.
      const bool outer = (b.v[0] >> 31) == 0;
      const double t = math::kPi * lane_uniform(b.v[1]);
      const double c = math::cos(t), s = math::sin(t);
      const double mx = outer ? c : 1.0 - c;
      const double my = outer ? s : 1.0 - s - 0.5;
      p[0] = (mx + z[0] * 0.1) * 2.0 - 1.0;
      p[1] = (my + z[1] * 0.1) * 2.0 - 0.2;
      return;
    }
    case ToyData::kRings: {
      // Circles of radius 1, 0.75, 0.5, 0.25, times 3, plus N(0, 0.08^2) noise. Deviation:
      // FFJORD gives each ring a quarter of the batch (the innermost the remainder) at linspace
      // angles; here the ring is uniform over the four (a quarter each, FFJORD's proportions) and
      // the angle ~ U(0, 2 pi) per point: the large-batch limit, independent of the batch.
      constexpr double kRadius[4] = {1.0, 0.75, 0.5, 0.25};
      const double r = kRadius[b.v[0] >> 30];
      const double a = kTwoPi * lane_uniform(b.v[1]);
      p[0] = math::cos(a) * r * 3.0 + z[0] * 0.08;
      p[1] = math::sin(a) * r * 3.0 + z[1] * 0.08;
      return;
    }
    case ToyData::kTwoSpirals: {
      // n = sqrt(U) * 540 * 2 pi / 360; d = (-cos(n) n + U/2, sin(n) n + U/2); the second spiral
      // is -d; both / 3, plus N(0, 0.1^2) noise. Deviation: FFJORD makes the first half of the
      // batch spiral d and the second half -d; here the sign is a fair coin per point (the
      // large-batch limit), so point i does not depend on the batch.
      const double n = math::sqrt(lane_uniform(b.v[0])) * 540.0 * kTwoPi / 360.0;
      const double dx = -math::cos(n) * n + lane_uniform(b.v[1]) * 0.5;
      const double dy = math::sin(n) * n + lane_uniform(b.v[2]) * 0.5;
      const double sign = lane_sign(b.v[3]);
      p[0] = sign * dx / 3.0 + z[0] * 0.1;
      p[1] = sign * dy / 3.0 + z[1] * 0.1;
      return;
    }
    case ToyData::kPinwheel: {
      // features f = (1 + 0.3 z0, 0.1 z1) for arm k; angle = 2 pi k/5 + 0.25 exp(f0); the point
      // is 2 f R with R = [[cos, -sin], [sin, cos]] (FFJORD's einsum "ti,tij->tj", a row vector
      // times R). Deviation: FFJORD assigns batch//5 points to each arm and permutes; here the arm
      // is uniform over the 5 per point (the large-batch limit), independent of the batch. The
      // arm is floor(lane * 5 / 2^32): off uniform by at most 2^-32 relative.
      const uint32_t k = static_cast<uint32_t>((static_cast<uint64_t>(b.v[0]) * 5u) >> 32);
      const double f0 = z[0] * 0.3 + 1.0;
      const double f1 = z[1] * 0.1;
      const double angle = static_cast<double>(k) * (kTwoPi / 5.0) + 0.25 * math::exp(f0);
      const double c = math::cos(angle), s = math::sin(angle);
      p[0] = 2.0 * (f0 * c + f1 * s);
      p[1] = 2.0 * (f0 * -s + f1 * c);
      return;
    }
  }
  p[0] = p[1] = std::numeric_limits<double>::quiet_NaN();  // not a ToyData value
}

// The cells c in -2..1 whose closed interval [2c, 2c + 2] holds x, |x| <= 4: one, or two when x
// is on an inner grid line. Exact: |x/2| <= 2 converts to int without rounding.
int checkerboard_cells(double x, int cells[2]) {
  const double v = x * 0.5;
  int t = static_cast<int>(v);
  if (t > v) --t;  // floor
  int count = 0;
  if (t == v && t - 1 >= -2) cells[count++] = t - 1;
  if (t <= 1) cells[count++] = t;
  return count;
}

// On the closed support: the 8 squares [2i, 2i+2] x [2j, 2j+2] with i + j even, i, j in -2..1
// (floor(x1) mod 2 shifts x2 by one unit square in odd columns). Closed, so that points rounded
// to float onto a square's edge still count; the edges have measure zero.
bool on_checkerboard(double x1, double x2) {
  if (!(x1 >= -4.0 && x1 <= 4.0 && x2 >= -4.0 && x2 <= 4.0)) return false;  // also NaN
  int ci[2], cj[2];
  const int ni = checkerboard_cells(x1, ci), nj = checkerboard_cells(x2, cj);
  for (int a = 0; a < ni; ++a)
    for (int c = 0; c < nj; ++c)
      if ((ci[a] + cj[c]) % 2 == 0) return true;
  return false;
}

double checkerboard_entropy() { return math::log(32.0); }  // uniform on area 8 * 2^2 = 32

}  // namespace

}  // namespace siflow::train

namespace siflow {

using train::kKinds;
using train::kNames;

const char* toy_data_name(ToyData kind) {
  const size_t i = static_cast<size_t>(kind);
  return i < kKinds ? kNames[i] : "unknown";
}

bool parse_toy_data(const char* name, ToyData* out) {
  if (name == nullptr) return false;
  for (size_t i = 0; i < kKinds; ++i) {
    if (std::strcmp(name, kNames[i]) == 0) {
      if (out != nullptr) *out = static_cast<ToyData>(i);
      return true;
    }
  }
  return false;
}

const char* toy_data_names() {
  return "checkerboard, 8gaussians, moons, rings, 2spirals, pinwheel";
}

}  // namespace siflow

namespace siflow::train {

void draw_toy_data(ToyData kind, uint64_t seed, uint64_t first, size_t n, float* out) {
  double centres[8][2];
  eight_centres(centres);
  for (size_t r = 0; r < n; ++r) {
    const uint64_t index = first + r;
    const PhiloxBlock b = random_block(seed, 0, index, kStreamToyData);
    double z[2] = {0.0, 0.0};
    if (kind != ToyData::kCheckerboard) fill_normals(seed, index, kStreamToyData, 1, z, 2);
    double p[2];
    draw_point(kind, b, z, centres, p);
    out[2 * r] = static_cast<float>(p[0]);
    out[2 * r + 1] = static_cast<float>(p[1]);
  }
}

bool toy_log_density(ToyData kind, const double* x, size_t n, double* out) {
  if (kind == ToyData::kCheckerboard) {
    const double inside = -checkerboard_entropy();
    for (size_t r = 0; r < n; ++r)
      out[r] = on_checkerboard(x[2 * r], x[2 * r + 1]) ? inside : -kInf;
    return true;
  }
  if (kind == ToyData::kEightGaussians) {
    // (1/8) sum_k N(x; c_k/1.414, s^2 I), s = 0.5/1.414, by log-sum-exp over the components.
    double centres[8][2];
    eight_centres(centres);
    for (auto& c : centres) {
      c[0] /= 1.414;
      c[1] /= 1.414;
    }
    const double s = 0.5 / 1.414;
    const double var = s * s;
    const double log_norm = -math::log(8.0) - math::log(kTwoPi * var);
    for (size_t r = 0; r < n; ++r) {
      double e[8];
      double top = -kInf;
      for (int k = 0; k < 8; ++k) {
        const double dx = x[2 * r] - centres[k][0], dy = x[2 * r + 1] - centres[k][1];
        e[k] = -(dx * dx + dy * dy) / (2.0 * var);
        if (e[k] > top || k == 0) top = e[k];
      }
      if (top == -kInf) {  // infinitely far from every centre
        out[r] = -kInf;
        continue;
      }
      double sum = 0.0;
      for (int k = 0; k < 8; ++k) sum += math::exp(e[k] - top);
      out[r] = log_norm + top + math::log(sum);
    }
    return true;
  }
  return false;
}

double toy_entropy(ToyData kind) {
  if (kind == ToyData::kCheckerboard) return checkerboard_entropy();
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace siflow::train
