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

  // Calls fn(ctx, r0, r1) over [0, rows) in ranges of a multiple of `grain` rows (but the last).
  // A loop started from inside another loop's range runs inline.
  typedef void (*RangeFn)(void* ctx, size_t r0, size_t r1);
  void run(size_t rows, size_t grain, RangeFn fn, void* ctx);

 private:
  RowPool() = default;
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

}  // namespace siflow
