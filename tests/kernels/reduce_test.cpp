// Reductions: sum, mean, var (population), max with indices, sum_to; values against loops in
// double, keepdim, several dims, non-contiguous and empty inputs, and gradchecks.
#include <cmath>
#include <limits>

#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::grad_ok;
using test::throws_with;

// Reference: reduce a [2, 3, 4] tensor over dim set `red` with op in {sum, mean, var}.
Tensor ref_reduce(const Tensor& x, std::vector<bool> red, int op, bool keepdim) {
  auto v = ops::to_vector<double>(x);
  const Shape& s = x.sizes();
  Shape out;
  for (size_t d = 0; d < s.size(); ++d) {
    if (!red[d]) out.push_back(s[d]);
    else if (keepdim) out.push_back(1);
  }
  Shape cnt_shape;
  for (size_t d = 0; d < s.size(); ++d) cnt_shape.push_back(red[d] ? 1 : s[d]);
  const int64_t n_out = shape_numel(cnt_shape);
  std::vector<std::vector<double>> groups(static_cast<size_t>(n_out));
  for (int64_t i = 0; i < static_cast<int64_t>(v.size()); ++i) {
    int64_t r = i, o = 0, mul = 1;
    std::vector<int64_t> idx(s.size());
    for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
      idx[d] = r % s[d];
      r /= s[d];
    }
    for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
      o += (red[d] ? 0 : idx[d]) * mul;
      mul *= cnt_shape[d];
    }
    groups[o].push_back(v[i]);
  }
  std::vector<double> res;
  for (auto& g : groups) {
    double sum = 0;
    for (double e : g) sum += e;
    double m = sum / static_cast<double>(g.size());
    double var = 0;
    for (double e : g) var += (e - m) * (e - m);
    res.push_back(op == 0 ? sum : op == 1 ? m : var / static_cast<double>(g.size()));
  }
  return ops::from_vector<double>(res, out);
}

struct RedCase {
  std::vector<int64_t> dims;
  std::vector<bool> red;
};

TEST(Reduce, SumMeanVarOverDimSetsMatchReference) {
  Tensor x = test::uniform({2, 3, 4}, -2, 2, 51);
  std::vector<RedCase> cases = {{{}, {true, true, true}},       {{0}, {true, false, false}},
                                {{-1}, {false, false, true}},   {{1}, {false, true, false}},
                                {{0, 2}, {true, false, true}},  {{2, 0}, {true, false, true}}};
  for (const auto& c : cases)
    for (bool keep : {false, true}) {
      EXPECT_TRUE(allclose(ops::sum(x, c.dims, keep), ref_reduce(x, c.red, 0, keep), 1e-12, 1e-12));
      EXPECT_TRUE(allclose(ops::mean(x, c.dims, keep), ref_reduce(x, c.red, 1, keep), 1e-12, 1e-12));
      EXPECT_TRUE(allclose(ops::var(x, c.dims, keep), ref_reduce(x, c.red, 2, keep), 1e-12, 1e-12));
    }
  // f32 / bf16 compute with a double accumulator
  Tensor x32 = ops::to(x, DType::f32);
  EXPECT_TRUE(allclose(ops::sum(x32, {1}), ref_reduce(x32, {false, true, false}, 0, false), 1e-6, 1e-6));
  Tensor xb = ops::to(x, DType::bf16);
  EXPECT_TRUE(allclose(ops::mean(xb, {2}), ref_reduce(xb, {false, false, true}, 1, false), 1e-2, 1e-2));
}

TEST(Reduce, NonContiguousLargeAndEmpty) {
  Tensor x = ops::permute(test::uniform({4, 3, 5}, -1, 1, 52), {1, 2, 0});
  EXPECT_TRUE(allclose(ops::sum(x, {2}), ref_reduce(x, {false, false, true}, 0, false), 1e-12, 1e-12));
  Tensor big = test::uniform({513, 257}, -1, 1, 53);
  EXPECT_TRUE(allclose(ops::var(big, {1}), ref_reduce(big, {false, true}, 2, false), 1e-12, 1e-12));
  // Leading and middle blocks over many columns (reduced in place, split across threads by columns).
  Tensor rows = test::uniform({300, 600}, -1, 1, 54);
  EXPECT_TRUE(allclose(ops::sum(rows, {0}), ref_reduce(rows, {true, false}, 0, false), 1e-12, 1e-12));
  EXPECT_TRUE(allclose(ops::var(rows, {0}, true), ref_reduce(rows, {true, false}, 2, true), 1e-12, 1e-12));
  Tensor mid = test::uniform({3, 70, 2, 513}, -1, 1, 55);
  EXPECT_TRUE(allclose(ops::mean(mid, {1, 2}), ref_reduce(mid, {false, true, true, false}, 1, false), 1e-12, 1e-12));
  EXPECT_TRUE(allclose(ops::sum(ops::to(mid, DType::f32), {0, 1}), ref_reduce(mid, {true, true, false, false}, 0, false), 2e-5, 1e-6));
  Tensor ints = ops::from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {3, 2});
  EXPECT_EQ(ops::to_vector<int64_t>(ops::sum(ints, {0})), (std::vector<int64_t>{9, 12}));
  Tensor e = ops::zeros({0, 3}, DType::f64);
  EXPECT_EQ(ops::to_vector<double>(ops::sum(e, {0})), (std::vector<double>{0, 0, 0}));
  EXPECT_TRUE(std::isnan(ops::to_vector<double>(ops::mean(e, {0}))[0]));
  EXPECT_EQ(ops::sum(e, {1}).sizes(), (Shape{0}));
}

