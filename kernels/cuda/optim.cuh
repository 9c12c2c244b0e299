// The optimizer's kernels as multi-tensor launches (after PyTorch's multi_tensor_apply and Apex):
// one launch covers up to kListTensors parameters and kListBlocks chunks of kChunk elements, each
// block one chunk, the tensor table passed by value in the kernel's arguments, so a step over
// hundreds of parameters is a handful of launches with no host-to-device copy.
//   adamw_multi: cpu::adamw's arithmetic (kernels/cpu/optim.cpp), with the fused gradient scale;
//   sum_squares: Σ x² per tensor in double, one partial per chunk, the partials summed on the host
//                in chunk order (deterministic).
//
// The kernels and their launchers, templated on the launch policy (cuda_common.cuh: DeviceLaunch on
// the GPU; the SIMT emulator's in tests/simt/).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "kernels/adamw_step.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/tensor_list.h"
#include "kernels/ops.h"

namespace strand::cuda::optim {
STRAND_KERNELS_BEGIN


template <int Depth>
__device__ void chunk_range(const TensorList<Depth>& l, int& t, int64_t& begin, int64_t& end) {
  t = l.block_tensor[blockIdx.x];
  begin = int64_t(l.block_chunk[blockIdx.x]) * kChunk;
  end = min(l.n[t], begin + kChunk);
}

template <class A>
struct AdamWConsts {
  A decay, a1, b2, a2, eps, gscale;
  bool decays, scales;
};

template <class T>
__global__ void adamw_kernel(TensorList<4> l, AdamWConsts<acc_t<T>> k) {
  using A = acc_t<T>;
  auto r = [](A x) { return A(T(x)); };  // the unfused ops store every result as T
  int t;
  int64_t begin, end;
  chunk_range(l, t, begin, end);
  T* p = static_cast<T*>(l.ptr[0][t]);
  T* g = static_cast<T*>(l.ptr[1][t]);
  T* m = static_cast<T*>(l.ptr[2][t]);
  T* v = static_cast<T*>(l.ptr[3][t]);
  const A neg_step = A(-l.a[t]), c2 = A(l.b[t]);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    A pi = A(p[i]);
    if (k.decays) pi = r(pi * k.decay);
    A gi = A(g[i]);
    if (k.scales) g[i] = T(gi = r(gi * k.gscale));
    const A mi = r(A(m[i]) + k.a1 * r(gi - A(m[i])));
    const A vi = r(r(A(v[i]) * k.b2) + k.a2 * r(gi * gi));
    const A den = r(r(r(sqrt(vi)) / c2) + k.eps);
    p[i] = T(pi + neg_step * r(mi / den));
    m[i] = T(mi);
    v[i] = T(vi);
  }
}

template <class T>
__global__ void sum_squares_kernel(TensorList<1> l, double* partials) {
  __shared__ double sh[32];
  int t;
  int64_t begin, end;
  chunk_range(l, t, begin, end);
  const T* x = static_cast<const T*>(l.ptr[0][t]);
  double acc = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const double xi = double(x[i]);
    acc += xi * xi;
  }
  acc = block_reduce<double, false>(acc, sh);
  if (threadIdx.x == 0) partials[l.first_chunk[t] + l.block_chunk[blockIdx.x]] = acc;
}

inline bool same_hyper(const AdamWStep& a, const AdamWStep& b) {
  const bool same_scale = a.grad_scale == b.grad_scale || (std::isnan(a.grad_scale) && std::isnan(b.grad_scale));
  return a.lr == b.lr && a.beta1 == b.beta1 && a.beta2 == b.beta2 && a.eps == b.eps &&
         a.weight_decay == b.weight_decay && same_scale;
}

template <class Launch>
void adamw_multi(const Launch& launch, const std::vector<AdamWParam>& params) {
  // Runs of one dtype and one set of hyperparameters (per-tensor: the step size and bias
  // correction, which follow each parameter's own step count) share launches.
  for (size_t begin = 0; begin < params.size();) {
    size_t end = begin + 1;
    const DType dt = params[begin].p.dtype();
    const AdamWStep& s = params[begin].s;
    while (end < params.size() && params[end].p.dtype() == dt && same_hyper(params[end].s, s)) ++end;
    std::vector<ListEntry> entries;
    for (size_t i = begin; i < end; ++i) {
      const AdamWParam& e = params[i];
      entries.push_back({{e.p.raw_data(), e.g.raw_data(), e.m.raw_data(), e.v.raw_data()}, e.p.numel(),
                         e.s.step_size, e.s.bias_correction2_sqrt});
    }
    dispatch_float(dt, "adamw", [&](auto tag) {
      using T = typename decltype(tag)::type;
      using A = acc_t<T>;
      const AdamWConsts<A> k{A(1 - s.lr * s.weight_decay), A(1 - s.beta1), A(s.beta2), A(1 - s.beta2), A(s.eps),
                             A(s.grad_scale), s.weight_decay != 0, s.grad_scale != 1};
      apply_lists<4>(entries, [&](const TensorList<4>& l, int blocks) {
        launch(adamw_kernel<T>, dim3(blocks), dim3(kThreads), 0, l, k);
      });
    });
    begin = end;
  }
}

template <class Launch>
std::vector<double> sum_squares(const Launch& launch, const std::vector<Tensor>& xs) {
  std::vector<double> out(xs.size(), 0.0);
  std::vector<int64_t> first(xs.size());
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    first[i] = total;
    total += (xs[i].numel() + kChunk - 1) / kChunk;
  }
  if (total == 0) return out;
  const Tensor partials = ops::empty({total}, TensorOptions(DType::f64, xs.front().device()));
  // One pass per dtype over the tensors of that dtype; each chunk's partial lands at its global index.
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    std::vector<ListEntry> entries;
    for (size_t i = 0; i < xs.size(); ++i)
      if (xs[i].dtype() == dt) entries.push_back({{xs[i].raw_data(), nullptr, nullptr, nullptr}, xs[i].numel(), 0, 0, first[i]});
    if (entries.empty()) continue;
    dispatch_float(dt, "sum_squares", [&](auto tag) {
      using T = typename decltype(tag)::type;
      apply_lists<1>(entries, [&](const TensorList<1>& l, int blocks) {
        launch(sum_squares_kernel<T>, dim3(blocks), dim3(kThreads), 0, l, ptr<double>(partials));
      });
    });
  }
  const std::vector<double> parts = ops::to_vector<double>(partials);  // one copy, then a fixed order
  for (size_t i = 0; i < xs.size(); ++i)
    for (int64_t c = first[i]; c < (i + 1 < xs.size() ? first[i + 1] : total); ++c) out[i] += parts[c];
  return out;
}

STRAND_KERNELS_END
}  // namespace strand::cuda::optim
