// The CPU block cache (tensor/storage.cpp): freed large blocks are reused by requests that fit,
// small ones bypass it, the cache stays within 1.5x the highest live total, and empty_cpu_cache
// gives everything back.
#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "tensor/storage.h"

namespace strand {
namespace {

constexpr int64_t MiB = 1 << 20;

TEST(CpuCache, FreedLargeBlocksAreReused) {
  empty_cpu_cache();
  const void* first;
  {
    Tensor a = ops::empty({4 * MiB / 4});  // 4 MiB of f32
    first = a.raw_data();
    ops::fill_(a, 1.5);
  }
  EXPECT_GE(cpu_allocator_stats().cached_bytes, 4 * MiB);
  Tensor b = ops::empty({3 * MiB / 4});  // fits the freed 4 MiB block (more than half of it)
  EXPECT_EQ(b.raw_data(), first);
  EXPECT_EQ(cpu_allocator_stats().cached_bytes, 0);
  ops::fill_(b, 2.0);
  EXPECT_EQ(ops::to_vector<float>(ops::sum(b))[0], 2.0f * static_cast<float>(3 * MiB / 4));
}

TEST(CpuCache, SmallBlocksAndTooSmallRequestsDoNotTakeCachedBlocks) {
  empty_cpu_cache();
  { Tensor a = ops::empty({8 * MiB / 4}); }
  const int64_t cached = cpu_allocator_stats().cached_bytes;
  Tensor small = ops::empty({1000});               // below the cache threshold
  Tensor quarter = ops::empty({2 * MiB / 4});       // a quarter of the cached block: mapped anew
  EXPECT_EQ(cpu_allocator_stats().cached_bytes, cached);
}

TEST(CpuCache, CacheStaysWithinOneAndAHalfTimesThePeak) {
  empty_cpu_cache();
  reset_cpu_peak_bytes();
  const int64_t live0 = cpu_allocator_stats().live_bytes;
  // Sizes that never fit each other's blocks, freed as they go: without the bound every one of
  // them would stay cached.
  for (int64_t mib : {16, 7, 3, 33, 1, 12, 5, 40, 2, 9}) {
    Tensor t = ops::empty({mib * MiB / 4});
    ops::fill_(t, 1.0);
  }
  const int64_t peak = cpu_allocator_stats().peak_bytes - live0;
  EXPECT_EQ(peak, 40 * MiB);
  // 1.5x the highest live total, plus 12.5% size-class rounding.
  EXPECT_LE(cpu_allocator_stats().cached_bytes, peak * 3 / 2 * 9 / 8);
  empty_cpu_cache();
  EXPECT_EQ(cpu_allocator_stats().cached_bytes, 0);
}

}  // namespace
}  // namespace strand
