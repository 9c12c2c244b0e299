#pragma once
// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011), defined so the CPU and the GPU
// produce the same stream: element i of a random call made at generator offset `off` with seed `s`
// is philox(key = s, counter = {lo32(i), hi32(i), lo32(off), hi32(off)}). Each call takes one
// offset, so calls never overlap, and any element can be computed independently (one thread each).
#include <cstdint>

#include "tensor/half.h"

namespace strand::philox {

struct U4 {
  uint32_t x, y, z, w;
};

STRAND_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

STRAND_HD U4 philox4x32_10(uint64_t seed, uint64_t index, uint64_t offset) {
  uint32_t c0 = static_cast<uint32_t>(index), c1 = static_cast<uint32_t>(index >> 32);
  uint32_t c2 = static_cast<uint32_t>(offset), c3 = static_cast<uint32_t>(offset >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, hi0, lo0);
    mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// Uniform in [0, 1) with 24 random bits: exactly representable in f32, so comparisons against a
// probability (dropout, bernoulli) give identical masks on every device.
STRAND_HD float uniform_f32(uint32_t w) { return static_cast<float>(w >> 8) * 5.9604644775390625e-8f; }
// Uniform in [0, 1) with 53 random bits for f64 outputs.
STRAND_HD double uniform_f64(uint32_t a, uint32_t b) {
  uint64_t m = (static_cast<uint64_t>(a) << 21) ^ (static_cast<uint64_t>(b) >> 11);
  return static_cast<double>(m & ((1ull << 53) - 1)) * 1.1102230246251565e-16;
}

}  // namespace strand::philox
