// The only place tensor/ touches the CUDA runtime: allocation (through a caching BlockPool per
// device, tensor/block_pool.h, over cudaMalloc/cudaFree) and copies.
#include <map>
#include <mutex>
#include <string>

#include "tensor/block_pool.h"
#include "tensor/error.h"
#include "tensor/storage.h"

#ifdef STRAND_WITH_CUDA
#include <cuda_runtime.h>
#define STRAND_CUDA_CHECK(stmt)                                                              \
  do {                                                                                       \
    cudaError_t err_ = (stmt);                                                               \
    STRAND_CHECK(err_ == cudaSuccess, "CUDA error ", cudaGetErrorString(err_), " in `", #stmt, \
                 "` at ", __FILE__, ":", __LINE__);                                          \
  } while (0)
#endif

namespace strand {

#ifdef STRAND_WITH_CUDA
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // a driver error here means "no usable GPU", not a failure
    return 0;
  }
  return n;
}
#else
int cuda_device_count() { return 0; }
#endif
bool cuda_available() { return cuda_device_count() > 0; }

namespace cuda_rt {
#ifdef STRAND_WITH_CUDA
namespace {
BlockPool& device_pool(int device) {
  static std::mutex mu;
  static auto* pools = new std::map<int, BlockPool*>;  // never destroyed: tensors may outlive statics
  std::lock_guard<std::mutex> lock(mu);
  BlockPool*& p = (*pools)[device];
  if (!p) {
    p = new BlockPool(
        "cuda:" + std::to_string(device),
        [device](size_t n) -> void* {
          void* q = nullptr;
          if (cudaSetDevice(device) != cudaSuccess || cudaMalloc(&q, n) != cudaSuccess) {
            (void)cudaGetLastError();  // out of memory is answered by the pool (release, retry, error)
            return nullptr;
          }
          return q;
        },
        [device](void* q) {
          cudaSetDevice(device);
          cudaFree(q);
        });
  }
  return *p;
}
}  // namespace

void* malloc(size_t nbytes, int device) {
  STRAND_CHECK(cuda_available(), "a CUDA tensor was requested but no usable GPU was found");
  if (nbytes == 0) return nullptr;
  STRAND_CUDA_CHECK(cudaSetDevice(device));
  return device_pool(device).allocate(nbytes);
}
void free(void* p, int device) noexcept {
  if (p) device_pool(device).free(p);
}
BlockPoolStats allocator_stats(int device) { return device_pool(device).stats(); }
void empty_cache(int device) { device_pool(device).empty_cache(); }
void reset_peak_stats(int device) { device_pool(device).reset_peaks(); }
void memcpy(void* dst, const void* src, size_t nbytes, CopyKind kind) {
  if (nbytes == 0) return;
  cudaMemcpyKind k = kind == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
                     : kind == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                                      : cudaMemcpyDeviceToDevice;
  STRAND_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, k));
}
void memset_zero(void* dst, size_t nbytes) {
  if (nbytes) STRAND_CUDA_CHECK(cudaMemset(dst, 0, nbytes));
}
void synchronize() { STRAND_CUDA_CHECK(cudaDeviceSynchronize()); }
#else
namespace {
[[noreturn]] void no_cuda() {
  STRAND_CHECK(false, "a CUDA tensor was requested but strand was built without CUDA "
                      "(reconfigure with -DSTRAND_CUDA=ON on a machine with nvcc)");
  throw;  // unreachable
}
}  // namespace
void* malloc(size_t, int) { no_cuda(); }
void free(void*, int) noexcept {}
BlockPoolStats allocator_stats(int) { return {}; }
void empty_cache(int) {}
void reset_peak_stats(int) {}
void memcpy(void*, const void*, size_t, CopyKind) { no_cuda(); }
void memset_zero(void*, size_t) { no_cuda(); }
void synchronize() {}
#endif
}  // namespace cuda_rt

}  // namespace strand
