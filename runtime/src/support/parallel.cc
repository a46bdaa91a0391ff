// SPDX-License-Identifier: Apache-2.0
// RowPool over pthreadpool, or a single-thread stand-in when the build has none.
#include "support/parallel.hpp"

#include <cstdlib>
#include <new>

#if defined(SIFLOW_WITH_THREADS)
#include <pthreadpool.h>
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
                         "threads = %u, but this build has no thread pool (pthreadpool); it "
                         "runs on the caller's thread only (threads = 1)",
                         threads);
  return Status();
}

Status RowPool::create(uint32_t threads, RowPool** out) {
  *out = nullptr;
  Status s = check(threads);
  if (!s.ok()) return s;
  RowPool* pool = new (std::nothrow) RowPool();
  if (!pool) return Status::error(StatusCode::kOutOfMemory, "cannot allocate the thread pool");
  pool->threads_ = threads;
#if defined(SIFLOW_WITH_THREADS)
  if (threads > 1) {
    pool->pool_ = pthreadpool_create(threads);
    if (!pool->pool_) {
      delete pool;
      return Status::error(StatusCode::kOutOfMemory, "cannot start a pool of %u threads", threads);
    }
  }
#endif
  *out = pool;
  return Status();
}

void RowPool::destroy(RowPool* pool) {
  if (!pool) return;
#if defined(SIFLOW_WITH_THREADS)
  if (pool->pool_) pthreadpool_destroy(static_cast<pthreadpool_t>(pool->pool_));
#endif
  delete pool;
}

#if defined(SIFLOW_WITH_THREADS)
// pthreadpool is not built with ThreadSanitizer, so TSan cannot see the fork and join it
// performs around each loop. These annotations state exactly that happens-before (the caller's
// writes before the loop are visible to every range, every range's writes to the caller after
// it), and nothing more: races between two ranges are still reported.
#if defined(__SANITIZE_THREAD__)
#define SIFLOW_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIFLOW_TSAN 1
#endif
#endif
#if defined(SIFLOW_TSAN)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#define SIFLOW_TSAN_ACQUIRE(p) __tsan_acquire(p)
#define SIFLOW_TSAN_RELEASE(p) __tsan_release(p)
#else
#define SIFLOW_TSAN_ACQUIRE(p) (void)(p)
#define SIFLOW_TSAN_RELEASE(p) (void)(p)
#endif

namespace {
struct RangeTask {
  RowPool::RangeFn fn;
  void* ctx;
  size_t rows;
};
void run_range(void* ctx, size_t start, size_t count) {
  SIFLOW_TSAN_ACQUIRE(ctx);
  const RangeTask* t = static_cast<const RangeTask*>(ctx);
  const size_t end = start + count < t->rows ? start + count : t->rows;
  t->fn(t->ctx, start, end);
  SIFLOW_TSAN_RELEASE(ctx);
}
}  // namespace
#endif

void RowPool::run(size_t rows, size_t grain, RangeFn fn, void* ctx) {
#if defined(SIFLOW_WITH_THREADS)
  if (pool_) {
    // About two ranges per thread, in whole multiples of `grain` rows.
    size_t tile = (rows + 2 * threads_ - 1) / (2 * threads_);
    tile = (tile + grain - 1) / grain * grain;
    RangeTask task{fn, ctx, rows};
    SIFLOW_TSAN_RELEASE(&task);
    pthreadpool_parallelize_1d_tile_1d(static_cast<pthreadpool_t>(pool_), run_range, &task, rows,
                                       tile, 0);
    SIFLOW_TSAN_ACQUIRE(&task);
    return;
  }
#endif
  (void)grain;
  fn(ctx, 0, rows);
}

}  // namespace siflow
