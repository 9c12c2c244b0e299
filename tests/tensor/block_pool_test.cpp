// The caching allocator behind CUDA storage (tensor/block_pool.h), driven here by a fake backend
// of fixed capacity so its policy is tested without a GPU: reuse, splitting, best fit, merging,
// release-and-retry on out-of-memory, the error, and the statistics; and streams: per-stream
// reuse, and blocks used on other streams held back until those streams' events complete.
#include "tensor/block_pool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "tests/test_util.h"

namespace strand {
namespace {

constexpr size_t MiB = size_t{1} << 20;

// A device with `capacity` bytes; counts the backend calls. Its events complete when the test
// says their stream has finished (finish) or when the pool waits for them (synchronize).
struct FakeDevice {
  size_t capacity, used = 0;
  int allocs = 0, frees = 0, syncs = 0;
  bool fail_records = false;  // record() cannot create events: it waits for the stream instead
  std::map<void*, size_t> live;
  struct FakeEvent {
    BlockPool::StreamId stream;
    bool done = false;
  };
  std::vector<FakeEvent*> events;  // every event recorded (destroyed ones are nullptr)
  BlockPool pool{"fake:0", [this](size_t n) { return raw_alloc(n); }, [this](void* p) { raw_free(p); },
                 BlockPool::Events{[this](BlockPool::StreamId s) -> void* {
                                     if (fail_records) {
                                       ++syncs;
                                       return nullptr;
                                     }
                                     events.push_back(new FakeEvent{s});
                                     return events.back();
                                   },
                                   [](void* e) { return static_cast<FakeEvent*>(e)->done; },
                                   [this](void* e) {
                                     ++syncs;
                                     static_cast<FakeEvent*>(e)->done = true;
                                   },
                                   [this](void* e) {
                                     for (FakeEvent*& f : events)
                                       if (f == e) f = nullptr;
                                     delete static_cast<FakeEvent*>(e);
                                   }}};
  void finish(BlockPool::StreamId s) {  // the stream's queued work has all run
    for (FakeEvent* e : events)
      if (e && e->stream == s) e->done = true;
  }
  int live_events() const {
    int n = 0;
    for (FakeEvent* e : events) n += e != nullptr;
    return n;
  }
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

constexpr BlockPool::StreamId kS1 = 11, kS2 = 22;

TEST(BlockPool, FreeBlocksAreReusedOnlyByTheirOwnStream) {
  FakeDevice d(64 * MiB);
  void* a = d.pool.allocate(4096, kS1);
  d.pool.free(a);
  void* b = d.pool.allocate(4096, kS2);  // another stream: a new segment, never a's block
  EXPECT_NE(b, a);
  EXPECT_EQ(d.allocs, 2);
  void* c = d.pool.allocate(4096);  // the default stream: a third segment
  EXPECT_EQ(d.allocs, 3);
  EXPECT_EQ(d.pool.allocate(4096, kS1), a);  // its own stream reuses it at once, without events
  d.pool.free(b);
  d.pool.free(c);
  EXPECT_EQ(d.pool.allocate(100, kS2), b);
  EXPECT_EQ(d.live_events(), 0);
  EXPECT_EQ(d.pool.stats().pending_frees, 0);
}

TEST(BlockPool, BlocksUsedOnOtherStreamsWaitForTheirEvents) {
  FakeDevice d(64 * MiB);
  void* a = d.pool.allocate(4096, kS1);
  d.pool.record_stream(a, kS2);
  d.pool.record_stream(a, kS2);  // recorded once
  d.pool.record_stream(a, kS1);  // its own stream: nothing to wait for
  d.pool.record_stream(a, 0);
  d.pool.free(a);
  EXPECT_EQ(d.live_events(), 2);  // one event on each other stream (kS2, the default)
  EXPECT_EQ(d.pool.stats().pending_frees, 1);
  EXPECT_EQ(d.pool.stats().allocated_bytes, 4096);  // still counted until released
  void* b = d.pool.allocate(4096, kS1);
  EXPECT_NE(b, a);  // held back: kS2 and the default stream may still use it
  d.finish(kS2);
  void* c = d.pool.allocate(4096, kS1);
  EXPECT_NE(c, a);  // the default stream's event is still outstanding
  EXPECT_EQ(d.live_events(), 1);
  d.finish(0);
  EXPECT_EQ(d.pool.allocate(4096, kS1), a);  // both events done: back in kS1's pool
  EXPECT_EQ(d.live_events(), 0);
  EXPECT_EQ(d.pool.stats().pending_frees, 0);
  EXPECT_EQ(d.syncs, 0);  // never blocked
  // Uses are forgotten on free: the block's next life starts with its own stream only.
  d.pool.free(a);
  EXPECT_EQ(d.live_events(), 0);
  EXPECT_EQ(d.pool.allocate(4096, kS1), a);
}

TEST(BlockPool, AFreeWhoseEventsCannotBeRecordedWaitsInsteadOfFailing) {
  FakeDevice d(64 * MiB);
  void* a = d.pool.allocate(4096, kS1);
  d.pool.record_stream(a, kS2);
  d.fail_records = true;  // e.g. a sticky CUDA error: free() must neither throw nor lose the block
  d.pool.free(a);
  EXPECT_EQ(d.syncs, 1);
  EXPECT_EQ(d.pool.stats().pending_frees, 0);
  EXPECT_EQ(d.pool.stats().allocated_bytes, 0);
  EXPECT_EQ(d.pool.allocate(4096, kS1), a);
}

TEST(BlockPool, EmptyCacheAndOutOfMemoryWaitForPendingFrees) {
  FakeDevice d(60 * MiB);
  void* a = d.pool.allocate(40 * MiB, kS1);
  d.pool.record_stream(a, kS2);
  d.pool.free(a);
  EXPECT_EQ(d.pool.stats().pending_frees, 1);
  // 50 MiB does not fit beside a's segment, which kS2 may still be using: the pool waits for its
  // event, releases the segment, and retries.
  void* b = d.pool.allocate(50 * MiB, kS1);
  EXPECT_NE(b, nullptr);
  EXPECT_EQ(d.syncs, 1);
  EXPECT_EQ(d.pool.stats().pending_frees, 0);
  EXPECT_EQ(d.pool.stats().reserved_bytes, static_cast<int64_t>(50 * MiB));
  d.pool.record_stream(b, kS2);
  d.pool.free(b);
  d.pool.empty_cache();  // waits too, then returns the segment
  EXPECT_EQ(d.syncs, 2);
  EXPECT_EQ(d.used, 0u);
  EXPECT_EQ(d.pool.stats().allocated_bytes, 0);
}

TEST(BlockPool, RecordStreamNeedsALiveBlockAndABackendWithEvents) {
  FakeDevice d(64 * MiB);
  void* a = d.pool.allocate(512);
  EXPECT_TRUE(test::throws_with([&] { d.pool.record_stream(static_cast<char*>(a) + 512, kS1); },
                                {"record_stream", "not a live allocation of fake:0"}));
  d.pool.free(a);
  EXPECT_TRUE(test::throws_with([&] { d.pool.record_stream(a, kS1); }, {"not a live allocation"}));
  EXPECT_TRUE(test::throws_with([&] { d.pool.free(a); }, {"free", "not a live allocation"}));
  BlockPool plain("plain:0", [](size_t n) { return std::malloc(n); }, [](void* p) { std::free(p); });
  void* p = plain.allocate(512, kS1);
  plain.record_stream(p, kS1);  // its own stream needs no event
  EXPECT_TRUE(test::throws_with([&] { plain.record_stream(p, kS2); }, {"record_stream on plain:0", "no events"}));
  plain.free(p);
  plain.empty_cache();
}

TEST(BlockPool, RandomTrafficOnThreeStreamsNeverHandsOutABlockInUse) {
  FakeDevice d(1024 * MiB);
  struct Live {
    char* p;
    size_t n;
    BlockPool::StreamId s;
  };
  std::vector<Live> live;
  // Blocks freed while another stream may still use them, until that stream finishes.
  std::vector<std::pair<std::pair<char*, char*>, BlockPool::StreamId>> in_flight;
  const BlockPool::StreamId streams[3] = {0, kS1, kS2};
  uint64_t x = 11;
  for (int i = 0; i < 4000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const BlockPool::StreamId s = streams[(x >> 40) % 3];
    if ((x >> 56) % 16 == 0) {  // stream s finishes its work
      d.finish(s);
      std::erase_if(in_flight, [&](const auto& f) { return f.second == s; });
      continue;
    }
    if (live.size() > 40 || (!live.empty() && (x >> 60) < 7)) {
      const size_t k = (x >> 20) % live.size();
      const Live l = live[k];
      if ((x >> 8) % 3 == 0 && s != l.s) {
        d.pool.record_stream(l.p, s);
        in_flight.push_back({{l.p, l.p + l.n}, s});
      }
      d.pool.free(l.p);
      live.erase(live.begin() + static_cast<int64_t>(k));
      continue;
    }
    const size_t n = (x >> 33) % 4 == 0 ? (x >> 13) % (24 * MiB) + 1 : (x >> 13) % (64 * 1024) + 1;
    char* p = static_cast<char*>(d.pool.allocate(n, s));
    for (const auto& [span, fs] : in_flight)  // never memory another stream may still touch
      ASSERT_TRUE(p + n <= span.first || p >= span.second) << "step " << i;
    live.push_back({p, n, s});
  }
  std::set<std::pair<char*, char*>> spans;
  for (const Live& l : live) spans.insert({l.p, l.p + l.n});
  char* end = nullptr;
  for (auto [b, e] : spans) {
    EXPECT_GE(b, end);
    end = e;
  }
  for (const Live& l : live) d.pool.free(l.p);
  d.pool.empty_cache();
  EXPECT_EQ(d.pool.stats().allocated_bytes, 0);
  EXPECT_EQ(d.pool.stats().pending_frees, 0);
  EXPECT_EQ(d.live_events(), 0);
  EXPECT_EQ(d.used, 0u);
}


// ---------------- expandable segments ----------------

// A device with `capacity` bytes of physical memory behind a virtual address space: ranges are
// reserved (fake addresses, never dereferenced), pages mapped and unmapped one run at a time; the
// small pool's segments (raw_alloc) draw on the same memory. Checks every call as a driver would.
struct FakeVmm {
  static constexpr size_t kPage = 2 * MiB;
  size_t capacity, used = 0;
  uintptr_t next = uintptr_t{1} << 40;
  std::map<uintptr_t, size_t> ranges, segments;  // reserved ranges, raw_alloc segments
  std::set<uintptr_t> mapped;                   // page addresses
  int maps = 0, unmaps = 0, syncs = 0;
  bool synced = false;        // synchronize was called since the last map (blocks used since)
  bool driver_error = false;  // the next map throws, as a driver error does
  std::unique_ptr<BlockPool> pool;
  FakeVmm(size_t cap, size_t reserve) : capacity(cap) {
    BlockPool::Vmm v;
    v.page = kPage;
    v.reserve = reserve;
    v.reserve_range = [this](size_t n) -> void* {
      EXPECT_EQ(n % kPage, 0u);
      ranges[next] = n;
      void* p = reinterpret_cast<void*>(next);
      next += n + kPage;
      return p;
    };
    v.release_range = [this](void* p, size_t n) {
      const auto a = reinterpret_cast<uintptr_t>(p);
      EXPECT_EQ(ranges.at(a), n);
      for (uintptr_t q = a; q < a + n; q += kPage) EXPECT_EQ(mapped.count(q), 0u) << "released while mapped";
      ranges.erase(a);
    };
    v.map = [this](void* p, size_t n) {
      const auto a = reinterpret_cast<uintptr_t>(p);
      EXPECT_TRUE(a % kPage == 0 && n % kPage == 0 && n > 0 && in_range(a, n));
      if (std::exchange(driver_error, false)) throw Error("driver error");
      synced = false;
      if (used + n > capacity) return false;
      for (uintptr_t q = a; q < a + n; q += kPage) EXPECT_TRUE(mapped.insert(q).second) << "mapped twice";
      used += n;
      ++maps;
      return true;
    };
    v.unmap = [this](void* p, size_t n) {
      const auto a = reinterpret_cast<uintptr_t>(p);
      EXPECT_TRUE(a % kPage == 0 && n % kPage == 0 && n > 0 && in_range(a, n));
      EXPECT_TRUE(synced) << "unmapped without waiting for queued work";
      for (uintptr_t q = a; q < a + n; q += kPage) EXPECT_EQ(mapped.erase(q), 1u) << "unmapped twice";
      used -= n;
      ++unmaps;
    };
    v.synchronize = [this] {
      ++syncs;
      synced = true;
    };
    pool = std::make_unique<BlockPool>(
        "vmm:0",
        [this](size_t n) -> void* {
          if (used + n > capacity) return nullptr;
          used += n;
          segments[next] = n;
          void* p = reinterpret_cast<void*>(next);
          next += n + kPage;
          return p;
        },
        [this](void* p) {
          used -= segments.at(reinterpret_cast<uintptr_t>(p));
          segments.erase(reinterpret_cast<uintptr_t>(p));
        },
        BlockPool::Events{}, v);
  }
  bool in_range(uintptr_t a, size_t n) const {
    auto it = ranges.upper_bound(a);
    return it != ranges.begin() && a + n <= std::prev(it)->first + std::prev(it)->second;
  }
  bool on_mapped_pages(const void* p, size_t n) const {  // every page under [p, p + n) is mapped
    const auto a = reinterpret_cast<uintptr_t>(p);
    const auto seg = segments.upper_bound(a);  // a small block, in a segment of its own
    if (seg != segments.begin() && a + n <= std::prev(seg)->first + std::prev(seg)->second) return true;
    for (uintptr_t q = a / kPage * kPage; q < a + n; q += kPage)
      if (!mapped.count(q)) return false;
    return true;
  }
};

TEST(BlockPool, ExpandableSegmentsMapPagesAsBlocksNeedThem) {
  FakeVmm d(64 * MiB, 64 * MiB);
  char* a = static_cast<char*>(d.pool->allocate(3 * MiB));  // pages 0-1 of one reserved range
  char* b = static_cast<char*>(d.pool->allocate(4 * MiB));  // right after a: pages 1-3, 2-3 newly mapped
  char* c = static_cast<char*>(d.pool->allocate(40 * MiB));  // above 10 MiB: the same range, no new segment
  EXPECT_EQ(b, a + 3 * MiB);
  EXPECT_EQ(c, b + 4 * MiB);
  EXPECT_EQ(d.ranges.size(), 1u);
  EXPECT_EQ(d.maps, 3);
  EXPECT_EQ(d.used, 48 * MiB);  // 47 MiB in use, on 24 pages
  EXPECT_EQ(d.pool->stats().reserved_bytes, static_cast<int64_t>(48 * MiB));
  EXPECT_TRUE(d.on_mapped_pages(a, 3 * MiB) && d.on_mapped_pages(b, 4 * MiB) && d.on_mapped_pages(c, 40 * MiB));
  void* s = d.pool->allocate(1000);  // small requests keep their 2 MiB segments
  EXPECT_EQ(d.segments.size(), 1u);
  // A freed block keeps its pages (a cache) until memory runs short or the cache is emptied; then
  // only pages no live block touches are unmapped: b's, less the pages it shares with a and c.
  d.pool->free(b);
  EXPECT_EQ(d.used, 50 * MiB);
  d.pool->empty_cache();
  EXPECT_EQ(d.unmaps, 1);
  EXPECT_EQ(d.pool->stats().unmapped_bytes, static_cast<int64_t>(2 * MiB));  // page 2 only: 1 and 3 are shared
  EXPECT_TRUE(d.on_mapped_pages(a, 3 * MiB) && d.on_mapped_pages(c, 40 * MiB));
  EXPECT_EQ(d.pool->allocate(4 * MiB), b);  // best fit: b's place, its page mapped again
  EXPECT_EQ(d.maps, 4);
  d.pool->free(a);
  d.pool->free(b);
  d.pool->free(c);
  d.pool->free(s);
  d.pool->empty_cache();
  EXPECT_EQ(d.used, 0u);
  EXPECT_EQ(d.pool->stats().reserved_bytes, 0);
  d.pool.reset();  // the address space goes back with the pool
  EXPECT_TRUE(d.ranges.empty());
}

TEST(BlockPool, ExpandableSegmentsServeARequestFromMemoryFreedBetweenLiveBlocks) {
  // Eight 8 MiB blocks fill the device; every other one is freed: 32 MiB free, in 8 MiB holes.
  const auto fill_and_punch = [](BlockPool& pool) {
    std::vector<void*> v;
    for (int i = 0; i < 8; ++i) v.push_back(pool.allocate(8 * MiB));
    for (int i = 0; i < 8; i += 2) pool.free(v[static_cast<size_t>(i)]);
  };
  // Separate segments cannot give 24 MiB in one piece: the holes sit between live blocks.
  FakeDevice plain(64 * MiB + 16 * MiB);  // (8 MiB requests take 20 MiB segments: room for four)
  fill_and_punch(plain.pool);
  EXPECT_TRUE(test::throws_with([&] { plain.pool.allocate(24 * MiB); }, {"out of memory"}));
  // Expandable: the holes' pages are unmapped and mapped again under a new address range.
  FakeVmm d(64 * MiB, 64 * MiB);
  fill_and_punch(*d.pool);
  EXPECT_EQ(d.used, 64 * MiB);
  void* big = d.pool->allocate(24 * MiB);
  EXPECT_EQ(d.unmaps, 4);  // the four holes, after one wait for the device
  EXPECT_EQ(d.syncs, 1);
  EXPECT_TRUE(d.on_mapped_pages(big, 24 * MiB));
  EXPECT_EQ(d.pool->stats().num_oom_retries, 1);
  EXPECT_EQ(d.pool->stats().unmapped_bytes, static_cast<int64_t>(32 * MiB));
  EXPECT_EQ(d.pool->stats().reserved_bytes, static_cast<int64_t>(56 * MiB));
  EXPECT_EQ(d.ranges.size(), 2u);
  // Out of memory for good is still the error, naming the request and the statistics.
  EXPECT_TRUE(test::throws_with([&] { d.pool->allocate(10 * MiB); },
                                {"out of memory on vmm:0", "allocating 10485760 bytes", "allocated 58720256",
                                 "reserved 58720256"}));
  EXPECT_EQ(d.pool->stats().allocated_bytes, static_cast<int64_t>(56 * MiB));  // the failed block went back
  EXPECT_NE(d.pool->allocate(8 * MiB), nullptr);  // what does fit still does
}

TEST(BlockPool, ARequestAboveTheDeviceIsOutOfMemoryWithoutMappingAnything) {
  FakeVmm d(64 * MiB, 64 * MiB);
  EXPECT_TRUE(test::throws_with([&] { d.pool->allocate(65 * MiB); }, {"out of memory on vmm:0", "allocating 68157440"}));
  EXPECT_TRUE(d.ranges.empty());
  EXPECT_EQ(d.maps, 0);
}

TEST(BlockPool, ExpandableSegmentsGiveTheBlockBackOnADriverError) {
  FakeVmm d(64 * MiB, 64 * MiB);
  void* a = d.pool->allocate(4 * MiB);
  d.driver_error = true;
  EXPECT_TRUE(test::throws_with([&] { d.pool->allocate(6 * MiB); }, {"driver error"}));
  EXPECT_EQ(d.pool->stats().allocated_bytes, static_cast<int64_t>(4 * MiB));
  EXPECT_EQ(d.pool->allocate(6 * MiB), static_cast<char*>(a) + 4 * MiB);  // the same place, now mapped
  EXPECT_EQ(d.used, 10 * MiB);
}

TEST(BlockPool, ExpandableSegmentsUnderRandomTrafficKeepLiveBlocksMapped) {
  FakeVmm d(56 * MiB, 56 * MiB);  // live blocks stay below 40 MiB
  std::vector<std::pair<char*, size_t>> live;
  uint64_t x = 11;
  for (int i = 0; i < 4000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    if (live.size() > 30 || (!live.empty() && (x >> 60) < 7)) {
      const size_t k = (x >> 20) % live.size();
      d.pool->free(live[k].first);
      live.erase(live.begin() + static_cast<int64_t>(k));
      continue;
    }
    const size_t n = (x >> 33) % 4 == 0 ? (x >> 13) % (12 * MiB) + 1 : (x >> 13) % (64 * 1024) + 1;
    size_t total = n;
    for (const auto& l : live) total += l.second;
    if (total > 40 * MiB) continue;  // below the capacity with room for rounding and small segments
    char* p = static_cast<char*>(d.pool->allocate(n));
    live.push_back({p, n});
    for (const auto& [q, m] : live) ASSERT_TRUE(d.on_mapped_pages(q, m)) << "step " << i;
  }
  std::set<std::pair<char*, char*>> spans;
  for (auto [p, n] : live) spans.insert({p, p + n});
  char* end = nullptr;
  for (auto [b, e] : spans) {
    EXPECT_GE(b, end);
    end = e;
  }
  EXPECT_EQ(d.pool->stats().reserved_bytes, static_cast<int64_t>(d.used));
  EXPECT_GT(d.pool->stats().num_oom_retries, 0);  // memory ran short, and free pages were unmapped
  EXPECT_GT(d.pool->stats().unmapped_bytes, 0);
  for (auto [p, n] : live) d.pool->free(p);
  d.pool->empty_cache();
  EXPECT_EQ(d.used, 0u);
  EXPECT_TRUE(d.mapped.empty());
}

}  // namespace
}  // namespace strand
