// bf16 autocast (autograd/autocast.h): which ops cast to what, that the casts are differentiable
// (parameter gradients come back f32), mixed-precision promotion, the guard, and checkpoint
// recomputation under the forward's autocast mode.
#include "autograd/autocast.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;

Tensor f32_leaf(const Shape& s, uint64_t seed) {
  Tensor t = ops::to(test::uniform(s, -1, 1, seed), DType::f32);
  t.set_requires_grad(true);
  return t;
}
Tensor round_bf16(const Tensor& t) { return ops::to(ops::to(ops::detach(t), DType::bf16), DType::f32); }

TEST(Autocast, OffByDefaultAndTheGuardRestores) {
  EXPECT_FALSE(autocast_enabled());
  {
    AutocastGuard on(true);
    EXPECT_TRUE(autocast_enabled());
    {
      AutocastGuard off(false);
      EXPECT_FALSE(autocast_enabled());
    }
    EXPECT_TRUE(autocast_enabled());
  }
  EXPECT_FALSE(autocast_enabled());
  Tensor x = f32_leaf({3, 4}, 1), w = f32_leaf({5, 4}, 2);
  EXPECT_EQ(linear(x, w).dtype(), DType::f32);  // no autocast: no cast
}

TEST(Autocast, GemmOpsRunInBf16OnRoundedOperands) {
  Tensor x = f32_leaf({2, 3, 8}, 1), w = f32_leaf({5, 8}, 2), b = f32_leaf({5}, 3);
  Tensor y;
  {
    AutocastGuard on(true);
    y = linear(x, w, b);
  }
  EXPECT_EQ(y.dtype(), DType::bf16);
  // The same as the f32 op on bf16-rounded operands, rounded once: one f32 GEMM, one rounding.
  Tensor ref = ops::to(ops::linear(round_bf16(x), round_bf16(w), round_bf16(b)), DType::bf16);
  EXPECT_TRUE(allclose(ops::to(y, DType::f32), ops::to(ref, DType::f32), 0, 0));

  Tensor a = f32_leaf({2, 4, 6}, 4), c = f32_leaf({6, 3}, 5);
  Tensor m, conv;
  Tensor cx = f32_leaf({2, 9, 4}, 6), cw = f32_leaf({3, 4, 5}, 7);
  {
    AutocastGuard on(true);
    m = matmul(a, c);
    conv = conv1d(cx, cw);
  }
  EXPECT_EQ(m.dtype(), DType::bf16);
  EXPECT_EQ(conv.dtype(), DType::bf16);
  EXPECT_TRUE(allclose(ops::to(m, DType::f32), ops::to(ops::to(ops::matmul(round_bf16(a), round_bf16(c)), DType::bf16), DType::f32), 0, 0));
  EXPECT_TRUE(allclose(ops::to(conv, DType::f32),
                       ops::to(ops::to(ops::conv1d(round_bf16(cx), round_bf16(cw), {}), DType::bf16), DType::f32), 0, 0));

  Tensor q = f32_leaf({1, 2, 5, 4}, 8), k = f32_leaf({1, 2, 6, 4}, 9), v = f32_leaf({1, 2, 6, 4}, 10);
  ops::AttentionParams p;
  p.scale = 0.5;
  Tensor att;
  {
    AutocastGuard on(true);
    att = attention(q, k, v, p);
  }
  EXPECT_EQ(att.dtype(), DType::bf16);
  Tensor att_ref = ops::fused_attention(round_bf16(q), round_bf16(k), round_bf16(v), p).out;
  EXPECT_TRUE(allclose(ops::to(att, DType::f32), ops::to(ops::to(att_ref, DType::bf16), DType::f32), 0, 0));
}

