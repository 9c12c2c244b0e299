// The host-side packing of the multi-tensor launches (kernels/cuda/tensor_list.h), replayed on the
// CPU: every chunk of every tensor is handed to exactly one block, with the right tensor, chunk
// index and partials index, however the tensors fall across the 36-tensor tables and 320-block
// launches (tensors cut across launches, empty tensors, exact multiples of the chunk).
#include "kernels/cuda/tensor_list.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <tuple>
#include <vector>

namespace strand::cuda {
namespace {

struct Seen {
  int launches = 0;
  // (tensor id, chunk) -> the partials index the block was given
  std::map<std::pair<int, int64_t>, int64_t> chunks;
  bool ok = true;
};

// Runs apply_lists over tensors of the given sizes (tensor i is identified by its fake pointer i+1)
// and records what each block of each launch would process.
Seen replay(const std::vector<int64_t>& sizes, bool explicit_first = false) {
  std::vector<ListEntry> entries;
  int64_t first = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    ListEntry e{{reinterpret_cast<void*>(i + 1), nullptr, nullptr, nullptr}, sizes[i], double(i), -double(i)};
    if (explicit_first) e.first_chunk = 1000 + first;  // a caller numbering the partials itself
    first += (sizes[i] + kChunk - 1) / kChunk;
    entries.push_back(e);
  }
  Seen s;
  apply_lists<1>(entries, [&](const TensorList<1>& l, int blocks) {
    ++s.launches;
    EXPECT_GT(blocks, 0);
    EXPECT_LE(blocks, kListBlocks);
    for (int b = 0; b < blocks; ++b) {
      const int slot = l.block_tensor[b];
      EXPECT_LT(slot, kListTensors);
      const int id = static_cast<int>(reinterpret_cast<uintptr_t>(l.ptr[0][slot])) - 1;
      EXPECT_GE(id, 0);
      EXPECT_LT(id, static_cast<int>(sizes.size()));
      if (id < 0 || id >= static_cast<int>(sizes.size())) {
        s.ok = false;
        continue;
      }
      // the slot carries the tensor's own length and scalars
      EXPECT_EQ(l.n[slot], sizes[id]);
      EXPECT_EQ(l.a[slot], double(id));
      EXPECT_EQ(l.b[slot], -double(id));
      const int64_t c = l.block_chunk[b];
      EXPECT_LT(c * kChunk, sizes[id]) << "a chunk past the tensor's end";
      const bool fresh = s.chunks.emplace(std::pair{id, c}, l.first_chunk[slot] + c).second;
      EXPECT_TRUE(fresh) << "tensor " << id << " chunk " << c << " given to two blocks";
    }
  });
  return s;
}

void expect_every_chunk_once(const std::vector<int64_t>& sizes, const Seen& s, int64_t base = 0) {
  int64_t first = 0;
  size_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t chunks = (sizes[i] + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      auto it = s.chunks.find({static_cast<int>(i), c});
      ASSERT_NE(it, s.chunks.end()) << "tensor " << i << " chunk " << c << " never processed";
      EXPECT_EQ(it->second, base + first + c) << "partials index of tensor " << i << " chunk " << c;
    }
    first += chunks;
    total += static_cast<size_t>(chunks);
  }
  EXPECT_EQ(s.chunks.size(), total);
  EXPECT_TRUE(s.ok);
}

TEST(TensorList, ManySmallTensorsFillTablesOf36) {
  std::vector<int64_t> sizes;
  for (int i = 0; i < 100; ++i) sizes.push_back(1 + i * 37);
  const Seen s = replay(sizes);
  expect_every_chunk_once(sizes, s);
  EXPECT_EQ(s.launches, 3);  // 36 + 36 + 28 tensors of one chunk each
}

TEST(TensorList, ALongTensorIsCutAcrossLaunchesAndGoesOnInSlotZero) {
  const std::vector<int64_t> sizes = {5, 321 * kChunk + 5, kChunk, 0, 2 * kChunk, 700 * kChunk, 3};
  const Seen s = replay(sizes);
  expect_every_chunk_once(sizes, s);
  int64_t chunks = 0;
  for (int64_t n : sizes) chunks += (n + kChunk - 1) / kChunk;
  EXPECT_EQ(s.launches, (chunks + kListBlocks - 1) / kListBlocks);  // tables never fill first here
}

TEST(TensorList, ExplicitPartialIndicesAndRandomMixes) {
  const std::vector<int64_t> sizes = {kChunk - 1, kChunk + 1, 0, 1};
  expect_every_chunk_once(sizes, replay(sizes, /*explicit_first=*/true), 1000);
  uint64_t x = 3;
  for (int round = 0; round < 200; ++round) {
    std::vector<int64_t> r;
    const int count = 1 + static_cast<int>((x >> 20) % 90);
    for (int i = 0; i < count; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      const int kind = static_cast<int>((x >> 61) % 4);
      r.push_back(kind == 0 ? 0 : kind == 1 ? static_cast<int64_t>((x >> 30) % 1000) + 1
                                : kind == 2 ? static_cast<int64_t>((x >> 30) % 8 + 1) * kChunk
                                            : static_cast<int64_t>((x >> 24) % (400 * kChunk)) + 1);
    }
    const Seen s = replay(r);
    expect_every_chunk_once(r, s);
    if (HasFailure()) {
      ADD_FAILURE() << "round " << round;
      return;
    }
  }
}

}  // namespace
}  // namespace strand::cuda
