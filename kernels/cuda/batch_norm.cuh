// CUDA batch_norm over channels-last [..., C] (the op Enformer's convolution tower needs), templated
// on the launch policy (cuda_common.cuh: DeviceLaunch on the GPU; the SIMT emulator's in tests/simt/).
// The per-channel sums are column sums in double (colsum.cuh). They stay on the device (statistics,
// coefficients and gradients computed there, no host round trip) except under SyncBatchNorm, where
// they come to the host for the reducer (MPI) to add them across processes, as on the CPU.
#pragma once
#include <vector>

#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/ops.h"

namespace strand::cuda::bn {
STRAND_KERNELS_BEGIN

// Host values (already rounded as the CPU rounds them) into a device tensor of dtype dt.
inline Tensor device_values(const std::vector<double>& v, DType dt, const Tensor& like) {
  Tensor h = ops::to(ops::from_vector<double>(v, {static_cast<int64_t>(v.size())}), dt);
  return ops::to(h, like.device());
}
template <class A>
constexpr DType dtype_of() {
  return sizeof(A) == 8 ? DType::f64 : DType::f32;
}
template <class A>
std::vector<double> rounded(std::vector<double> v) {
  for (double& x : v) x = static_cast<double>(static_cast<A>(x));
  return v;
}

template <class T, class P>  // P: the parameters' type, T or (bf16-mixed) f32
__global__ void bn_apply_kernel(const T* x, const P* w, const P* b, const acc_t<T>* mean, const acc_t<T>* rstd, T* y,
                                int64_t n, int64_t C) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = i % C;
    const A scale = (w ? A(w[c]) : A(1)) * rstd[c];
    const A shift = (b ? A(b[c]) : A(0)) - mean[c] * scale;
    y[i] = T(A(x[i]) * scale + shift);
  }
}
template <class T>
__global__ void bn_grad_input_kernel(const T* g, const T* x, const acc_t<T>* mean, const acc_t<T>* rstd,
                                     const acc_t<T>* k, const acc_t<T>* mg, const acc_t<T>* mgx, bool training, T* gx,
                                     int64_t n, int64_t C) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = i % C;
    A v = A(g[i]);
    if (training) {
      const A xh = (A(x[i]) - mean[c]) * rstd[c];
      v = v - mg[c] - xh * mgx[c];
    }
    gx[i] = T(k[c] * v);
  }
}

// k[c] = A(w[c]) * rstd[c] (w absent: 1); mg, mgx = the sums over `total` rows (0 outside training)
template <class T, class P>
__global__ void bn_coefficients_kernel(const P* w, const acc_t<T>* rstd, const double* sg, const double* sgx,
                                       double total, bool training, acc_t<T>* k, acc_t<T>* mg, acc_t<T>* mgx,
                                       int64_t C) {
  using A = acc_t<T>;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(blockDim.x) * gridDim.x) {
    k[c] = A((w ? A(w[c]) : A(1)) * rstd[c]);
    mg[c] = training ? A(sg[c] / total) : A(0);
    mgx[c] = training ? A(sgx[c] / total) : A(0);
  }
}

template <class Launch>
double batch_norm_stats(const Launch& launch, const Tensor& x, const Tensor& mean, const Tensor& var, const cpu::StatsReducer* reduce) {
  double total = 0;
  dispatch_float(x.dtype(), "batch_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
    total = static_cast<double>(N);
    const Tensor sums = column_sums(launch, Value<T>{ptr<T>(x), C}, N, C, x);
    if (!reduce) {  // all on the device, no host round trip: the same doubles and roundings as below
      const Tensor m64 = ops::unary(UnaryOp::div_scalar, sums, total);
      const Tensor ss = column_sums(launch, SquaredDeviation<T>{ptr<T>(x), ptr<double>(m64), C}, N, C, x);
      ops::copy_(mean, ops::to(m64, dtype_of<A>()));
      ops::copy_(var, ops::to(ops::unary(UnaryOp::div_scalar, ss, total), dtype_of<A>()));
      return;
    }
    // SyncBatchNorm: the sums go through the host, where the reducer adds them across processes.
    std::vector<double> s = ops::to_vector<double>(sums);
    total = cpu::reduce_channel_sums(*reduce, total, s);
    for (double& v : s) v /= total;
    Tensor m64 = device_values(s, DType::f64, x);
    std::vector<double> ss =
        ops::to_vector<double>(column_sums(launch, SquaredDeviation<T>{ptr<T>(x), ptr<double>(m64), C}, N, C, x));
    (*reduce)(ss);
    for (double& v : ss) v /= total;
    ops::copy_(mean, device_values(rounded<A>(s), mean.dtype(), x));
    ops::copy_(var, device_values(rounded<A>(ss), var.dtype(), x));
  });
  return total;
}

