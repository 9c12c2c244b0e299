// The caching allocator behind CUDA storage (tensor/block_pool.h), driven here by a fake backend
// of fixed capacity so its policy is tested without a GPU: reuse, splitting, best fit, merging,
// release-and-retry on out-of-memory, the error, and the statistics.
#include "tensor/block_pool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "tests/test_util.h"

namespace strand {
namespace {

constexpr size_t MiB = size_t{1} << 20;

// A device with `capacity` bytes; counts the backend calls.
struct FakeDevice {
  size_t capacity, used = 0;
  int allocs = 0, frees = 0;
  std::map<void*, size_t> live;
  BlockPool pool{"fake:0", [this](size_t n) { return raw_alloc(n); }, [this](void* p) { raw_free(p); }};
  explicit FakeDevice(size_t cap) : capacity(cap) {}
  void* raw_alloc(size_t n) {
    if (used + n > capacity) return nullptr;
    void* p = std::malloc(n);
    used += n;
    ++allocs;
    live[p] = n;
    return p;
  }
  void raw_free(void* p) {
    used -= live.at(p);
    live.erase(p);
    ++frees;
    std::free(p);
  }
};

TEST(BlockPool, SmallBlocksSplitOneSegmentAndAreReused) {
  FakeDevice d(64 * MiB);
  char* a = static_cast<char*>(d.pool.allocate(1000));  // rounds to 1024
  char* b = static_cast<char*>(d.pool.allocate(100));   // 512, right after a in the same 2 MiB segment
  EXPECT_EQ(b, a + 1024);
  EXPECT_EQ(d.allocs, 1);
  EXPECT_EQ(d.pool.stats().reserved_bytes, static_cast<int64_t>(BlockPool::kSmallSegment));
  EXPECT_EQ(d.pool.stats().allocated_bytes, 1024 + 512);
  d.pool.free(a);
  EXPECT_EQ(d.pool.allocate(700), a);  // best fit: the freed 1024 block, not the segment's tail
  EXPECT_EQ(d.allocs, 1);
}

TEST(BlockPool, FreedNeighboursMergeBackIntoOneBlock) {
  FakeDevice d(64 * MiB);
  void* a = d.pool.allocate(512 * 1024);
  void* b = d.pool.allocate(512 * 1024);
  void* c = d.pool.allocate(512 * 1024);
  d.pool.free(a);
  d.pool.free(c);
  d.pool.free(b);  // merges with both sides (and the free tail): the whole segment is free again
  // Only a merged block can hold 1 MiB (the largest small request); unmerged, the 512 KiB pieces
  // could not, and a new segment would be mapped.
  EXPECT_EQ(d.pool.allocate(MiB), a);
  EXPECT_EQ(d.allocs, 1);
}

TEST(BlockPool, LargeRequestsUseTheirOwnSegmentSizes) {
  FakeDevice d(256 * MiB);
  void* a = d.pool.allocate(3 * MiB);  // < 10 MiB: from a 20 MiB segment, the rest split off
  void* b = d.pool.allocate(5 * MiB);
  EXPECT_EQ(static_cast<char*>(b), static_cast<char*>(a) + 3 * MiB);
  EXPECT_EQ(d.allocs, 1);
  void* c = d.pool.allocate(33 * MiB + 1);  // >= 10 MiB: its own segment rounded to 2 MiB
  EXPECT_EQ(d.allocs, 2);
  EXPECT_EQ(d.pool.stats().reserved_bytes, static_cast<int64_t>(20 * MiB + 34 * MiB));
  d.pool.free(a);
  d.pool.free(b);
  d.pool.free(c);
  EXPECT_EQ(d.pool.stats().allocated_bytes, 0);
  EXPECT_EQ(d.pool.stats().peak_allocated_bytes, static_cast<int64_t>(3 * MiB + 5 * MiB + 34 * MiB));
  d.pool.empty_cache();
  EXPECT_EQ(d.used, 0u);
  EXPECT_EQ(d.pool.stats().reserved_bytes, 0);
}

TEST(BlockPool, OutOfMemoryReleasesTheCacheAndRetries) {
  FakeDevice d(60 * MiB);
  void* a = d.pool.allocate(40 * MiB);
  d.pool.free(a);  // cached: 40 MiB reserved, nothing allocated
  void* b = d.pool.allocate(50 * MiB);  // does not fit next to the cache: released, then retried
  EXPECT_NE(b, nullptr);
  EXPECT_EQ(d.pool.stats().num_oom_retries, 1);
  EXPECT_EQ(d.pool.stats().reserved_bytes, static_cast<int64_t>(50 * MiB));
  EXPECT_TRUE(test::throws_with([&] { d.pool.allocate(30 * MiB); },
                                {"out of memory on fake:0", "allocating 31457280 bytes", "allocated 52428800",
                                 "reserved 52428800"}));
  d.pool.free(b);
  EXPECT_NE(d.pool.allocate(30 * MiB), nullptr);  // fits inside the cached 50 MiB segment
}

TEST(BlockPool, RandomTrafficKeepsBlocksDisjointAndReturnsEverything) {
  FakeDevice d(512 * MiB);
  std::vector<std::pair<char*, size_t>> live;
  uint64_t x = 7;
  for (int i = 0; i < 3000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    if (live.size() > 40 || (!live.empty() && (x >> 60) < 7)) {
      const size_t k = (x >> 20) % live.size();
      d.pool.free(live[k].first);
      live.erase(live.begin() + static_cast<int64_t>(k));
      continue;
    }
    const size_t n = (x >> 33) % 4 == 0 ? (x >> 13) % (24 * MiB) + 1 : (x >> 13) % (64 * 1024) + 1;
    live.push_back({static_cast<char*>(d.pool.allocate(n)), n});
  }
  std::set<std::pair<char*, char*>> spans;  // no two live blocks overlap
  for (auto [p, n] : live) spans.insert({p, p + n});
  char* end = nullptr;
  for (auto [b, e] : spans) {
    EXPECT_GE(b, end);
    end = e;
  }
  for (auto [p, n] : live) d.pool.free(p);
  EXPECT_EQ(d.pool.stats().allocated_bytes, 0);
  d.pool.empty_cache();
  EXPECT_EQ(d.used, 0u);
  EXPECT_EQ(d.allocs, d.frees);
}

}  // namespace
}  // namespace strand
