#pragma once
// Shared pieces of the CUDA kernel files: the launch check, typed pointers, [B, H, T, D] strides,
// and block-wide sums and maxima (warp shuffles, then one value per warp through shared memory).
#include <cuda_runtime.h>

#include <atomic>
#include <map>
#include <mutex>
#include <source_location>
#include <type_traits>
#include <utility>

#include "tensor/stream.h"
#include "tensor/tensor.h"

// The kernel headers (*.cuh with a launch policy) open their namespace with STRAND_KERNELS_BEGIN:
// an inline namespace named after the build, as CUB does, because the SIMT emulator of the tests
// (STRAND_SIMT_EMULATOR) compiles the same __global__ templates as host functions, which must not
// share mangled names with nvcc's launch stubs in the library (the linker would keep either).
#ifdef STRAND_SIMT_EMULATOR
#define STRAND_KERNELS_BEGIN inline namespace simt_build {
#else
#define STRAND_KERNELS_BEGIN inline namespace device_build {
#endif
#define STRAND_KERNELS_END }

namespace strand::cuda {

template <int Depth>
struct TensorList;  // tensor_list.h

// The current stream of the current device (tensor/stream.h): every launch, cuBLAS call and
// memset of the kernels is queued on it.
inline cudaStream_t stream() {
  int device = 0;
  cudaGetDevice(&device);
  return reinterpret_cast<cudaStream_t>(cuda_rt::current_stream_id(device));
}

// The most dynamic shared memory one block may opt into on the current device (227 KB on an H100,
// 163 KB on an A100), asked of the driver once per device.
inline size_t smem_optin_limit() {
  static std::atomic<int> cached[64];  // 0: not asked yet
  int dev = 0;
  cudaGetDevice(&dev);
  int bytes = dev < 64 ? cached[dev].load(std::memory_order_relaxed) : 0;
  if (bytes == 0) {
    cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (dev < 64) cached[dev].store(bytes, std::memory_order_relaxed);
  }
  return static_cast<size_t>(bytes);
}
// Lets `kernel` use `bytes` of dynamic shared memory (needed above 48 KB). The attribute belongs to
// the kernel on a device; the size granted is remembered per (kernel, device) and raised when a
// launch asks for more.
template <class K>
void allow_smem(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> granted;
  int dev = 0;
  cudaGetDevice(&dev);
  const std::pair<const void*, int> key{reinterpret_cast<const void*>(kernel), dev};
  std::lock_guard<std::mutex> lock(mu);
  const auto it = granted.find(key);
  if (it != granted.end() && it->second >= bytes) return;
  const cudaError_t e = cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  STRAND_CHECK(e == cudaSuccess, "CUDA: cannot reserve ", bytes, " bytes of shared memory for a kernel: ",
               cudaGetErrorString(e));
  granted[key] = bytes;
}
#if defined(__CUDACC__) || defined(STRAND_SIMT_EMULATOR)
// The kernels' launch policy: kernel(args...) on the current stream, with the dynamic shared memory
// it asks for reserved (allow_smem). A failed launch names the line that made the policy (the
// entry point), since the launch itself is always here. Kernels whose launchers take a policy
// (attention.cuh, attention_tc.cuh, optim.cuh, ...) also run on the SIMT emulator of the tests
// (tests/simt/simt.h: simt::Launch); and on the tests' emulated device (tests/simt/emu_runtime.cpp,
// the library built as strand_emu, STRAND_SIMT_EMULATOR) this policy queues the launch on the
// emulated stream, to run when the host waits for it, after checking that raw pointer arguments
// point into device memory.
struct DeviceLaunch {
  std::source_location where;
  DeviceLaunch(std::source_location w = std::source_location::current()) : where(w) {}  // NOLINT: implicit
  template <class K, class... A>
  void operator()(K kernel, dim3 grid, dim3 block, size_t smem, A... args) const {
    allow_smem(kernel, smem);
#ifdef __CUDACC__
    kernel<<<grid, block, smem, stream()>>>(args...);
    const cudaError_t e = cudaGetLastError();
    STRAND_CHECK(e == cudaSuccess, "CUDA kernel launch failed: ", cudaGetErrorString(e), " (launched from ",
                 where.file_name(), ":", where.line(), ")");
#else
    (check_argument(args), ...);
    simt::device::launch(
        stream(), reinterpret_cast<const void*>(kernel), grid, block, smem, [kernel, args...] { kernel(args...); },
        where.file_name(), where.line());
#endif
  }
  // The most dynamic shared memory a launch may ask for on the current device.
  size_t smem_limit() const { return smem_optin_limit(); }

#ifndef __CUDACC__
 private:
  template <class V>
  void check_argument(const V& v) const {
    if constexpr (std::is_pointer_v<V>) simt::device::check_pointer_argument(v, where.file_name(), where.line());
  }
  template <int Depth>  // the multi-tensor launches' pointer tables (tensor_list.h)
  void check_argument(const TensorList<Depth>& l) const {
    for (const auto& row : l.ptr)
      for (const void* p : row) simt::device::check_pointer_argument(p, where.file_name(), where.line());
  }
#endif
};
#endif

// The block's dynamic shared memory (the launch's third argument), 16-byte aligned.
__device__ __forceinline__ unsigned char* dynamic_smem() {
#ifdef STRAND_SIMT_EMULATOR
  return simt::dynamic_shared();
#else
  extern __shared__ __align__(16) unsigned char strand_dynamic_smem[];
  return strand_dynamic_smem;
#endif
}

// out[i] = row[i % C] for i < n: a [n / C, C] buffer whose every row is `row` (the bias rows a GEMM
// then accumulates onto: matmul with bias, conv1d).
STRAND_KERNELS_BEGIN
template <class T>
__global__ void fill_rows_kernel(T* out, const T* row, int64_t n, int64_t C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    out[i] = row[i % C];
}
STRAND_KERNELS_END

template <class T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

constexpr int kThreads = 256;  // threads per block of every kernel (a multiple of 32)

// Blocks of kThreads covering n work items, capped: the kernels use grid-stride loops, so the cap
// only bounds the launch. A kernel with one block per row asks for rows * kThreads.
inline int grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

struct View4 {  // element strides of a [B, H, T, D] tensor (unit last stride)
  int64_t b, h, t;
  __device__ int64_t at(int64_t bi, int64_t hi, int64_t ti) const { return bi * b + hi * h + ti * t; }
};
inline View4 view_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

template <class A>
__device__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class A>
__device__ A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Every thread of the block gets the result; `sh` holds 32 values. Callable repeatedly.
template <class A, bool kMax>
__device__ A block_reduce(A v, A* sh) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  A r = lane < warps ? sh[lane] : (kMax ? sh[0] : A(0));
  r = kMax ? warp_max(r) : warp_sum(r);
  return r;
}

}  // namespace strand::cuda
