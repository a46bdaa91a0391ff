// SPDX-License-Identifier: Apache-2.0
// The built-in 2D toy datasets (train/toy_data.hpp): names, per-point reproducibility, FFJORD's
// definitions through exact supports, proportions and moments, and the closed-form densities.
// Statistical checks use 5 standard errors (false-failure chance below 1e-6 each) or bounds.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "math/random.hpp"
#include "train/toy_data.hpp"

namespace {

using siflow::train::ToyData;

constexpr ToyData kAll[] = {ToyData::kCheckerboard, ToyData::kEightGaussians, ToyData::kMoons,
                            ToyData::kRings,        ToyData::kTwoSpirals,     ToyData::kPinwheel};
constexpr size_t kN = 100000;

// The largest standard normal pair a draw can hold: Box-Muller's r = sqrt(-2 ln u) with
// u = lane_uniform >= 2^-25, so |(z0, z1)| <= sqrt(50 ln 2) = 5.887. Every noise term is bounded,
// so the range checks below are certain, not statistical.
const double kMaxNormal = std::sqrt(50.0 * std::log(2.0));

std::vector<float> draw(ToyData kind, uint64_t seed, uint64_t first, size_t n) {
  std::vector<float> out(2 * n);
  siflow::train::draw_toy_data(kind, seed, first, n, out.data());
  return out;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Sums of x, y, x^2, y^2, xy, |x|^2 about a given centre.
struct Moments {
  double n = 0, x = 0, y = 0, xx = 0, yy = 0, xy = 0;
  Moments(const std::vector<float>& p, double cx = 0.0, double cy = 0.0) {
    for (size_t i = 0; i < p.size(); i += 2) {
      const double a = p[i] - cx, b = p[i + 1] - cy;
      x += a;
      y += b;
      xx += a * a;
      yy += b * b;
      xy += a * b;
      ++n;
    }
    x /= n;
    y /= n;
    xx /= n;
    yy /= n;
    xy /= n;
  }
};

// The checkerboard's 8 squares [2i, 2i+2] x [2j, 2j+2]: in column i, FFJORD's x2 = U - 2 randint
// + (floor(x1) mod 2) fills unit rows {0, -2} shifted up by the column parity, times 2.
constexpr int kSquares[8][2] = {{-2, -2}, {-2, 0}, {-1, -1}, {-1, 1},
                                {0, -2},  {0, 0},  {1, -1},  {1, 1}};

// The first of the 8 closed squares holding (x1, x2), or -1.
int checkerboard_square(double x1, double x2) {
  for (int s = 0; s < 8; ++s) {
    const double lo1 = 2.0 * kSquares[s][0], lo2 = 2.0 * kSquares[s][1];
    if (x1 >= lo1 && x1 <= lo1 + 2.0 && x2 >= lo2 && x2 <= lo2 + 2.0) return s;
  }
  return -1;
}

// The 8gaussians mixture density written out directly with libm, to check the runtime's.
double eight_gaussians_density(double x, double y) {
  const double d = 1.0 / std::sqrt(2.0);
  const double unit[8][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}, {d, d}, {d, -d}, {-d, d}, {-d, -d}};
  const double s = 0.5 / 1.414;
  double p = 0.0;
  for (const auto& u : unit) {
    const double dx = x - 4.0 * u[0] / 1.414, dy = y - 4.0 * u[1] / 1.414;
    p += std::exp(-(dx * dx + dy * dy) / (2 * s * s)) / (2 * M_PI * s * s) / 8.0;
  }
  return p;
}

}  // namespace

