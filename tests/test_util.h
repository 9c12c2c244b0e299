#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "autograd/functional.h"
#include "autograd/gradcheck.h"

namespace strand::test {

// |a - b| <= atol + rtol * |b| elementwise (b is the reference), same shape; reports the worst.
::testing::AssertionResult allclose(const Tensor& a, const Tensor& b, double atol = 1e-5, double rtol = 1e-5);

// A deterministic f64 CPU tensor with values in [lo, hi).
Tensor uniform(const Shape& s, double lo = -1, double hi = 1, uint64_t seed = 1, DType dt = DType::f64);
// Same but requiring grad (a leaf).
Tensor param(const Shape& s, double lo = -1, double hi = 1, uint64_t seed = 1);

// gradcheck wrapper asserting success with the mismatch in the message.
::testing::AssertionResult grad_ok(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                   const std::vector<Tensor>& inputs, double atol = 1e-6, double rtol = 1e-5);

// Expects `fn` to throw strand::Error whose message contains every one of `needles`.
::testing::AssertionResult throws_with(const std::function<void()>& fn, const std::vector<std::string>& needles);

}  // namespace strand::test

#define STRAND_SKIP_WITHOUT_GPU()                                                  \
  do {                                                                             \
    if (!::strand::cuda_available()) GTEST_SKIP() << "no usable CUDA GPU here";    \
  } while (0)
