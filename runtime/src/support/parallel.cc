// SPDX-License-Identifier: Apache-2.0
// RowPool: the caller plus threads - 1 workers started at plan time, or a single-thread stand-in
// when the build has no threads. A loop is published by bumping a generation counter; its ranges
// are claimed from a shared counter by whichever thread comes first (the caller included), so a
// late worker costs the loop nothing but the wait for it to check in. Workers spin for
// kSpinNanoseconds after a loop and then sleep on a condition variable; the caller wakes sleepers
// only when there are any. Everything here is std::atomic, std::mutex and std::condition_variable
// (which ThreadSanitizer sees), and nothing is allocated after create().
#include "support/parallel.hpp"

#include <cstdlib>
#include <new>

#if defined(SIFLOW_WITH_THREADS)
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#endif

namespace siflow {

bool RowPool::available() {
#if defined(SIFLOW_WITH_THREADS)
  return true;
#else
  return false;
#endif
}

Status RowPool::check(uint32_t threads) {
  if (threads == 0) return Status::error(StatusCode::kInvalidArgument, "threads is 0 (use 1)");
  if (threads > 256)
    return Status::error(StatusCode::kInvalidArgument, "threads = %u exceeds the limit 256",
                         threads);
  if (threads > 1 && !available())
    return Status::error(StatusCode::kUnsupported,
                         "threads = %u, but this build has no thread pool; it runs on the "
                         "caller's thread only (threads = 1)",
                         threads);
  return Status();
}

#if defined(SIFLOW_WITH_THREADS)
struct PoolState {
  uint32_t workers = 0;  // threads - 1
  uint32_t started = 0;  // workers running (create may fail part-way)
  pthread_t* ids = nullptr;
  std::mutex mutex;
  std::condition_variable wake;
  std::atomic<uint64_t> generation{0};  // bumped once per loop (and once to stop)
  std::atomic<uint32_t> sleeping{0};    // workers waiting on `wake`
  // The current loop's entry: generation << 32 | closed << 31 | workers that joined. A worker
  // joins only an open entry of the generation it saw; the caller closes the entry when it has
  // run out of ranges and waits for the workers that joined, never for one that is not running
  // (on a loaded machine a descheduled worker would otherwise hold every loop up).
  std::atomic<uint64_t> entry{0};
  std::atomic<uint32_t> finished{0};  // joined workers done with the current loop
  std::atomic<size_t> next{0};        // the next range to claim
  std::atomic<bool> stop{false};
  std::atomic<bool> running{false};  // a loop is in progress (a second caller runs inline)
  std::atomic<uint32_t> indices{0};  // workers that took their thread index
  // The current loop: written by the caller before the generation is bumped.
  RowPool::RangeFn fn = nullptr;
  void* ctx = nullptr;
  size_t rows = 0, tile = 0, tiles = 0;
};

namespace {
thread_local bool t_in_range = false;  // this thread is inside a loop's range
thread_local uint32_t t_index = 0;     // RowPool::thread_index()

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield");
#endif
}

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

constexpr uint64_t kClosed = uint64_t{1} << 31;

// Joins the loop of generation g unless the caller closed it already.
bool join(PoolState* s, uint64_t g) {
  uint64_t e = s->entry.load(std::memory_order_acquire);
  for (;;) {
    if ((e >> 32) != (g & 0xffffffffu) || (e & kClosed)) return false;
    if (s->entry.compare_exchange_weak(e, e + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
      return true;
  }
}

// Claims and runs ranges until none is left.
void work(PoolState* s) {
  t_in_range = true;
  for (;;) {
    const size_t t = s->next.fetch_add(1, std::memory_order_relaxed);
    if (t >= s->tiles) break;
    const size_t r0 = t * s->tile;
    const size_t r1 = s->rows - r0 < s->tile ? s->rows : r0 + s->tile;
    s->fn(s->ctx, r0, r1);
  }
  t_in_range = false;
}

// The next generation after `seen`: spins for kSpinNanoseconds, then sleeps.
uint64_t wait_for_loop(PoolState* s, uint64_t seen) {
  const uint64_t start = now_ns();
  for (uint32_t i = 1;; ++i) {
    const uint64_t g = s->generation.load(std::memory_order_acquire);
    if (g != seen) return g;
    cpu_relax();
    if ((i & 63) == 0 && now_ns() - start > RowPool::kSpinNanoseconds) break;
  }
  std::unique_lock<std::mutex> lock(s->mutex);
  // seq_cst with the caller's bump and load of `sleeping`: either the caller sees this worker
  // asleep and notifies under the mutex, or this load sees the new generation.
  s->sleeping.fetch_add(1, std::memory_order_seq_cst);
  uint64_t g;
  while ((g = s->generation.load(std::memory_order_seq_cst)) == seen) s->wake.wait(lock);
  s->sleeping.fetch_sub(1, std::memory_order_relaxed);
  return g;
}

void* worker_main(void* arg) {
  PoolState* s = static_cast<PoolState*>(arg);
  t_index = 1 + s->indices.fetch_add(1, std::memory_order_relaxed);
  uint64_t seen = 0;
  for (;;) {
    seen = wait_for_loop(s, seen);
    if (s->stop.load(std::memory_order_acquire)) return nullptr;
    if (!join(s, seen)) continue;  // the caller finished that loop alone
    work(s);
    s->finished.fetch_add(1, std::memory_order_release);
  }
}

void publish(PoolState* s) {
  const uint64_t g = s->generation.load(std::memory_order_relaxed) + 1;
  s->finished.store(0, std::memory_order_relaxed);
  s->entry.store((g & 0xffffffffu) << 32, std::memory_order_relaxed);
  s->generation.store(g, std::memory_order_seq_cst);
  if (s->sleeping.load(std::memory_order_seq_cst) != 0) {
    std::lock_guard<std::mutex> lock(s->mutex);
    s->wake.notify_all();
  }
}

void stop_workers(PoolState* s) {
  s->stop.store(true, std::memory_order_release);
  publish(s);
  for (uint32_t i = 0; i < s->started; ++i) pthread_join(s->ids[i], nullptr);
}
}  // namespace
#else
struct PoolState {};
#endif

Status RowPool::create(uint32_t threads, RowPool** out) {
  *out = nullptr;
  Status s = check(threads);
  if (!s.ok()) return s;
  RowPool* pool = new (std::nothrow) RowPool();
  if (!pool) return Status::error(StatusCode::kOutOfMemory, "cannot allocate the thread pool");
  pool->threads_ = threads;
#if defined(SIFLOW_WITH_THREADS)
  if (threads > 1) {
    PoolState* st = new (std::nothrow) PoolState();
    pthread_t* ids = st ? new (std::nothrow) pthread_t[threads - 1] : nullptr;
    if (!ids) {
      delete st;
      delete pool;
      return Status::error(StatusCode::kOutOfMemory, "cannot allocate the thread pool");
    }
    st->workers = threads - 1;
    st->ids = ids;
    pool->state_ = st;
    for (uint32_t i = 0; i < st->workers; ++i) {
      if (pthread_create(&ids[i], nullptr, worker_main, st) != 0) {
        destroy(pool);
        return Status::error(StatusCode::kOutOfMemory, "cannot start a pool of %u threads",
                             threads);
      }
      ++st->started;
    }
  }
#endif
  *out = pool;
  return Status();
}

void RowPool::destroy(RowPool* pool) {
  if (!pool) return;
#if defined(SIFLOW_WITH_THREADS)
  if (PoolState* st = pool->state_) {
    stop_workers(st);
    delete[] st->ids;
    delete st;
  }
#endif
  delete pool;
}

uint32_t RowPool::thread_index() {
#if defined(SIFLOW_WITH_THREADS)
  return t_index;
#else
  return 0;
#endif
}

void RowPool::run(size_t rows, size_t grain, RangeFn fn, void* ctx) {
  // About two ranges per thread, in whole multiples of `grain` rows.
  size_t tile = (rows + 2 * size_t{threads_} - 1) / (2 * size_t{threads_});
  if (grain > 1) tile = (tile + grain - 1) / grain * grain;
  run_tiles(rows, tile, fn, ctx);
}

void RowPool::run_items(size_t items, RangeFn fn, void* ctx) {
#if defined(SIFLOW_WITH_THREADS)
  if (state_ && !t_in_range) {
    run_tiles(items, 1, fn, ctx);
    return;
  }
#endif
  for (size_t i = 0; i < items; ++i) fn(ctx, i, i + 1);
}

void RowPool::run_tiles(size_t rows, size_t tile, RangeFn fn, void* ctx) {
#if defined(SIFLOW_WITH_THREADS)
  PoolState* s = state_;
  bool idle = false;
  if (s && !t_in_range && s->running.compare_exchange_strong(idle, true)) {
    s->fn = fn;
    s->ctx = ctx;
    s->rows = rows;
    s->tile = tile;
    s->tiles = (rows + tile - 1) / tile;
    s->next.store(0, std::memory_order_relaxed);
    publish(s);
    work(s);
    // Close the loop, then wait for the workers that joined it (their ranges before the caller
    // reads anything they wrote).
    const uint32_t joined =
        static_cast<uint32_t>(s->entry.fetch_or(kClosed, std::memory_order_acq_rel) & 0xffff);
    const uint64_t start = now_ns();
    for (uint32_t i = 1; s->finished.load(std::memory_order_acquire) != joined; ++i) {
      if ((i & 63) == 0 && now_ns() - start > kSpinNanoseconds)
        sched_yield();  // a worker was descheduled: let it run
      else
        cpu_relax();
    }
    s->running.store(false, std::memory_order_release);
    return;
  }
#endif
  (void)tile;
  fn(ctx, 0, rows);
}

}  // namespace siflow
