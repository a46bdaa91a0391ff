// SPDX-License-Identifier: Apache-2.0
// Test bytes at a chosen alignment: a copy of `bytes` in memory of exactly that size (so ASan
// flags any read past the end), at a 64-byte aligned address plus `misalign`. With misalign != 0
// a model loads through the copy path and owns its bytes; with 0 it is used in place and the
// span must outlive it.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace siflow_test {

class ByteSpan {
 public:
  explicit ByteSpan(const std::vector<uint8_t>& bytes, size_t misalign = 0) : size_(bytes.size()) {
    void* p = nullptr;
    REQUIRE(posix_memalign(&p, 64, misalign + size_ + (misalign + size_ == 0)) == 0);
    base_ = static_cast<uint8_t*>(p);
    if (size_) std::memcpy(base_ + misalign, bytes.data(), size_);
    data_ = base_ + misalign;
  }
  ~ByteSpan() { std::free(base_); }
  ByteSpan(const ByteSpan&) = delete;
  ByteSpan& operator=(const ByteSpan&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* base_ = nullptr;
  uint8_t* data_ = nullptr;
  size_t size_;
};

}  // namespace siflow_test
