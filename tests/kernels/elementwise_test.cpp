// Elementwise ops: every unary op against a double reference on f64/f32/bf16, non-contiguous and
// empty inputs, and an f64 gradcheck; binary ops with broadcasting; comparisons, where, masked_fill.
#include <cmath>
#include <functional>

#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::grad_ok;
using test::throws_with;

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  double lo, hi;  // input domain (kept away from kinks so finite differences are meaningful)
};

// Names the case in test listings (otherwise gtest prints the struct's raw bytes).
void PrintTo(const UnaryCase& c, std::ostream* os) { *os << c.name; }

double sigmoid_d(double x) { return 1 / (1 + std::exp(-x)); }

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, -2, 2},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, -2, 2},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, 0.2, 3},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, 0.2, 3},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, 0.2, 3},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::abs(x); }, 0.1, 2},
      {"abs_neg", [](const Tensor& x) { return abs(x); }, [](double x) { return std::abs(x); }, -2, -0.1},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, -2, 2},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, sigmoid_d, -4, 4},
      {"relu_pos", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0; }, 0.1, 2},
      {"relu_neg", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0; }, -2, -0.1},
      {"softplus", [](const Tensor& x) { return softplus(x); }, [](double x) { return std::log1p(std::exp(x)); }, -4, 4},
      {"softplus_beta", [](const Tensor& x) { return softplus(x, 2.0, 3.0); },
       [](double x) { return 2 * x > 3 ? x : std::log1p(std::exp(2 * x)) / 2; }, -1, 1.4},
      {"softplus_linear", [](const Tensor& x) { return softplus(x, 1.0, 1.0); }, [](double x) { return x; }, 1.1, 3},
      {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x * sigmoid_d(x); }, -4, 4},
      {"gelu", [](const Tensor& x) { return gelu(x); }, [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }, -4, 4},
      {"gelu_sigmoid", [](const Tensor& x) { return gelu_sigmoid(x); }, [](double x) { return x * sigmoid_d(1.702 * x); }, -4, 4},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, [](double x) { return std::min(0.7, std::max(-0.5, x)); }, -0.45, 0.65},
      {"clamp_out", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, [](double x) { return std::min(0.7, std::max(-0.5, x)); }, 0.8, 2},
      {"pow", [](const Tensor& x) { return pow(x, 2.5); }, [](double x) { return std::pow(x, 2.5); }, 0.2, 2},
      {"pow_int", [](const Tensor& x) { return pow(x, 3.0); }, [](double x) { return x * x * x; }, -2, 2},
      {"add_scalar", [](const Tensor& x) { return x + 1.5; }, [](double x) { return x + 1.5; }, -2, 2},
      {"sub_scalar", [](const Tensor& x) { return x - 1.5; }, [](double x) { return x - 1.5; }, -2, 2},
      {"mul_scalar", [](const Tensor& x) { return x * -3.0; }, [](double x) { return -3 * x; }, -2, 2},
      {"div_scalar", [](const Tensor& x) { return x / 4.0; }, [](double x) { return x / 4; }, -2, 2},
      {"rsub_scalar", [](const Tensor& x) { return rsub(2.0, x); }, [](double x) { return 2 - x; }, -2, 2},
  };
}

class Unary : public ::testing::TestWithParam<UnaryCase> {};

Tensor reference(const Tensor& x, const std::function<double(double)>& f) {
  auto v = ops::to_vector<double>(x);
  for (double& e : v) e = f(e);
  return ops::from_vector<double>(v, x.sizes());
}

TEST_P(Unary, MatchesReferenceInEveryFloatDtype) {
  const auto& c = GetParam();
  Tensor x = test::uniform({3, 7}, c.lo, c.hi, 11);
  Tensor ref = reference(x, c.ref);
  EXPECT_TRUE(allclose(c.op(x), ref, 1e-12, 1e-12)) << c.name << " f64";
  // f32: the input is rounded to f32 first, so compare with the reference at the rounded input.
  Tensor x32 = ops::to(x, DType::f32);
  EXPECT_TRUE(allclose(c.op(x32), reference(x32, c.ref), 1e-6, 1e-5)) << c.name << " f32";
  Tensor xb = ops::to(x, DType::bf16);
  Tensor yb = c.op(xb);
  EXPECT_EQ(yb.dtype(), DType::bf16);
  EXPECT_TRUE(allclose(yb, reference(xb, c.ref), 1e-2, 1e-2)) << c.name << " bf16";
  Tensor xh = ops::to(x, DType::f16);
  EXPECT_TRUE(allclose(c.op(xh), reference(xh, c.ref), 2e-3, 2e-3)) << c.name << " f16";
}