TEST_CASE("toy_data_name and parse_toy_data round-trip every dataset and refuse any other name") {
  const char* names[] = {"checkerboard", "8gaussians", "moons", "rings", "2spirals", "pinwheel"};
  for (size_t i = 0; i < 6; ++i) {
    INFO(names[i]);
    CHECK(std::string(siflow::toy_data_name(kAll[i])) == names[i]);
    ToyData got = kAll[(i + 1) % 6];
    REQUIRE(siflow::parse_toy_data(names[i], &got));
    CHECK(got == kAll[i]);
  }
  const char* unknown[] = {"",
                           "Checkerboard",
                           "8gaussian",
                           "8gaussians ",
                           " moons",
                           "swissroll",
                           "circles",
                           "2spiral",
                           "pinwheels",
                           "rings,",
                           "checkerboard, 8gaussians"};
  for (const char* name : unknown) {
    INFO("'" << name << "'");
    ToyData got = ToyData::kRings;
    CHECK_FALSE(siflow::parse_toy_data(name, &got));
    CHECK(got == ToyData::kRings);  // untouched
  }
  CHECK_FALSE(siflow::parse_toy_data(nullptr, nullptr));
  CHECK(std::string(siflow::toy_data_name(static_cast<ToyData>(6))) == "unknown");
  // The help list holds exactly the names, in enum order, separated by ", ".
  std::string list = siflow::toy_data_names(), joined;
  for (size_t i = 0; i < 6; ++i) joined += (i ? ", " : "") + std::string(names[i]);
  CHECK(list == joined);
}

TEST_CASE("toy draws use Philox stream 10, block 0 lanes for choices and block 1 for noise") {
  // Checkerboard point 7 for seed 42 from the documented layout: x1 = (4 u0 - 2) * 2 and
  // x2 = (u1 - 2 [lane 2 top bit] + (floor(x1) mod 2)) * 2. These are exact in double.
  const siflow::PhiloxBlock b = siflow::random_block(42, 0, 7, siflow::kStreamToyData);
  const double x1 = siflow::lane_uniform(b.v[0]) * 4.0 - 2.0;
  const double parity = std::fmod(std::floor(x1) + 4.0, 2.0);
  const double x2 = siflow::lane_uniform(b.v[1]) - 2.0 * (b.v[2] >> 31) + parity;
  const std::vector<float> p = draw(ToyData::kCheckerboard, 42, 7, 1);
  CHECK(p[0] == static_cast<float>(2.0 * x1));
  CHECK(p[1] == static_cast<float>(2.0 * x2));
  // 8gaussians point 7: component = top 3 bits of lane 0, noise = fill_normals from block 1.
  double z[2];
  siflow::fill_normals(42, 7, siflow::kStreamToyData, 1, z, 2);
  const double d = 1.0 / std::sqrt(2.0);
  const double unit[8][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}, {d, d}, {d, -d}, {-d, d}, {-d, -d}};
  const uint32_t k = b.v[0] >> 29;
  const std::vector<float> g = draw(ToyData::kEightGaussians, 42, 7, 1);
  CHECK(g[0] == static_cast<float>((z[0] * 0.5 + 4.0 * unit[k][0]) / 1.414));
  CHECK(g[1] == static_cast<float>((z[1] * 0.5 + 4.0 * unit[k][1]) / 1.414));
}

TEST_CASE("point i depends only on (seed, i): identical bits whatever the batch split") {
  const uint64_t seed = 0x5eed5eed5eedull;
  const size_t n = 1000;
  for (ToyData kind : kAll) {
    INFO(siflow::toy_data_name(kind));
    const std::vector<float> all = draw(kind, seed, 0, n);
    // The same range in uneven pieces.
    const size_t pieces[] = {1, 2, 3, 5, 7, 64, 100, 250, 568};
    size_t at = 0;
    for (size_t len : pieces) {
      const std::vector<float> part = draw(kind, seed, at, len);
      CHECK(std::memcmp(part.data(), all.data() + 2 * at, part.size() * sizeof(float)) == 0);
      at += len;
    }
    REQUIRE(at == n);
    // One point alone, and a window far out (counter high word in use) drawn two ways.
    const std::vector<float> one = draw(kind, seed, 517, 1);
    CHECK(std::memcmp(one.data(), all.data() + 2 * 517, 2 * sizeof(float)) == 0);
    const uint64_t far = (1ull << 40) + 12345;
    const std::vector<float> wide = draw(kind, seed, far, 8), narrow = draw(kind, seed, far + 3, 2);
    CHECK(std::memcmp(narrow.data(), wide.data() + 6, 4 * sizeof(float)) == 0);
    // Another seed draws other points (a coincidence of all 1000 is impossible).
    const std::vector<float> other = draw(kind, seed + 1, 0, n);
    size_t same = 0;
    for (size_t i = 0; i < 2 * n; ++i) same += other[i] == all[i];
    CHECK(same < n / 10);
    // Writes exactly 2n floats: nothing for n = 0, nothing past the end otherwise.
    std::vector<float> buf(8, 123.0f);
    siflow::train::draw_toy_data(kind, seed, 0, 0, buf.data());
    for (float v : buf) CHECK(v == 123.0f);
    siflow::train::draw_toy_data(kind, seed, 0, 3, buf.data());
    CHECK(buf[6] == 123.0f);
    CHECK(buf[7] == 123.0f);
  }
}

