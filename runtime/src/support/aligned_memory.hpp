// SPDX-License-Identifier: Apache-2.0
// Over-aligned heap blocks from plain malloc/free, for every C library (newlib on bare metal has
// no aligned_alloc). The block records where its malloc'd storage starts just before the aligned
// address; release it with aligned_free only. One malloc per block, so allocation counting and
// failure injection see exactly the allocations the runtime makes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace siflow::detail {

// n rounded up to a multiple of alignment (64 unless said: every block of a model or plan).
constexpr size_t align_up(size_t n, size_t alignment = 64) {
  return (n + alignment - 1) / alignment * alignment;
}
// 64-bit sizes (a plan's layout is computed in 64 bits on every target).
constexpr uint64_t align_up64(uint64_t n, uint64_t alignment = 64) {
  return (n + alignment - 1) / alignment * alignment;
}

// size bytes at an address that is a multiple of alignment (a power of two), or nullptr.
inline void* aligned_malloc(size_t alignment, size_t size) {
  const size_t extra = alignment + sizeof(void*);
  if (size > SIZE_MAX - extra) return nullptr;
  void* raw = std::malloc(size + extra);
  if (!raw) return nullptr;
  uintptr_t p = reinterpret_cast<uintptr_t>(raw) + sizeof(void*);
  p = (p + alignment - 1) & ~static_cast<uintptr_t>(alignment - 1);
  reinterpret_cast<void**>(p)[-1] = raw;
  return reinterpret_cast<void*>(p);
}

inline void aligned_free(void* p) {
  if (p) std::free(static_cast<void**>(p)[-1]);
}

}  // namespace siflow::detail
