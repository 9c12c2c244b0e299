#pragma once
// Shared pieces of the CUDA kernel files: the launch check, typed pointers, and block-wide sums
// and maxima (warp shuffles, then one value per warp through shared memory).
#include <cuda_runtime.h>

#include "tensor/tensor.h"

namespace strand::cuda {

#define STRAND_CUDA_LAUNCH_CHECK()                                                                  \
  do {                                                                                              \
    cudaError_t e_ = cudaGetLastError();                                                            \
    STRAND_CHECK(e_ == cudaSuccess, "CUDA kernel launch failed: ", cudaGetErrorString(e_), " at ", \
                 __FILE__, ":", __LINE__);                                                          \
  } while (0)

template <class T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

constexpr int kRowThreads = 256;  // threads per block of the row kernels (a multiple of 32)

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
