// CUDA matmul through cuBLAS (f32/f64, bf16/f16 with f32 accumulation; one call per batch matrix,
// broadcast batch strides allowed; TF32 only when ops::set_allow_tf32 asks, off by default as in PyTorch) and the reductions
// sum/mean/var over rows or over a middle block of dims, one output per thread or block,
// accumulated in double in a fixed order (deterministic, like the CPU). Same contracts as
// cpu::matmul, cpu::reduce_rows and cpu::reduce_middle.
#include <cublas_v2.h>

#include <cmath>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/cublas_util.cuh"
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

namespace {

template <class T>
__global__ void bias_rows_kernel(T* c, const T* bias, int64_t M, int64_t N) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * N; i += int64_t(blockDim.x) * gridDim.x)
    c[i] = bias[i % N];
}


// ---------------- reductions ----------------
template <class T>
using RedAcc = std::conditional_t<std::is_same_v<T, int64_t>, int64_t, double>;
template <class T>
__device__ RedAcc<T> as_acc(T v) {
  if constexpr (std::is_same_v<T, int64_t>) return v;
  else return double(acc_t<T>(v));
}
template <class T>
__device__ T from_acc(RedAcc<T> v) {
  if constexpr (std::is_same_v<T, int64_t>) return v;
  else return T(acc_t<T>(v));
}
// r: 0 sum, 1 mean, 2 var (population). Element e of column (o, i) over k is x[(o n + k) inner + i].
template <class T>
__device__ T reduce_one(const T* x, int64_t n, int64_t inner, int r) {
  using Acc = RedAcc<T>;
  Acc s = 0;
  for (int64_t k = 0; k < n; ++k) s += as_acc(x[k * inner]);
  if (r == 0) return from_acc<T>(s);
  if constexpr (std::is_same_v<T, int64_t>) {
    return T(0);  // the op layer sends integers to sum only
  } else {
    const double m = n > 0 ? s / double(n) : NAN;
    if (r == 1) return from_acc<T>(m);
    double v = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double d = as_acc(x[k * inner]) - m;
      v += d * d;
    }
    return from_acc<T>(n > 0 ? v / double(n) : m);
  }
}
template <class T>
__global__ void reduce_kernel(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, int r) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner; c += int64_t(blockDim.x) * gridDim.x)
    out[c] = reduce_one(x + (c / inner) * n * inner + c % inner, n, inner, r);
}

// max over rows of n with the index of the maximum: the first NaN wins, then the larger value, then
// the smaller index (cpu::max_rows's order). One block per row.
template <class A>
__device__ bool better(A v, int64_t i, A bv, int64_t bi) {
  const bool vn = v != v, bn = bv != bv;
  if (vn || bn) return vn && (!bn || i < bi);
  return v > bv || (v == bv && i < bi);
}
template <class T>
__global__ void max_rows_kernel(const T* x, int64_t rows, int64_t n, T* values, int64_t* indices) {
  using A = acc_t<T>;
  __shared__ A sv[32];
  __shared__ int64_t si[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * n;
    A bv = A(row[0]);
    int64_t bi = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      if (better(A(row[j]), j, bv, bi)) bv = A(row[j]), bi = j;
    for (int o = 16; o > 0; o >>= 1) {
      using S = std::conditional_t<(sizeof(A) < 4), int, A>;  // no sub-word shuffles (u8, bool)
      const A ov = A(__shfl_xor_sync(0xffffffffu, S(bv), o));
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    __syncthreads();
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int k = 1; k < warps; ++k)
        if (better(sv[k], si[k], bv, bi)) bv = sv[k], bi = si[k];
      values[r] = row[bi];
      indices[r] = bi;
    }
  }
}

int code(RowReduce r) { return r == RowReduce::sum ? 0 : r == RowReduce::mean ? 1 : 2; }

template <class F>
void dispatch_reduce_types(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: f(type_tag<float>{}); break;
    case DType::f64: f(type_tag<double>{}); break;
    case DType::bf16: f(type_tag<bf16>{}); break;
    case DType::f16: f(type_tag<f16>{}); break;
    case DType::i64: f(type_tag<int64_t>{}); break;
    default: STRAND_CHECK(false, "CUDA reductions: unsupported dtype ", dtype_name(dt));
  }
}

}  // namespace

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
          bias_rows_kernel<T><<<grid_for(M * N), kThreads, 0, stream()>>>(c, ptr<T>(*bias_rows), M, N);
          STRAND_CUDA_LAUNCH_CHECK();
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
  cuda::reduce_middle(r, x, rows, n, 1, out);
}

void reduce_middle(RowReduce r, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  dispatch_reduce_types(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (outer * inner == 0) return;
    if constexpr (!std::is_same_v<T, int64_t>) {
      // Long columns over few outputs (a bias gradient: [B·T, N] -> [N]): one thread per output would
      // leave most of the GPU idle, so the chunked column sums (double, fixed order) take them.
      if (outer == 1 && n >= 512) {
        Tensor s = column_sums(Value<T>{ptr<T>(x), inner}, n, inner, x);
        const double dn = static_cast<double>(n);
        if (r != RowReduce::sum) s = ops::unary(UnaryOp::div_scalar, s, dn);  // the mean, as reduce_one
        if (r == RowReduce::var)
          s = ops::unary(UnaryOp::div_scalar,
                         column_sums(SquaredDeviation<T>{ptr<T>(x), ptr<double>(s), inner}, n, inner, x), dn);
        store_sums<T>(s, out);
        return;
      }
    }
    reduce_kernel<T><<<grid_for(outer * inner), kThreads, 0, stream()>>>(ptr<T>(x), ptr<T>(out), outer, n, inner, code(r));
    STRAND_CUDA_LAUNCH_CHECK();
  });
}

void max_rows(const Tensor& x, int64_t rows, int64_t n, const Tensor& values, const Tensor& indices) {
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (rows == 0) return;
    const int threads = n >= kThreads ? kThreads : 32;
    max_rows_kernel<T><<<grid_for(rows * kThreads), threads, 0, stream()>>>(ptr<T>(x), rows, n, ptr<T>(values), ptr<int64_t>(indices));
    STRAND_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace strand::cuda
