// CUDA matmul through cuBLAS (f32/f64, bf16/f16 with f32 accumulation; one call per batch matrix,
// broadcast batch strides allowed; TF32 only when ops::set_allow_tf32 asks, off by default as in
// PyTorch), and the GPU entry points of the reductions (reduce.cuh). Same contracts as cpu::matmul,
// cpu::reduce_rows and cpu::reduce_middle.
#include <cublas_v2.h>

#include <cmath>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/cublas_util.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/ops.h"

namespace strand::cuda {

cublasHandle_t cublas_handle(int device) {
  // One handle per (device, stream), as PyTorch keeps one per thread and stream: a handle's
  // default workspace is then never shared by GEMMs running concurrently on two streams.
  struct Entry {
    cublasHandle_t h = nullptr;
    int tf32 = -1;  // the math mode it is in: -1 unset, 0 default, 1 TF32
  };
  static std::mutex mu;
  static std::map<std::pair<int, StreamId>, Entry> handles;
  const StreamId stream = cuda_rt::current_stream_id(device);
  std::lock_guard<std::mutex> lock(mu);
  Entry& e = handles[{device, stream}];
  if (!e.h) {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    STRAND_CUBLAS_CHECK(cublasCreate(&e.h));
    STRAND_CUBLAS_CHECK(cublasSetStream(e.h, reinterpret_cast<cudaStream_t>(stream)));
    cudaSetDevice(prev);
  }
  const int want = ops::allow_tf32() ? 1 : 0;  // ops::set_allow_tf32; off by default, as PyTorch
  if (e.tf32 != want) {
    // bf16/f16 GEMMs reduce split-K partial sums in f32 (no reduced-precision reductions): the
    // result is the f32 sum rounded once, as on the CPU.
    const int mode = (want ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) |
                     CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    STRAND_CUBLAS_CHECK(cublasSetMathMode(e.h, static_cast<cublasMath_t>(mode)));
    e.tf32 = want;
  }
  return e.h;
}

void matmul(const cpu::MatDesc& a, const cpu::MatDesc& b, const Tensor& out, const Shape& batch, int64_t M, int64_t N,
            int64_t K, const Tensor* bias_rows) {
  dispatch_float(out.dtype(), "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    {
      cublasHandle_t h = cublas_handle(out.device().index);
      const T* ap = static_cast<const T*>(a.t->raw_data());
      const T* bp = static_cast<const T*>(b.t->raw_data());
      T* op = ptr<T>(out);
      const bool ta = a.cs != 1, tb = b.cs != 1;
      const int64_t lda = ta ? a.cs : a.rs, ldb = tb ? b.cs : b.rs;
      const auto offsets = cpu::batch_offsets(a, b, batch);
      for (size_t bi = 0; bi < offsets.size(); ++bi) {
        const auto [oa, ob] = offsets[bi];
        T* c = op + static_cast<int64_t>(bi) * M * N;
        if constexpr (!std::is_same_v<T, double>) {
          if (bias_rows && K > 0 && ops::cublaslt_bias() &&
              gemm_bias_lt<T>(ta, tb, M, N, K, ap + oa, lda, bp + ob, ldb, ptr<T>(*bias_rows), c, N))
            continue;  // bias fused into the GEMM's epilogue
        }
        T beta = 0;
        if (bias_rows) {
          DeviceLaunch{}(fill_rows_kernel<T>, dim3(grid_for(M * N)), dim3(kThreads), 0, c, ptr<T>(*bias_rows), M * N, N);
          beta = 1;
        }
        if (K == 0) {
          if (!bias_rows) cudaMemsetAsync(c, 0, static_cast<size_t>(M * N) * sizeof(T), stream());
        } else {
          gemm<T>(h, ta, tb, M, N, K, ap + oa, lda, bp + ob, ldb, beta, c, N);
        }
      }
    }
  });
}

void reduce_rows(RowReduce r, const Tensor& x, int64_t rows, int64_t n, const Tensor& out) {
  red::reduce_middle(DeviceLaunch{}, r, x, rows, n, 1, out);
}

void reduce_middle(RowReduce r, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  red::reduce_middle(DeviceLaunch{}, r, x, outer, n, inner, out);
}

void max_rows(const Tensor& x, int64_t rows, int64_t n, const Tensor& values, const Tensor& indices) {
  red::max_rows(DeviceLaunch{}, x, rows, n, values, indices);
}

}  // namespace strand::cuda
