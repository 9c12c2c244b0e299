#pragma once
// Deterministic per-column sums of an [N, C] problem on the GPU, in double: fixed chunks of rows per
// block, then the chunks in order per column, so the result does not depend on the launch and
// every column has the whole GPU's parallelism behind it (N up to 196,608 rows at Enformer's stem).
// Used by batch_norm, the conv1d bias gradient and the layer_norm/rms_norm parameter gradients.
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/ops.h"

namespace strand::cuda {
STRAND_KERNELS_BEGIN

inline TensorOptions on(const Tensor& t, DType d) { return TensorOptions(d, t.device()); }

template <class F>
__global__ void colsum_partial_kernel(F f, int64_t N, int64_t C, int64_t chunk, double* part) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(N, r0 + chunk);
  double s = 0;
  for (int64_t r = r0; r < r1; ++r) s += f(r, c);
  part[blockIdx.y * C + c] = s;
}
template <class A = double>  // a template, so the header can be included by several .cu files
__global__ void colsum_finish_kernel(const A* part, int64_t chunks, int64_t C, double* out) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(blockDim.x) * gridDim.x) {
    double s = 0;
    for (int64_t k = 0; k < chunks; ++k) s += part[k * C + c];
    out[c] = s;
  }
}
// out[c] = sum over r of f(r, c), r in [0, N): a f64 tensor [C] on `like`'s device. `launch` is the
// launch policy (cuda_common.cuh).
template <class Launch, class F>
Tensor column_sums(const Launch& launch, const F& f, int64_t N, int64_t C, const Tensor& like) {
  Tensor out = ops::zeros({C}, on(like, DType::f64));
  if (N == 0 || C == 0) return out;
  const int64_t chunks = std::min<int64_t>(1024, (N + 63) / 64), chunk = (N + chunks - 1) / chunks;
  Tensor part = ops::empty({chunks, C}, on(like, DType::f64));
  launch(colsum_partial_kernel<F>,
         dim3(static_cast<unsigned>((C + kThreads - 1) / kThreads), static_cast<unsigned>(chunks)), dim3(kThreads), 0,
         f, N, C, chunk, ptr<double>(part));
  launch(colsum_finish_kernel<double>, dim3(grid_for(C)), dim3(kThreads), 0, ptr<double>(part), chunks, C,
         ptr<double>(out));
  return out;
}
template <class T>
struct Value {  // x[r, c] in double (through the accumulation type, as the CPU)
  const T* x;
  int64_t C;
  __device__ double operator()(int64_t r, int64_t c) const { return double(acc_t<T>(x[r * C + c])); }
};
template <class T>
struct SquaredDeviation {  // (x[r, c] - mean[c])^2 in double
  const T* x;
  const double* mean;
  int64_t C;
  __device__ double operator()(int64_t r, int64_t c) const {
    const double d = double(acc_t<T>(x[r * C + c])) - mean[c];
    return d * d;
  }
};
// g[r, c] (x[r, c] - mean) rstd in double: the terms of a normalisation's weight gradient. The
// statistics are per row (layer_norm, rms_norm: kPerColumn false) or per column (batch_norm);
// kNoMean: RMS norm, mean unused (may be null).
template <class T, bool kPerColumn, bool kNoMean = false>
struct GradTimesXhat {
  const T* g;
  const T* x;
  const acc_t<T>* mean;
  const acc_t<T>* rstd;
  int64_t C;
  __device__ double operator()(int64_t r, int64_t c) const {
    const int64_t s = kPerColumn ? c : r;
    return double(acc_t<T>(g[r * C + c])) * (double(acc_t<T>(x[r * C + c])) - (kNoMean ? 0.0 : double(mean[s]))) *
           double(rstd[s]);
  }
};

// dst[c] = T(acc_t<T>(sums[c])): the CPU's rounding of a double sum into a T result.
template <class T>
__global__ void store_sums_kernel(const double* sums, T* dst, int64_t C) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(blockDim.x) * gridDim.x)
    dst[c] = T(acc_t<T>(sums[c]));
}
template <class T, class Launch>
void store_sums(const Launch& launch, const Tensor& sums, const Tensor& dst) {
  launch(store_sums_kernel<T>, dim3(grid_for(sums.numel())), dim3(kThreads), 0, ptr<double>(sums), ptr<T>(dst),
         sums.numel());
}

STRAND_KERNELS_END
}  // namespace strand::cuda
