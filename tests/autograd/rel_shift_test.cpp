// rel_shift (Enformer's Transformer-XL relative shift by index arithmetic): against the reference's
// pad + reshape formulation, f64 gradcheck, non-contiguous / empty inputs and bad shapes.
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::grad_ok;
using test::throws_with;

// enformer-pytorch's relative_shift: concat a zero column, reshape [.., 2T, T], drop the first
// row, reshape [.., T, 2T-1], keep the first T columns.
Tensor reference_shift(const Tensor& x) {
  const int64_t T = x.size(-2);
  Shape lead(x.sizes().begin(), x.sizes().end() - 2);
  Shape zs = x.sizes();
  zs.back() = 1;
  Tensor p = ops::concat({ops::zeros(zs, x.dtype()), x}, -1);
  Shape s1 = lead;
  s1.push_back(2 * T);
  s1.push_back(T);
  p = ops::reshape(p, s1);
  p = ops::narrow(p, -2, 1, 2 * T - 1);
  Shape s2 = lead;
  s2.push_back(T);
  s2.push_back(2 * T - 1);
  p = ops::reshape(ops::contiguous(p), s2);
  return ops::narrow(p, -1, 0, T);
}

TEST(RelShift, MatchesPadReshapeReferenceAndIndexFormula) {
  for (int64_t T : {1, 2, 5, 8}) {
    Tensor x = test::uniform({2, 3, T, 2 * T - 1}, -1, 1, 7 + T);
    Tensor y = ops::rel_shift(x);
    EXPECT_EQ(y.sizes(), (Shape{2, 3, T, T}));
    EXPECT_TRUE(allclose(y, reference_shift(x), 0, 0)) << "T=" << T;
    auto xv = ops::to_vector<double>(x), yv = ops::to_vector<double>(y);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j)
        EXPECT_EQ(yv[(5 * T + i) * T + j], xv[(5 * T + i) * (2 * T - 1) + (T - 1 + j - i)]);
    EXPECT_EQ(y.storage().get(), x.storage().get());  // a view: no copy of a contiguous input
  }
}

TEST(RelShift, NonContiguousAndEmptyInputs) {
  const int64_t T = 4;
  Tensor base = test::uniform({2, 2 * T - 1, T}, -1, 1, 3);
  Tensor x = ops::transpose(base, 1, 2);  // [2, T, 2T-1], not contiguous
  EXPECT_TRUE(allclose(ops::rel_shift(x), reference_shift(ops::contiguous(x)), 0, 0));
  Tensor e = ops::zeros({0, 3, T, 2 * T - 1}, DType::f64);
  EXPECT_EQ(ops::rel_shift(e).sizes(), (Shape{0, 3, T, T}));
  Tensor ep = test::param({0, T, 2 * T - 1});
  Tensor ye = rel_shift(ep);
  backward(sum(ye));
  EXPECT_EQ(ep.grad().sizes(), ep.sizes());
}

TEST(RelShift, GradcheckF64) {
  for (int64_t T : {1, 3, 6}) {
    Tensor x = test::param({2, T, 2 * T - 1}, -1, 1, 11 + T);
    EXPECT_TRUE(grad_ok([](const std::vector<Tensor>& in) { return rel_shift(in[0]) * rel_shift(in[0]); }, {x}))
        << "T=" << T;
  }
  // through a non-contiguous input
  Tensor b = test::param({2, 5, 3}, -1, 1, 21);
  EXPECT_TRUE(grad_ok([](const std::vector<Tensor>& in) { return rel_shift(transpose(in[0], 1, 2)); }, {b}));
  // columns never read get zero gradient: T=3 reads 9 of the 15 entries per matrix
  Tensor z = test::param({3, 5}, -1, 1, 22);
  backward(sum(rel_shift(z)));
  auto g = ops::to_vector<double>(z.grad());
  double total = 0;
  for (double v : g) total += v;
  EXPECT_EQ(total, 9.0);
}

TEST(RelShift, BadShapesNameTheSizes) {
  EXPECT_TRUE(throws_with([] { ops::rel_shift(test::uniform({3, 4})); }, {"rel_shift", "2T-1", "5", "[3, 4]"}));
  EXPECT_TRUE(throws_with([] { ops::rel_shift(test::uniform({5})); }, {"rel_shift", "[5]"}));
  EXPECT_TRUE(throws_with([] { ops::rel_shift(ops::zeros({2, 0, 0}, DType::f64)); }, {"rel_shift", "T = 0"}));
}

}  // namespace
}  // namespace strand
