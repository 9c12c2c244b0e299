// The fused softmax pooling (Enformer's AttentionPool) against the composed ops the model used
// before (sum over each window of x * softmax(logits)), its gradients by finite differences and
// against the composed ops' gradients, windows of 2 and 3, dtypes, and bad shapes.
#include <gtest/gtest.h>

#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::uniform;

// [B, L, C] -> [B, L / w, C] through the composed differentiable ops.
Tensor composed(const Tensor& x, const Tensor& l, int64_t w) {
  const int64_t B = x.size(0), n = x.size(1) / w, C = x.size(2);
  return sum(reshape(x, {B, n, w, C}) * softmax(reshape(l, {B, n, w, C}), 2), {2});
}

TEST(SoftmaxPool, MatchesTheComposedOps) {
  for (int64_t w : {2, 3}) {
    // logits over a wide range, so the window's max matters
    Tensor x = uniform({2, 6 * w, 19}, -2, 2, 1), l = uniform({2, 6 * w, 19}, -30, 30, 2);
    EXPECT_TRUE(allclose(ops::softmax_pool(x, l, w), composed(x, l, w), 1e-14, 1e-14)) << w;
    test::expect_dtypes([w](const std::vector<Tensor>& in) { return ops::softmax_pool(in[0], in[1], w); },
                        [w](const std::vector<Tensor>& in) { return composed(in[0], in[1], w); }, {x, l});
  }
}

TEST(SoftmaxPool, GradientsMatchFiniteDifferencesAndTheComposedOps) {
  for (int64_t w : {2, 3}) {
    EXPECT_TRUE(test::grad_ok([w](const std::vector<Tensor>& in) { return softmax_pool(in[0], in[1], w); },
                              {test::param({2, 2 * w, 5}, -1, 1, 3), test::param({2, 2 * w, 5}, -3, 3, 4)}))
        << w;
    // f32, the channel count not a multiple of the vector width
    Tensor x = ops::to(uniform({3, 4 * w, 21}, -1, 1, 5), DType::f32), l = ops::to(uniform({3, 4 * w, 21}, -5, 5, 6), DType::f32);
    Tensor g = ops::to(uniform({3, 4, 21}, -1, 1, 7), DType::f32);
    auto grads = [&](bool fused) {
      Tensor xl = ops::clone(x).set_requires_grad(true), ll = ops::clone(l).set_requires_grad(true);
      backward(sum((fused ? softmax_pool(xl, ll, w) : composed(xl, ll, w)) * g));
      return std::make_pair(xl.grad(), ll.grad());
    };
    const auto [gx, gl] = grads(true);
    const auto [rx, rl] = grads(false);
    EXPECT_TRUE(allclose(gx, rx, 1e-6, 1e-5)) << w;
    EXPECT_TRUE(allclose(gl, rl, 1e-6, 1e-5)) << w;
  }
}

TEST(SoftmaxPool, HalfOperandsUnderAutocastAreKeptAsTheyAreAndGiveTheF32PathsValues) {
  // Under bf16 autocast the node keeps the bf16 operands (not f32 copies), the result is f32 and
  // the gradients are the f32 path's rounded once: bit for bit what casting to f32 first gives.
  for (DType dt : {DType::bf16, DType::f16})
    for (int64_t w : {2, 3}) {
      const Tensor x = ops::to(uniform({2, 4 * w, 16}, -2, 2, 8), dt), l = ops::to(uniform({2, 4 * w, 16}, -9, 9, 9), dt);
      const Tensor g = ops::to(uniform({2, 4, 16}, -1, 1, 10), DType::f32);
      Tensor xh = ops::clone(x).set_requires_grad(true), lh = ops::clone(l).set_requires_grad(true);
      Tensor y;
      int64_t held = 0;
      {
        AutocastGuard autocast(true);
        const int64_t before = cpu_allocator_stats().live_bytes;
        y = softmax_pool(xh, lh, w);
        held = cpu_allocator_stats().live_bytes - before;
      }
      EXPECT_EQ(y.dtype(), DType::f32);
      EXPECT_EQ(held, 4 * 2 * 4 * 16) << "only the f32 result: no f32 copy of x or logits is kept";
      backward(sum(y * g));
      Tensor xf = ops::to(x, DType::f32).set_requires_grad(true), lf = ops::to(l, DType::f32).set_requires_grad(true);
      const Tensor yf = softmax_pool(xf, lf, w);
      backward(sum(yf * g));
      EXPECT_TRUE(allclose(y, yf, 0, 0)) << dtype_name(dt) << " " << w;
      ASSERT_EQ(xh.grad().dtype(), dt);
      EXPECT_TRUE(allclose(xh.grad(), ops::to(xf.grad(), dt), 0, 0)) << dtype_name(dt) << " " << w;
      EXPECT_TRUE(allclose(lh.grad(), ops::to(lf.grad(), dt), 0, 0)) << dtype_name(dt) << " " << w;
    }
  // Without autocast half operands give a result of their own dtype; mixed dtypes still work.
  const Tensor xb = ops::to(uniform({1, 4, 8}, -1, 1, 11), DType::bf16), lb = ops::to(uniform({1, 4, 8}, -1, 1, 12), DType::bf16);
  EXPECT_EQ(ops::softmax_pool(xb, lb, 2).dtype(), DType::bf16);
  EXPECT_TRUE(allclose(ops::softmax_pool(xb, ops::to(lb, DType::f32), 2), ops::to(ops::softmax_pool(xb, lb, 2, DType::f32), DType::bf16), 0, 0));
}

TEST(SoftmaxPool, BadShapesAreClearErrors) {
  Tensor x = uniform({1, 6, 4}), l = uniform({1, 6, 4});
  EXPECT_TRUE(test::throws_with([&] { ops::softmax_pool(x, l, 4); }, {"length 6", "window 4"}));
  EXPECT_TRUE(test::throws_with([&] { ops::softmax_pool(x, uniform({1, 6, 3}), 2); }, {"[1, 6, 4]", "[1, 6, 3]"}));
  EXPECT_TRUE(test::throws_with([&] { ops::softmax_pool_backward(uniform({1, 2, 4}), x, l, 2); }, {"gradient [1, 2, 4]"}));
}

}  // namespace
}  // namespace strand
