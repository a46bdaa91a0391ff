// SPDX-License-Identifier: Apache-2.0
// Greedy first-fit: each buffer, in request order, takes the lowest offset where it overlaps no
// already placed buffer whose lifetime intersects its own.
#include "plan/buffer_planner.hpp"

#include <algorithm>
#include <cstdlib>

namespace siflow {

Status plan_buffers(const BufferRequest* requests, size_t count, size_t* offsets, size_t* total,
                    detail::Memory& memory) {
  size_t* live = static_cast<size_t*>(memory.allocate((count ? count : 1) * sizeof(size_t)));
  if (!live) return Status::error(StatusCode::kOutOfMemory, "plan: no memory for planning");
  size_t end = 0;
  for (size_t i = 0; i < count; ++i) {
    offsets[i] = 0;
    const BufferRequest& r = requests[i];
    if (r.bytes == 0) continue;
    size_t n = 0;
    for (size_t j = 0; j < i; ++j) {
      const BufferRequest& q = requests[j];
      if (q.bytes != 0 && q.first <= r.last && r.first <= q.last) live[n++] = j;
    }
    std::sort(live, live + n, [&](size_t a, size_t b) { return offsets[a] < offsets[b]; });
    size_t candidate = 0;
    const size_t need = detail::align_up(r.bytes);
    for (size_t k = 0; k < n; ++k) {
      const size_t lo = offsets[live[k]], hi = lo + detail::align_up(requests[live[k]].bytes);
      if (candidate + need <= lo) break;
      candidate = std::max(candidate, hi);
    }
    offsets[i] = candidate;
    end = std::max(end, candidate + need);
  }
  memory.release_last(live);
  *total = end;
  return Status();
}

}  // namespace siflow