TEST_CASE("checkerboard points lie on its 8 squares, where the log-density is log(1/32)") {
  const std::vector<float> p = draw(ToyData::kCheckerboard, 1, 0, kN);
  const std::vector<double> x = to_double(p);
  std::vector<double> logp(kN, 0.0);
  REQUIRE(siflow::train::toy_log_density(ToyData::kCheckerboard, x.data(), kN, logp.data()));
  const double inside = -std::log(32.0);
  size_t off = 0, wrong = 0;
  for (size_t i = 0; i < kN; ++i) {
    // FFJORD's construction inverted: u = x2/2 - (floor(x1/2) mod 2) lies in [0, 1] or [-2, -1].
    const double c1 = x[2 * i] / 2, c2 = x[2 * i + 1] / 2;
    const double u = c2 - std::fmod(std::floor(c1) + 4.0, 2.0);
    const bool in_col = c1 >= -2.0 && c1 <= 2.0;
    off += !(in_col && ((u >= 0.0 && u <= 1.0) || (u >= -2.0 && u <= -1.0)));
    // log(1/32) within a few ulp (the runtime's log is within 5 ulp of libm's).
    wrong += !(std::fabs(logp[i] - inside) < 1e-14);
  }
  CHECK(off == 0);
  CHECK(wrong == 0);
  // Hand-picked points: (i + j) even squares are on; edges count (closed squares); off-square
  // cells, the outer frame's outside and NaN are -inf.
  const double on[][2] = {{1, 1}, {-3, -3}, {3, -1},  {-1, 3},      {0, 0},
                          {2, 1}, {4, 3},   {-4, -4}, {3.999, 2.0}, {-2, -1}};
  const double off_pts[][2] = {{1, 3}, {-3, -1},  {3, 1},       {-1, -3}, {4, 1},
                               {5, 0}, {0, -4.5}, {-4.001, -3}, {NAN, 1}, {1, INFINITY}};
  double lp[10];
  REQUIRE(siflow::train::toy_log_density(ToyData::kCheckerboard, &on[0][0], 10, lp));
  for (int i = 0; i < 10; ++i) {
    INFO("on (" << on[i][0] << ", " << on[i][1] << ")");
    CHECK(lp[i] == doctest::Approx(inside).epsilon(1e-14));
  }
  REQUIRE(siflow::train::toy_log_density(ToyData::kCheckerboard, &off_pts[0][0], 10, lp));
  for (int i = 0; i < 10; ++i) {
    INFO("off (" << off_pts[i][0] << ", " << off_pts[i][1] << ")");
    CHECK(lp[i] == -INFINITY);
  }
}

TEST_CASE("checkerboard puts 1/8 of its points in each square, centred on the square") {
  // Count per square ~ Binomial(n, 1/8): standard deviation sqrt(n p (1 - p)) = 104.6 for
  // n = 1e5. The mean of x1 inside a square is its centre, with standard error (2/sqrt 12)/sqrt
  // (count) (x1 uniform over a side of 2).
  const std::vector<float> p = draw(ToyData::kCheckerboard, 2, 0, kN);
  size_t count[8] = {}, nowhere = 0;
  double sum1[8] = {}, sum2[8] = {};
  for (size_t i = 0; i < kN; ++i) {
    const int s = checkerboard_square(p[2 * i], p[2 * i + 1]);
    if (s < 0) {
      ++nowhere;
      continue;
    }
    ++count[s];
    sum1[s] += p[2 * i];
    sum2[s] += p[2 * i + 1];
  }
  CHECK(nowhere == 0);
  const double expect = kN / 8.0, sd = std::sqrt(kN * (1.0 / 8) * (7.0 / 8));
  for (int s = 0; s < 8; ++s) {
    INFO("square (" << kSquares[s][0] << ", " << kSquares[s][1] << ")");
    CHECK(std::fabs(count[s] - expect) < 5 * sd);
    const double se = 2.0 / std::sqrt(12.0) / std::sqrt(static_cast<double>(count[s]));
    CHECK(std::fabs(sum1[s] / count[s] - (2.0 * kSquares[s][0] + 1.0)) < 5 * se);
    CHECK(std::fabs(sum2[s] / count[s] - (2.0 * kSquares[s][1] + 1.0)) < 5 * se);
  }
}