TEST_P(Unary, NonContiguousEmptyAndOddSizes) {
  const auto& c = GetParam();
  Tensor x = test::uniform({5, 3}, c.lo, c.hi, 12);
  Tensor t = ops::transpose(x, 0, 1);  // [3, 5], strides (1, 3)
  ASSERT_FALSE(t.is_contiguous());
  EXPECT_TRUE(allclose(c.op(t), reference(t, c.ref), 1e-12, 1e-12)) << c.name;
  Tensor e = c.op(ops::zeros({0, 4}, DType::f64));
  EXPECT_EQ(e.sizes(), (Shape{0, 4}));
  Tensor big = test::uniform({40001}, c.lo, c.hi, 13);  // crosses the OpenMP threshold, odd size
  EXPECT_TRUE(allclose(c.op(big), reference(big, c.ref), 1e-12, 1e-12)) << c.name;
}

TEST_P(Unary, Gradcheck) {
  const auto& c = GetParam();
  Tensor x = test::param({2, 5}, c.lo, c.hi, 14);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return c.op(in[0]); }, {x})) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Ops, Unary, ::testing::ValuesIn(unary_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(UnaryOps, SignHasZeroGradientAndRightValues) {
  Tensor x = ops::from_vector<double>({-2, 0, 3}, {3});
  EXPECT_EQ(ops::to_vector<double>(sign(x)), (std::vector<double>{-1, 0, 1}));
  Tensor p = test::param({4}, 0.5, 1, 3);
  backward(sum(sign(p)));
  EXPECT_EQ(ops::to_vector<double>(p.grad()), (std::vector<double>(4, 0.0)));
}

TEST(UnaryOps, BadInputNamesTheProblem) {
  Tensor i = ops::arange(0, 4);
  EXPECT_TRUE(throws_with([&] { exp(i); }, {"exp", "floating", "i64"}));
  EXPECT_TRUE(throws_with([&] { clamp(ops::zeros({2}), 1, 0); }, {"clamp", "min 1", "max 0"}));
  EXPECT_TRUE(throws_with([&] { softplus(ops::zeros({2}), 0.0); }, {"softplus", "beta"}));
}

TEST(UnaryOps, SoftplusAndSigmoidAreStableAtExtremes) {
  Tensor x = ops::from_vector<float>({-100, 100, 0}, {3});
  auto s = ops::to_vector<float>(sigmoid(x));
  EXPECT_EQ(s[0], 0.0f);
  EXPECT_EQ(s[1], 1.0f);
  auto sp = ops::to_vector<float>(softplus(x));
  EXPECT_NEAR(sp[0], 0.0f, 1e-30);
  EXPECT_EQ(sp[1], 100.0f);
  EXPECT_NEAR(sp[2], std::log(2.0f), 1e-7);
}

// ---------------- binary ----------------
struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
};

void PrintTo(const BinaryCase& c, std::ostream* os) { *os << c.name; }

class Binary : public ::testing::TestWithParam<BinaryCase> {};

Tensor reference2(const Tensor& a, const Tensor& b, const std::function<double(double, double)>& f) {
  Shape s = ops::broadcast_shapes(a.sizes(), b.sizes(), "ref");
  auto va = ops::to_vector<double>(ops::expand(a, s)), vb = ops::to_vector<double>(ops::expand(b, s));
  for (size_t i = 0; i < va.size(); ++i) va[i] = f(va[i], vb[i]);
  return ops::from_vector<double>(va, s);
}

