#pragma once
// What the SIMT emulator's tests share: outputs filled beforehand so that an element a kernel leaves
// unwritten fails the comparison, and [B, H, T, D] operands as the models pass them.
#include <cmath>

#include "tests/test_util.h"

namespace strand::test {

// A CPU tensor filled with NaN (floating types) or 99 (others).
inline Tensor unwritten(const Shape& s, DType dt) {
  Tensor t = ops::empty(s, TensorOptions(dt, Device::cpu()));
  cpu::fill(t, is_floating(dt) ? NAN : 99.0);
  return t;
}

// bhtd itself, or its values as a transposed view of [B, T, H, D] memory (row stride H·D).
inline Tensor heads_view(const Tensor& bhtd, bool transposed) {
  return transposed ? ops::transpose(ops::contiguous(ops::transpose(bhtd, 1, 2)), 1, 2) : bhtd;
}

}  // namespace strand::test
