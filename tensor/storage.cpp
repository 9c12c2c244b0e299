#include "tensor/storage.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>
#include <new>

#include "tensor/error.h"

namespace strand {

namespace {
constexpr size_t kCpuAlignment = 64;
std::atomic<int64_t> g_live{0}, g_peak{0}, g_allocs{0};

// Large CPU blocks (>= kCacheMin) are mmapped and, when freed, kept in a cache for the next request
// that fits (size classes of 8 per doubling; a block serves requests down to half its size): a
// training step allocates the same shapes every iteration, and reuse saves the page faults and
// zeroing of fresh mappings. The cache never lets live + cached bytes exceed 1.5x the highest
// live total seen so far (a miss first unmaps the least recently freed blocks), which bounds what
// it adds to the process's peak memory. Small blocks use aligned_alloc.
constexpr size_t kCacheMin = size_t{256} << 10;
struct BlockCache {
  std::mutex mu;
  std::multimap<size_t, std::pair<uint64_t, void*>> free_blocks;  // block size -> (free order, block)
  std::unordered_map<void*, size_t> in_use;                        // block -> its size
  size_t cached = 0, mapped = 0, high_water = 0;                   // bytes (class sizes)
  uint64_t tick = 0;
  size_t limit() const { return high_water + high_water / 2; }
};
BlockCache& cache() {
  static auto* c = new BlockCache;  // never destroyed: storages may die during static teardown
  return *c;
}
size_t size_class(size_t n) {
  size_t p = size_t{1} << (63 - __builtin_clzll(n - 1));  // largest power of two below n
  const size_t step = std::max<size_t>(p / 8, 4096);
  return (n + step - 1) / step * step;
}
void* map_block(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}
// Requires the lock. Unmaps cached blocks, least recently freed first, until `need` more bytes fit
// under the limit (or nothing is cached).
void trim_locked(BlockCache& c, size_t need) {
  while (c.cached > 0 && c.mapped + need > c.limit()) {
    auto oldest = c.free_blocks.begin();
    for (auto it = c.free_blocks.begin(); it != c.free_blocks.end(); ++it)
      if (it->second.first < oldest->second.first) oldest = it;
    munmap(oldest->second.second, oldest->first);
    c.cached -= oldest->first;
    c.mapped -= oldest->first;
    c.free_blocks.erase(oldest);
  }
}
void* large_alloc(size_t nbytes) {
  BlockCache& c = cache();
  const size_t cls = size_class(nbytes);
  std::lock_guard<std::mutex> lock(c.mu);
  // Best fit among cached blocks up to twice the class: Enformer's tower halves its lengths stage
  // by stage, so a stage's tensors reuse the previous stage's blocks instead of mapping new ones.
  auto it = c.free_blocks.lower_bound(cls);
  if (it != c.free_blocks.end() && it->first <= 2 * cls) {
    void* p = it->second.second;
    c.cached -= it->first;
    c.in_use.emplace(p, it->first);
    c.free_blocks.erase(it);
    return p;
  }
  // live (mapped minus cached) grows by cls: the high-water mark follows it first.
  c.high_water = std::max(c.high_water, c.mapped - c.cached + cls);
  trim_locked(c, cls);
  void* p = map_block(cls);
  if (!p && c.cached) {  // out of memory: give every cached block back and retry
    c.high_water = 0;
    trim_locked(c, cls);
    p = map_block(cls);
  }
  if (p) {
    c.mapped += cls;
    c.in_use.emplace(p, cls);
  }
  return p;
}
void large_free(void* p) {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.in_use.find(p);
  const size_t size = it->second;
  c.in_use.erase(it);
  c.free_blocks.emplace(size, std::make_pair(c.tick++, p));
  c.cached += size;
}

void* cpu_alloc(size_t nbytes) {
  void* p = nullptr;
  if (nbytes >= kCacheMin) {
    p = large_alloc(nbytes);
  } else {
    size_t rounded = (nbytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    if (rounded == 0) rounded = kCpuAlignment;
    p = std::aligned_alloc(kCpuAlignment, rounded);
  }
  STRAND_CHECK(p != nullptr, "out of CPU memory allocating ", nbytes, " bytes (live ", g_live.load(),
               " bytes, peak ", g_peak.load(), ", cached ", cpu_allocator_stats().cached_bytes, ")");
  int64_t live = g_live.fetch_add(static_cast<int64_t>(nbytes)) + static_cast<int64_t>(nbytes);
  int64_t peak = g_peak.load();
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  g_allocs.fetch_add(1);
  return p;
}
void cpu_free(void* p, size_t nbytes) {
  if (nbytes >= kCacheMin) large_free(p);
  else std::free(p);
  g_live.fetch_sub(static_cast<int64_t>(nbytes));
}
}  // namespace

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    data_ = cpu_alloc(nbytes);
  } else {
    data_ = cuda_rt::malloc(nbytes, device.index);
  }
}

Storage::Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner)
    : data_(data), nbytes_(nbytes), device_(device), owner_(std::move(owner)) {}

Storage::~Storage() {
  if (owner_) return;  // external memory: the owner frees it
  if (device_.is_cpu()) {
    cpu_free(data_, nbytes_);
  } else {
    cuda_rt::free(data_, device_.index);
  }
}

AllocatorStats cpu_allocator_stats() {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {g_live.load(), g_peak.load(), g_allocs.load(), static_cast<int64_t>(c.cached)};
}
void empty_cpu_cache() {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.high_water = 0;
  trim_locked(c, 0);
}
void reset_cpu_peak_bytes() { g_peak.store(g_live.load()); }

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    bool digits = !idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos;
    STRAND_CHECK(digits, "bad device '", s, "': expected cpu, cuda or cuda:N");
    return cuda(std::stoi(idx));
  }
  STRAND_CHECK(false, "bad device '", s, "': expected cpu, cuda or cuda:N");
  return cpu();
}

}  // namespace strand
