#pragma once
// What the CUDA fused-attention kernels share (attention.cu: row and tiled kernels on CUDA cores;
// attention_tc.cu: tensor-core kernels for bf16/f16): the problem's geometry and masks, the dropout
// factor of a probability, the masked logit value, p from the saved logsumexp, and shared-memory
// limits.
#include <atomic>
#include <cfloat>
#include <cmath>
#include <mutex>
#include <set>
#include <utility>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/dropout.cuh"

namespace strand::cuda {

constexpr int kMaxPerLane = 8;  // head dim up to 256 (32 lanes x 8) in the row kernels

struct Geometry {
  int64_t B, H, Tq, Tk, D;
  double scale;
  const uint8_t* key_pad;
  const uint8_t* query_pad;
  bool zero_padded_queries;
  DropFactor drop;  // dropout on the probabilities
};

// The dropout factor of probability (b, h, i, j), at its index in a contiguous [B, H, Tq, Tk] tensor.
template <class A>
__device__ A drop_factor(const Geometry& g, int64_t b, int64_t h, int64_t i, int64_t j) {
  return A(g.drop(((b * g.H + h) * g.Tq + i) * g.Tk + j));
}

template <class A>
__device__ A lowest() {
  return sizeof(A) == 8 ? A(-DBL_MAX) : A(-FLT_MAX);
}

// p(i, j) from the saved lse: +inf -> 0 (zeroed query), -inf -> 1/Tk (uniform row)
template <class A>
__device__ A prob(A s, A l, int64_t Tk) {
  if (isinf(l)) return l > 0 ? A(0) : A(1) / A(Tk);
  return exp(s - l);
}

// The most dynamic shared memory one block may opt into on the current device (227 KB on an H100,
// 163 KB on an A100), asked of the driver once per device.
inline size_t smem_optin_limit() {
  static std::atomic<int> cached[64];  // 0: not asked yet
  int dev = 0;
  cudaGetDevice(&dev);
  int bytes = dev < 64 ? cached[dev].load(std::memory_order_relaxed) : 0;
  if (bytes == 0) {
    cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (dev < 64) cached[dev].store(bytes, std::memory_order_relaxed);
  }
  return static_cast<size_t>(bytes);
}
// Lets `kernel` use `bytes` of dynamic shared memory (needed above 48 KB). The attribute belongs to
// the kernel on a device, so it is set once per (kernel, device): each kernel instantiation is
// always launched with the same size.
template <class K>
void allow_smem(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> done;
  int dev = 0;
  cudaGetDevice(&dev);
  const std::pair<const void*, int> key{reinterpret_cast<const void*>(kernel), dev};
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(key)) return;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  STRAND_CHECK(e == cudaSuccess, "CUDA attention: cannot reserve ", bytes, " bytes of shared memory: ", cudaGetErrorString(e));
  done.insert(key);
}
inline Geometry geometry(const Tensor& q, const Tensor& k, const cpu::AttentionMasks& m, double scale) {
  STRAND_CHECK(q.size(3) <= 32 * kMaxPerLane, "CUDA attention supports head dims up to ", 32 * kMaxPerLane, ", got ",
               q.size(3));
  return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), scale, m.key_pad, m.query_pad, m.zero_padded_queries,
          DropFactor::of(m.dropout)};
}

}  // namespace strand::cuda
