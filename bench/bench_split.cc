// SPDX-License-Identifier: Apache-2.0
// What splitting one batch-1 layer over two threads buys on this machine, apart from the network
// around it. (1) The unet28 28x28 32->32 Winograd layer (kernels_conv_wino.inc) run whole on the
// caller's thread against its tile units split in two halves over a two-thread RowPool, one
// hand-off per call as a plan's node does. (2) What a node pays to read an input the other core
// wrote: an Add of two 28x28x32 tensors on the caller's thread, after the caller wrote both, and
// after each core wrote half of each (a split node before it); (3) that Add split in the same
// halves, so that each core reads what it wrote; (4) the Winograd layer whole and split once more,
// with its input rewritten by the caller's thread before each call, and (5) also after each core
// read 2 MiB of other data. Wall-clock medians of alternating timings; the shares of halves
// printed say whether the splits happened as meant.
//   bench_split [CALLS]        (default 200 calls per timing, 15 timings)

#if !defined(SIFLOW_WITH_SIMD) || !defined(SIFLOW_WITH_THREADS)
#include <cstdio>
int main() {
  std::printf("bench_split: this build has no simd kernels or no threads; nothing to time\n");
  return 0;
}
#else

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/simd/kernels.hpp"
#include "support/parallel.hpp"

namespace {

constexpr int kTimings = 15;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Medians over kTimings of f's and g's time per call, `calls` calls a timing, alternating.
template <typename F, typename G>
void median_pair(int calls, F&& f, G&& g, double* tf, double* tg) {
  std::vector<double> a, b;
  for (int r = 0; r < kTimings; ++r) {
    a.push_back(f(calls) / calls);
    b.push_back(g(calls) / calls);
  }
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  *tf = a[a.size() / 2];
  *tg = b[b.size() / 2];
}

struct Halves {
  void (*fn)(const Halves& h, size_t half);
  const siflow::simd::Kernels* k;
  const siflow::simd::ConvWino* cw;
  const float* x;
  float* y;
  float* work[2];
  size_t units, count;
  float* a;
  float* b;
  float* sum;
  float fill;
  uint64_t on_worker;
  uint32_t writer[2];  // the thread that wrote each half last
  uint64_t same;       // halves added on the thread that wrote them
  float* other;        // flush_half reads half i of other[2 * other_count]
  size_t other_count;
  float flushed;
};

void run_half(void* ctx, size_t i0, size_t i1) {
  Halves& h = *static_cast<Halves*>(ctx);
  for (size_t i = i0; i < i1; ++i) {
    if (siflow::RowPool::thread_index() != 0) ++h.on_worker;
    h.fn(h, i);
  }
}

void wino_half(const Halves& h, size_t i) {
  const size_t size = size_t{h.cw->cin} * h.cw->h * h.cw->w;
  h.k->conv2d_wino(*h.cw, h.x, size, h.y, size, h.work[i], h.units * i / 2, h.units * (i + 1) / 2);
}

void write_half(const Halves& h, size_t i) {
  for (size_t j = h.count * i / 2; j < h.count * (i + 1) / 2; ++j) {
    h.a[j] = h.fill + static_cast<float>(j & 7);
    h.b[j] = h.fill - static_cast<float>(j & 3);
  }
  const_cast<Halves&>(h).writer[i] = siflow::RowPool::thread_index();
}

void add_half(const Halves& h, size_t i) {
  for (size_t j = h.count * i / 2; j < h.count * (i + 1) / 2; ++j) h.sum[j] = h.a[j] + h.b[j];
  if (h.writer[i] == siflow::RowPool::thread_index()) ++const_cast<Halves&>(h).same;
}

void flush_half(const Halves& h, size_t i) {
  float acc = 0;
  const float* o = h.other + h.other_count * i;
  for (size_t j = 0; j < h.other_count; j += 16) acc += o[j];
  const_cast<Halves&>(h).flushed += acc;
}

}  // namespace