TEST_CASE("checkerboard's Monte-Carlo cross-entropy equals its entropy log 32 exactly") {
  // The density is constant on the support, so every -log p is the entropy itself, bit for bit;
  // the mean then differs from it only by summation rounding: at most (n - 1) * 2^-53 relative.
  const double h = siflow::train::toy_entropy(ToyData::kCheckerboard);
  CHECK(h == doctest::Approx(5.0 * std::log(2.0)).epsilon(1e-15));
  const std::vector<double> x = to_double(draw(ToyData::kCheckerboard, 3, 0, kN));
  std::vector<double> logp(kN);
  REQUIRE(siflow::train::toy_log_density(ToyData::kCheckerboard, x.data(), kN, logp.data()));
  double sum = 0.0;
  size_t differ = 0;
  for (double v : logp) {
    differ += -v != h;
    sum += -v;
  }
  CHECK(differ == 0);
  CHECK(std::fabs(sum / kN - h) <= h * kN * std::ldexp(1.0, -53));
}

TEST_CASE("8gaussians has mean 0 and per-coordinate variance (16/2 + 0.25)/1.414^2") {
  // X = (C + 0.5 Z)/1.414 per coordinate, C a centre coordinate: E C^2 = 16 (1+1+4 * 1/2)/8 = 8,
  // E C^4 = (2 * 256 + 4 * 64)/8 = 96, so E X^2 = (8 + 0.25)/1.414^2 and
  // E X^4 = (96 + 6 * 8 * 0.25 + 3 * 0.0625)/1.414^4. Standard errors: mean sqrt(E X^2 / n),
  // second moment sqrt((E X^4 - (E X^2)^2)/n), E XY (= 0 by symmetry) at most sqrt(E X^4 / n).
  const std::vector<float> p = draw(ToyData::kEightGaussians, 4, 0, kN);
  const Moments m(p);
  const double s2 = 1.414 * 1.414;
  const double ex2 = (16.0 / 2 + 0.25) / s2, ex4 = (96.0 + 6 * 8 * 0.25 + 3 * 0.0625) / (s2 * s2);
  const double n = static_cast<double>(kN);
  CHECK(std::fabs(m.x) < 5 * std::sqrt(ex2 / n));
  CHECK(std::fabs(m.y) < 5 * std::sqrt(ex2 / n));
  CHECK(std::fabs(m.xx - ex2) < 5 * std::sqrt((ex4 - ex2 * ex2) / n));
  CHECK(std::fabs(m.yy - ex2) < 5 * std::sqrt((ex4 - ex2 * ex2) / n));
  CHECK(std::fabs(m.xy) < 5 * std::sqrt(ex4 / n));
  // Each of the 8 components gets 1/8: nearest centre (leakage between neighbours is symmetric,
  // so the expected count stays n/8), binomial standard deviation.
  const double d = 4.0 / std::sqrt(2.0) / 1.414;
  const double c[8][2] = {{4 / 1.414, 0}, {-4 / 1.414, 0}, {0, 4 / 1.414}, {0, -4 / 1.414},
                          {d, d},         {d, -d},         {-d, d},        {-d, -d}};
  size_t count[8] = {};
  for (size_t i = 0; i < kN; ++i) {
    int best = 0;
    double best_d2 = 1e300;
    for (int k = 0; k < 8; ++k) {
      const double dx = p[2 * i] - c[k][0], dy = p[2 * i + 1] - c[k][1];
      if (dx * dx + dy * dy < best_d2) best_d2 = dx * dx + dy * dy, best = k;
    }
    ++count[best];
  }
  for (int k = 0; k < 8; ++k)
    CHECK(std::fabs(count[k] - n / 8) < 5 * std::sqrt(n * (1.0 / 8) * (7.0 / 8)));
}