template <class Launch>
void batch_norm_apply(const Launch& launch, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& rstd,
                      const Tensor& y) {
  dispatch_float_param(x.dtype(), cpu::batch_norm_param_dtype(x, w, b), "batch_norm", [&](auto tag, auto ptag) {
    using T = typename decltype(tag)::type;
    using P = typename decltype(ptag)::type;
    using A = acc_t<T>;
    launch(bn_apply_kernel<T, P>, dim3(grid_for(x.numel())), dim3(kThreads), 0, ptr<T>(x),
           w.defined() ? ptr<P>(w) : nullptr, b.defined() ? ptr<P>(b) : nullptr, ptr<A>(mean), ptr<A>(rstd), ptr<T>(y),
           x.numel(), x.size(-1));
  });
}

template <class Launch>
void batch_norm_backward(const Launch& launch, const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         bool training, const Tensor& gx, const Tensor& gw, const Tensor& gb,
                         const cpu::StatsReducer* reduce) {
  dispatch_float_param(x.dtype(), cpu::batch_norm_param_dtype(x, w, gb), "batch_norm_backward", [&](auto tag, auto ptag) {
    using T = typename decltype(tag)::type;
    using P = typename decltype(ptag)::type;
    using A = acc_t<T>;
    const int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
    Tensor sg = column_sums(launch, Value<T>{ptr<T>(grad), C}, N, C, x);
    Tensor sgx = column_sums(launch, GradTimesXhat<T, true>{ptr<T>(grad), ptr<T>(x), ptr<A>(mean), ptr<A>(rstd), C}, N, C, x);
    if (gw.defined()) store_sums<P>(launch, sgx, gw);
    if (gb.defined()) store_sums<P>(launch, sg, gb);
    if (!gx.defined()) return;
    double total = static_cast<double>(N);
    if (reduce && training) {  // SyncBatchNorm: the global sums, through the host
      std::vector<double> hg = ops::to_vector<double>(sg), hgx = ops::to_vector<double>(sgx);
      total = cpu::reduce_channel_sums(*reduce, total, hg, &hgx);
      sg = device_values(hg, DType::f64, x);
      sgx = device_values(hgx, DType::f64, x);
    }
    // k = w·rstd, and the means of g and g·x̂ (training), each rounded to A as the CPU rounds them
    const TensorOptions ao(mean.dtype(), x.device());
    Tensor kd = ops::empty({C}, ao), mgd = ops::empty({C}, ao), mgxd = ops::empty({C}, ao);
    launch(bn_coefficients_kernel<T, P>, dim3(grid_for(C)), dim3(kThreads), 0, w.defined() ? ptr<P>(w) : nullptr,
           ptr<A>(rstd), ptr<double>(sg), ptr<double>(sgx), total, training, ptr<A>(kd), ptr<A>(mgd), ptr<A>(mgxd), C);
    launch(bn_grad_input_kernel<T>, dim3(grid_for(x.numel())), dim3(kThreads), 0, ptr<T>(grad), ptr<T>(x), ptr<A>(mean),
           ptr<A>(rstd), ptr<A>(kd), ptr<A>(mgd), ptr<A>(mgxd), training, ptr<T>(gx), x.numel(), C);
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::bn
