#pragma once
// The dropout factors of one attention row (cpu::DropoutMask): 0 or 1/(1-p) per key, drawn by
// Philox at the element's index in the [B, H, Tq, Tk] probabilities, as ops::dropout_mask draws.
#include "kernels/cpu/cpu_kernels.h"
#include "tensor/philox.h"

namespace strand::cpu {

// row[j] = factor of element first + j, j < n.
template <class T>
void keep_factors(T* row, int64_t n, int64_t first, const DropoutMask& d) {
  const float keep = static_cast<float>(1.0 - d.p);
  const T scale = static_cast<T>(1.0 / (1.0 - d.p));
  for (int64_t j = 0; j < n; ++j) {
    const auto u = philox::philox4x32_10(d.seed, static_cast<uint64_t>(first + j), d.offset);
    row[j] = philox::uniform_f32(u.x) < keep ? scale : T(0);
  }
}

}  // namespace strand::cpu
