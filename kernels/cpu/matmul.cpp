#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

#ifdef STRAND_HAVE_CBLAS
#include <cblas.h>
#endif

namespace strand::cpu {

namespace {
// Plain kernel used when no BLAS is present: i-k-j order over row blocks, OpenMP over rows.
template <class T>
void gemm_fallback(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                   const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  std::vector<T> bt;
  if (tb) {  // make B row-major [K, N] so the inner loop runs along contiguous memory
    bt.resize(static_cast<size_t>(K * N));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) bt[k * N + j] = B[j * ldb + k];
    B = bt.data();
    ldb = N;
  }
  parallel_for(M, N * K, [&](int64_t b, int64_t e) {
    std::vector<T> acc(static_cast<size_t>(N));
    for (int64_t i = b; i < e; ++i) {
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t k = 0; k < K; ++k) {
        const T a = ta ? A[k * lda + i] : A[i * lda + k];
        const T* brow = B + k * ldb;
        for (int64_t j = 0; j < N; ++j) acc[j] += a * brow[j];
      }
      T* crow = C + i * ldc;
      for (int64_t j = 0; j < N; ++j) crow[j] = alpha * acc[j] + (beta == T(0) ? T(0) : beta * crow[j]);
    }
  });
}
}  // namespace

template <class T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
#ifdef STRAND_HAVE_CBLAS
  const auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
#else
  gemm_fallback(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}
template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

void matmul(const MatDesc& a, const MatDesc& b, const Tensor& out, const Shape& batch, int64_t M, int64_t N,
            int64_t K, const Tensor* bias_rows) {
  dispatch_float(out.dtype(), "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const T* ap = static_cast<const T*>(a.t->raw_data());
      const T* bp = static_cast<const T*>(b.t->raw_data());
      T* op = static_cast<T*>(out.raw_data());
      const bool ta = a.cs != 1, tb = b.cs != 1;
      const int64_t lda = ta ? a.cs : a.rs, ldb = tb ? b.cs : b.rs;
      const auto offsets = cpu::batch_offsets(a, b, batch);
      for (size_t bi = 0; bi < offsets.size(); ++bi) {
        const auto [oa, ob] = offsets[bi];
        T* c = op + static_cast<int64_t>(bi) * M * N;
        T beta = T(0);
        if (bias_rows) {
          const T* bias = static_cast<const T*>(bias_rows->raw_data());
          for (int64_t i = 0; i < M; ++i) std::copy(bias, bias + N, c + i * N);
          beta = T(1);
        }
        gemm<T>(ta, tb, M, N, K, T(1), ap + oa, lda, bp + ob, ldb, beta, c, N);
      }
    } else {
      STRAND_ASSERT(false, "cpu::matmul expects f32/f64 (the op layer converts half types)");
    }
  });
}

}  // namespace strand::cpu
