// The GPU entry points of rel_attention.cuh.
#include "kernels/cuda/cublas_util.cuh"
#include "kernels/cuda/rel_attention.cuh"

namespace strand::cuda {

void rel_attention_forward(const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r, const Tensor& v,
                           const cpu::DropoutMask& dm, const Tensor& out, const Tensor& lse) {
  rel::rel_attention_forward(BlasLaunch{{}, qc.device().index}, qc, qr, k, r, v, dm, out, lse);
}
void rel_attention_backward(const Tensor& dout, const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r,
                            const Tensor& v, const Tensor& out, const Tensor& lse, const cpu::DropoutMask& dm,
                            const Tensor& dqc, const Tensor& dqr, const Tensor& dk, const Tensor& dr,
                            const Tensor& dv) {
  rel::rel_attention_backward(BlasLaunch{{}, qc.device().index}, dout, qc, qr, k, r, v, out, lse, dm, dqc, dqr, dk, dr,
                              dv);
}

}  // namespace strand::cuda
