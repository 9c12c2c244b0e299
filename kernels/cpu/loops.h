#pragma once
// The CPU strided loop every elementwise kernel is built on: K operands (operand 0 is the output)
// described by strides over one shared shape (0 for broadcast dimensions). Dimensions are
// coalesced, the innermost becomes a plain loop, and outer rows are split across OpenMP threads.
#include <omp.h>

#include <array>
#include <cstdint>

#include "tensor/tensor.h"

namespace strand::cpu {

// Work below this many elements stays on one thread: OpenMP's fork costs more than it saves.
constexpr int64_t kParallelGrain = 32768;

template <size_t K, class F>
void strided_loop(Shape shape, std::array<Shape, K> strides, F&& body) {
  int64_t numel = shape_numel(shape);
  if (numel == 0) return;
  // Drop size-1 dims, then merge neighbours that are contiguous for every operand.
  Shape sh;
  std::array<Shape, K> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !sh.empty();
    for (size_t k = 0; k < K && merge; ++k) merge = st[k].back() == strides[k][d] * shape[d];
    if (merge) {
      sh.back() *= shape[d];
      for (size_t k = 0; k < K; ++k) st[k].back() = strides[k][d];
    } else {
      sh.push_back(shape[d]);
      for (size_t k = 0; k < K; ++k) st[k].push_back(strides[k][d]);
    }
  }
  if (sh.empty()) {
    sh.push_back(1);
    for (size_t k = 0; k < K; ++k) st[k].push_back(0);
  }
  const int64_t nd = static_cast<int64_t>(sh.size());
  const int64_t inner = sh.back();
  const int64_t outer = numel / inner;
  std::array<int64_t, K> inner_st;
  for (size_t k = 0; k < K; ++k) inner_st[k] = st[k].back();

  auto run_rows = [&](int64_t row_begin, int64_t row_end) {
    // Index of row_begin in the outer dims, and the matching offsets.
    std::vector<int64_t> idx(nd, 0);
    std::array<int64_t, K> off{};
    int64_t r = row_begin;
    for (int64_t d = nd - 2; d >= 0; --d) {
      idx[d] = r % sh[d];
      r /= sh[d];
      for (size_t k = 0; k < K; ++k) off[k] += idx[d] * st[k][d];
    }
    for (int64_t row = row_begin; row < row_end; ++row) {
      body(off, inner, inner_st);
      for (int64_t d = nd - 2; d >= 0; --d) {
        ++idx[d];
        for (size_t k = 0; k < K; ++k) off[k] += st[k][d];
        if (idx[d] < sh[d]) break;
        for (size_t k = 0; k < K; ++k) off[k] -= st[k][d] * sh[d];
        idx[d] = 0;
      }
    }
  };
  if (numel < kParallelGrain || outer == 1) {
    run_rows(0, outer);
    return;
  }
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t b = outer * t / nt, e = outer * (t + 1) / nt;
    if (b < e) run_rows(b, e);
  }
}

// Parallel for over [0, n) in contiguous chunks, single-threaded for small work.
template <class F>
void parallel_for(int64_t n, int64_t cost_per_item, F&& f) {
  if (n <= 0) return;
  if (n * cost_per_item < kParallelGrain || n == 1) {
    f(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t b = n * t / nt, e = n * (t + 1) / nt;
    if (b < e) f(b, e);
  }
}

}  // namespace strand::cpu
