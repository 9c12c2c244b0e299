// CUDA reductions: sum/mean/var over rows or over a middle block of dims, one output per thread
// (or, for long columns over few outputs, the chunked column sums of colsum.cuh), accumulated in
// double in a fixed order (deterministic, like the CPU); max over rows with its index, one block per
// row. Same contracts as cpu::reduce_rows, cpu::reduce_middle and cpu::max_rows. Templated on the
// launch policy (cuda_common.cuh: DeviceLaunch on the GPU; the SIMT emulator's in tests/simt/).
#pragma once
#include <cmath>
#include <type_traits>

#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/ops.h"

namespace strand::cuda::red {
STRAND_KERNELS_BEGIN

template <class T>
using RedAcc = std::conditional_t<std::is_same_v<T, int64_t>, int64_t, double>;
template <class T>
__device__ RedAcc<T> as_acc(T v) {
  if constexpr (std::is_same_v<T, int64_t>) return v;
  else return double(acc_t<T>(v));
}
template <class T>
__device__ T from_acc(RedAcc<T> v) {
  if constexpr (std::is_same_v<T, int64_t>) return v;
  else return T(acc_t<T>(v));
}
// r: 0 sum, 1 mean, 2 var (population). Element e of column (o, i) over k is x[(o n + k) inner + i].
template <class T>
__device__ T reduce_one(const T* x, int64_t n, int64_t inner, int r) {
  using Acc = RedAcc<T>;
  Acc s = 0;
  for (int64_t k = 0; k < n; ++k) s += as_acc(x[k * inner]);
  if (r == 0) return from_acc<T>(s);
  if constexpr (std::is_same_v<T, int64_t>) {
    return T(0);  // the op layer sends integers to sum only
  } else {
    const double m = n > 0 ? s / double(n) : NAN;
    if (r == 1) return from_acc<T>(m);
    double v = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double d = as_acc(x[k * inner]) - m;
      v += d * d;
    }
    return from_acc<T>(n > 0 ? v / double(n) : m);
  }
}
template <class T>
__global__ void reduce_kernel(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, int r) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner; c += int64_t(blockDim.x) * gridDim.x)
    out[c] = reduce_one(x + (c / inner) * n * inner + c % inner, n, inner, r);
}

// max over rows of n with the index of the maximum: the first NaN wins, then the larger value, then
// the smaller index (cpu::max_rows's order). One block per row.
template <class A>
__device__ bool better(A v, int64_t i, A bv, int64_t bi) {
  const bool vn = v != v, bn = bv != bv;
  if (vn || bn) return vn && (!bn || i < bi);
  return v > bv || (v == bv && i < bi);
}
template <class T>
__global__ void max_rows_kernel(const T* x, int64_t rows, int64_t n, T* values, int64_t* indices) {
  using A = acc_t<T>;
  __shared__ A sv[32];
  __shared__ int64_t si[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * n;
    A bv = A(row[0]);
    int64_t bi = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      if (better(A(row[j]), j, bv, bi)) bv = A(row[j]), bi = j;
    for (int o = 16; o > 0; o >>= 1) {
      using S = std::conditional_t<(sizeof(A) < 4), int, A>;  // no sub-word shuffles (u8, bool)
      const A ov = A(__shfl_xor_sync(0xffffffffu, S(bv), o));
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    __syncthreads();
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int k = 1; k < warps; ++k)
        if (better(sv[k], si[k], bv, bi)) bv = sv[k], bi = si[k];
      values[r] = row[bi];
      indices[r] = bi;
    }
  }
}

inline int code(RowReduce r) { return r == RowReduce::sum ? 0 : r == RowReduce::mean ? 1 : 2; }

template <class F>
void dispatch_reduce_types(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(type_tag<float>{}); break;
    case DType::f64: f(type_tag<double>{}); break;
    case DType::bf16: f(type_tag<bf16>{}); break;
    case DType::f16: f(type_tag<f16>{}); break;
    case DType::i64: f(type_tag<int64_t>{}); break;
    default: STRAND_CHECK(false, "CUDA reductions: unsupported dtype ", dtype_name(dt));
  }
}

template <class Launch>
void reduce_middle(const Launch& launch, RowReduce r, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  dispatch_reduce_types(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (outer * inner == 0) return;
    if constexpr (!std::is_same_v<T, int64_t>) {
      // Long columns over few outputs (a bias gradient: [B·T, N] -> [N]): one thread per output would
      // leave most of the GPU idle, so the chunked column sums (double, fixed order) take them.
      if (outer == 1 && n >= 512) {
        Tensor s = column_sums(launch, Value<T>{ptr<T>(x), inner}, n, inner, x);
        const double dn = static_cast<double>(n);
        if (r != RowReduce::sum) s = ops::unary(UnaryOp::div_scalar, s, dn);  // the mean, as reduce_one
        if (r == RowReduce::var)
          s = ops::unary(UnaryOp::div_scalar,
                         column_sums(launch, SquaredDeviation<T>{ptr<T>(x), ptr<double>(s), inner}, n, inner, x), dn);
        store_sums<T>(launch, s, out);
        return;
      }
    }
    launch(reduce_kernel<T>, dim3(grid_for(outer * inner)), dim3(kThreads), 0, ptr<T>(x), ptr<T>(out), outer, n, inner,
           code(r));
  });
}

template <class Launch>
void max_rows(const Launch& launch, const Tensor& x, int64_t rows, int64_t n, const Tensor& values, const Tensor& indices) {
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (rows == 0) return;
    const int threads = n >= kThreads ? kThreads : 32;
    launch(max_rows_kernel<T>, dim3(grid_for(rows * kThreads)), dim3(threads), 0, ptr<T>(x), rows, n, ptr<T>(values),
           ptr<int64_t>(indices));
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::red
