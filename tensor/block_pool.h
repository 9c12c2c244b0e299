#pragma once
// A caching allocator over a raw backend (cudaMalloc/cudaFree for the GPU; anything in tests),
// after PyTorch's CUDA caching allocator: requests are rounded to 512 bytes; blocks of at most
// 1 MiB come from 2 MiB segments ("small" pool), larger ones from 20 MiB segments below 10 MiB or
// from segments rounded to 2 MiB ("large" pool); a request takes the best-fitting free block of its
// pool and splits off the rest; freed blocks merge with free neighbours of the same segment; when
// the backend is out of memory, every fully free segment is released and the request retried, and
// if that fails too the error names the request and the statistics. One stream (the default) for
// now: blocks are reused in stream order, which is safe on a single stream.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

namespace strand {

struct BlockPoolStats {
  int64_t allocated_bytes = 0;  // in live blocks (rounded sizes)
  int64_t reserved_bytes = 0;   // in segments obtained from the backend
  int64_t peak_allocated_bytes = 0;
  int64_t peak_reserved_bytes = 0;
  int64_t num_allocs = 0;
  int64_t num_segments = 0;
  int64_t num_oom_retries = 0;  // backend failures answered by releasing the cache
};

class BlockPool {
 public:
  using RawAlloc = std::function<void*(size_t)>;  // nullptr when out of memory
  using RawFree = std::function<void(void*)>;
  // name appears in errors ("cuda:0").
  BlockPool(std::string name, RawAlloc alloc, RawFree free);
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  void* allocate(size_t nbytes);  // strand::Error when the backend cannot provide it
  void free(void* p);             // p from allocate (nullptr is ignored)
  void empty_cache();             // releases every fully free segment
  BlockPoolStats stats() const;
  void reset_peaks();

  static constexpr size_t kRound = 512, kSmall = size_t{1} << 20, kSmallSegment = size_t{2} << 20,
                          kMidSegment = size_t{20} << 20, kLargeLimit = size_t{10} << 20;

 private:
  struct Block {
    char* ptr;
    size_t size;
    bool small, allocated = false;
    Block *prev = nullptr, *next = nullptr;  // neighbours in the same segment
  };
  using FreeSet = std::set<std::pair<size_t, char*>>;  // (size, ptr): lower_bound is the best fit
  FreeSet& pool(bool small) { return small ? free_small_ : free_large_; }
  Block* take_free(size_t size, bool small);
  Block* new_segment(size_t size, bool small);
  void release_free_segments();

  std::string name_;
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  mutable std::mutex mu_;
  FreeSet free_small_, free_large_;
  std::unordered_map<char*, Block*> blocks_;  // every block (free or not) by its start
  BlockPoolStats stats_;
};

}  // namespace strand
