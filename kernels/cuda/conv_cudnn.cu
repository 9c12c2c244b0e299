// conv1d through cuDNN (channels last: [B, L, C] as NHWC with H = 1, the weights as KRSC =
// [Cout, K, Cin]), beside conv.cuh's im2col + cuBLAS, so both can be measured at Enformer's
// shapes (bench BM_Conv1d) and the faster kept. Used when ops::cudnn_conv() is on and this build
// found cuDNN (STRAND_WITH_CUDNN); each entry point returns false, having done nothing, when cuDNN
// cannot take the case (f64, no deterministic algorithm), and the caller falls back to im2col.
// Algorithms come from cuDNN's heuristics (cudnnGet*Algorithm_v7), the first one that succeeds, is
// deterministic (no atomics, as every strand kernel) and respects the TF32 switch, cached per shape.
#include "kernels/cuda/conv_cudnn.h"

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/ops.h"

#ifdef STRAND_WITH_CUDNN
#include <cudnn.h>
#endif

namespace strand::cuda {

#ifdef STRAND_WITH_CUDNN
namespace {

#define STRAND_CUDNN_CHECK(stmt)                                                                             \
  do {                                                                                                       \
    cudnnStatus_t s_ = (stmt);                                                                               \
    STRAND_CHECK(s_ == CUDNN_STATUS_SUCCESS, "cuDNN call failed: ", cudnnGetErrorString(s_), " in `", #stmt, \
                 "` at ", __FILE__, ":", __LINE__);                                                          \
  } while (0)

// One handle per (thread, device, stream), bound to the stream: a cuDNN handle must not be used by
// two threads at once, and every thread's current stream starts as the same default stream.
cudnnHandle_t cudnn_handle(int device) {
  thread_local std::map<std::pair<int, StreamId>, cudnnHandle_t> handles;
  const StreamId s = cuda_rt::current_stream_id(device);
  cudnnHandle_t& h = handles[{device, s}];
  if (!h) {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    const cudnnStatus_t st = cudnnCreate(&h);
    cudaSetDevice(prev);
    STRAND_CUDNN_CHECK(st);
    STRAND_CUDNN_CHECK(cudnnSetStream(h, reinterpret_cast<cudaStream_t>(s)));
  }
  return h;
}

bool cudnn_type(DType t, cudnnDataType_t& out) {
  switch (t) {
    case DType::f32: out = CUDNN_DATA_FLOAT; return true;
    case DType::bf16: out = CUDNN_DATA_BFLOAT16; return true;
    case DType::f16: out = CUDNN_DATA_HALF; return true;
    default: return false;  // f64 and the rest: im2col
  }
}

// One call's descriptors: x [B, L, Cin], w [Cout, K, Cin], y [B, Lout, Cout], padding `pad`.
// init() is false (nothing thrown) when cuDNN refuses a descriptor; the destructor frees what exists.
struct Problem {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  bool tf32 = false;
  bool init(cudnnDataType_t dt, int64_t B, int64_t L, int64_t Cin, int64_t Cout, int64_t K, int64_t pad, int64_t Lout,
            bool fp32) {
    auto i = [](int64_t v) { return static_cast<int>(v); };
    // f32 without TF32: no tensor cores at all (PyTorch's CUDNN_FMA_MATH when allow_tf32 is off)
    tf32 = fp32 && ops::allow_tf32();
    return cudnnCreateTensorDescriptor(&x) == CUDNN_STATUS_SUCCESS &&
           cudnnCreateTensorDescriptor(&y) == CUDNN_STATUS_SUCCESS &&
           cudnnCreateFilterDescriptor(&w) == CUDNN_STATUS_SUCCESS &&
           cudnnCreateConvolutionDescriptor(&conv) == CUDNN_STATUS_SUCCESS &&
           cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NHWC, dt, i(B), i(Cin), 1, i(L)) == CUDNN_STATUS_SUCCESS &&
           cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NHWC, dt, i(B), i(Cout), 1, i(Lout)) == CUDNN_STATUS_SUCCESS &&
           cudnnSetFilter4dDescriptor(w, dt, CUDNN_TENSOR_NHWC, i(Cout), i(Cin), 1, i(K)) == CUDNN_STATUS_SUCCESS &&
           cudnnSetConvolution2dDescriptor(conv, 0, i(pad), 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) ==
               CUDNN_STATUS_SUCCESS &&
           cudnnSetConvolutionMathType(conv, fp32 && !tf32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH) ==
               CUDNN_STATUS_SUCCESS;
  }
  Problem() = default;
  ~Problem() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
  Problem(const Problem&) = delete;
  Problem& operator=(const Problem&) = delete;
};

enum class Pass { forward, data, filter };
using Key = std::tuple<int, int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool>;
constexpr size_t kMaxWorkspace = size_t{2} << 30;  // algorithms wanting more (FFT at 196,608) are skipped
std::atomic<int64_t> g_calls{0};
struct Choice {
  bool ok = false;
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
};

// The first heuristic result that ran, is deterministic, needs at most kMaxWorkspace, and keeps f32
// off the tensor cores unless TF32 is allowed (only FMA math: DEFAULT_MATH may use TF32 on sm_80+).
template <class Perf>
Choice pick(const Perf* perf, int n, bool fp32_strict) {
  for (int i = 0; i < n; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.determinism != CUDNN_DETERMINISTIC) continue;
    if (p.memory > kMaxWorkspace || (fp32_strict && p.mathType != CUDNN_FMA_MATH)) continue;
    return {true, static_cast<int>(p.algo), p.mathType, p.memory};
  }
  return {};
}