TEST_P(Binary, BroadcastsLikeNumpyInEveryFloatDtype) {
  const auto& c = GetParam();
  Tensor a = test::uniform({3, 1, 4}, 0.5, 2, 21), b = test::uniform({2, 4}, 0.5, 2, 22);
  Tensor y = c.op(a, b);
  EXPECT_EQ(y.sizes(), (Shape{3, 2, 4}));
  EXPECT_TRUE(allclose(y, reference2(a, b, c.ref), 1e-12, 1e-12));
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    Tensor a2 = ops::to(a, dt), b2 = ops::to(b, dt);
    double tol = dt == DType::f32 ? 1e-6 : (dt == DType::bf16 ? 1e-2 : 2e-3);
    EXPECT_TRUE(allclose(c.op(a2, b2), reference2(a2, b2, c.ref), tol, tol)) << dtype_name(dt);
  }
  // scalar (0-d) operand and a row vector
  Tensor s = ops::scalar_tensor(1.5, DType::f64);
  EXPECT_TRUE(allclose(c.op(a, s), reference2(a, s, c.ref), 1e-12, 1e-12));
  Tensor row = test::uniform({4}, 0.5, 2, 23);
  EXPECT_TRUE(allclose(c.op(a, row), reference2(a, row, c.ref), 1e-12, 1e-12));
}

TEST_P(Binary, NonContiguousAndEmpty) {
  const auto& c = GetParam();
  Tensor a = ops::permute(test::uniform({4, 3, 2}, 0.5, 2, 24), {2, 0, 1});  // [2, 4, 3]
  Tensor b = ops::slice(test::uniform({2, 4, 6}, 0.5, 2, 25), 2, 0, 6, 2);  // [2, 4, 3] strided
  EXPECT_TRUE(allclose(c.op(a, b), reference2(a, b, c.ref), 1e-12, 1e-12));
  Tensor big_a = test::uniform({257, 129}, 0.5, 2, 26), big_b = test::uniform({129}, 0.5, 2, 27);
  EXPECT_TRUE(allclose(c.op(big_a, big_b), reference2(big_a, big_b, c.ref), 1e-12, 1e-12));
  EXPECT_EQ(c.op(ops::zeros({0, 3}, DType::f64), ops::zeros({3}, DType::f64)).sizes(), (Shape{0, 3}));
}

TEST_P(Binary, GradcheckWithBroadcasting) {
  const auto& c = GetParam();
  Tensor a = test::param({3, 1, 4}, 0.5, 2, 28), b = test::param({2, 4}, 0.5, 2, 29);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return c.op(in[0], in[1]); }, {a, b}));
  Tensor same = test::param({3, 2}, 0.5, 2, 30);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return c.op(in[0], in[0]); }, {same}));
}

TEST_P(Binary, MismatchedShapesDtypesAreErrors) {
  const auto& c = GetParam();
  EXPECT_TRUE(throws_with([&] { c.op(ops::zeros({2, 3}), ops::zeros({4})); }, {"[2, 3]", "[4]", "broadcast"}));
  EXPECT_TRUE(throws_with([&] { c.op(ops::zeros({2}), ops::zeros({2}, DType::f64)); }, {"dtype mismatch", "f32", "f64"}));
}

