#pragma once
// Storage: one device buffer shared by a tensor and all its views, plus the version counter that
// in-place ops bump (shared by views, so saving any view and modifying another is detected).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "tensor/block_pool.h"
#include "tensor/device.h"

namespace strand {

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  // Wraps memory owned elsewhere (e.g. an mmap'd checkpoint); `owner` is kept alive as long as
  // this storage. Not counted in the allocator statistics.
  Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  bool owns_memory() const { return owner_ == nullptr; }  // from strand's allocator, not wrapped
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  uint64_t version_ = 0;
  std::shared_ptr<void> owner_;  // set for external memory
};

// CPU allocator statistics (64-byte aligned blocks). live = bytes currently allocated; cached =
// freed blocks of 256 KiB or more kept for reuse (see tensor/storage.cpp: the cache never holds
// memory beyond 1.5x the highest live total seen).
struct AllocatorStats {
  int64_t live_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t num_allocs = 0;
  int64_t cached_bytes = 0;
};
AllocatorStats cpu_allocator_stats();
void reset_cpu_peak_bytes();
// Returns every cached block to the operating system.
void empty_cpu_cache();

// Raw device memory, implemented in tensor/cuda_runtime.cpp. Without a CUDA build each of these is
// a strand::Error saying so.
namespace cuda_rt {
// Through the device's caching allocator (tensor/block_pool.h); an out-of-memory error names the
// request and the pool's statistics.
// The block belongs to the device's current stream (tensor/stream.h).
void* malloc(size_t nbytes, int device);
void free(void* p, int device) noexcept;
void record_stream(void* p, int device, uintptr_t stream);  // p from malloc; see strand::record_stream
BlockPoolStats allocator_stats(int device);  // zeros without CUDA
void empty_cache(int device);                // returns fully free segments (and free pages) to the driver
// Whether the device's pool serves large requests from expandable segments (block_pool.h): asked
// for with STRAND_EXPANDABLE_SEGMENTS=1 before the device's first allocation, and given where the
// driver maps memory (cuMemMap); false without CUDA.
bool expandable_segments(int device);
void reset_peak_stats(int device);           // peaks restart from what is allocated now
// Copies and fills are queued on the current device's current stream; a copy that reads or writes
// host memory returns once that stream has run it.
enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
void memcpy(void* dst, const void* src, size_t nbytes, CopyKind kind);
void memset_zero(void* dst, size_t nbytes);
void synchronize();  // the whole current device, every stream
}  // namespace cuda_rt

}  // namespace strand
