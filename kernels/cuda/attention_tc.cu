// The tensor-core attention kernels (attention_tc.cuh) launched on the GPU.
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/cuda_kernels.h"

#include <algorithm>
#include <atomic>

namespace strand::cuda {

bool attention_tc_supported(const Tensor& q, const Tensor& k) {
  if (q.dtype() != DType::bf16 && q.dtype() != DType::f16) return false;
  const int64_t D = q.size(3), BH = q.size(0) * q.size(1);
  if (D < 1 || tc::rounded_dm(D) == 0 || q.size(2) == 0 || k.size(2) == 0 || BH == 0 || BH > 65535) return false;
  static std::atomic<int> capable[64];  // per device: 0 unknown, 1 yes, 2 no
  int dev = 0;
  cudaGetDevice(&dev);
  int c = dev < 64 ? capable[dev].load(std::memory_order_relaxed) : 0;
  if (c == 0) {
    int major = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    const size_t most = std::max({tc::fwd_smem<128>(), tc::bwd_q_smem<128>(), tc::bwd_kv_smem<128>()});
    c = major >= 8 && most <= smem_optin_limit() ? 1 : 2;
    if (dev < 64) capable[dev].store(c, std::memory_order_relaxed);
  }
  return c == 1;
}

void attention_forward_tc(const Tensor& q, const Tensor& k, const Tensor& v, const cpu::AttentionMasks& m,
                          double scale, const Tensor& out, const Tensor& lse) {
  tc::forward(DeviceLaunch{}, q, k, v, m, scale, out, lse);
}

void attention_backward_tc(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                           const Tensor& lse, const cpu::AttentionMasks& m, double scale, const Tensor& dq,
                           const Tensor& dk, const Tensor& dv) {
  tc::backward(DeviceLaunch{}, dout, q, k, v, out, lse, m, scale, dq, dk, dv);
}

}  // namespace strand::cuda
