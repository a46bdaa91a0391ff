// SPDX-License-Identifier: Apache-2.0
// Watching the heap from a test: alloc_hooks.cc replaces the whole malloc family and every global
// operator new/delete with wrappers over glibc's __libc_* entry points. Between begin() and end()
// they count every call, track how many blocks are live, and can make one chosen allocation fail
// (return null, or throw std::bad_alloc from a throwing operator new) to inject failures.
// Link alloc_hooks.cc into a test binary only when the test needs it: it owns the heap.
#pragma once

namespace siflow_test {

struct HeapReport {
  unsigned long calls = 0;        // every allocation and free call, free(nullptr) included
  unsigned long allocations = 0;  // allocation calls, failed ones included
  long live = 0;                  // blocks allocated and not freed while watching
  bool injected = false;          // the allocation chosen to fail was reached
};

// Starts watching. With fail_at >= 0, allocation number fail_at (0-based) fails.
void heap_watch_begin(long fail_at = -1);
// Stops watching and reports. No doctest macro may run between begin and end (they allocate).
HeapReport heap_watch_end();

}  // namespace siflow_test
