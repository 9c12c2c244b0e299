// The CUDA-core fused attention kernels (attention.cuh) launched on the GPU.
#include "kernels/cuda/attention.cuh"

namespace strand::cuda {

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const cpu::AttentionMasks& m, double scale,
                       const Tensor& out, const Tensor& lse) {
  attn::forward(DeviceLaunch{}, q, k, v, m, scale, out, lse);
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const cpu::AttentionMasks& m, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
  attn::backward(DeviceLaunch{}, dout, q, k, v, out, lse, m, scale, dq, dk, dv);
}

}  // namespace strand::cuda
