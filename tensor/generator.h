#pragma once
// The random state: a seed and an offset. Each random op consumes one offset (see philox.h), so a
// saved (seed, offset) pair replays exactly the same numbers, on the CPU and on the GPU.
#include <cstdint>

namespace strand {

struct Generator {
  uint64_t seed = 0x5eed;
  uint64_t offset = 0;
  uint64_t next_offset() { return offset++; }
};

Generator& default_generator();
void manual_seed(uint64_t seed);  // sets the seed and resets the offset

}  // namespace strand
