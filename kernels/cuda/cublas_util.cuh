#pragma once
// cuBLAS pieces shared by the GEMM users (matmul_reduce.cu, conv.cu): the status check, one handle
// per device, and a row-major GEMM wrapper.
#include <cublas_v2.h>

#include <type_traits>

#include "tensor/error.h"

namespace strand::cuda {

#define STRAND_CUBLAS_CHECK(stmt)                                                                          \
  do {                                                                                                     \
    cublasStatus_t s_ = (stmt);                                                                            \
    STRAND_CHECK(s_ == CUBLAS_STATUS_SUCCESS, "cuBLAS call failed (status ", static_cast<int>(s_), "): ", \
                 #stmt, " at ", __FILE__, ":", __LINE__);                                                  \
  } while (0)

// The device's handle, created on first use (default math: no TF32 unless asked).
cublasHandle_t cublas_handle(int device);

// Row-major C = op(A) op(B) (+ beta C) as column-major Cᵀ = op(B)ᵀ op(A)ᵀ (the usual swap).
template <class T>
void gemm(cublasHandle_t h, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  const T one = 1;
  const auto opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if constexpr (std::is_same_v<T, float>)
    STRAND_CUBLAS_CHECK(cublasSgemm(h, opb, opa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one, B,
                                    static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc)));
  else
    STRAND_CUBLAS_CHECK(cublasDgemm(h, opb, opa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one, B,
                                    static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc)));
}

}  // namespace strand::cuda
