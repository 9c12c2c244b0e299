#pragma once
// A caching allocator over a raw backend (cudaMalloc/cudaFree for the GPU; anything in tests),
// after PyTorch's CUDA caching allocator: requests are rounded to 512 bytes; blocks of at most
// 1 MiB come from 2 MiB segments ("small" pool), larger ones from 20 MiB segments below 10 MiB or
// from segments rounded to 2 MiB ("large" pool); a request takes the best-fitting free block of its
// pool and splits off the rest; freed blocks merge with free neighbours of the same segment; when
// the backend is out of memory, every fully free segment is released and the request retried, and
// if that fails too the error names the request and the statistics.
//
// Expandable segments (PyTorch's expandable_segments:True), when the backend maps memory (Vmm,
// cuMemMap on the GPU): every large request of a stream is served from one range of address space
// reserved for it, as large as the device's memory, whose pages get physical memory only while
// some block on them is in use. On out-of-memory, the free blocks' own pages are unmapped (not
// just whole free segments released), so memory freed between live blocks serves a request of any
// size: the device needs about the peak of allocated bytes, where separate segments fragment
// (a step peaking at 6.4 GB failed on 7.5 GB of device memory without them).
//
// Streams, as in PyTorch: every segment, and every block cut from it, belongs to the stream it was
// allocated for, and a free block is only reused by requests on that stream, so reuse follows
// that stream's order without synchronisation. A block also used on other streams
// (record_stream) is not reusable when freed: an event is recorded on each of those streams, and
// the block returns to its pool only once they have all completed (checked at each allocation;
// waited for on out-of-memory and by empty_cache).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace strand {

struct BlockPoolStats {
  int64_t allocated_bytes = 0;  // in live blocks (rounded sizes)
  int64_t reserved_bytes = 0;   // in segments obtained from the backend
  int64_t peak_allocated_bytes = 0;
  int64_t peak_reserved_bytes = 0;
  int64_t num_allocs = 0;
  int64_t num_segments = 0;
  int64_t num_oom_retries = 0;  // backend failures answered by releasing the cache
  int64_t pending_frees = 0;    // freed blocks waiting for events on the other streams they served
  int64_t unmapped_bytes = 0;   // physical memory of free pages given back (expandable segments)
};

// Virtual memory for BlockPool's expandable segments; only used when `map` is set.
struct BlockPoolVmm {
  size_t page = 0;     // the mapping granularity (2 MiB on CUDA GPUs)
  size_t reserve = 0;  // address space per segment: the device's memory (a larger request is out of memory)
  std::function<void*(size_t)> reserve_range;       // address space only; nullptr when none is left
  std::function<void(void*, size_t)> release_range;  // a whole range from reserve_range, unmapped
  // Physical memory under [p, p + n) (whole pages, unmapped); false (nothing mapped) when out of memory.
  std::function<bool(void*, size_t)> map;
  std::function<void(void*, size_t)> unmap;  // [p, p + n), mapped, no longer used by queued work
  std::function<void()> synchronize;         // waits for all queued work: called once before unmapping
};

class BlockPool {
 public:
  using StreamId = uintptr_t;  // a backend stream handle; 0 is the default stream
  using RawAlloc = std::function<void*(size_t)>;  // nullptr when out of memory
  using RawFree = std::function<void(void*)>;
  // Events for blocks used on several streams; only needed once record_stream is called.
  struct Events {
    // Records an event on the stream and returns its handle. Must not throw: when no event can be
    // recorded it returns nullptr, having waited for the stream itself (or the device is unusable).
    std::function<void*(StreamId)> record;
    std::function<bool(void*)> done;         // whether the event has completed (non-blocking)
    std::function<void(void*)> synchronize;  // blocks until it has completed
    std::function<void(void*)> destroy;
  };
  using Vmm = BlockPoolVmm;
  // name appears in errors ("cuda:0").
  BlockPool(std::string name, RawAlloc alloc, RawFree free, Events events = {}, Vmm vmm = {});
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // strand::Error when the backend cannot provide it. The block belongs to `stream`.
  void* allocate(size_t nbytes, StreamId stream = 0);
  // p from allocate (nullptr is ignored). Reusable at once by its own stream; after the events of
  // record_stream's streams otherwise.
  void free(void* p);
  // p (live, from allocate) is also used by work queued on `stream`; its own stream is ignored.
  void record_stream(void* p, StreamId stream);
  void empty_cache();  // waits for pending frees, then releases every fully free segment
  BlockPoolStats stats() const;
  bool expandable() const { return static_cast<bool>(vmm_.map); }
  void reset_peaks();

  static constexpr size_t kRound = 512, kSmall = size_t{1} << 20, kSmallSegment = size_t{2} << 20,
                          kMidSegment = size_t{20} << 20, kLargeLimit = size_t{10} << 20;

 private:
  struct Expandable {  // an expandable segment: reserved address space, pages mapped on demand
    char* base;
    size_t size;
    std::vector<bool> mapped;  // per page
  };
  struct Block {
    Block(char* p, size_t n, bool sm, StreamId s, Expandable* e = nullptr)
        : ptr(p), size(n), small(sm), stream(s), seg(e) {}
    char* ptr;
    size_t size;
    bool small;
    StreamId stream;
    Expandable* seg;                         // the expandable segment it lies in, if any
    bool allocated = false;                  // live, or freed but waiting for events
    Block *prev = nullptr, *next = nullptr;  // neighbours in the same segment (same stream)
    std::vector<StreamId> uses;              // other streams it served (record_stream)
    int pending_events = 0;
  };
  // (stream, size, ptr): lower_bound is the best fit within a stream.
  using FreeKey = std::tuple<StreamId, size_t, char*>;
  using FreeSet = std::set<FreeKey>;
  FreeSet& pool(bool small) { return small ? free_small_ : free_large_; }
  static FreeKey key(const Block* b) { return {b->stream, b->size, b->ptr}; }
  Block* take_free(size_t size, bool small, StreamId stream);
  Block* new_segment(size_t size, bool small, StreamId stream);
  Block* new_expandable(size_t size, StreamId stream);
  bool map_pages(Block* b);         // maps the unmapped pages under b; false when out of memory
  void unmap_free_pages(Block* b, bool& synced);  // unmaps the pages only free block b covers
  void release_free_segments();     // and the free pages of expandable segments
  void return_block(Block* b);                   // to its free pool, merging with free neighbours
  void process_events(bool wait);                // frees blocks whose events have completed
  Block* live_block(void* p, const char* what);  // the allocated block starting at p

  std::string name_;
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  Events events_;
  Vmm vmm_;
  std::vector<std::unique_ptr<Expandable>> expandable_;
  mutable std::mutex mu_;
  FreeSet free_small_, free_large_;
  std::unordered_map<char*, Block*> blocks_;  // every block (free or not) by its start
  std::deque<std::pair<void*, Block*>> pending_;  // (event, block) in the order they were recorded
  BlockPoolStats stats_;
};

}  // namespace strand
