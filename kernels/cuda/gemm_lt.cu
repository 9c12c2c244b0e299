// GEMM with a fused bias epilogue through cuBLASLt (PyTorch's addmm path for F.linear with a bias):
// C = A·B + bias in one call, the bias added to the f32 accumulator before the single rounding,
// instead of pre-filling C with the bias and accumulating onto it with beta = 1 (one extra write and
// read of C). f32 (TF32 when ops::allow_tf32), bf16 and f16 with f32 accumulation; bf16/f16 split-K
// reductions restricted to f32 (as the cuBLAS handles' DISALLOW_REDUCED_PRECISION_REDUCTION).
// The algorithm for a (shape, layout, dtype, alignment) is found once by cuBLASLt's heuristic and
// cached per device; descriptors are made per call (cheap, and nothing mutable is shared between
// threads).
#include <cublasLt.h>

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/cublas_util.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/ops.h"

namespace strand::cuda {

namespace {

constexpr size_t kWorkspace = size_t{32} << 20;  // as PyTorch's default cuBLASLt workspace on Hopper

cublasLtHandle_t lt_handle(int device) {
  static std::mutex mu;
  static std::map<int, cublasLtHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  cublasLtHandle_t& h = handles[device];
  if (!h) STRAND_CUBLAS_CHECK(cublasLtCreate(&h));
  return h;
}

// A workspace per (device, stream), allocated on that stream and kept: GEMMs on one stream run in
// order, so they can share it.
void* workspace(int device) {
  static std::mutex mu;
  static std::map<std::pair<int, StreamId>, Tensor> spaces;
  const StreamId s = cuda_rt::current_stream_id(device);
  std::lock_guard<std::mutex> lock(mu);
  Tensor& t = spaces[{device, s}];
  if (!t.defined()) t = ops::empty({static_cast<int64_t>(kWorkspace)}, TensorOptions(DType::u8, Device::cuda(device)));
  return t.raw_data();
}

int alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (int al : {16, 8, 4, 2})
    if (a % al == 0) return al;
  return 1;
}

struct Descs {  // RAII for one call's descriptors
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

using Key = std::tuple<int, int, int, int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int>;
std::atomic<int64_t> g_calls{0};

}  // namespace

template <class T>
bool gemm_bias_lt(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                  const T* bias, T* C, int64_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, f16>,
                "gemm_bias_lt: f32, bf16 or f16");
  int device = 0;
  cudaGetDevice(&device);
  const cudaDataType_t dt = std::is_same_v<T, float> ? CUDA_R_32F : std::is_same_v<T, bf16> ? CUDA_R_16BF : CUDA_R_16F;
  const bool tf32 = std::is_same_v<T, float> && ops::allow_tf32();
  const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // Row-major C [M, N] = op(A) op(B) as column-major Cᵀ [N, M] = op(B)ᵀ op(A)ᵀ: cuBLASLt's "A" is B.
  const cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  Descs d;
  STRAND_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, compute, CUDA_R_32F));
  STRAND_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  STRAND_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;  // a vector over Cᵀ's rows: C's columns
  STRAND_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  STRAND_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  // cuBLASLt's A = B: [N, K] (op N) or stored [K, N] (op T); its B = A: [K, M] or stored [M, K].
  STRAND_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, dt, tb ? K : N, tb ? N : K, ldb));
  STRAND_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, dt, ta ? M : K, ta ? K : M, lda));
  STRAND_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, dt, N, M, ldc));

  const int al_a = alignment(B), al_b = alignment(A), al_c = alignment(C), al_bias = alignment(bias);
  const Key key{device, static_cast<int>(dt), ta, tb, tf32, M, N, K, lda, ldb, ldc, al_a, al_b, al_c, al_bias};
  static std::mutex mu;
  static std::map<Key, std::pair<bool, cublasLtMatmulAlgo_t>> algos;  // (found, algorithm)
  std::pair<bool, cublasLtMatmulAlgo_t> found{false, {}};
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = algos.find(key);
    if (it != algos.end()) {
      found = it->second;
    } else {
      STRAND_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
      const uint64_t ws = kWorkspace;
      STRAND_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
      if (!std::is_same_v<T, float>) {  // split-K partial sums in f32 only (INPLACE would add them in bf16/f16)
        const uint32_t mask = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
        STRAND_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask,
                                                             sizeof mask));
      }
      for (auto [attr, al] : {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_a},
                              {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_b},
                              {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_c},
                              {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_c}}) {
        const uint32_t v = static_cast<uint32_t>(al);
        STRAND_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, attr, &v, sizeof v));
      }
      cublasLtMatmulHeuristicResult_t res{};
      int count = 0;
      const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_handle(device), d.op, d.a, d.b, d.c, d.c, d.pref, 1,
                                                               &res, &count);
      found = {st == CUBLAS_STATUS_SUCCESS && count > 0 && res.state == CUBLAS_STATUS_SUCCESS, res.algo};
      algos[key] = found;
    }
  }
  if (!found.first) return false;  // no fused algorithm for this case: the caller's cuBLAS path
  const float one = 1, zero = 0;
  STRAND_CUBLAS_CHECK(cublasLtMatmul(lt_handle(device), d.op, &one, B, d.a, A, d.b, &zero, C, d.c, C, d.c, &found.second,
                                 workspace(device), kWorkspace, stream()));
  ++g_calls;
  return true;
}

int64_t gemm_bias_lt_calls() { return g_calls.load(); }

template bool gemm_bias_lt<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                                  const float*, float*, int64_t);
template bool gemm_bias_lt<bf16>(bool, bool, int64_t, int64_t, int64_t, const bf16*, int64_t, const bf16*, int64_t,
                                 const bf16*, bf16*, int64_t);
template bool gemm_bias_lt<f16>(bool, bool, int64_t, int64_t, int64_t, const f16*, int64_t, const f16*, int64_t,
                                const f16*, f16*, int64_t);

}  // namespace strand::cuda