INSTANTIATE_TEST_SUITE_P(Ops, Binary,
                         ::testing::Values(BinaryCase{"add", [](const Tensor& a, const Tensor& b) { return a + b; },
                                                      [](double x, double y) { return x + y; }},
                                           BinaryCase{"sub", [](const Tensor& a, const Tensor& b) { return a - b; },
                                                      [](double x, double y) { return x - y; }},
                                           BinaryCase{"mul", [](const Tensor& a, const Tensor& b) { return a * b; },
                                                      [](double x, double y) { return x * y; }},
                                           BinaryCase{"div", [](const Tensor& a, const Tensor& b) { return a / b; },
                                                      [](double x, double y) { return x / y; }}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(BinaryOps, IntegerArithmeticIsExact) {
  Tensor a = ops::from_vector<int64_t>({5, -7, 9}, {3}), b = ops::from_vector<int64_t>({2, 2, -4}, {3});
  EXPECT_EQ(ops::to_vector<int64_t>(ops::add(a, b)), (std::vector<int64_t>{7, -5, 5}));
  EXPECT_EQ(ops::to_vector<int64_t>(ops::mul(a, b)), (std::vector<int64_t>{10, -14, -36}));
  EXPECT_EQ(ops::to_vector<int64_t>(ops::binary(BinaryOp::maximum, a, b)), (std::vector<int64_t>{5, 2, 9}));
}

TEST(BinaryOps, InPlaceAddBumpsVersionAndBroadcasts) {
  Tensor d = ops::zeros({2, 3}, DType::f64);
  const uint64_t v0 = d.version();
  ops::add_(d, ops::from_vector<double>({1, 2, 3}, {3}), 2.0);
  EXPECT_GT(d.version(), v0);
  EXPECT_EQ(ops::to_vector<double>(d), (std::vector<double>{2, 4, 6, 2, 4, 6}));
  EXPECT_TRUE(throws_with([&] { ops::add_(d, ops::zeros({3, 3}, DType::f64)); }, {"add_", "[3, 3]"}));
}

// ---------------- comparisons, where, masked_fill ----------------
TEST(Compare, AllSixAgainstReference) {
  Tensor a = ops::from_vector<float>({1, 2, 3, 2}, {4}), b = ops::from_vector<float>({2, 2, 2, 2}, {4});
  auto as_int = [](const Tensor& t) {
    EXPECT_EQ(t.dtype(), DType::b8);
    return ops::to_vector<int32_t>(t);
  };
  EXPECT_EQ(as_int(eq(a, b)), (std::vector<int32_t>{0, 1, 0, 1}));
  EXPECT_EQ(as_int(ne(a, b)), (std::vector<int32_t>{1, 0, 1, 0}));
  EXPECT_EQ(as_int(lt(a, b)), (std::vector<int32_t>{1, 0, 0, 0}));
  EXPECT_EQ(as_int(le(a, b)), (std::vector<int32_t>{1, 1, 0, 1}));
  EXPECT_EQ(as_int(gt(a, b)), (std::vector<int32_t>{0, 0, 1, 0}));
  EXPECT_EQ(as_int(ge(a, b)), (std::vector<int32_t>{0, 1, 1, 1}));
  // broadcasting against a scalar, and integers
  EXPECT_EQ(as_int(ops::compare(CompareOp::gt, ops::arange(0, 4), 1.0)), (std::vector<int32_t>{0, 0, 1, 1}));
  EXPECT_TRUE(throws_with([&] { eq(a, ops::zeros({4}, DType::f64)); }, {"compare", "f32", "f64"}));
}

TEST(Where, SelectsBroadcastsAndDifferentiates) {
  Tensor c = ops::to(ops::from_vector<int32_t>({1, 0, 1}, {3}), DType::b8);
  Tensor a = test::param({2, 3}, -1, 1, 41), b = test::param({3}, -1, 1, 42);
  Tensor y = where(c, a, b);
  auto va = ops::to_vector<double>(a), vb = ops::to_vector<double>(b), vy = ops::to_vector<double>(y);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(vy[i * 3 + j], j != 1 ? va[i * 3 + j] : vb[j]);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return where(c, in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(throws_with([&] { where(ops::zeros({3}), a, b); }, {"where", "bool", "f32"}));
}

TEST(MaskedFill, FillsAndBlocksGradient) {
  Tensor m = ops::to(ops::from_vector<int32_t>({0, 1, 0, 1}, {2, 2}), DType::b8);
  Tensor x = test::param({2, 2}, -1, 1, 43);
  Tensor y = masked_fill(x, m, -1e9);
  auto vx = ops::to_vector<double>(x), vy = ops::to_vector<double>(y);
  EXPECT_EQ(vy[1], -1e9);
  EXPECT_EQ(vy[3], -1e9);
  EXPECT_EQ(vy[0], vx[0]);
  backward(sum(y));
  EXPECT_EQ(ops::to_vector<double>(x.grad()), (std::vector<double>{1, 0, 1, 0}));
  Tensor x2 = test::param({2, 2}, -1, 1, 44);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return masked_fill(in[0], m, 0.5); }, {x2}));
  EXPECT_TRUE(throws_with([&] { masked_fill(x, ops::zeros({3}, DType::b8), 0); }, {"[2, 2]", "[3]"}));
}

}  // namespace
}  // namespace strand