TEST(Autocast, StatisticsAndLossRunInF32) {
  Tensor xb = ops::to(test::uniform({4, 6}, -2, 2, 11), DType::bf16);
  Tensor w = f32_leaf({6}, 12), b = f32_leaf({6}, 13);
  Tensor rm = ops::zeros({6}), rv = ops::ones({6});
  AutocastGuard on(true);
  EXPECT_EQ(layer_norm(xb, w, b).dtype(), DType::f32);
  EXPECT_EQ(rms_norm(xb, w).dtype(), DType::f32);
  // batch_norm: bf16 in, statistics in f32, bf16 out (PyTorch's GPU batch_norm, outside the lists)
  const Tensor bn = batch_norm(xb, w, b, rm, rv, true);
  EXPECT_EQ(bn.dtype(), DType::bf16);
  Tensor rm2 = ops::zeros({6}), rv2 = ops::ones({6});
  EXPECT_TRUE(allclose(ops::to(bn, DType::f32),
                       ops::to(ops::to(ops::batch_norm(ops::to(xb, DType::f32), w, b, rm2, rv2, true, 0.1, 1e-5).y,
                                       DType::bf16), DType::f32), 0, 0));
  EXPECT_TRUE(allclose(rm, rm2, 0, 0));  // running statistics updated from the f32 statistics
  EXPECT_EQ(softmax(xb).dtype(), DType::f32);
  EXPECT_EQ(log_softmax(xb).dtype(), DType::f32);
  EXPECT_EQ(mse_loss(xb, ops::zeros({4, 6})).dtype(), DType::f32);
  // Computed from the bf16 values in f32: the same as the f32 op on the widened input.
  EXPECT_TRUE(allclose(softmax(xb), ops::softmax(ops::to(xb, DType::f32), -1), 0, 0));
  // sums, exp, log, rsqrt, pow, softplus: f32 too (PyTorch's fp32 lists)
  for (const Tensor& t : {sum(xb), exp(xb), log(abs(xb)), rsqrt(abs(xb)), pow(xb, 2.0), softplus(xb)})
    EXPECT_EQ(t.dtype(), DType::f32);
  // a count above 256 stays exact (bf16 holds integers up to 256 exactly)
  EXPECT_EQ(item(sum(ops::ones({1535}, DType::bf16))), 1535.0);
  // Other ops keep their input's dtype.
  EXPECT_EQ(gelu(xb).dtype(), DType::bf16);
  EXPECT_EQ(mean(xb).dtype(), DType::bf16);
}

TEST(Autocast, BatchNormOfAHalfInputKeepsItsDtypeAndGradients) {
  // f64 finite differences cannot see bf16; instead the bf16 path's gradients must equal the f32
  // op's gradients on the same (bf16-exact) input, rounded for the input's gradient.
  Tensor xb = ops::to(test::uniform({5, 3, 4}, -2, 2, 21), DType::bf16);
  xb.set_requires_grad(true);
  Tensor x32 = ops::to(ops::detach(xb), DType::f32);
  x32.set_requires_grad(true);
  Tensor w = f32_leaf({4}, 22), b = f32_leaf({4}, 23);
  Tensor w2 = ops::clone(ops::detach(w)), b2 = ops::clone(ops::detach(b));
  w2.set_requires_grad(true);
  b2.set_requires_grad(true);
  const Tensor up = ops::to(test::uniform({5, 3, 4}, -1, 1, 24), DType::bf16);
  backward(batch_norm(xb, w, b, {}, {}, true), up);
  backward(batch_norm(x32, w2, b2, {}, {}, true), ops::to(up, DType::f32));
  EXPECT_EQ(xb.grad().dtype(), DType::bf16);
  EXPECT_TRUE(allclose(ops::to(xb.grad(), DType::f32), ops::to(ops::to(x32.grad(), DType::bf16), DType::f32), 0, 0));
  EXPECT_TRUE(allclose(w.grad(), w2.grad(), 0, 0));
  EXPECT_TRUE(allclose(b.grad(), b2.grad(), 0, 0));
}

TEST(Autocast, DropoutOnBf16ScalesInF32AndRoundsOnce) {
  Tensor x = ops::to(test::uniform({4, 300}, -2, 2, 31), DType::bf16);
  x.set_requires_grad(true);
  Generator g1, g2;
  Tensor y = dropout(x, 0.1, true, &g1);
  EXPECT_EQ(y.dtype(), DType::bf16);
  // the same keep pattern as an f32 mask, the product in f32 with the unrounded f32 scale
  const Tensor mask = ops::dropout_mask({4, 300}, 0.1, TensorOptions(DType::f32), &g2);
  const Tensor want = ops::to(ops::mul(ops::to(ops::detach(x), DType::f32), mask), DType::bf16);
  EXPECT_TRUE(allclose(ops::to(y, DType::f32), ops::to(want, DType::f32), 0, 0));
  const Tensor up = ops::to(test::uniform({4, 300}, -1, 1, 32), DType::bf16);
  backward(y, up);
  EXPECT_EQ(x.grad().dtype(), DType::bf16);
  EXPECT_TRUE(allclose(ops::to(x.grad(), DType::f32),
                       ops::to(ops::to(ops::mul(ops::to(up, DType::f32), mask), DType::bf16), DType::f32), 0, 0));
}

