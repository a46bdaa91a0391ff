// SPDX-License-Identifier: Apache-2.0
// Where loading and planning take their memory: a caller's region, carved by bumping an offset
// (nothing is allocated, so a bare-metal device needs no heap), or a measuring pass that counts
// the region a later caller must supply while taking short-lived heap blocks to work in. Both
// follow the same sequence of requests, so the size measured is the size the region needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "support/aligned_memory.hpp"

namespace siflow::detail {

class Memory {
 public:
  // A caller's region [base, base + size); base need not be aligned.
  static Memory region(void* base, size_t size) {
    Memory m;
    m.base_ = static_cast<uint8_t*>(base);
    m.size_ = size;
    return m;
  }
  // Counts what a region would need; blocks come from the heap and are freed on destruction.
  static Memory measuring() {
    Memory m;
    m.measuring_ = true;
    m.size_ = SIZE_MAX;
    return m;
  }
  ~Memory() {
    for (size_t i = 0; i < heap_count_; ++i) aligned_free(heap_[i]);
  }
  Memory(Memory&& other) noexcept { *this = static_cast<Memory&&>(other); }
  Memory& operator=(Memory&& other) noexcept {
    std::memcpy(static_cast<void*>(this), &other, sizeof *this);
    other.heap_count_ = 0;
    return *this;
  }
  Memory(const Memory&) = delete;
  Memory& operator=(const Memory&) = delete;

  // `bytes` zeroed bytes aligned to `alignment` (a power of two up to 64), or nullptr when the
  // region is exhausted (or, measuring, the heap is). `touch` false: measuring only counts
  // the block and returns nullptr (for the arena itself, which planning never reads).
  void* allocate(size_t bytes, size_t alignment = 64, bool touch = true) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(base_);
    size_t at = used_;
    const uintptr_t misalign = (base + at) % alignment;
    if (misalign) at += alignment - misalign;
    if (at > size_ || bytes > size_ - at) return nullptr;
    if (depth_ == kMaxDepth) return nullptr;
    void* p = nullptr;
    if (measuring_) {
      if (touch) {
        if (heap_count_ == kMaxDepth) return nullptr;
        p = aligned_malloc(64, bytes ? bytes : 1);
        if (!p) return nullptr;
        heap_[heap_count_++] = p;
        std::memset(p, 0, bytes);
      }
    } else {
      p = base_ + at;
      std::memset(p, 0, bytes);
    }
    stack_[depth_] = used_;
    blocks_[depth_++] = p;
    used_ = at + bytes;
    if (used_ > high_) high_ = used_;
    return p;
  }
  // Gives back the most recent block (`p` must be it): its bytes can be taken again.
  void release_last(void* p) {
    if (depth_ == 0 || blocks_[depth_ - 1] != p) return;
    used_ = stack_[--depth_];
  }
  // Bytes of the region used at the high-water mark (from its start, alignment included).
  size_t high_water() const { return high_; }
  bool is_measuring() const { return measuring_; }

 private:
  Memory() = default;
  static constexpr size_t kMaxDepth = 32;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  size_t used_ = 0;
  size_t high_ = 0;
  bool measuring_ = false;
  size_t depth_ = 0;
  size_t stack_[kMaxDepth] = {};
  void* blocks_[kMaxDepth] = {};
  size_t heap_count_ = 0;
  void* heap_[kMaxDepth] = {};
};

}  // namespace siflow::detail
