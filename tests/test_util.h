#pragma once
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
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
// A padding mask as the models build it: bool [B, T], true at t >= lengths[b].
Tensor pad_mask(int64_t B, int64_t T, const std::vector<int64_t>& lengths);
// Same but requiring grad (a leaf).
Tensor param(const Shape& s, double lo = -1, double hi = 1, uint64_t seed = 1);

// gradcheck wrapper asserting success with the mismatch in the message.
::testing::AssertionResult grad_ok(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                   const std::vector<Tensor>& inputs, double atol = 1e-6, double rtol = 1e-5);

// Tolerances per dtype for an op's output against an f64 reference computed on the same (rounded)
// inputs. f64: summation order only. f32: DESIGN's op tolerance. bf16/f16: what is left is the
// output's rounding (half an ulp) plus f32 arithmetic inside the kernel; one ulp relative (2^-7
// bf16, 2^-10 f16) is twice the rounding, plus a small atol for results that cancel to near zero.
struct Tol {
  double atol, rtol;
};
Tol tol_for(DType d);

// Runs `op` with the floating inputs cast to each dtype and compares with `ref` evaluated in f64 on
// the same rounded values (undefined and integer inputs pass unchanged). exact: the op only moves
// data, so the result must match bit for bit.
using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;
void expect_dtypes(const OpFn& op, const OpFn& ref, const std::vector<Tensor>& inputs, bool exact = false,
                   const std::vector<DType>& dtypes = {DType::f64, DType::f32, DType::bf16, DType::f16});

// Expects `fn` to throw strand::Error whose message contains every one of `needles`.
::testing::AssertionResult throws_with(const std::function<void()>& fn, const std::vector<std::string>& needles);

// A fresh empty folder under the system temp dir, removed when the object dies.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() /
           ("strand_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str(const std::string& rel = "") const { return rel.empty() ? path.string() : (path / rel).string(); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

// How far `got` lies from `ref` (any devices), as ||got - ref|| / ||ref|| and max |got - ref|: the
// measure of bf16 results (against fp64, or the same computation on another device).
struct Bf16Error {
  double rel_l2 = 0, max_abs = 0;
};
inline Bf16Error bf16_error(const Tensor& got, const Tensor& ref) {
  EXPECT_EQ(got.sizes(), ref.sizes());
  if (got.sizes() != ref.sizes()) return {1e30, 1e30};
  auto g = ops::to_vector<double>(got), r = ops::to_vector<double>(ref);
  double num = 0, den = 0, mx = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    num += (g[i] - r[i]) * (g[i] - r[i]);
    den += r[i] * r[i];
    const double d = std::abs(g[i] - r[i]);
    if (!(d <= mx)) mx = d;  // a NaN counts (std::max would drop it)
  }
  return {std::sqrt(num / den), mx};
}

}  // namespace strand::test

#define STRAND_SKIP_WITHOUT_GPU()                                                  \
  do {                                                                             \
    if (!::strand::cuda_available()) GTEST_SKIP() << "no usable CUDA GPU here";    \
  } while (0)
