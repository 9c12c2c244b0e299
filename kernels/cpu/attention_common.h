#pragma once
// Shared by the CPU attention kernels (attention.cpp, rel_attention.cpp): row offsets of
// [B, H, T, D]-indexed operands, and the dropout factors of one attention row (cpu::DropoutMask):
// 0 or 1/(1-p) per key, drawn by Philox at the element's index in the [B, H, Tq, Tk]
// probabilities, as ops::dropout_mask draws.
#include "kernels/cpu/cpu_kernels.h"
#include "tensor/philox.h"

namespace strand::cpu {

// Element offsets of row t of (b, h) in a [B, H, T, D]-indexed tensor with unit last stride.
struct Rows {
  const Tensor& t;
  int64_t operator()(int64_t b, int64_t h, int64_t i) const { return b * t.stride(0) + h * t.stride(1) + i * t.stride(2); }
  int64_t ld() const { return t.stride(2); }
};

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

// y = a ∘ keep over n elements (y may be a): probabilities or their gradients times the factors.
template <class T>
void times_keep(T* y, const T* a, const T* keep, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * keep[i];
}

}  // namespace strand::cpu
