// CUDA index_select (a row gather, any element type), index_add (its gradient, e.g. the
// embedding backward), gather and scatter_add (max's gradient). index_add and scatter_add are
// deterministic without atomics; index_add is deterministic without atomics: each output element sums, in
// index order, the source rows whose index names it — a scan over all indices per output, cheap for
// the models' vocabularies (16 to 33 tokens), linear in the vocabulary size in general. The index
// is i64 on the device (the op layer converts and validates it). Same contracts as cpu::.
//
// The kernels and the entry points' bodies, templated on the launch policy (cuda_common.cuh:
// DeviceLaunch on the GPU; the SIMT emulator's in tests/simt/).
#pragma once
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace strand::cuda::idx {
STRAND_KERNELS_BEGIN

inline void split(const Tensor& t, int64_t dim, int64_t& outer, int64_t& inner) {
  outer = inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
}
template <class U>  // an unsigned type of the element's size: rows are moved bit for bit
__global__ void select_kernel(const U* x, const int64_t* idx, U* out, int64_t outer, int64_t n, int64_t m,
                              int64_t inner) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < outer * m * inner;
       e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t j = e % inner, r = e / inner, i = r % m, o = r / m;
    out[e] = x[(o * n + idx[i]) * inner + j];
  }
}
template <class T>
__global__ void add_kernel(T* out, const int64_t* idx, const T* src, int64_t outer, int64_t n, int64_t m,
                           int64_t inner) {
  using A = acc_t<T>;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < outer * n * inner;
       e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t j = e % inner, r = e / inner, v = r % n, o = r / n;
    // each addition rounded to T, as cpu::index_add (and PyTorch's index_add_) store every sum: for
    // bf16/f16 a single rounding at the end gave a different result (found on the SIMT emulator)
    T s = out[e];
    for (int64_t i = 0; i < m; ++i)
      if (idx[i] == v) s = T(A(s) + A(src[(o * m + i) * inner + j]));
    out[e] = s;
  }
}
// gather / scatter_add over `dim`: index and src contiguous with the index's shape; x/out contiguous,
// possibly larger in the other dims (cpu::gather's contract).
constexpr int kMaxDims = 8;
struct IndexGeometry {
  int nd, dim;
  int64_t isz[kMaxDims];  // the index's shape
  int64_t tst[kMaxDims];  // x's / out's strides
};
inline IndexGeometry geometry(const Tensor& index, const Tensor& t, int64_t dim) {
  STRAND_CHECK(index.dim() <= kMaxDims, "CUDA gather/scatter_add support at most ", kMaxDims, " dims, got ",
               shape_str(index.sizes()));
  IndexGeometry g{};
  g.nd = static_cast<int>(index.dim());
  g.dim = static_cast<int>(dim);
  for (int d = 0; d < g.nd; ++d) g.isz[d] = index.size(d), g.tst[d] = t.stride(d);
  return g;
}
template <class U>
__global__ void gather_kernel(IndexGeometry g, const U* x, const int64_t* idx, U* out, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(blockDim.x) * gridDim.x) {
    int64_t rest = e, off = 0;
    for (int d = g.nd - 1; d >= 0; --d) {
      const int64_t p = rest % g.isz[d];
      rest /= g.isz[d];
      off += (d == g.dim ? idx[e] : p) * g.tst[d];
    }
    out[e] = x[off];
  }
}
// One thread per output position p (the index's shape, with out.size(dim) along dim): adds, in
// index order, every src element whose index names p, rounding after each add as the CPU does.
template <class T>
__global__ void scatter_add_kernel(IndexGeometry g, int64_t out_dim, T* out, const int64_t* idx, const T* src,
                                   int64_t n) {
  using A = acc_t<T>;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(blockDim.x) * gridDim.x) {
    int64_t rest = e, off = 0, base = 0, v = 0, istride = 1, step = 0;
    for (int d = g.nd - 1; d >= 0; --d) {
      const int64_t size = d == g.dim ? out_dim : g.isz[d], p = rest % size;
      rest /= size;
      off += p * g.tst[d];
      if (d == g.dim)
        v = p, step = istride;
      else
        base += p * istride;
      istride *= g.isz[d];
    }
    T s = out[off];
    for (int64_t j = 0; j < g.isz[g.dim]; ++j)
      if (idx[base + j * step] == v) s = T(A(s) + A(src[base + j * step]));
    out[off] = s;
  }
}
template <class F>
void by_element_size(size_t es, F&& f) {
  switch (es) {
    case 1:
      f(uint8_t{});
      break;
    case 2:
      f(uint16_t{});
      break;
    case 4:
      f(uint32_t{});
      break;
    case 8:
      f(uint64_t{});
      break;
    default:
      STRAND_CHECK(false, "CUDA index kernels: element size ", es);
  }
}

template <class Launch>
void index_select(const Launch& launch, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  int64_t outer, inner;
  split(x, dim, outer, inner);
  const int64_t n = x.size(dim), m = index.numel(), total = outer * m * inner;
  const int64_t* ip = ptr<int64_t>(index);
  by_element_size(x.element_size(), [&](auto zero) {
    using U = decltype(zero);
    launch(select_kernel<U>, dim3(grid_for(total)), dim3(kThreads), 0, ptr<U>(x), ip, ptr<U>(out), outer, n, m, inner);
  });
}

template <class Launch>
void index_add(const Launch& launch, const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  dispatch_float(out.dtype(), "index_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    int64_t outer, inner;
    split(out, dim, outer, inner);
    const int64_t n = out.size(dim), m = index.numel();
    launch(add_kernel<T>, dim3(grid_for(outer * n * inner)), dim3(kThreads), 0, ptr<T>(out), ptr<int64_t>(index),
           ptr<T>(src), outer, n, m, inner);
  });
}

template <class Launch>
void gather(const Launch& launch, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const IndexGeometry g = geometry(index, x, dim);
  by_element_size(x.element_size(), [&](auto zero) {
    using U = decltype(zero);
    launch(gather_kernel<U>, dim3(grid_for(out.numel())), dim3(kThreads), 0, g, ptr<U>(x), ptr<int64_t>(index),
           ptr<U>(out), out.numel());
  });
}

template <class Launch>
void scatter_add(const Launch& launch, const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  dispatch_float(out.dtype(), "scatter_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const IndexGeometry g = geometry(index, out, dim);
    const int64_t n = index.size(dim) ? index.numel() / index.size(dim) * out.size(dim) : 0;
    if (n == 0) return;
    launch(scatter_add_kernel<T>, dim3(grid_for(n)), dim3(kThreads), 0, g, out.size(dim), ptr<T>(out),
           ptr<int64_t>(index), ptr<T>(src), n);
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::idx
