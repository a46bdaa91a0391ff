// SPDX-License-Identifier: Apache-2.0
// The wrappers behind alloc_hooks.hpp. Constant-initialised atomics only, so they work before
// any constructor runs and never allocate themselves.
#include "support/alloc_hooks.hpp"

#include <errno.h>
#include <malloc.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

extern "C" {
void* __libc_malloc(size_t size);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* p, size_t size);
void __libc_free(void* p);
void* __libc_memalign(size_t alignment, size_t size);
void* __libc_valloc(size_t size);
void* __libc_pvalloc(size_t size);
}

namespace {

std::atomic<bool> g_watching{false};
std::atomic<unsigned long> g_calls{0};
std::atomic<unsigned long> g_allocations{0};
std::atomic<long> g_live{0};
std::atomic<long> g_fail_at{-1};
std::atomic<bool> g_injected{false};

bool watching() { return g_watching.load(std::memory_order_relaxed); }

// Called before an allocation: counts it and says whether it must fail.
bool allocation_fails() {
  if (!watching()) return false;
  g_calls.fetch_add(1, std::memory_order_relaxed);
  const long index = static_cast<long>(g_allocations.fetch_add(1, std::memory_order_relaxed));
  if (index == g_fail_at.load(std::memory_order_relaxed)) {
    g_injected.store(true, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void* allocated(void* p) {
  if (p && watching()) g_live.fetch_add(1, std::memory_order_relaxed);
  return p;
}

void release(void* p) {
  if (watching()) {
    g_calls.fetch_add(1, std::memory_order_relaxed);  // free(nullptr) counts as a heap call too
    if (p) g_live.fetch_sub(1, std::memory_order_relaxed);
  }
  __libc_free(p);
}

void* aligned(size_t alignment, size_t size) {
  return __libc_memalign(alignment < sizeof(void*) ? sizeof(void*) : alignment, size ? size : 1);
}

void* throwing(void* p) {
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

namespace siflow_test {

void heap_watch_begin(long fail_at) {
  g_calls.store(0);
  g_allocations.store(0);
  g_live.store(0);
  g_injected.store(false);
  g_fail_at.store(fail_at);
  g_watching.store(true);
}

HeapReport heap_watch_end() {
  g_watching.store(false);
  HeapReport r;
  r.calls = g_calls.load();
  r.allocations = g_allocations.load();
  r.live = g_live.load();
  r.injected = g_injected.load();
  return r;
}

}  // namespace siflow_test

extern "C" {
void* malloc(size_t size) noexcept {
  return allocation_fails() ? nullptr : allocated(__libc_malloc(size));
}
void* calloc(size_t count, size_t size) noexcept {
  return allocation_fails() ? nullptr : allocated(__libc_calloc(count, size));
}
void* realloc(void* p, size_t size) noexcept {
  if (allocation_fails()) return nullptr;  // p stays valid, as with a real failure
  void* q = __libc_realloc(p, size);
  if (q && !p && watching()) g_live.fetch_add(1, std::memory_order_relaxed);
  return q;
}
void free(void* p) noexcept { release(p); }
void* memalign(size_t alignment, size_t size) noexcept {
  return allocation_fails() ? nullptr : allocated(__libc_memalign(alignment, size));
}
void* aligned_alloc(size_t alignment, size_t size) noexcept {
  return allocation_fails() ? nullptr : allocated(__libc_memalign(alignment, size));
}
int posix_memalign(void** out, size_t alignment, size_t size) noexcept {
  if (allocation_fails()) return ENOMEM;
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = allocated(__libc_memalign(alignment, size));
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void* valloc(size_t size) noexcept {
  return allocation_fails() ? nullptr : allocated(__libc_valloc(size));
}
void* pvalloc(size_t size) noexcept {
  return allocation_fails() ? nullptr : allocated(__libc_pvalloc(size));
}
}

void* operator new(size_t size) {
  return throwing(allocation_fails() ? nullptr : allocated(__libc_malloc(size ? size : 1)));
}
void* operator new[](size_t size) {
  return throwing(allocation_fails() ? nullptr : allocated(__libc_malloc(size ? size : 1)));
}
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  return allocation_fails() ? nullptr : allocated(__libc_malloc(size ? size : 1));
}
void* operator new[](size_t size, const std::nothrow_t&) noexcept {
  return allocation_fails() ? nullptr : allocated(__libc_malloc(size ? size : 1));
}
void* operator new(size_t size, std::align_val_t al) {
  return throwing(allocation_fails() ? nullptr : allocated(aligned(static_cast<size_t>(al), size)));
}
void* operator new[](size_t size, std::align_val_t al) {
  return throwing(allocation_fails() ? nullptr : allocated(aligned(static_cast<size_t>(al), size)));
}
void* operator new(size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return allocation_fails() ? nullptr : allocated(aligned(static_cast<size_t>(al), size));
}
void* operator new[](size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return allocation_fails() ? nullptr : allocated(aligned(static_cast<size_t>(al), size));
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, size_t) noexcept { release(p); }
void operator delete[](void* p, size_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