TEST_CASE("8gaussians log-density is the 8-component mixture and integrates to 1") {
  // Against the mixture written out with libm: the runtime's exp/log are within a few ulp.
  const double pts[][2] = {{0, 0}, {2.83, 0}, {-1, 2}, {2, 2}, {0.3, -1.7}, {-5, 5}};
  double lp[6];
  REQUIRE(siflow::train::toy_log_density(ToyData::kEightGaussians, &pts[0][0], 6, lp));
  for (int i = 0; i < 6; ++i) {
    INFO("(" << pts[i][0] << ", " << pts[i][1] << ")");
    CHECK(lp[i] ==
          doctest::Approx(std::log(eight_gaussians_density(pts[i][0], pts[i][1]))).epsilon(1e-12));
  }
  // Midpoint sum over [-6, 6]^2 with h = 0.02. The centres sit at radius 2.83 with sd 0.354, so
  // the mass outside the square is below exp(-(6 - 2.83)^2 / (2 * 0.354^2)) ~ 1e-17, and the
  // midpoint rule on a Gaussian this wide is exact up to ~exp(-2 pi^2 0.354^2 / h^2): what is
  // left is rounding, far below 1e-9.
  const int cells = 600;
  const double h = 12.0 / cells;
  std::vector<double> row(2 * cells), out(cells);
  double mass = 0.0;
  for (int j = 0; j < cells; ++j) {
    for (int i = 0; i < cells; ++i) {
      row[2 * i] = -6.0 + (i + 0.5) * h;
      row[2 * i + 1] = -6.0 + (j + 0.5) * h;
    }
    REQUIRE(
        siflow::train::toy_log_density(ToyData::kEightGaussians, row.data(), cells, out.data()));
    for (double v : out) mass += std::exp(v) * h * h;
  }
  CHECK(std::fabs(mass - 1.0) < 1e-9);
  // The Monte-Carlo cross-entropy of samples against this density lies between one component's
  // entropy log(2 pi e s^2) and that plus log 8 (the mixture bound), up to 5 standard errors of
  // a mean of -log p (sd ~ 1, that of a chi-square(2)/2 plus the component term).
  const std::vector<double> x = to_double(draw(ToyData::kEightGaussians, 5, 0, kN));
  std::vector<double> logp(kN);
  REQUIRE(siflow::train::toy_log_density(ToyData::kEightGaussians, x.data(), kN, logp.data()));
  double ce = 0.0;
  for (double v : logp) ce -= v / kN;
  const double s = 0.5 / 1.414, h_comp = std::log(2 * M_PI * M_E * s * s);
  const double se = 1.5 / std::sqrt(static_cast<double>(kN));
  CHECK(ce > h_comp - 5 * se);
  CHECK(ce < h_comp + std::log(8.0) + 5 * se);
}

TEST_CASE("log-density and entropy are refused where there is no closed form") {
  const double x[4] = {0.0, 0.0, 1.0, -1.0};
  for (ToyData kind :
       {ToyData::kMoons, ToyData::kRings, ToyData::kTwoSpirals, ToyData::kPinwheel}) {
    INFO(siflow::toy_data_name(kind));
    double out[2] = {7.0, 7.0};
    CHECK_FALSE(siflow::train::toy_log_density(kind, x, 2, out));
    CHECK(out[0] == 7.0);
    CHECK(out[1] == 7.0);
    CHECK(std::isnan(siflow::train::toy_entropy(kind)));
  }
  // A Gaussian mixture's entropy has no closed form either.
  CHECK(std::isnan(siflow::train::toy_entropy(ToyData::kEightGaussians)));
}

