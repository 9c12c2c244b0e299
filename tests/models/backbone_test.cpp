// Shared pieces of the backbones: rotary embedding (tables, split-half rotation, partial rotary,
// gradients) and masked mean pooling, against hand computation.
#include <cmath>

#include "models/backbone.h"
#include "tests/test_util.h"

namespace strand::models {
namespace {

using test::allclose;
using test::throws_with;

TEST(Rotary, InvFreqAndTablesAsTorchComputesThem) {
  Tensor inv = rotary_inv_freq(8);
  EXPECT_EQ(inv.dtype(), DType::f32);
  auto v = ops::to_vector<double>(inv);
  ASSERT_EQ(v.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(v[i], 1.0 / std::pow(10000.0, 2.0 * i / 8), 1e-7);
  RotaryTables t = rotary_tables(inv, 3);
  EXPECT_EQ(t.cos.sizes(), (Shape{3, 8}));
  auto c = ops::to_vector<double>(t.cos), s = ops::to_vector<double>(t.sin);
  for (int p = 0; p < 3; ++p)
    for (int i = 0; i < 8; ++i) {  // emb = cat(freqs, freqs)
      EXPECT_NEAR(c[p * 8 + i], std::cos(p * v[i % 4]), 1e-6);
      EXPECT_NEAR(s[p * 8 + i], std::sin(p * v[i % 4]), 1e-6);
    }
  EXPECT_TRUE(throws_with([] { rotary_inv_freq(7); }, {"even", "7"}));
}

TEST(Rotary, SplitHalfRotationPartialDimsAndGradient) {
  // x [1, 1, T=2, hd=6] with rotary over the first 4 dims: pairs (0,2) and (1,3) rotate, 4 and 5 pass.
  Tensor x = test::uniform({1, 1, 2, 6}, -1, 1, 3);
  RotaryTables t = rotary_tables(ops::from_vector<float>({0.5f, 0.25f}, {2}), 2, DType::f64);
  Tensor y = apply_rotary(x, t);
  auto X = ops::to_vector<double>(x), Y = ops::to_vector<double>(y);
  for (int p = 0; p < 2; ++p) {
    const double* xp = &X[p * 6];
    const double* yp = &Y[p * 6];
    for (int i = 0; i < 2; ++i) {
      const double a = p * (i == 0 ? 0.5 : 0.25);
      EXPECT_NEAR(yp[i], xp[i] * std::cos(a) - xp[i + 2] * std::sin(a), 1e-7);  // tables are fp32, as torch computes them
      EXPECT_NEAR(yp[i + 2], xp[i + 2] * std::cos(a) + xp[i] * std::sin(a), 1e-7);  // tables are fp32, as torch computes them
    }
    EXPECT_EQ(yp[4], xp[4]);
    EXPECT_EQ(yp[5], xp[5]);
  }
  EXPECT_TRUE(test::grad_ok([&](const std::vector<Tensor>& in) { return apply_rotary(in[0], t); },
                            {test::param({2, 3, 2, 6}, -1, 1, 4)}));
  EXPECT_TRUE(throws_with([&] { apply_rotary(test::uniform({1, 1, 3, 6}), t); }, {"rotary", "[1, 1, 3, 6]"}));
}

TEST(MaskedMean, CountsOnlyMaskedTokensAndHasGradients) {
  Tensor h = ops::from_vector<double>({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 3, 2});
  Tensor m = ops::from_vector<int64_t>({1, 1, 0, 1, 0, 0}, {2, 3});
  EXPECT_TRUE(allclose(masked_mean(h, m), ops::from_vector<double>({2, 3, 7, 8}, {2, 2}), 0, 0));
  EXPECT_TRUE(test::grad_ok([&](const std::vector<Tensor>& in) { return masked_mean(in[0], m); },
                            {test::param({2, 3, 2}, -1, 1, 5)}));
  EXPECT_TRUE(throws_with([&] { masked_mean(h, ops::ones({2, 2}, DType::i64)); }, {"masked_mean", "[2, 2]"}));
}

}  // namespace
}  // namespace strand::models