TEST(Reduce, IntegerSumIsI64AndMeanNeedsFloat) {
  Tensor i = ops::from_vector<int32_t>({1, 2, 3, 4}, {2, 2});
  Tensor s = ops::sum(i, {1});
  EXPECT_EQ(s.dtype(), DType::i64);
  EXPECT_EQ(ops::to_vector<int64_t>(s), (std::vector<int64_t>{3, 7}));
  Tensor b = ops::to(i, DType::b8);
  EXPECT_EQ(ops::item(ops::sum(b)), 4.0);
  EXPECT_TRUE(throws_with([&] { ops::mean(i); }, {"mean", "floating", "i32"}));
  EXPECT_TRUE(throws_with([&] { ops::sum(i, {2}); }, {"sum", "dimension 2", "[2, 2]"}));
  EXPECT_TRUE(throws_with([&] { ops::sum(i, {1, -1}); }, {"sum", "repeated"}));
}

TEST(Reduce, MaxReturnsValuesAndFirstIndexOfTies) {
  Tensor x = ops::from_vector<double>({1, 5, 5, 2, -1, -3, -1, -7}, {2, 4});
  auto [v, i] = ops::max(x, 1);
  EXPECT_EQ(ops::to_vector<double>(v), (std::vector<double>{5, -1}));
  EXPECT_EQ(ops::to_vector<int64_t>(i), (std::vector<int64_t>{1, 0}));
  auto [v0, i0] = ops::max(x, 0, true);
  EXPECT_EQ(v0.sizes(), (Shape{1, 4}));
  EXPECT_EQ(ops::to_vector<int64_t>(i0), (std::vector<int64_t>{0, 0, 0, 0}));
  Tensor n = ops::from_vector<float>({1, NAN, 3}, {3});
  EXPECT_TRUE(std::isnan(ops::item(std::get<0>(ops::max(n, 0)))));
  EXPECT_EQ(ops::item(ops::amax(x)), 5.0);
  EXPECT_TRUE(throws_with([&] { ops::max(ops::zeros({2, 0}), 1); }, {"max", "empty", "[2, 0]"}));
}

TEST(Reduce, Gradchecks) {
  Tensor x = test::param({2, 3, 4}, -1, 1, 54);
  for (std::vector<int64_t> dims : {std::vector<int64_t>{}, {1}, {0, 2}})
    for (bool keep : {false, true}) {
      EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return sum(in[0], dims, keep); }, {x}));
      EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return mean(in[0], dims, keep); }, {x}));
      EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return var(in[0], dims, keep); }, {x}));
    }
  // max: well-separated distinct values so the argmax is stable under the finite-difference step
  std::vector<double> vals;
  for (int i = 0; i < 12; ++i) vals.push_back(static_cast<double>((i * 7) % 12) * 0.1);
  Tensor m = ops::from_vector<double>(vals, {3, 4});
  m.set_requires_grad(true);
  for (int64_t d : {0, 1})
    for (bool keep : {false, true})
      EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return std::get<0>(max(in[0], d, keep)); }, {m}));
  Tensor m2 = ops::detach(m);
  m2.set_requires_grad(true);
  backward(sum(std::get<0>(max(m2, 1))));
  // row maxima of [[0, .7, .2, .9], [.4, 1.1, .6, .1], [.8, .3, 1.0, .5]]: columns 3, 1, 2
  EXPECT_EQ(ops::to_vector<double>(m2.grad()), (std::vector<double>{0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0}));
}

}  // namespace
}  // namespace strand
