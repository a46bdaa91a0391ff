// SPDX-License-Identifier: Apache-2.0
// Blocked execution (PlanOptions::block_rows, net/executor.hpp NetBlocking): a small U-Net (odd
// image, time embedding, GroupNorm, stride-2 down, attention, bilinear up, skip Concat) and a
// conditional one with classifier-free guidance give the same bits with blocks of 1, 5, 8 rows,
// the plan's choice and the whole batch, on the reference, simd and xnnpack kernels, 1 and 2
// threads, batch 17 and 64: velocity, exact and Hutchinson log-likelihoods. Blocked runs make no
// heap call; bad block sizes are refused naming the field. The per-node profile
// (Plan::set_profile) counts each node's calls as evaluations x blocks, its times sum to at most
// the run's wall time, it is off by default, changes no bits and makes no heap call.
// Data-parallel blocks (worker threads, at least two blocks: every thread runs whole blocks) give
// one thread's bits on 2 and 3 threads and the one-thread plan's block size; their profile sums
// the threads' tables.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "siflow/model_builder.hpp"
#include "siflow/siflow.hpp"
#include "support/requirements.hpp"
#if defined(SIFLOW_TEST_HEAP_HOOKS)
#include "support/alloc_hooks.hpp"
#endif

namespace {

std::vector<float> uniform(size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

// x [2, 7, 5]. Time embedding t -> 16 -> silu -> 8 channels; conv 2 -> 8 (3x3 same), GroupNorm
// (4 groups), silu, + embedding (and, conditional, + a label embedding and a condition's
// projection); conv 8 -> 12 stride 2 ([12, 4, 3]), silu; attention over its 12 positions; bilinear
// up to 7 x 5; conv 12 -> 8 (1x1); Concat with the skip; conv 16 -> 2 (3x3 same).
std::vector<uint8_t> small_unet(bool conditional) {
  std::mt19937 rng(conditional ? 29 : 17);
  siflow::ModelBuilder b(2 * 7 * 5);
  b.set_x_shape({2, 7, 5});
  uint32_t e = b.fully_connected(b.t(), 16, uniform(16, rng, 1.0f), uniform(16, rng, 0.5f));
  e = b.unary(e, siflow::UnaryKind::kSilu);
  e = b.fully_connected(e, 8, uniform(8 * 16, rng, 0.3f), uniform(8, rng, 0.1f));
  siflow::ImageWindow same;
  same.pads = {1, 1, 1, 1};
  uint32_t h =
      b.conv2d(b.x(), 8, {3, 3}, uniform(8 * 2 * 9, rng, 0.4f), uniform(8, rng, 0.1f), same);
  h = b.group_norm(h, 4, uniform(8, rng, 1.0f), uniform(8, rng, 0.2f));
  h = b.unary(h, siflow::UnaryKind::kSilu);
  h = b.add(h, b.reshape(e, {8, 1, 1}));
  if (conditional) {
    const uint32_t labels = b.label_input(5, 4);
    const uint32_t le = b.embedding(labels, 5, uniform(5 * 8, rng, 0.5f));
    h = b.add(h, b.reshape(le, {8, 1, 1}));
    const uint32_t cond = b.cond_input({3}, {0.0f, 0.0f, 0.0f});
    const uint32_t ce = b.fully_connected(cond, 8, uniform(8 * 3, rng, 0.5f));
    h = b.add(h, b.reshape(ce, {8, 1, 1}));
  }
  const uint32_t skip = h;
  siflow::ImageWindow down;
  down.pads = {1, 1, 1, 1};
  down.strides = {2, 2};
  h = b.conv2d(h, 12, {3, 3}, uniform(12 * 8 * 9, rng, 0.3f), uniform(12, rng, 0.1f), down);
  h = b.unary(h, siflow::UnaryKind::kSilu);
  const uint32_t flat = b.reshape(h, {12, 12});
  const uint32_t qt = b.transpose(flat, {12, 12}, {1, 0});
  const uint32_t attn = b.softmax(b.matmul(qt, qt, true, 0.3f));
  h = b.add(b.reshape(b.matmul(flat, attn, true), {12, 4, 3}), h);
  h = b.resize(h, siflow::ModelBuilder::Resize::kBilinear, 7, 5);
  h = b.conv2d(h, 8, {1, 1}, uniform(8 * 12, rng, 0.3f), uniform(8, rng, 0.1f));
  h = b.reshape(b.concat({h, skip}), {16, 7, 5});
  b.set_output(b.conv2d(h, 2, {3, 3}, uniform(2 * 16 * 9, rng, 0.2f), {}, same));
  return b.finish();
}

struct Net {
  std::vector<uint8_t> bytes;
  std::unique_ptr<siflow::Model> model;
};

Net load(std::vector<uint8_t> bytes) {
  Net net{std::move(bytes), nullptr};
  siflow::LoadOptions lo;
  lo.allow_copy = true;
  const siflow::Status s = siflow::Model::load(net.bytes.data(), net.bytes.size(), lo, &net.model);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  return net;
}

struct Results {
  std::vector<float> v;
  std::vector<double> exact, hutch;
  size_t block = 0;  // Plan::block_rows() of the velocity
};

struct Setup {
  siflow::Backend backend;
  uint32_t threads;
  size_t batch;
  bool exact;  // also the exact log-likelihood (its d directions make big batches slow)
  double guidance = 1.0;
};

// The velocity at per-row times, a 1-step Euler exact log-likelihood and a 2-step RK4
// Hutchinson one (2 probes) on `batch` rows, with blocks of `block` rows (0: the plan's choice).
Results run(const siflow::Model& m, const Setup& s, size_t block) {
  siflow::PlanOptions po;
  po.max_batch = s.batch;
  po.backend = s.backend;
  po.threads = s.threads;
  po.max_probes = 2;
  po.block_rows = block;
  po.guidance = s.guidance;
  if (!s.exact) po.divergence = siflow::DivergenceMode::kHutchinson;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status st = siflow::Plan::create(m, po, nullptr, 0, &plan);
  REQUIRE_MESSAGE(st.ok(), std::string(st.message()));
  const size_t n = s.batch, d = m.info().dim;
  std::mt19937 rng(11);
  const std::vector<float> y = uniform(n * d, rng, 1.0f);
  std::vector<float> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = (i + 0.5f) / n;
  std::vector<int32_t> labels(n);
  for (size_t i = 0; i < n; ++i) labels[i] = static_cast<int32_t>(i % 4);
  const std::vector<float> cond = uniform(n * 3, rng, 1.0f);
  siflow::Conditioning c;
  if (m.info().takes_labels) {
    c.labels = labels.data();
    c.cond = cond.data();
  }
  Results r;
  r.block = plan->block_rows();
  if (block) CHECK(r.block == block);
  r.v.resize(n * d);
  siflow::Status vs = plan->velocity(n, t.data(), y.data(), c, r.v.data());
  REQUIRE_MESSAGE(vs.ok(), std::string(vs.message()));
  siflow::LogProbOptions lo;
  if (s.exact) {
    lo.ode.method = siflow::Method::kEuler;
    lo.ode.steps = 1;
    r.exact.resize(n);
    const siflow::Status es = plan->log_prob(n, y.data(), lo, c, r.exact.data());
    REQUIRE_MESSAGE(es.ok(), std::string(es.message()));
  }
  lo.ode.method = siflow::Method::kRK4;
  lo.ode.steps = 2;
  lo.divergence.mode = siflow::DivergenceMode::kHutchinson;
  lo.divergence.probes = 2;
  lo.divergence.seed = 6;
  r.hutch.resize(n);
  const siflow::Status hs = plan->log_prob(n, y.data(), lo, c, r.hutch.data());
  REQUIRE_MESSAGE(hs.ok(), std::string(hs.message()));
  return r;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  // memcmp must not see the null data() of an empty vector (UBSan flags it).
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Every block size against the whole batch at once (block_rows = 2 batch: one block, also for a
// guided plan, whose network runs 2 batch rows).
void check_blocks(const siflow::Model& m, const Setup& s) {
  const Results whole = run(m, s, 2 * s.batch);
  CHECK(whole.block == 2 * s.batch);
  bool finite = true;
  for (float f : whole.v) finite = finite && std::isfinite(f);
  REQUIRE(finite);
  for (size_t block : {size_t{1}, size_t{5}, size_t{8}, size_t{0}}) {
    INFO("block_rows " << block);
    const Results r = run(m, s, block);
    CHECK(same_bits(r.v, whole.v));
    CHECK(same_bits(r.exact, whole.exact));
    CHECK(same_bits(r.hutch, whole.hutch));
  }
}

void check_backend(siflow::Backend backend, uint32_t threads) {
  const Net net = load(small_unet(false));
  // Two threads only at batch 17: every block of a run is a dispatch to the pool, which on a
  // loaded machine waits for a descheduled worker.
  for (size_t batch : {size_t{17}, size_t{64}}) {
    if (threads > 1 && batch > 17) continue;
    INFO("batch " << batch << ", " << threads << " thread(s), backend "
                  << siflow::backend_name(backend));
    check_blocks(*net.model, Setup{backend, threads, batch, batch == 17});
  }
}

TEST_CASE("blocked runs are bit-identical to whole-batch runs: reference and simd, 1 thread") {
  check_backend(siflow::Backend::kReference, 1);
  check_backend(siflow::Backend::kSimd, 1);
}

TEST_CASE("blocked runs are bit-identical to whole-batch runs: reference and simd, 2 threads" *
          SIFLOW_NEEDS_POOL) {
  check_backend(siflow::Backend::kReference, 2);
  check_backend(siflow::Backend::kSimd, 2);
}

TEST_CASE("blocked runs are bit-identical to whole-batch runs: xnnpack, 1 thread" *
          SIFLOW_NEEDS_XNNPACK) {
  check_backend(siflow::Backend::kXnnpack, 1);
}

TEST_CASE("blocked runs are bit-identical to whole-batch runs: xnnpack, 2 threads" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  check_backend(siflow::Backend::kXnnpack, 2);
}

// Data-parallel blocks (net/executor.hpp NetBlocking::threads): with worker threads and at least
// two blocks each thread runs whole blocks on its own buffers, scratch and XNNPACK operator part.
// Every block size on 2 and 3 threads against one thread's whole batch, and the automatic block
// equal to the one-thread plan's.
void check_threads_against_one(siflow::Backend backend, size_t batch, bool exact) {
  const Net net = load(small_unet(false));
  const Results one = run(*net.model, Setup{backend, 1, batch, exact}, 2 * batch);
  const Results one_auto = run(*net.model, Setup{backend, 1, batch, exact}, 0);
  for (uint32_t threads : {2u, 3u})
    for (size_t block : {size_t{1}, size_t{5}, size_t{0}}) {
      INFO(threads << " threads, batch " << batch << ", block_rows " << block << ", backend "
                   << siflow::backend_name(backend));
      const Results r = run(*net.model, Setup{backend, threads, batch, exact}, block);
      if (block == 0) CHECK(r.block == one_auto.block);
      CHECK(same_bits(r.v, one.v));
      CHECK(same_bits(r.exact, one.exact));
      CHECK(same_bits(r.hutch, one.hutch));
    }
}

TEST_CASE("data-parallel blocks on 2 and 3 threads give one thread's bits: reference and simd" *
          SIFLOW_NEEDS_POOL) {
  check_threads_against_one(siflow::Backend::kReference, 17, true);
  check_threads_against_one(siflow::Backend::kSimd, 17, true);
  check_threads_against_one(siflow::Backend::kSimd, 64, false);
}

TEST_CASE("data-parallel blocks on 2 and 3 threads give one thread's bits: xnnpack" *
          SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  check_threads_against_one(siflow::Backend::kXnnpack, 17, true);
  check_threads_against_one(siflow::Backend::kXnnpack, 64, false);
}

TEST_CASE("blocked runs of a guided conditional model: labels, conditions and the doubled rows") {
  const Net net = load(small_unet(true));
  REQUIRE(net.model->info().takes_labels);
  for (double guidance : {1.0, 2.5}) {
    INFO("guidance " << guidance);
    check_blocks(*net.model, Setup{siflow::Backend::kSimd, 1, 17, true, guidance});
  }
}

TEST_CASE("data-parallel blocks of a guided conditional model give one thread's bits" *
          SIFLOW_NEEDS_POOL) {
  const Net net = load(small_unet(true));
  for (double guidance : {1.0, 2.5}) {
    const Results one = run(*net.model, Setup{siflow::Backend::kSimd, 1, 17, true, guidance}, 0);
    for (size_t block : {size_t{1}, size_t{5}}) {
      INFO("guidance " << guidance << ", 2 threads, block_rows " << block);
      const Results r =
          run(*net.model, Setup{siflow::Backend::kSimd, 2, 17, true, guidance}, block);
      CHECK(same_bits(r.v, one.v));
      CHECK(same_bits(r.exact, one.exact));
      CHECK(same_bits(r.hutch, one.hutch));
    }
  }
}

TEST_CASE("the plan chooses a block from its working set and reports it") {
  const Net net = load(small_unet(false));
  siflow::PlanOptions po;
  po.max_batch = 4096;
  po.divergence = siflow::DivergenceMode::kExact;
  std::unique_ptr<siflow::Plan> plan;
  REQUIRE(siflow::Plan::create(*net.model, po, nullptr, 0, &plan).ok());
  // The widest node touches a few KB per row: far more than one row but not all 4096 rows
  // fit the cache budget; a tangent direction per row makes the block smaller.
  const size_t velocity = plan->block_rows(0), exact = plan->block_rows(net.model->info().dim);
  INFO("velocity block " << velocity << ", exact block " << exact);
  CHECK(velocity > 1);
  CHECK(velocity < 4096);
  CHECK(exact >= 1);
  CHECK(exact < velocity);
  po.block_rows = 7;
  REQUIRE(siflow::Plan::create(*net.model, po, nullptr, 0, &plan).ok());
  CHECK(plan->block_rows(0) == 7);
  CHECK(plan->block_rows(70) == 7);
}

TEST_CASE("a block size past the largest batch is refused naming block_rows") {
  const Net net = load(small_unet(false));
  siflow::PlanOptions po;
  po.block_rows = static_cast<size_t>(siflow::Limits::kMaxBatch) + 1;
  std::unique_ptr<siflow::Plan> plan;
  const siflow::Status s = siflow::Plan::create(*net.model, po, nullptr, 0, &plan);
  CHECK(s.code() == siflow::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()).find("block_rows") != std::string::npos);
}

// Samples `n` rows with RK4 over 2 steps: 8 network evaluations.
std::vector<float> sample_rk4(siflow::Plan& plan, size_t n) {
  siflow::SampleOptions so;
  so.ode.method = siflow::Method::kRK4;
  so.ode.steps = 2;
  std::vector<float> x(n * plan.model().info().dim);
  const siflow::Status s = plan.sample(n, so, x.data(), nullptr);
  REQUIRE_MESSAGE(s.ok(), std::string(s.message()));
  return x;
}

TEST_CASE("the profile counts evaluations x blocks per node, and its time fits in the run's") {
  const Net net = load(small_unet(false));
  const siflow::Model& m = *net.model;
  const uint32_t nodes = m.info().node_count;
  for (siflow::Backend backend : {siflow::Backend::kReference, siflow::Backend::kSimd})
    for (size_t block : {size_t{5}, size_t{17}}) {
      INFO("backend " << siflow::backend_name(backend) << ", block_rows " << block);
      siflow::PlanOptions po;
      po.max_batch = 17;
      po.backend = backend;
      po.block_rows = block;
      po.divergence = siflow::DivergenceMode::kExact;
      std::unique_ptr<siflow::Plan> plan;
      REQUIRE(siflow::Plan::create(m, po, nullptr, 0, &plan).ok());
      const std::vector<float> plain = sample_rk4(*plan, 17);
      std::vector<siflow::NodeProfile> table(nodes);
      // Too small a table is refused; a plan starts with profiling off (the run above added
      // nothing to a table it never had).
      CHECK(plan->set_profile(table.data(), nodes - 1).code() ==
            siflow::StatusCode::kInvalidArgument);
      REQUIRE(plan->set_profile(table.data(), table.size()).ok());
      const auto start = std::chrono::steady_clock::now();
      const std::vector<float> profiled = sample_rk4(*plan, 17);
      const double wall_ns =
          std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start)
              .count();
      CHECK(same_bits(plain, profiled));
      const uint64_t evaluations = plan->evaluations();
      CHECK(evaluations == 8);
      const uint64_t blocks = (17 + block - 1) / block;
      uint64_t total_ns = 0;
      for (uint32_t i = 0; i < nodes; ++i) {
        INFO("node " << i);
        CHECK(table[i].calls == evaluations * blocks);
        CHECK(table[i].rows == evaluations * 17);
        total_ns += table[i].nanoseconds;
      }
      CHECK(total_ns > 0);
      CHECK(static_cast<double>(total_ns) <= wall_ns);
      // Off again: the table keeps what it has.
      REQUIRE(plan->set_profile(nullptr, 0).ok());
      const std::vector<siflow::NodeProfile> kept = table;
      sample_rk4(*plan, 17);
      for (uint32_t i = 0; i < nodes; ++i) CHECK(table[i].calls == kept[i].calls);
      // An exact log-likelihood counts each row once per tangent direction more.
      for (siflow::NodeProfile& p : table) p = siflow::NodeProfile();
      REQUIRE(plan->set_profile(table.data(), table.size()).ok());
      std::vector<double> logp(3);
      siflow::LogProbOptions lo;
      lo.ode.method = siflow::Method::kEuler;
      lo.ode.steps = 1;
      REQUIRE(plan->log_prob(3, plain.data(), lo, logp.data()).ok());
      const uint64_t dim = m.info().dim;
      CHECK(table[0].calls == 1);
      CHECK(table[nodes - 1].rows == 3 * (1 + dim));
    }
}

TEST_CASE("a profile of data-parallel blocks sums the threads' calls, rows and times" *
          SIFLOW_NEEDS_POOL) {
  const Net net = load(small_unet(false));
  const siflow::Model& m = *net.model;
  const uint32_t nodes = m.info().node_count;
  for (uint32_t threads : {2u, 3u}) {
    INFO(threads << " threads");
    siflow::PlanOptions po;
    po.max_batch = 17;
    po.backend = siflow::Backend::kSimd;
    po.threads = threads;
    po.block_rows = 5;
    std::unique_ptr<siflow::Plan> plan;
    REQUIRE(siflow::Plan::create(m, po, nullptr, 0, &plan).ok());
    const std::vector<float> plain = sample_rk4(*plan, 17);
    std::vector<siflow::NodeProfile> table(nodes);
    REQUIRE(plan->set_profile(table.data(), table.size()).ok());
    const auto start = std::chrono::steady_clock::now();
    const std::vector<float> profiled = sample_rk4(*plan, 17);
    const double wall_ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    CHECK(same_bits(plain, profiled));
    const uint64_t evaluations = plan->evaluations();
    uint64_t total_ns = 0;
    for (uint32_t i = 0; i < nodes; ++i) {
      INFO("node " << i);
      CHECK(table[i].calls == evaluations * 4);  // blocks of 5, 5, 5 and 2 rows
      CHECK(table[i].rows == evaluations * 17);
      total_ns += table[i].nanoseconds;
    }
    CHECK(total_ns > 0);
    CHECK(static_cast<double>(total_ns) <= threads * wall_ns);
    // The threads' own tables were emptied into the plan's: a second run adds as much again.
    const std::vector<siflow::NodeProfile> first = table;
    sample_rk4(*plan, 17);
    for (uint32_t i = 0; i < nodes; ++i) CHECK(table[i].calls == 2 * first[i].calls);
  }
}

TEST_CASE("node_flops counts convolutions, dense layers and matmuls, and nothing else") {
  const Net net = load(small_unet(false));
  const siflow::Model& m = *net.model;
  uint32_t convs = 0, dense = 0, matmuls = 0;
  for (uint32_t i = 0; i < m.info().node_count; ++i) {
    const char* op = "";
    uint32_t in = 0, width = 0;
    m.node(i, &op, &in, &width);
    const std::string name = op;
    const uint64_t flops = m.node_flops(i);
    INFO("node " << i << " " << name);
    if (name == "fully_connected") {
      CHECK(flops == 2ull * in * width);
      ++dense;
    } else if (name == "conv2d") {
      CHECK(flops > 0);
      ++convs;
    } else if (name == "matmul") {
      CHECK(flops > 0);
      ++matmuls;
    } else {
      CHECK(flops == 0);
    }
  }
  REQUIRE(convs == 4);
  // The first conv: 2 -> 8 channels, 3x3, 7x5 outputs; the stride-2 one 8 -> 12 on 4x3 outputs;
  // attention's first matmul [12, 12] x [12, 12] (transposed b).
  uint32_t conv = 0;
  for (uint32_t i = 0; i < m.info().node_count; ++i) {
    const char* op = "";
    m.node(i, &op, nullptr, nullptr);
    if (std::string(op) == "conv2d" && conv++ == 0) CHECK(m.node_flops(i) == 2ull * 8 * 35 * 2 * 9);
    if (std::string(op) == "conv2d" && conv == 2) CHECK(m.node_flops(i) == 2ull * 12 * 12 * 8 * 9);
    if (std::string(op) == "matmul") CHECK(m.node_flops(i) == 2ull * 12 * 12 * 12);
  }
  CHECK(dense == 2);
  CHECK(matmuls == 2);
  CHECK(m.node_flops(m.info().node_count) == 0);
}

#if defined(SIFLOW_TEST_HEAP_HOOKS)
TEST_CASE("a profiled run makes no heap call" * SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  const Net net = load(small_unet(false));
  for (siflow::Backend backend : {siflow::Backend::kSimd, siflow::Backend::kXnnpack})
    for (uint32_t threads : {1u, 2u}) {
      INFO(threads << " thread(s), backend " << siflow::backend_name(backend));
      siflow::PlanOptions po;
      po.max_batch = 16;
      po.threads = threads;
      po.backend = backend;
      po.block_rows = 3;
      po.divergence = siflow::DivergenceMode::kExact;
      std::unique_ptr<siflow::Plan> plan;
      REQUIRE(siflow::Plan::create(*net.model, po, nullptr, 0, &plan).ok());
      std::vector<siflow::NodeProfile> table(net.model->info().node_count);
      REQUIRE(plan->set_profile(table.data(), table.size()).ok());
      const size_t d = net.model->info().dim;
      std::vector<float> y(37 * d), x(37 * d);
      std::vector<double> logp(37);
      for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
      siflow::SampleOptions so;
      so.ode.method = siflow::Method::kEuler;
      so.ode.steps = 1;
      siflow::LogProbOptions exact;
      exact.ode.method = siflow::Method::kEuler;
      exact.ode.steps = 1;
      siflow_test::heap_watch_begin();
      const siflow::Status s1 = plan->sample(37, so, y.data(), logp.data());
      const siflow::Status s2 = plan->log_prob(37, x.data(), exact, logp.data());
      const unsigned long calls = siflow_test::heap_watch_end().calls;
      CHECK(s1.ok());
      CHECK(s2.ok());
      CHECK(calls == 0);
      CHECK(table[0].calls > 0);
    }
}
#endif

#if defined(SIFLOW_TEST_HEAP_HOOKS)
TEST_CASE("blocked runs make no heap call while running" * SIFLOW_NEEDS_XNNPACK_AND_POOL) {
  const Net net = load(small_unet(false));
  for (siflow::Backend backend : {siflow::Backend::kSimd, siflow::Backend::kXnnpack})
    for (uint32_t threads : {1u, 2u}) {
      INFO(threads << " thread(s), backend " << siflow::backend_name(backend));
      siflow::PlanOptions po;
      po.max_batch = 16;
      po.threads = threads;
      po.max_probes = 2;
      po.backend = backend;
      po.block_rows = 3;
      std::unique_ptr<siflow::Plan> plan;
      REQUIRE(siflow::Plan::create(*net.model, po, nullptr, 0, &plan).ok());
      const size_t d = net.model->info().dim;
      std::vector<float> y(37 * d), x(37 * d);
      std::vector<double> logp(37);
      for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
      siflow::SampleOptions so;
      so.ode.method = siflow::Method::kEuler;
      so.ode.steps = 1;
      siflow::LogProbOptions exact, hutch;
      exact.ode.method = siflow::Method::kEuler;
      exact.ode.steps = 1;
      hutch.ode.method = siflow::Method::kEuler;
      hutch.ode.steps = 1;
      hutch.divergence.mode = siflow::DivergenceMode::kHutchinson;
      hutch.divergence.probes = 2;
      siflow_test::heap_watch_begin();
      // 37 rows: chunks of 16, 16 and 5, in blocks of 3 rows (the last of each chunk shorter).
      const siflow::Status s1 = plan->sample(37, so, y.data(), logp.data());
      const siflow::Status s2 = plan->log_prob(37, x.data(), exact, logp.data());
      const siflow::Status s3 = plan->log_prob(37, x.data(), hutch, logp.data());
      const unsigned long calls = siflow_test::heap_watch_end().calls;
      CHECK(s1.ok());
      CHECK(s2.ok());
      CHECK(s3.ok());
      CHECK(calls == 0);
    }
}
#endif

}  // namespace