TEST(Autocast, UndefinedOperandsAreErrorsNotCrashes) {
  EXPECT_TRUE(test::throws_with([] { add(Tensor(), ops::zeros({2})); }, {"add"}));
  EXPECT_TRUE(test::throws_with([] { concat({Tensor(), ops::zeros({2})}, 0); }, {"concat"}));
}

TEST(Autocast, F64IsNeverCast) {
  Tensor x = test::param({3, 4}, -1, 1, 1), w = test::param({2, 4}, -1, 1, 2);
  AutocastGuard on(true);
  EXPECT_EQ(linear(x, w).dtype(), DType::f64);
  EXPECT_EQ(softmax(x).dtype(), DType::f64);
  EXPECT_TRUE(test::throws_with([&] { add(x, ops::zeros({3, 4})); }, {"dtype mismatch", "f64", "f32"}));
}

TEST(Autocast, MixedPrecisionOperandsPromoteToF32) {
  Tensor a = f32_leaf({2, 3}, 1);
  Tensor bl = ops::to(test::uniform({3}, -1, 1, 2), DType::bf16);
  bl.set_requires_grad(true);
  for (auto op : {+[](const Tensor& x, const Tensor& y) { return add(x, y); },
                  +[](const Tensor& x, const Tensor& y) { return sub(x, y); },
                  +[](const Tensor& x, const Tensor& y) { return mul(x, y); },
                  +[](const Tensor& x, const Tensor& y) { return div(x, add(y, 3.0)); }}) {
    a.set_grad(Tensor());
    bl.set_grad(Tensor());
    Tensor y = op(a, bl);
    EXPECT_EQ(y.dtype(), DType::f32);
    backward(sum(y));
    EXPECT_EQ(a.grad().dtype(), DType::f32);
    EXPECT_EQ(bl.grad().dtype(), DType::bf16);  // each gradient in its tensor's dtype
  }
  EXPECT_EQ(concat({a, ops::to(ops::zeros({1, 3}), DType::bf16)}, 0).dtype(), DType::f32);
  EXPECT_EQ(where(ops::zeros({3}, DType::b8), bl, a).dtype(), DType::f32);
}

TEST(Autocast, GradientsReachF32ParametersAndApproximateTheF32Ones) {
  Tensor x = f32_leaf({4, 16}, 1), w1 = f32_leaf({12, 16}, 2), b1 = f32_leaf({12}, 3), w2 = f32_leaf({3, 12}, 4);
  Tensor g = f32_leaf({12}, 5), beta = f32_leaf({12}, 6);
  auto loss_of = [&] {
    Tensor h = gelu(linear(x, w1, b1));
    Tensor n = layer_norm(add(h, 1.0), g, beta);
    return mse_loss(linear(n, w2), ops::full({4, 3}, 0.25));
  };
  std::vector<Tensor> params{x, w1, b1, w2, g, beta};
  backward(loss_of());
  std::vector<Tensor> ref;
  for (Tensor& p : params) {
    ref.push_back(p.grad());
    p.set_grad(Tensor());
  }
  Tensor loss;
  {
    AutocastGuard on(true);
    loss = loss_of();
  }
  EXPECT_EQ(loss.dtype(), DType::f32);
  backward(loss);
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(params[i].grad().defined());
    EXPECT_EQ(params[i].grad().dtype(), DType::f32);
    EXPECT_TRUE(allclose(params[i].grad(), ref[i], 2e-2, 5e-2)) << "parameter " << i;
    EXPECT_FALSE(allclose(params[i].grad(), ref[i], 0, 0)) << "parameter " << i << ": bf16 did not run";
  }
}

TEST(Autocast, CheckpointRecomputesUnderTheForwardsMode) {
  Tensor x = f32_leaf({3, 8}, 1), w = f32_leaf({8, 8}, 2);
  auto block = [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{gelu(linear(in[0], w))}; };
  Tensor plain, ck;
  {
    AutocastGuard on(true);
    plain = sum(block({x})[0]);
  }
  backward(plain);
  Tensor gx = x.grad(), gw = w.grad();
  x.set_grad(Tensor());
  w.set_grad(Tensor());
  {
    AutocastGuard on(true);
    ck = sum(checkpoint(block, {x})[0]);
  }
  backward(ck);  // outside the guard: the recomputation must still cast as the forward did
  EXPECT_TRUE(allclose(x.grad(), gx, 0, 0));
  EXPECT_TRUE(allclose(w.grad(), gw, 0, 0));
}

}  // namespace
}  // namespace strand