TEST_CASE("every dataset draws finite points inside the range its definition allows") {
  // Ranges from the definitions with every normal pair bounded by kMaxNormal (5.887):
  // checkerboard [-4, 4]^2; 8gaussians |x| <= (4 + 0.5 R)/1.414; moons x in [-3, 3] and
  // y in [-1.2, 1.8] before 2 * 0.1 noise per coordinate; rings 0.75 - 0.08 R <= |x| <= 3 + 0.08 R;
  // 2spirals |x| <= (3 pi + 0.5 sqrt 2)/3 + 0.1 R; pinwheel |x| = 2 |f| <= 2 (1 + 0.3 R).
  const double r = kMaxNormal;
  for (ToyData kind : kAll) {
    INFO(siflow::toy_data_name(kind));
    const std::vector<float> p = draw(kind, 6, 0, kN);
    size_t bad = 0;
    for (size_t i = 0; i < kN; ++i) {
      const double x = p[2 * i], y = p[2 * i + 1], norm = std::hypot(x, y);
      bool ok = std::isfinite(x) && std::isfinite(y);
      switch (kind) {
        case ToyData::kCheckerboard:
          ok = ok && std::fabs(x) <= 4 && std::fabs(y) <= 4;
          break;
        case ToyData::kEightGaussians:
          ok = ok && norm <= (4 + 0.5 * r) / 1.414;
          break;
        case ToyData::kMoons:
          ok = ok && std::fabs(x) <= 3 + 0.2 * r && y >= -1.2 - 0.2 * r && y <= 1.8 + 0.2 * r;
          break;
        case ToyData::kRings:
          ok = ok && norm >= 0.75 - 0.08 * r && norm <= 3 + 0.08 * r;
          break;
        case ToyData::kTwoSpirals:
          ok = ok && norm <= (3 * M_PI + 0.5 * std::sqrt(2.0)) / 3 + 0.1 * r;
          break;
        case ToyData::kPinwheel:
          ok = ok && norm <= 2 * (1 + 0.3 * r);
          break;
      }
      bad += !ok;
    }
    CHECK(bad == 0);
  }
}

TEST_CASE(
    "moons: mean (0, 0.3), the variances and the orientation of sklearn's moons scaled by 2") {
  // Before scaling, with t ~ U(0, pi) and a fair moon: x = cos t or 1 - cos t, so E x = 1/2,
  // Var x = 3/4; y = sin t or 1/2 - sin t, so E y = 1/4, Var y = 9/16 - 1/pi; noise adds 0.01.
  // After *2 + (-1, -0.2): mean (0, 0.3), variances 4 (3/4 + 0.01) and 4 (9/16 - 1/pi + 0.01).
  // |x - mean| <= B (the range test's bounds: 4.18 and 2.68), so Var((x - mean)^2) <= B^2 Var x.
  const std::vector<float> p = draw(ToyData::kMoons, 7, 0, kN);
  const Moments m(p, 0.0, 0.3);
  const double n = static_cast<double>(kN);
  const double vx = 4 * (0.75 + 0.01), vy = 4 * (0.5625 - 1 / M_PI + 0.01);
  const double bx = 3 + 0.2 * kMaxNormal, by = 1.5 + 0.2 * kMaxNormal;
  CHECK(std::fabs(m.x) < 5 * std::sqrt(vx / n));
  CHECK(std::fabs(m.y) < 5 * std::sqrt(vy / n));
  CHECK(std::fabs(m.xx - vx) < 5 * std::sqrt(bx * bx * vx / n));
  CHECK(std::fabs(m.yy - vy) < 5 * std::sqrt(by * by * vy / n));
  // Orientation: the outer moon is the upper one. E[(x - 1/2)(y - 1/4)] before scaling is
  // (1/2)(1/2 - 2/pi) - 1/8 = 1/8 - 1/pi; with the moons swapped it would be different.
  // Var(xy) <= E x^2 y^2 <= bx^2 E y^2 bounds its standard error.
  CHECK(std::fabs(m.xy - 4 * (0.125 - 1 / M_PI)) < 5 * bx * std::sqrt(vy / n));
}

