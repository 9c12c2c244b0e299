// Recomputed saved outputs (autograd/node.h): an output its producer can recompute from what it
// saved anyway is not kept by the op that saves it. Checked: the memory held between forward and
// backward drops by exactly those outputs, the gradients are bit for bit those of keeping them,
// and in-place changes are handled as documented.
#include "autograd/node.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::throws_with;

constexpr int64_t N = 32, D = 64, F = 128;  // every tensor a multiple of 64 bytes: no rounding

struct Leaves {
  Tensor x, w, b, W1, W2, w2, c;
};

Leaves make_leaves() {
  Generator g{7, 0};
  auto leaf = [&](Shape s) {
    Tensor t = ops::randn(s, {}, &g);
    t.set_requires_grad(true);
    return t;
  };
  Leaves l{leaf({N, D}), leaf({D}), leaf({D}), leaf({F, D}), leaf({D, F}), leaf({D}), ops::randn({N, D}, {}, &g)};
  return l;
}

// layer_norm -> linear -> gelu -> linear -> rms_norm -> dropout -> silu, times the rms_norm output.
Tensor forward(const Leaves& l) {
  Generator drop{11, 0};
  Tensor h = layer_norm(l.x, l.w, l.b);        // saved by the linear: recomputed
  Tensor a = linear(h, l.W1);                  // saved by gelu (its input)
  Tensor o = linear(gelu(a), l.W2);            // gelu's output saved by the linear: recomputed
  Tensor r = rms_norm(o, l.w2);                // saved by dropout (x recomputable) and by the product
  Tensor d = dropout(r, 0.25, true, &drop);    // saved by silu: recomputed from r's recipe
  return sum(silu(d) * r * l.c);               // both factors of silu(d) * r saved: recomputed
}

struct Outcome {
  int64_t held_bytes;  // live between the end of the forward and the backward, beyond the leaves
  std::vector<Tensor> grads;
  double loss;
};

Outcome run(bool recompute) {
  autograd::set_recompute_enabled(recompute);
  Leaves l = make_leaves();
  const int64_t before = cpu_allocator_stats().live_bytes;
  Tensor loss = forward(l);
  Outcome r{cpu_allocator_stats().live_bytes - before, {}, ops::item(loss)};
  backward(loss);
  for (const Tensor& t : {l.x, l.w, l.b, l.W1, l.W2, l.w2}) r.grads.push_back(t.grad());
  autograd::set_recompute_enabled(true);
  return r;
}

TEST(Recompute, SavedActivationsHoldNoMemoryAndGradientsAreBitForBitTheSame) {
  const Outcome kept = run(false), recomputed = run(true);
  // Freed: h, gelu(a) [N, F], d, silu(d), and r (held by the product, the dropout and nothing else).
  const int64_t f32 = 4;
  EXPECT_EQ(kept.held_bytes - recomputed.held_bytes, f32 * (N * D + N * F + N * D + N * D + N * D));
  EXPECT_EQ(kept.loss, recomputed.loss);
  for (size_t i = 0; i < kept.grads.size(); ++i) EXPECT_TRUE(allclose(kept.grads[i], recomputed.grads[i], 0, 0)) << i;
}

TEST(Recompute, OpsThatNeedNothingSaveNothing) {
  // x * a, x + a, -x: the backward reads only the incoming gradient, so x is not kept.
  Leaves l = make_leaves();
  Tensor a = linear(l.x, l.W1);
  const int64_t before = cpu_allocator_stats().live_bytes;
  Tensor y = -(a * 0.5 + 1.0);
  a = Tensor();
  EXPECT_EQ(cpu_allocator_stats().live_bytes - before, 0);  // a freed, y as large alive
  backward(sum(y * 3.0));
  // d/da = -1.5 everywhere; a = x W1^T, so dW1 = (-1.5)^T x.
  EXPECT_TRUE(allclose(l.W1.grad(), ops::matmul(ops::full({F, N}, -1.5), l.x), 1e-5, 1e-5));
}

TEST(Recompute, AChangeAfterSavingDoesNotReachTheBackwardButOneBeforeDoes) {
  Leaves l = make_leaves();
  Tensor ref_grad;
  {
    Tensor g = gelu(linear(l.x, l.W1));
    backward(sum(linear(g, l.W2) * l.c));
    ref_grad = l.W2.grad();
    l.W2.set_grad(Tensor());
  }
  // After the linear saved g: the backward sees the values the linear used (kept, this is PyTorch's
  // in-place error instead).
  Tensor g = gelu(linear(l.x, l.W1));
  Tensor y = sum(linear(g, l.W2) * l.c);
  ops::fill_(g, 0);
  backward(y);
  EXPECT_TRUE(allclose(l.W2.grad(), ref_grad, 0, 0));
  l.W2.set_grad(Tensor());
  {
    autograd::set_recompute_enabled(false);
    Tensor g2 = gelu(linear(l.x, l.W1));
    Tensor y2 = sum(linear(g2, l.W2) * l.c);
    ops::fill_(g2, 0);
    autograd::set_recompute_enabled(true);
    EXPECT_TRUE(throws_with([&] { backward(y2); }, {"linear", "modified by an in-place operation"}));
  }
  // Before saving: the output no longer equals its recipe, so it is kept as it is.
  Tensor g3 = gelu(linear(l.x, l.W1));
  ops::fill_(g3, 2);
  backward(sum(linear(g3, l.W2) * l.c));
  EXPECT_TRUE(allclose(l.W2.grad(), ops::matmul(ops::transpose(l.c, 0, 1), ops::full({N, F}, 2.0)), 1e-5, 1e-5));
}

TEST(Recompute, ChangingTheProducersInputIsStillAnErrorAndRetainGraphWorks) {
  Leaves l = make_leaves();
  Tensor a = linear(l.x, l.W1);
  Tensor y = sum(linear(gelu(a), l.W2) * l.c);
  ops::fill_(a, 0);  // gelu's own saved input: neither gelu's backward nor the recipe can use it
  EXPECT_TRUE(throws_with([&] { backward(y); }, {"gelu", "modified by an in-place operation"}));

  Tensor y2 = sum(linear(gelu(linear(l.x, l.W1)), l.W2) * l.c);
  backward(y2, {}, /*retain_graph=*/true);
  const Tensor once = ops::clone(l.W2.grad());
  backward(y2);
  EXPECT_TRUE(allclose(l.W2.grad(), ops::mul(once, 2.0), 0, 0));
  EXPECT_TRUE(throws_with([&] { backward(y2); }, {"second time", "retain_graph"}));
}

}  // namespace
}  // namespace strand
