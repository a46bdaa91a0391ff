// SPDX-License-Identifier: Apache-2.0
// Row-parallel loops over the plan's own worker threads when the build has threads. The caller's
// thread takes part; with one thread, or without threads, the loop runs inline. A pool is created
// at plan time; running a loop allocates nothing. Work is split into contiguous row ranges, and
// every kernel computes a row the same way whatever range it falls in, so results do not depend
// on the thread count. Between loops a worker spins for a bounded time (kSpinNanoseconds: the
// gaps between a network's nodes) and then sleeps, so an idle plan holds no core.
#pragma once

#include <cstddef>
#include <cstdint>

#include "siflow/siflow.hpp"

namespace siflow {

// Rows a thread's range is a multiple of: whole GEMM tiles of every simd variant (8, 6 and 2
// rows). Runs and the plan-time kernel tuner split rows the same way.
constexpr size_t kRowGrain = 24;

// The least work, in values touched, worth a range of its own: a loop with less runs inline on
// the caller's thread (handing a range to a worker costs a few microseconds, about what a simd
// kernel takes over this many values). Ops set their grains from it.
constexpr size_t kMinParallelValues = 8192;
// The same for convolutions, in multiply-adds.
constexpr uint64_t kMinParallelMacs = uint64_t{1} << 17;

// Elementwise loops split their values into chunks of this many, counted from the start of the
// call's values whatever the thread count: a multiple of every simd variant's unrolled step (four
// vectors of up to 16 lanes), so each value goes through the same code in any split.
constexpr size_t kValueChunk = 2048;

struct PoolState;  // parallel.cc

class RowPool {
 public:
  // A worker waits this long for the next loop before it sleeps (a wake-up costs tens of
  // microseconds; a network's nodes follow each other much faster).
  static constexpr uint64_t kSpinNanoseconds = 200000;

  // A pool of `threads` threads (the caller plus threads - 1 workers). threads == 1 creates
  // none. Fails with kUnsupported when the build has no threads and threads > 1.
  static Status create(uint32_t threads, RowPool** out);
  static void destroy(RowPool* pool);
  static bool available();  // whether this build can run more than one thread
  // The checks create() makes of a thread count, without starting anything.
  static Status check(uint32_t threads);

  uint32_t threads() const { return threads_; }
  // The threads a loop on `pool` runs on: 1 for nullptr (every loop inline, parallel_rows).
  static uint32_t threads_of(const RowPool* pool) { return pool ? pool->threads_ : 1; }

  // Calls fn(ctx, r0, r1) over [0, rows) in ranges of a multiple of `grain` rows (but the last).
  // A loop started from inside another loop's range runs inline.
  typedef void (*RangeFn)(void* ctx, size_t r0, size_t r1);
  void run(size_t rows, size_t grain, RangeFn fn, void* ctx);
  // Calls fn(ctx, i, i + 1) for every item i in [0, items), each item claimed on its own by
  // whichever thread comes first (for items of uneven or large work: the data-parallel blocks of
  // net/executor.cc). Inline like run() from inside a range.
  void run_items(size_t items, RangeFn fn, void* ctx);

  // The calling thread's index in its pool: 0 for the caller's thread (any thread that is not a
  // worker), 1 .. threads - 1 for the workers. Per-thread resources are picked by it.
  static uint32_t thread_index();

 private:
  RowPool() = default;
  void run_tiles(size_t rows, size_t tile, RangeFn fn, void* ctx);
  uint32_t threads_ = 1;
  [[maybe_unused]] PoolState* state_ = nullptr;  // unused in builds without threads
};

// fn(r0, r1) over [0, rows) on the pool (or inline when pool is nullptr).
template <typename Fn>
void parallel_rows(RowPool* pool, size_t rows, size_t grain, const Fn& fn) {
  if (!pool || pool->threads() == 1 || rows <= grain) {
    if (rows) fn(size_t{0}, rows);
    return;
  }
  pool->run(
      rows, grain, [](void* ctx, size_t r0, size_t r1) { (*static_cast<const Fn*>(ctx))(r0, r1); },
      const_cast<Fn*>(&fn));
}

// fn(v0, v1) over values [0, count) of an elementwise loop doing `work` per value (1 for a
// cheap one): ranges of whole kValueChunk chunks (but the last), at least kMinParallelValues / work
// values each; inline when the loop is smaller.
template <typename Fn>
void parallel_values(RowPool* pool, size_t count, size_t work, const Fn& fn) {
  const size_t chunks = (count + kValueChunk - 1) / kValueChunk;
  const size_t least = kMinParallelValues / (work ? work : 1);
  const size_t grain = least > kValueChunk ? (least + kValueChunk - 1) / kValueChunk : 1;
  parallel_rows(pool, chunks, grain, [&](size_t c0, size_t c1) {
    const size_t v1 = c1 * kValueChunk;
    fn(c0 * kValueChunk, v1 < count ? v1 : count);
  });
}

}  // namespace siflow