Choice choose(Pass pass, cudnnHandle_t h, const Problem& pr, const Key& key, bool fp32_strict) {
  static std::mutex mu;
  static std::map<Key, Choice> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  constexpr int kMax = 16;
  int n = 0;
  Choice c;
  if (pass == Pass::forward) {
    cudnnConvolutionFwdAlgoPerf_t perf[kMax];
    if (cudnnGetConvolutionForwardAlgorithm_v7(h, pr.x, pr.w, pr.conv, pr.y, kMax, &n, perf) == CUDNN_STATUS_SUCCESS)
      c = pick(perf, n, fp32_strict);
  } else if (pass == Pass::data) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[kMax];
    if (cudnnGetConvolutionBackwardDataAlgorithm_v7(h, pr.w, pr.y, pr.conv, pr.x, kMax, &n, perf) ==
        CUDNN_STATUS_SUCCESS)
      c = pick(perf, n, fp32_strict);
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[kMax];
    if (cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, pr.x, pr.y, pr.conv, pr.w, kMax, &n, perf) ==
        CUDNN_STATUS_SUCCESS)
      c = pick(perf, n, fp32_strict);
  }
  cache[key] = c;
  return c;
}

// Runs one pass: forward (y = conv(x, w) + beta·y), data (x = conv_dataᵀ(dy, w)) or filter
// (w = conv_filter(x, dy)), all tensors contiguous in the layouts above.
bool run(Pass pass, const Tensor& x, const Tensor& wf, const Tensor& y, int64_t Cout, int64_t K, int64_t pad,
         float beta) {
  cudnnDataType_t dt;
  if (!cudnn_type(x.dtype(), dt)) return false;
  const int64_t B = x.size(0), L = x.size(1), Cin = x.size(2), Lout = y.size(1);
  // cuDNN's descriptors take int dims and refuse empty ones: those cases stay with im2col
  constexpr int64_t kIntMax = 2147483647;
  if (B == 0 || L == 0 || Lout == 0 || Cin == 0 || Cout == 0 || B * L * Cin > kIntMax || B * Lout * Cout > kIntMax ||
      Cout * K * Cin > kIntMax)
    return false;
  const int device = x.device().index;
  const bool fp32 = x.dtype() == DType::f32;
  Problem pr;
  if (!pr.init(dt, B, L, Cin, Cout, K, pad, Lout, fp32)) return false;
  cudnnHandle_t h = cudnn_handle(device);
  const Key key{device, static_cast<int>(pass), static_cast<int>(dt), B, L, Cin, Cout, K, pad, pr.tf32};
  const Choice c = choose(pass, h, pr, key, fp32 && !pr.tf32);
  if (!c.ok) return false;
  STRAND_CUDNN_CHECK(cudnnSetConvolutionMathType(pr.conv, c.math));
  Tensor ws;
  if (c.workspace) {
    try {
      ws = ops::empty({static_cast<int64_t>(c.workspace)}, TensorOptions(DType::u8, x.device()));
    } catch (const Error&) {  // out of memory for the workspace: im2col needs less
      return false;
    }
  }
  void* wsp = ws.defined() ? ws.raw_data() : nullptr;
  const float one = 1, zero = 0;
  if (pass == Pass::forward) {
    STRAND_CUDNN_CHECK(cudnnConvolutionForward(h, &one, pr.x, x.raw_data(), pr.w, wf.raw_data(), pr.conv,
                                               static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), wsp, c.workspace, &beta,
                                               pr.y, y.raw_data()));
  } else if (pass == Pass::data) {
    STRAND_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, pr.w, wf.raw_data(), pr.y, y.raw_data(), pr.conv,
                                                    static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), wsp,
                                                    c.workspace, &zero, pr.x, x.raw_data()));
  } else {
    STRAND_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, pr.x, x.raw_data(), pr.y, y.raw_data(), pr.conv,
                                                      static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), wsp,
                                                      c.workspace, &zero, pr.w, wf.raw_data()));
  }
  ++g_calls;
  return true;
}

}  // namespace

bool cudnn_conv_available() { return true; }
int64_t cudnn_conv_calls() { return g_calls.load(); }

bool conv1d_forward_cudnn(const Tensor& x, const Tensor& wf, int64_t Cout, int64_t K, int64_t pad, const Tensor& out,
                          bool accumulate) {
  return run(Pass::forward, x, wf, out, Cout, K, pad, accumulate ? 1.f : 0.f);
}
bool conv1d_data_cudnn(const Tensor& grad, const Tensor& wf, int64_t Cout, int64_t K, int64_t pad, const Tensor& gx) {
  return run(Pass::data, gx, wf, grad, Cout, K, pad, 0.f);
}
bool conv1d_filter_cudnn(const Tensor& grad, const Tensor& x, int64_t Cout, int64_t K, int64_t pad,
                         const Tensor& gwf) {
  return run(Pass::filter, x, gwf, grad, Cout, K, pad, 0.f);
}
#else
bool cudnn_conv_available() { return false; }
int64_t cudnn_conv_calls() { return 0; }
bool conv1d_forward_cudnn(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, const Tensor&, bool) { return false; }
bool conv1d_data_cudnn(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, const Tensor&) { return false; }
bool conv1d_filter_cudnn(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, const Tensor&) { return false; }
#endif

}  // namespace strand::cuda
