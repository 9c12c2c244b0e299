#pragma once
// The host side of the multi-tensor launches (kernels/cuda/optim.cuh, after PyTorch's
// multi_tensor_apply): tensors are cut into chunks of kChunk elements, one block per chunk, and
// packed into TensorList tables that travel by value in the kernel's arguments. Host-only code, so
// the packing is unit-tested on the CPU (tests/kernels/tensor_list_test.cpp).
#include <array>
#include <cstdint>
#include <vector>

namespace strand::cuda {

constexpr int kListTensors = 36, kListBlocks = 320;
constexpr int64_t kChunk = 65536;

// Under the 4 KiB kernel-parameter limit of every CUDA version for Depth <= 4.
template <int Depth>
struct TensorList {
  void* ptr[Depth][kListTensors];
  int64_t n[kListTensors];
  double a[kListTensors], b[kListTensors];  // per-tensor scalars (AdamW: step size, sqrt(bias correction 2))
  int64_t first_chunk[kListTensors];        // the tensor's first chunk in the whole list (partials' index)
  uint8_t block_tensor[kListBlocks];        // block -> slot in the table
  int32_t block_chunk[kListBlocks];         // block -> chunk of that tensor
};
static_assert(sizeof(TensorList<4>) + 64 <= 4096, "kernel arguments must fit in 4 KiB");

struct ListEntry {
  std::array<void*, 4> ptr;
  int64_t n;
  double a = 0, b = 0;
  int64_t first_chunk = -1;  // where its chunks are numbered from; -1: after the previous entry's
};

// Fills TensorLists with `entries` in order and calls launch(list, blocks) whenever the table or
// the block list is full, and once at the end. A tensor cut by a full block list continues in slot
// 0 of the next launch.
template <int Depth, class Launch>
void apply_lists(const std::vector<ListEntry>& entries, Launch launch) {
  TensorList<Depth> l{};
  int slot = 0, blocks = 0;
  int64_t chunks_before = 0;
  for (const ListEntry& e : entries) {
    if (e.n == 0) continue;
    for (int d = 0; d < Depth; ++d) l.ptr[d][slot] = e.ptr[d];
    l.n[slot] = e.n, l.a[slot] = e.a, l.b[slot] = e.b;
    l.first_chunk[slot] = e.first_chunk >= 0 ? e.first_chunk : chunks_before;
    const int64_t chunks = (e.n + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      l.block_tensor[blocks] = static_cast<uint8_t>(slot);
      l.block_chunk[blocks] = static_cast<int32_t>(c);
      ++blocks;
      const bool last = c + 1 == chunks;
      if (blocks == kListBlocks || (last && slot + 1 == kListTensors)) {
        launch(l, blocks);
        blocks = 0;
        if (last) {
          slot = -1;  // the next tensor starts a fresh table
        } else {      // this tensor goes on in slot 0
          for (int d = 0; d < Depth; ++d) l.ptr[d][0] = l.ptr[d][slot];
          l.n[0] = l.n[slot], l.a[0] = l.a[slot], l.b[0] = l.b[slot], l.first_chunk[0] = l.first_chunk[slot];
          slot = 0;
        }
      }
    }
    chunks_before += chunks;
    ++slot;
  }
  if (blocks > 0) launch(l, blocks);
}

}  // namespace strand::cuda