int main(int argc, char** argv) {
  const int calls = argc > 1 ? std::atoi(argv[1]) : 200;
  if (calls < 1) {
    std::fprintf(stderr, "bench_split: CALLS must be a positive number\n");
    return 2;
  }
  const siflow::simd::Kernels* k = nullptr;
  if (!siflow::simd::select(&k).ok()) {
    std::fprintf(stderr, "bench_split: no simd kernels on this CPU\n");
    return 1;
  }
  siflow::RowPool* pool = nullptr;
  if (!siflow::RowPool::create(2, &pool).ok()) {
    std::fprintf(stderr, "bench_split: cannot start two threads\n");
    return 1;
  }
  std::printf("# isa %s, a RowPool of 2 threads, wall-clock medians of %d timings of %d calls\n",
              k->isa, kTimings, calls);

  // (1) The Winograd layer, whole against halves.
  const uint32_t c = 32, side = 28;
  std::vector<float> w(size_t{c} * c * 9), bias(c, 0.1f);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
  std::vector<float> packed(siflow::simd::conv_wino_packed_floats(c, c));
  siflow::simd::pack_conv_wino(w.data(), c, c, packed.data());
  const siflow::simd::ConvWino cw{packed.data(), bias.data(), c, side, side, c, side, side, 1, 1};
  const size_t size = size_t{c} * side * side;
  std::vector<float> x(size), y(size);
  for (size_t i = 0; i < size; ++i) x[i] = 0.001f * static_cast<float>(i % 1013) - 0.5f;
  std::vector<float> work0(siflow::simd::conv_wino_work_floats(c)), work1(work0.size());
  Halves h{};
  h.k = k;
  h.cw = &cw;
  h.x = x.data();
  h.y = y.data();
  h.work[0] = work0.data();
  h.work[1] = work1.data();
  h.units = siflow::simd::conv_wino_units(cw, 1);
  h.fn = wino_half;
  auto whole = [&](int n) {
    const double t0 = now();
    for (int i = 0; i < n; ++i)
      k->conv2d_wino(cw, x.data(), size, y.data(), size, work0.data(), 0, h.units);
    return now() - t0;
  };
  auto split = [&](int n) {
    const double t0 = now();
    for (int i = 0; i < n; ++i) pool->run_items(2, run_half, &h);
    return now() - t0;
  };
  whole(calls);
  split(calls);
  h.on_worker = 0;
  double t_whole = 0, t_split = 0;
  median_pair(calls, whole, split, &t_whole, &t_split);
  std::printf(
      "wino 3x3 %u->%u %ux%u batch 1 (%zu units): whole %.1f us, split in two %.1f us: %.2fx "
      "(the worker ran %.0f %% of the halves)\n",
      c, c, side, side, h.units, t_whole * 1e6, t_split * 1e6, t_whole / t_split,
      100.0 * static_cast<double>(h.on_worker) / (2.0 * kTimings * calls));

  // (2) An Add on the caller's thread reading inputs this core wrote, or half the other core's.
  std::vector<float> a(size), b(size), sum(size);
  h.a = a.data();
  h.b = b.data();
  h.count = size;
  h.sum = sum.data();
  h.on_worker = 0;
  // n rounds of: both inputs written on the caller's thread or split in halves over the pool,
  // then the Add timed, on the caller's thread or split in the same halves.
  auto rounds = [&](bool split_write, bool split_add) {
    return [&, split_write, split_add](int n) {
      double t = 0;
      for (int i = 0; i < n; ++i) {
        h.fill = static_cast<float>(i);
        h.fn = write_half;
        if (split_write) {
          pool->run_items(2, run_half, &h);
        } else {
          write_half(h, 0);
          write_half(h, 1);
        }
        const double t0 = now();
        if (split_add) {
          h.fn = add_half;
          pool->run_items(2, run_half, &h);
        } else {
          for (size_t j = 0; j < size; ++j) sum[j] = a[j] + b[j];
        }
        t += now() - t0;
      }
      return t;
    };
  };
  const auto local = rounds(false, false), remote = rounds(true, false);
  double t_local = 0, t_remote = 0;
  median_pair(calls, local, remote, &t_local, &t_remote);
  std::printf(
      "add of two %ux%ux%u tensors on the caller: inputs written by its core %.2f us, half of "
      "them by the other core %.2f us: %.2fx (the worker wrote %.0f %% of the halves)\n",
      c, side, side, t_local * 1e6, t_remote * 1e6, t_remote / t_local,
      100.0 * static_cast<double>(h.on_worker) / (2.0 * kTimings * calls));
  // (3) The Add split in the same halves after a split write: a core adds the half it wrote
  // unless the other thread claimed that half first (counted).
  h.same = 0;
  const auto split_add = rounds(true, true);
  double t_again = 0, t_split_add = 0;
  median_pair(calls, local, split_add, &t_again, &t_split_add);
  std::printf(
      "the same add split in halves after a split write: %.2f us (%.2fx the caller alone on "
      "inputs it wrote; %.0f %% of halves added on the core that wrote them)\n",
      t_split_add * 1e6, t_again / t_split_add,
      100.0 * static_cast<double>(h.same) / (2.0 * kTimings * calls));
  // (4) The Winograd layer again, its input rewritten by the caller's thread before each call
  // (untimed), as when the node before it ran on the caller: whole against split in halves,
  // where the worker now reads its half of the input from the other core.
  // (5) As (4), after each core has also read 2 MiB of other data (untimed), as the layers
  // between two convolutions of a network push its weights and workspace out of the core's L2.
  std::vector<float> x2(size), other(size_t{1} << 20);  // other: 4 MiB, 2 MiB for each core
  for (size_t i = 0; i < size; ++i) x2[i] = 0.001f * static_cast<float>(i % 877) - 0.4f;
  h.other = other.data();
  h.other_count = other.size() / 2;
  // n calls of the layer, whole or in halves, each after the caller rewrote its input (and with
  // `flush` after both cores read their share of `other`), untimed.
  auto fresh = [&](bool halves, bool flush) {
    return [&, halves, flush](int n) {
      double t = 0;
      for (int i = 0; i < n; ++i) {
        if (flush) {
          h.fn = flush_half;
          pool->run_items(2, run_half, &h);
        }
        const float shift = 1e-4f * static_cast<float>(i & 15);
        for (size_t j = 0; j < size; ++j) x[j] = x2[j] + shift;
        h.fn = wino_half;
        const double t0 = now();
        if (halves)
          pool->run_items(2, run_half, &h);
        else
          k->conv2d_wino(cw, x.data(), size, y.data(), size, work0.data(), 0, h.units);
        t += now() - t0;
      }
      return t;
    };
  };
  double t_fresh_whole = 0, t_fresh_split = 0;
  median_pair(calls, fresh(false, false), fresh(true, false), &t_fresh_whole, &t_fresh_split);
  std::printf(
      "wino layer with its input written by the caller before each call: whole %.1f us, split "
      "in two %.1f us: %.2fx (%.2fx with the input already in both cores' caches, above)\n",
      t_fresh_whole * 1e6, t_fresh_split * 1e6, t_fresh_whole / t_fresh_split, t_whole / t_split);
  double t_flush_whole = 0, t_flush_split = 0;
  median_pair(calls, fresh(false, true), fresh(true, true), &t_flush_whole, &t_flush_split);
  std::printf(
      "the same after each core read 2 MiB of other data: whole %.1f us, split in two %.1f us: "
      "%.2fx\n",
      t_flush_whole * 1e6, t_flush_split * 1e6, t_flush_whole / t_flush_split);
  if (sum[size / 2] == 12345.0f || y[size / 3] == 12345.0f || h.flushed == 12345.0f)
    std::printf("\n");  // keeps them
  siflow::RowPool::destroy(pool);
  return 0;
}
#endif
