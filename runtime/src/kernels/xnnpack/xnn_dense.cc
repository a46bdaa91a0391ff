// SPDX-License-Identifier: Apache-2.0
// Every XNNPACK call of the project: initialization with the counting allocator, operator
// creation, setup and run (February 2022 API: create without weight caches, setup takes the
// batch size and the thread pool).
#include "kernels/xnnpack/xnn_dense.hpp"

#include <xnnpack.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include "support/aligned_memory.hpp"

static_assert(XNN_EXTRA_BYTES <= siflow::xnn::kExtraReadBytes,
              "kExtraReadBytes is less than XNNPACK may read past an input");

namespace siflow::xnn {
namespace {

std::atomic<uint64_t> g_calls{0};
std::atomic<uint64_t> g_live{0};

// Every block carries its size in a 64-byte header, so frees can be counted in bytes and every
// returned pointer stays 64-byte aligned (XNNPACK asks for at most XNN_ALLOCATION_ALIGNMENT).
constexpr size_t kHeader = 64;

void* counted_alloc(size_t size) {
  void* block = detail::aligned_malloc(kHeader, kHeader + (size ? size : 1));
  if (!block) return nullptr;
  std::memcpy(block, &size, sizeof size);
  g_calls.fetch_add(1, std::memory_order_relaxed);
  g_live.fetch_add(size, std::memory_order_relaxed);
  return static_cast<uint8_t*>(block) + kHeader;
}
size_t size_of(void* p) {
  size_t size = 0;
  std::memcpy(&size, static_cast<uint8_t*>(p) - kHeader, sizeof size);
  return size;
}
void counted_free(void*, void* p) {
  if (!p) return;
  g_live.fetch_sub(size_of(p), std::memory_order_relaxed);
  g_calls.fetch_add(1, std::memory_order_relaxed);
  detail::aligned_free(static_cast<uint8_t*>(p) - kHeader);
}
void* hook_allocate(void*, size_t size) { return counted_alloc(size); }
void* hook_reallocate(void*, void* p, size_t size) {
  void* q = counted_alloc(size);
  if (q && p) {
    const size_t old = size_of(p);
    std::memcpy(q, p, old < size ? old : size);
    counted_free(nullptr, p);
  }
  return q;
}
void* hook_aligned_allocate(void*, size_t alignment, size_t size) {
  return alignment <= kHeader ? counted_alloc(size) : nullptr;
}

const xnn_allocator kAllocator = {nullptr,      hook_allocate,         hook_reallocate,
                                  counted_free, hook_aligned_allocate, counted_free};

xnn_status g_init_status = xnn_status_uninitialized;
std::once_flag g_init_once;

}  // namespace

struct DenseLayer {
  xnn_operator_t forward = nullptr;
  xnn_operator_t tangent = nullptr;
  uint32_t out = 0;
  pthreadpool_t pool = nullptr;
  // An operator holds the setup of its run: the threads of data-parallel blocks (net/executor.cc)
  // take turns (dense layers of image nets are a small share of a run).
  std::mutex turn;
};

Status initialize() {
  std::call_once(g_init_once, [] { g_init_status = xnn_initialize(&kAllocator); });
  if (g_init_status != xnn_status_success)
    return Status::error(StatusCode::kUnsupported,
                         "XNNPACK cannot run on this CPU (xnn_initialize returned %d)",
                         static_cast<int>(g_init_status));
  return Status();
}

Status create_dense(uint32_t in, uint32_t out, const float* weight, const float* bias, void* pool,
                    DenseLayer** layer) {
  *layer = nullptr;
  Status s = initialize();
  if (!s.ok()) return s;
  DenseLayer* l = new (std::nothrow) DenseLayer();
  if (!l) return Status::error(StatusCode::kOutOfMemory, "cannot allocate an XNNPACK layer");
  l->out = out;
  l->pool = static_cast<pthreadpool_t>(pool);
  const float lo = -__builtin_inff(), hi = __builtin_inff();
  xnn_status st =
      xnn_create_fully_connected_nc_f32(in, out, in, out, weight, bias, lo, hi, 0, &l->forward);
  if (st == xnn_status_success)
    st = xnn_create_fully_connected_nc_f32(in, out, in, out, weight, nullptr, lo, hi, 0,
                                           &l->tangent);
  if (st != xnn_status_success) {
    destroy_dense(l);
    return Status::error(
        st == xnn_status_out_of_memory ? StatusCode::kOutOfMemory : StatusCode::kUnsupported,
        "XNNPACK cannot create a fully connected operator (%u -> %u): status %d", in, out,
        static_cast<int>(st));
  }
  *layer = l;
  return Status();
}

void destroy_dense(DenseLayer* l) {
  if (!l) return;
  if (l->forward) xnn_delete_operator(l->forward);
  if (l->tangent) xnn_delete_operator(l->tangent);
  delete l;
}

void run_dense(DenseLayer* l, const float* x, size_t rows, float* y, bool tangent) {
  xnn_operator_t op = tangent ? l->tangent : l->forward;
  std::lock_guard<std::mutex> lock(l->turn);
  if (xnn_setup_fully_connected_nc_f32(op, rows, x, y, l->pool) == xnn_status_success &&
      xnn_run_operator(op, l->pool) == xnn_status_success)
    return;
  // Unreachable for a valid plan; a NaN output makes the run fail with a numerical error.
  const size_t n = rows * l->out;
  for (size_t i = 0; i < n; ++i) y[i] = __builtin_nanf("");
}

AllocationStats allocation_stats() {
  AllocationStats s;
  s.calls = g_calls.load(std::memory_order_relaxed);
  s.live_bytes = g_live.load(std::memory_order_relaxed);
  return s;
}

}  // namespace siflow::xnn