TEST_CASE("rings: a quarter of the points on each of the 4 rings of radius 3, 2.25, 1.5, 0.75") {
  // Rings 0.75 apart with radial noise sd 0.08: the nearest radius misassigns a point only past
  // 4.7 sd (a few per million). Counts ~ Binomial(n, 1/4). E|x|^2 = 9 (1 + 0.5625 + 0.25 +
  // 0.0625)/4 + 2 * 0.08^2 = 4.23155; |x|^2 <= (3 + 0.08 R)^2 bounds its standard error.
  const std::vector<float> p = draw(ToyData::kRings, 8, 0, kN);
  const Moments m(p);
  const double n = static_cast<double>(kN);
  size_t count[4] = {};
  double radial2 = 0.0;  // mean of (|x| - ring radius)^2
  for (size_t i = 0; i < kN; ++i) {
    const double r = std::hypot(p[2 * i], p[2 * i + 1]);
    const double k = std::fmin(3.0, std::fmax(0.0, std::round(4.0 - r / 0.75)));  // 3 -> 0 ...
    ++count[static_cast<int>(k)];
    radial2 += (r - 0.75 * (4.0 - k)) * (r - 0.75 * (4.0 - k)) / n;
  }
  // The radial noise: (|x| - r)^2 has mean 0.08^2 up to O(0.08^4 / r^2) < 1e-4 from the
  // tangential part, and standard error 0.08^2 sqrt(2/n) = 3e-5; 3e-4 covers both.
  CHECK(std::fabs(radial2 - 0.0064) < 3e-4);
  for (int k = 0; k < 4; ++k) {
    INFO("ring " << k);
    CHECK(std::fabs(count[k] - n / 4) < 5 * std::sqrt(n * 0.25 * 0.75));
  }
  const double e2 = 9 * (1 + 0.5625 + 0.25 + 0.0625) / 4 + 2 * 0.0064;
  const double rmax = 3 + 0.08 * kMaxNormal;
  CHECK(std::fabs(m.x) < 5 * std::sqrt(e2 / n));
  CHECK(std::fabs(m.y) < 5 * std::sqrt(e2 / n));
  CHECK(std::fabs(m.xx + m.yy - e2) < 5 * rmax * std::sqrt(e2 / n));
}

TEST_CASE("2spirals: two mirrored spirals with the second moments of FFJORD's definition") {
  // Mean 0 (the second spiral is the first negated; without the fair sign the mean would be
  // (0.225, 0.72)). Second moments by Gauss-Legendre quadrature of the definition over
  // n = 3 pi sqrt(u), with the U(0, 0.5) offsets and 0.1 noise done analytically:
  // E x^2 = 2.59357, E y^2 = 2.50943, E xy = 0.58654 (a mirror image would flip the sign of
  // E xy). |x| <= 3.97 (range test) bounds every product's standard error by 3.97^2/sqrt(n).
  const std::vector<float> p = draw(ToyData::kTwoSpirals, 9, 0, kN);
  const Moments m(p);
  const double n = static_cast<double>(kN);
  const double b = (3 * M_PI + 0.5 * std::sqrt(2.0)) / 3 + 0.1 * kMaxNormal;
  CHECK(std::fabs(m.x) < 5 * b / std::sqrt(n));
  CHECK(std::fabs(m.y) < 5 * b / std::sqrt(n));
  CHECK(std::fabs(m.xx - 2.5935722029524464) < 5 * b * b / std::sqrt(n));
  CHECK(std::fabs(m.yy - 2.509434622067836) < 5 * b * b / std::sqrt(n));
  CHECK(std::fabs(m.xy - 0.5865443317384637) < 5 * b * b / std::sqrt(n));
}

TEST_CASE("pinwheel: 5 arms with E|x|^2 = 4.4 turning the way FFJORD's do") {
  // |x| = 2 |f| with f = (1 + 0.3 z0, 0.1 z1): E|x|^2 = 4 (1 + 0.09 + 0.01) = 4.4, and
  // |x|^2 <= (2 + 0.6 R)^2 bounds its standard error. Mean 0 by the 5-fold symmetry.
  // Orientation: E exp(5 i theta) = -0.481312 + 0.179043 i by Gauss-Hermite quadrature of the
  // definition (the same for every arm); the mirror image has -0.179 i. Each part of a unit
  // complex number has variance <= 1, so standard error <= 1/sqrt(n).
  const std::vector<float> p = draw(ToyData::kPinwheel, 10, 0, kN);
  const Moments m(p);
  const double n = static_cast<double>(kN);
  const double rmax = 2 * (1 + 0.3 * kMaxNormal);
  CHECK(std::fabs(m.x) < 5 * rmax / std::sqrt(n));
  CHECK(std::fabs(m.y) < 5 * rmax / std::sqrt(n));
  CHECK(std::fabs(m.xx + m.yy - 4.4) < 5 * rmax * rmax / std::sqrt(n));
  double re = 0.0, im = 0.0;
  for (size_t i = 0; i < kN; ++i) {
    const double theta = std::atan2(p[2 * i + 1], p[2 * i]);
    re += std::cos(5 * theta) / n;
    im += std::sin(5 * theta) / n;
  }
  CHECK(std::fabs(re - -0.4813124232435475) < 5 / std::sqrt(n));
  CHECK(std::fabs(im - 0.17904304158713938) < 5 / std::sqrt(n));
}
