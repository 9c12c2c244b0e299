// The GPU entry points of rel_attention.cuh.
#include "kernels/cuda/cublas_util.cuh"
#include "kernels/cuda/rel_attention.cuh"

namespace strand::cuda {

namespace {

// DeviceLaunch with cuBLAS for the GEMMs and an asynchronous memset, on the current stream of
// `device`.
struct BlasLaunch : DeviceLaunch {
  int device;
  template <class T>
  void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, int64_t sa, const T* B,
                    int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc, int64_t sc, int64_t batch) const {
    cuda::gemm_batched<T>(cublas_handle(device), ta, tb, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
  }
  void zero(void* p, size_t bytes) const {
    const cudaError_t e = cudaMemsetAsync(p, 0, bytes, stream());
    STRAND_CHECK(e == cudaSuccess, "cuda::rel_attention: cannot zero ", bytes, " bytes: ", cudaGetErrorString(e));
  }
};

}  // namespace

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
