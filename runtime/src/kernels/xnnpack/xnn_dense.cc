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

#include "net/executor.hpp"
#include "plan/plan_layout.hpp"
#include "support/aligned_memory.hpp"

static_assert(XNN_EXTRA_BYTES <= siflow::kReadPadding,
              "the plan pads network buffers by less than XNNPACK may read past them");

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

struct Layers {
  const detail::ModelData* model = nullptr;
  uint32_t count = 0;
  xnn_operator_t* forward = nullptr;  // [count], nullptr where the node is not on XNNPACK
  xnn_operator_t* tangent = nullptr;
  pthreadpool_t pool = nullptr;
};

Status initialize() {
  std::call_once(g_init_once, [] { g_init_status = xnn_initialize(&kAllocator); });
  if (g_init_status != xnn_status_success)
    return Status::error(StatusCode::kUnsupported,
                         "XNNPACK cannot run on this CPU (xnn_initialize returned %d)",
                         static_cast<int>(g_init_status));
  return Status();
}

Status create_layers(const detail::ModelData& md, const NodeKernel* kernels, void* pool,
                     Layers** out) {
  *out = nullptr;
  Status s = initialize();
  if (!s.ok()) return s;
  Layers* l = new (std::nothrow) Layers();
  xnn_operator_t* ops =
      static_cast<xnn_operator_t*>(std::calloc(2 * size_t{md.node_count} + 1, sizeof(void*)));
  if (!l || !ops) {
    delete l;
    std::free(ops);
    return Status::error(StatusCode::kOutOfMemory, "cannot allocate the XNNPACK layer table");
  }
  l->model = &md;
  l->count = md.node_count;
  l->forward = ops;
  l->tangent = ops + md.node_count;
  l->pool = static_cast<pthreadpool_t>(pool);
  for (uint32_t i = 0; i < md.node_count; ++i) {
    if (kernels[i] != NodeKernel::kXnnpack) continue;
    const detail::NodeData& n = md.nodes[i];
    const uint32_t in = md.tensors[n.inputs[0]].width;
    const float lo = -__builtin_inff(), hi = __builtin_inff();
    xnn_status st = xnn_create_fully_connected_nc_f32(in, n.width, in, n.width, n.weight, n.bias,
                                                      lo, hi, 0, &l->forward[i]);
    if (st == xnn_status_success)
      st = xnn_create_fully_connected_nc_f32(in, n.width, in, n.width, n.weight, nullptr, lo, hi, 0,
                                             &l->tangent[i]);
    if (st != xnn_status_success) {
      destroy_layers(l);
      return Status::error(
          st == xnn_status_out_of_memory ? StatusCode::kOutOfMemory : StatusCode::kUnsupported,
          "XNNPACK cannot create the fully connected operator of node %u "
          "(%u -> %u): status %d",
          i, in, n.width, static_cast<int>(st));
    }
  }
  *out = l;
  return Status();
}

void destroy_layers(Layers* l) {
  if (!l) return;
  for (uint32_t i = 0; i < 2 * l->count; ++i)
    if (l->forward[i]) xnn_delete_operator(l->forward[i]);
  std::free(l->forward);
  delete l;
}

void run_dense(Layers* l, uint32_t node, const float* x, size_t rows, float* y, bool tangent) {
  xnn_operator_t op = tangent ? l->tangent[node] : l->forward[node];
  if (xnn_setup_fully_connected_nc_f32(op, rows, x, y, l->pool) == xnn_status_success &&
      xnn_run_operator(op, l->pool) == xnn_status_success)
    return;
  // Unreachable for a valid plan; a NaN output makes the run fail with a numerical error.
  const size_t n = rows * l->model->nodes[node].width;
  for (size_t i = 0; i < n; ++i) y[i] = __builtin_nanf("");
}

AllocationStats allocation_stats() {
  AllocationStats s;
  s.calls = g_calls.load(std::memory_order_relaxed);
  s.live_bytes = g_live.load(std::memory_order_relaxed);
  return s;
}

}  // namespace siflow::xnn
