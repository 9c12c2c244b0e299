#pragma once
// cuBLAS pieces shared by the GEMM users (matmul_reduce.cu, conv.cuh, rel_attention.cuh): the status
// check, one handle per device, row-major GEMM wrappers, and the launch policy that does GEMMs.
#include <cublas_v2.h>

#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/ops.h"
#include "tensor/error.h"
#include "tensor/half.h"

namespace strand::cuda {

#define STRAND_CUBLAS_CHECK(stmt)                                                                          \
  do {                                                                                                     \
    cublasStatus_t s_ = (stmt);                                                                            \
    STRAND_CHECK(s_ == CUBLAS_STATUS_SUCCESS, "cuBLAS call failed (status ", static_cast<int>(s_), "): ", \
                 #stmt, " at ", __FILE__, ":", __LINE__);                                                  \
  } while (0)

// The handle for the device's current stream (tensor/stream.h), created on first use (default
// math: no TF32 unless asked).
cublasHandle_t cublas_handle(int device);

// Row-major C = op(A) op(B) (+ beta C) as column-major Cᵀ = op(B)ᵀ op(A)ᵀ (the usual swap).
// f32/f64: cublasSgemm/Dgemm (f32 in TF32 when the handle's math mode says so). bf16/f16:
// cublasGemmEx on the tensor cores with f32 accumulation, alpha and beta, C rounded once (the
// bf16-mixed GEMM; the handle's math mode disallows reduced-precision split-K reductions, which
// PyTorch allows by default).
template <class T>
void gemm(cublasHandle_t h, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  const auto opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int n = static_cast<int>(N), m = static_cast<int>(M), k = static_cast<int>(K);
  if constexpr (std::is_same_v<T, float>) {
    const float one = 1;
    STRAND_CUBLAS_CHECK(cublasSgemm(h, opb, opa, n, m, k, &one, B, static_cast<int>(ldb), A, static_cast<int>(lda),
                                    &beta, C, static_cast<int>(ldc)));
  } else if constexpr (std::is_same_v<T, double>) {
    const double one = 1;
    STRAND_CUBLAS_CHECK(cublasDgemm(h, opb, opa, n, m, k, &one, B, static_cast<int>(ldb), A, static_cast<int>(lda),
                                    &beta, C, static_cast<int>(ldc)));
  } else {
    static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, f16>, "gemm: f32, f64, bf16 or f16");
    const cudaDataType_t t = std::is_same_v<T, bf16> ? CUDA_R_16BF : CUDA_R_16F;
    const float one = 1, b = static_cast<float>(beta);
    STRAND_CUBLAS_CHECK(cublasGemmEx(h, opb, opa, n, m, k, &one, B, t, static_cast<int>(ldb), A, t,
                                     static_cast<int>(lda), &b, C, t, static_cast<int>(ldc), CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
  }
}

// Row-major C = op(A) op(B) + bias (bias [N] added to every row) in one cuBLASLt call with the BIAS
// epilogue (gemm_lt.cu): f32 (TF32 per ops::allow_tf32), bf16, f16. False, with nothing written,
// when cuBLASLt has no algorithm for it; the caller then takes the cuBLAS path.
template <class T>
bool gemm_bias_lt(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                  const T* bias, T* C, int64_t ldc);

// gemm over `batch` matrices at fixed strides (sa, sb, sc elements apart): cublas{S,D}gemmStridedBatched.
template <class T>
void gemm_batched(cublasHandle_t h, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                  int64_t sa, const T* B, int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc, int64_t sc, int64_t batch) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm_batched: f32 or f64");
  const auto opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const T one = 1;
  const int n = static_cast<int>(N), m = static_cast<int>(M), k = static_cast<int>(K), bc = static_cast<int>(batch);
  if constexpr (std::is_same_v<T, float>)
    STRAND_CUBLAS_CHECK(cublasSgemmStridedBatched(h, opb, opa, n, m, k, &one, B, static_cast<int>(ldb), sb, A,
                                                  static_cast<int>(lda), sa, &beta, C, static_cast<int>(ldc), sc, bc));
  else
    STRAND_CUBLAS_CHECK(cublasDgemmStridedBatched(h, opb, opa, n, m, k, &one, B, static_cast<int>(ldb), sb, A,
                                                  static_cast<int>(lda), sa, &beta, C, static_cast<int>(ldc), sc, bc));
}

// bf16/f16 operands into an f32 C (alpha 1): for GEMMs whose results are summed over several calls
// (conv1d's input and weight gradients), so the sum stays in f32 and is rounded once at the end.
template <class T>
void gemm_f32_out(cublasHandle_t h, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                  const T* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, f16>, "gemm_f32_out: bf16 or f16 operands");
  const auto opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cudaDataType_t t = std::is_same_v<T, bf16> ? CUDA_R_16BF : CUDA_R_16F;
  const float one = 1;
  STRAND_CUBLAS_CHECK(cublasGemmEx(h, opb, opa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one, B, t,
                                   static_cast<int>(ldb), A, t, static_cast<int>(lda), &beta, C, CUDA_R_32F,
                                   static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

#if defined(__CUDACC__) || defined(STRAND_SIMT_EMULATOR)
// DeviceLaunch with cuBLAS for the GEMMs of the kernels whose policy also does those (conv.cuh,
// rel_attention.cuh) and an asynchronous memset, on the current stream of `device` (on the tests'
// emulated device, cuBLAS is tests/simt/emu_runtime.cpp's). The SIMT emulator's kernel tests give
// the same members as plain loops (simt::EmuBlas).
struct BlasLaunch : DeviceLaunch {
  int device;
  template <class T>
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
            T* C, int64_t ldc) const {
    cuda::gemm<T>(cublas_handle(device), ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
  }
  template <class T>
  void gemm_f32_out(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                    float beta, float* C, int64_t ldc) const {
    cuda::gemm_f32_out<T>(cublas_handle(device), ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
  }
  template <class T>
  void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, int64_t sa, const T* B,
                    int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc, int64_t sc, int64_t batch) const {
    cuda::gemm_batched<T>(cublas_handle(device), ta, tb, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
  }
  bool cudnn() const { return ops::cudnn_conv(); }  // conv.cuh: try cuDNN first (opt-in)
  void zero(void* p, size_t bytes) const {
    const cudaError_t e = cudaMemsetAsync(p, 0, bytes, stream());
    STRAND_CHECK(e == cudaSuccess, "CUDA: cannot zero ", bytes, " bytes: ", cudaGetErrorString(e));
  }
};
#endif

}  // namespace strand::cuda
