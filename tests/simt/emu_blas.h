#pragma once
// The SIMT emulator's launch policy for kernels whose policy also does GEMMs and memsets
// (kernels/cuda/conv.cuh, rel_attention.cuh; BlasLaunch with cuBLAS on the GPU): plain loops with
// cuBLAS's row-major contract (cublas_util.cuh), checking its leading-dimension rules.
#include <algorithm>
#include <cstring>

#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tests/simt/simt.h"

namespace strand::simt {

template <class T>
float tf32_round(T x) {  // f32 -> TF32 (10 mantissa bits, round to nearest even), as the tensor cores read it
  float f = static_cast<float>(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
  std::memcpy(&f, &u, 4);
  return f;
}

// The emulators' GEMM (EmuBlas here; the emulated device's cuBLAS and cuBLASLt, emu_runtime.cpp, as
// the transposed product): row-major C[m, n] = alpha sum_k op(A)[m, k] op(B)[k, n]
// (+ beta C[m, n], C not read when beta = 0) (+ bias[n]), summed in order in Acc, the operands
// rounded to TF32 first when tf32; batch b at A + b sa, B + b sb, C + b sc.
template <class T, class Acc, class Out>
void gemm_rows(bool ta, bool tb, int64_t M, int64_t N, int64_t K, Acc alpha, const T* A, int64_t lda, int64_t sa,
               const T* B, int64_t ldb, int64_t sb, Acc beta, Out* C, int64_t ldc, int64_t sc, int64_t batch,
               bool tf32 = false, const Out* bias = nullptr) {
  auto in = [tf32](const T& x) { return tf32 ? Acc(tf32_round(x)) : Acc(x); };
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        Acc s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += in(A[b * sa + (ta ? k * lda + m : m * lda + k)]) * in(B[b * sb + (tb ? n * ldb + k : k * ldb + n)]);
        Out& c = C[b * sc + m * ldc + n];
        Acc r = beta == Acc(0) ? alpha * s : alpha * s + beta * Acc(c);
        if (bias) r += Acc(bias[n]);  // cuBLASLt's BIAS epilogue: into the accumulator, one rounding
        c = Out(r);
      }
}

struct EmuBlas : Launch {
  // gemm_rows with alpha 1, after cuBLAS's leading-dimension checks.
  template <class T, class Acc, class C_t>
  static void product(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, int64_t sa,
                      const T* B, int64_t ldb, int64_t sb, Acc beta, C_t* C, int64_t ldc, int64_t sc, int64_t batch) {
    STRAND_CHECK(lda >= std::max<int64_t>(1, ta ? M : K) && ldb >= std::max<int64_t>(1, tb ? K : N) &&
                     ldc >= std::max<int64_t>(1, N),
                 "EmuBlas: leading dimensions ", lda, ", ", ldb, ", ", ldc, " too small for ", M, "x", N, "x", K);
    gemm_rows<T, Acc, C_t>(ta, tb, M, N, K, Acc(1), A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
  }
  template <class T>
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta,
            T* C, int64_t ldc) const {
    product<T, acc_t<T>, T>(ta, tb, M, N, K, A, lda, 0, B, ldb, 0, acc_t<T>(beta), C, ldc, 0, 1);
  }
  template <class T>
  void gemm_f32_out(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                    float beta, float* C, int64_t ldc) const {
    product<T, float, float>(ta, tb, M, N, K, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
  }
  template <class T>
  void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, int64_t sa, const T* B,
                    int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc, int64_t sc, int64_t batch) const {
    product<T, T, T>(ta, tb, M, N, K, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
  }
  void zero(void* p, size_t bytes) const { std::memset(p, 0, bytes); }
  bool cudnn() const { return false; }
};

}  // namespace strand::simt
