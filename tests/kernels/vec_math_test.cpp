// Accuracy of the vectorised f32 paths (kernels/cpu/vec.h, vec_unary.h) against the same functions
// in double over dense grids, every tail length, and the special values: exp, sigmoid, SiLU, GELU
// (erf), sigmoid-GELU and their derivatives, and softmax rows.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/functional.h"
#include "tests/test_util.h"

namespace strand {
namespace {

std::vector<float> grid(double lo, double hi, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(n - 1));
  return v;
}
Tensor f32(const std::vector<float>& v) { return ops::from_vector<float>(v, {static_cast<int64_t>(v.size())}); }

double phi(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Worst |got - want| / max(|want|, floor) over the grid.
template <class F>
double worst_rel(const Tensor& got, const std::vector<float>& x, F&& want, double floor = 1e-30) {
  const std::vector<float> g = ops::to_vector<float>(got);
  double w = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double r = want(static_cast<double>(x[i]));
    w = std::max(w, std::abs(static_cast<double>(g[i]) - r) / std::max(std::abs(r), floor));
  }
  return w;
}

TEST(VecMath, ExpWithinTwoUlpOverTheNormalRange) {
  const auto x = grid(-87.0, 88.0, 200003);
  EXPECT_LT(worst_rel(ops::exp(f32(x)), x, [](double v) { return std::exp(v); }), 2.5e-7);
}

TEST(VecMath, ExpSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {-inf, -1000.f, -88.f, 0.f, -0.f, 88.7f, 89.f, 1000.f, inf, nan, 1.f, -1.f};
  const std::vector<float> y = ops::to_vector<float>(ops::exp(f32(x)));
  EXPECT_EQ(y[0], 0.f);
  EXPECT_EQ(y[1], 0.f);
  EXPECT_NEAR(y[2] / std::exp(-88.0), 1.0, 1e-5);  // (a denormal keeps ~16 bits)  // denormal: gradual underflow
  EXPECT_EQ(y[3], 1.f);
  EXPECT_EQ(y[4], 1.f);
  EXPECT_NEAR(y[5] / std::exp(static_cast<double>(88.7f)), 1.0, 3e-7);
  EXPECT_EQ(y[6], inf);
  EXPECT_EQ(y[7], inf);
  EXPECT_EQ(y[8], inf);
  EXPECT_TRUE(std::isnan(y[9]));
  EXPECT_NEAR(y[10], std::exp(1.0), 3e-7);
  EXPECT_NEAR(y[11], std::exp(-1.0), 1e-7);
}

TEST(VecMath, ActivationsAndDerivativesMatchDouble) {
  const auto x = grid(-30.0, 30.0, 100001);
  Tensor t = f32(x);
  // Relative error with a floor: where a function is near 0 (its zeros, the far negative tails of
  // the GELUs, whose exp(-x^2/2) loses relative precision to the rounding of x^2) only the absolute
  // error counts, and it is below 1e-9 there.
  EXPECT_LT(worst_rel(ops::unary(UnaryOp::sigmoid, t), x, sig, 1e-3), 1e-6);
  EXPECT_LT(worst_rel(ops::unary(UnaryOp::silu, t), x, [](double v) { return v * sig(v); }, 1e-3), 1e-6);
  // GELU's erfc fit, evaluated in f32, is the least exact: 1.13e-6 relative at worst (x = -3.17,
  // an absolute error of 3e-9).
  EXPECT_LT(worst_rel(ops::unary(UnaryOp::gelu, t), x, [](double v) { return v * phi(v); }, 1e-3), 1.5e-6);
  EXPECT_LT(worst_rel(ops::unary(UnaryOp::gelu_sigmoid, t), x, [](double v) { return v * sig(1.702 * v); }, 1e-3), 1e-6);
  // Derivatives are O(1) sums of terms of both signs: absolute error against 1.
  Tensor g = ops::ones({static_cast<int64_t>(x.size())});
  EXPECT_LT(worst_rel(ops::unary_backward(UnaryOp::gelu, g, t), x,
                      [](double v) { return phi(v) + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI); }, 1.0),
            1e-6);
  EXPECT_LT(worst_rel(ops::unary_backward(UnaryOp::silu, g, t), x,
                      [](double v) { return sig(v) * (1 + v * (1 - sig(v))); }, 1.0),
            1e-6);
  EXPECT_LT(worst_rel(ops::unary_backward(UnaryOp::gelu_sigmoid, g, t), x,
                      [](double v) { return sig(1.702 * v) + 1.702 * v * sig(1.702 * v) * (1 - sig(1.702 * v)); }, 1.0),
            1e-6);
}

TEST(VecMath, EveryTailLengthMatchesTheBody) {
  // Lengths 2..17 cover the zero-padded last block; each element must equal the long-run result.
  // (Length 1 is a broadcast-shaped loop that takes the scalar path.)
  const auto x = grid(-5.0, 5.0, 17);
  const std::vector<float> full = ops::to_vector<float>(ops::unary(UnaryOp::gelu, f32(x)));
  for (size_t n = 2; n <= x.size(); ++n) {
    const std::vector<float> part(x.begin(), x.begin() + static_cast<int64_t>(n));
    const std::vector<float> y = ops::to_vector<float>(ops::unary(UnaryOp::gelu, f32(part)));
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(y[i], full[i]) << "n " << n << " i " << i;
  }
}

TEST(VecMath, SoftmaxRowsAndMiddleDimsMatchDouble) {
  for (int64_t n : {1, 7, 8, 9, 33, 1000}) {
    Tensor x = test::uniform({3, n}, -20, 20, static_cast<uint64_t>(n), DType::f32);
    Tensor ref = ops::softmax(ops::to(x, DType::f64), -1);
    EXPECT_TRUE(test::allclose(ops::to(ops::softmax(x, -1), DType::f64), ref, 1e-7, 1e-6)) << n;
    EXPECT_TRUE(test::allclose(ops::to(ops::log_softmax(x, -1), DType::f64), ops::log_softmax(ops::to(x, DType::f64), -1), 1e-5, 1e-6)) << n;
  }
  // a middle dim ([B, n, 2, C] as Enformer's pooling), with -FLT_MAX masked entries
  Tensor x = test::uniform({2, 5, 2, 19}, -30, 30, 3, DType::f32);
  float* p = x.data<float>();
  p[7] = -std::numeric_limits<float>::max();
  EXPECT_TRUE(test::allclose(ops::to(ops::softmax(x, 2), DType::f64), ops::softmax(ops::to(x, DType::f64), 2), 1e-7, 1e-6));
}

}  // namespace
}  // namespace strand
