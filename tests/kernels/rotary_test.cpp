// The fused rotary op against plain loops of x * cos + rotate_half(x) * sin (the composed form the
// models used before), its gradient by finite differences with arbitrary (not half-symmetric)
// tables, strided inputs, partial rotary dims, dtypes and bad tables.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/functional.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::uniform;

Tensor reference(const Tensor& x_in, const Tensor& c_in, const Tensor& s_in) {
  const Tensor xc = ops::contiguous(ops::to(x_in, DType::f64));
  const std::vector<double> x = ops::to_vector<double>(xc), c = ops::to_vector<double>(c_in),
                            s = ops::to_vector<double>(s_in);
  const int64_t hd = x_in.size(-1), T = x_in.size(-2), rd = c_in.size(-1), h = rd / 2;
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / static_cast<size_t>(hd); ++r) {
    const int64_t t = static_cast<int64_t>(r) % T;
    const double* xr = x.data() + r * hd;
    for (int64_t i = 0; i < hd; ++i) {
      if (i >= rd) {
        y[r * hd + i] = xr[i];
        continue;
      }
      const double rot = i < h ? -xr[i + h] : xr[i - h];  // rotate_half = cat(-x2, x1)
      y[r * hd + i] = xr[i] * c[t * rd + i] + rot * s[t * rd + i];
    }
  }
  return ops::from_vector<double>(y, x_in.sizes());
}

TEST(Rotary, MatchesLoopsFullAndPartial) {
  for (int64_t rd : {8, 4}) {
    Tensor x = uniform({2, 3, 5, 8}, -1, 1, 1), c = uniform({5, rd}, -1, 1, 2), s = uniform({5, rd}, -1, 1, 3);
    EXPECT_TRUE(allclose(ops::rotary(x, c, s), reference(x, c, s), 1e-15, 1e-15)) << rd;
    test::expect_dtypes([](const std::vector<Tensor>& in) { return ops::rotary(in[0], in[1], in[2]); },
                        [](const std::vector<Tensor>& in) { return reference(in[0], in[1], in[2]); }, {x, c, s});
  }
}

TEST(Rotary, ReadsATransposedViewAndKeepsItsLayout) {
  Tensor base = uniform({2, 5, 3, 8}, -1, 1, 4);  // [B, T, H, D]
  Tensor x = ops::transpose(base, 1, 2);          // [B, H, T, D] view
  Tensor c = uniform({5, 8}, -1, 1, 5), s = uniform({5, 8}, -1, 1, 6);
  Tensor y = ops::rotary(x, c, s);
  EXPECT_TRUE(allclose(y, reference(x, c, s), 1e-15, 1e-15));
  EXPECT_TRUE(ops::transpose(y, 1, 2).is_contiguous());
}

TEST(Rotary, GradientMatchesFiniteDifferences) {
  // Arbitrary tables (real ones repeat each half): the backward must use the transposed map exactly.
  Tensor c = uniform({4, 6}, -1, 1, 7), s = uniform({4, 6}, -1, 1, 8);
  EXPECT_TRUE(test::grad_ok([&](const std::vector<Tensor>& in) { return rotary(in[0], c, s); },
                            {test::param({2, 4, 8}, -1, 1, 9)}));
  Tensor x = ops::transpose(uniform({2, 4, 3, 6}, -1, 1, 10), 1, 2);
  x.set_requires_grad(true);
  EXPECT_TRUE(test::grad_ok([&](const std::vector<Tensor>& in) { return rotary(in[0], c, s); }, {x}));
}

TEST(Rotary, BadTablesAreNamed) {
  Tensor x = uniform({2, 5, 8});
  EXPECT_TRUE(test::throws_with([&] { ops::rotary(x, uniform({4, 8}), uniform({4, 8})); }, {"rotary", "T = 5"}));
  EXPECT_TRUE(test::throws_with([&] { ops::rotary(x, uniform({5, 10}), uniform({5, 10})); }, {"rotary", "at most 8"}));
  EXPECT_TRUE(test::throws_with([&] { ops::rotary(x, uniform({5, 3}), uniform({5, 3})); }, {"rotary", "even"}));
}

}  // namespace
}  // namespace strand
