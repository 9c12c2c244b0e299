// Recomputed saved outputs (autograd/node.h): an output its producer can recompute from what it
// saved anyway is not kept by the op that saves it. Checked: the memory held between forward and
// backward drops by exactly those outputs, the gradients are bit for bit those of keeping them,
// and in-place changes are handled as documented.
#include "autograd/autocast.h"
#include "autograd/node.h"
#include "nn/layers.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::throws_with;

constexpr int64_t N = 32, D = 64, F = 128;  // every tensor a multiple of 64 bytes: no rounding

// Sets recompute for a scope; on again afterwards, even when a check throws.
struct RecomputeMode {
  explicit RecomputeMode(bool on) { autograd::set_recompute_enabled(on); }
  ~RecomputeMode() { autograd::set_recompute_enabled(true); }
};

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
};

Outcome run(bool recompute, bool bf16 = false) {
  RecomputeMode mode(recompute);
  AutocastGuard autocast(bf16);
  Leaves l = make_leaves();
  const int64_t before = cpu_allocator_stats().live_bytes;
  Tensor loss = forward(l);
  Outcome r{cpu_allocator_stats().live_bytes - before, {}};
  backward(loss);
  for (const Tensor& t : {l.x, l.w, l.b, l.W1, l.W2, l.w2}) r.grads.push_back(t.grad());
  return r;
}

TEST(Recompute, SavedActivationsHoldNoMemoryAndGradientsAreBitForBitTheSame) {
  const Outcome kept = run(false), recomputed = run(true);
  // Freed: h, gelu(a) [N, F], d, silu(d), and r (held by the product, the dropout and nothing else).
  const int64_t f32 = 4;
  EXPECT_EQ(kept.held_bytes - recomputed.held_bytes, f32 * (N * D + N * F + N * D + N * D + N * D));
  for (size_t i = 0; i < kept.grads.size(); ++i) EXPECT_TRUE(allclose(kept.grads[i], recomputed.grads[i], 0, 0)) << i;
}

TEST(Recompute, UnderBf16AutocastTheCastCopiesAreRecomputedToo) {
  // The first linear takes a bf16 copy of the norm's output (a recomputable cast); gelu runs on
  // the linear's bf16 output.
  const Outcome kept = run(false, true), recomputed = run(true, true);
  // Freed: the bf16 copy of h and gelu's bf16 output; d, silu(d) and r in f32 (rms_norm's output).
  EXPECT_EQ(kept.held_bytes - recomputed.held_bytes, 2 * (N * D + N * F) + 4 * (3 * N * D));
  for (size_t i = 0; i < kept.grads.size(); ++i) EXPECT_TRUE(allclose(kept.grads[i], recomputed.grads[i], 0, 0)) << i;
}

TEST(Recompute, HalfPrecisionDropoutOverARecomputableInput) {
  // bf16 values through gelu and dropout's half-precision path into a linear.
  auto once = [](bool recompute) {
    RecomputeMode mode(recompute);
    Generator g{3, 0};
    Tensor x = ops::to(ops::randn({N, F}, {}, &g), DType::bf16), w = ops::to(ops::randn({D, F}, {}, &g), DType::bf16);
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    const int64_t before = cpu_allocator_stats().live_bytes;
    Generator drop{5, 0};
    Tensor loss = sum(to(linear(dropout(gelu(x), 0.3, true, &drop), w), DType::f32));
    const int64_t held = cpu_allocator_stats().live_bytes - before;
    backward(loss);
    return std::make_tuple(held, x.grad(), w.grad());
  };
  const auto [held_kept, gx_kept, gw_kept] = once(false);
  const auto [held, gx, gw] = once(true);
  EXPECT_EQ(held_kept - held, 2 * N * F);  // the dropout's bf16 output (no one keeps gelu's either way)
  EXPECT_TRUE(allclose(gx_kept, gx, 0, 0));
  EXPECT_TRUE(allclose(gw_kept, gw, 0, 0));
}

// Under bf16 autocast a GEMM saves the bf16 copy of its weight for the input's gradient. The copy
// of a parameter (frozen or trainable) is recast from the parameter in backward instead; that of
// any other tensor, which nothing else may hold, is kept.
struct CastOutcome {
  int64_t held_bytes;
  Tensor gx, gw2;
};
CastOutcome cast_run(bool recompute, bool change_frozen_weight = false) {
  RecomputeMode mode(recompute);
  AutocastGuard autocast(true);
  Generator g{5, 0};
  manual_seed(5);  // the layers' initialisation
  nn::Linear frozen(D, F, /*bias=*/false), trained(F, D, /*bias=*/false);
  frozen.freeze();
  Tensor x = ops::randn({N, D}, {}, &g).set_requires_grad(true);
  Tensor plain = ops::randn({D, D}, {}, &g);  // not a parameter: its copy is kept
  const int64_t before = cpu_allocator_stats().live_bytes;
  Tensor loss = sum(linear(trained.forward(frozen.forward(x)), plain));
  CastOutcome r{cpu_allocator_stats().live_bytes - before, {}, {}};
  if (change_frozen_weight) ops::fill_(frozen.weight, 0);
  backward(loss);
  r.gx = x.grad();
  r.gw2 = trained.weight.grad();
  return r;
}

TEST(Recompute, Bf16CopiesOfParametersAreRecastInBackward) {
  const CastOutcome kept = cast_run(false), recast = cast_run(true);
  EXPECT_EQ(kept.held_bytes - recast.held_bytes, 2 * (F * D + D * F));  // both weights' bf16 copies
  // What stays: the first linear's bf16 output (saved by the second for its weight's gradient) and
  // the bf16 copy of `plain`, which is no parameter.
  EXPECT_EQ(recast.held_bytes, 2 * N * F + 2 * D * D + 4 /* the f32 loss */);
  EXPECT_TRUE(allclose(kept.gx, recast.gx, 0, 0));
  EXPECT_TRUE(allclose(kept.gw2, recast.gw2, 0, 0));
  // A frozen parameter changed in place between forward and backward: its copy was not kept, so
  // that is the in-place error (it was harmless when the copy was kept).
  EXPECT_TRUE(throws_with([] { cast_run(true, true); }, {"cast of a frozen parameter", "modified by an in-place operation"}));
  EXPECT_NO_THROW(cast_run(false, true));
}

TEST(Recompute, ACopysRecipeGoesWhenItsDataIsReplaced) {
  // The bf16 copy of a frozen parameter carries a recipe; given other data (set_data, as
  // Module::to does), it must be saved as it now is, not recomputed from the parameter.
  manual_seed(3);
  nn::Linear frozen(D, F, /*bias=*/false);
  frozen.freeze();
  Tensor w16 = to(frozen.weight, DType::bf16);
  w16.set_data(ops::to(ops::full({F, D}, 0.5), DType::bf16));
  Generator g{4, 0};
  Tensor x = ops::to(ops::randn({N, D}, {}, &g), DType::bf16).set_requires_grad(true);
  backward(sum(linear(x, w16)));
  EXPECT_TRUE(allclose(x.grad(), ops::full({N, D}, 0.5 * F, DType::bf16), 0, 0));  // column sums of w16
}

TEST(Recompute, ChainsOfRecipesStopAtTheMaximumDepth) {
  // gelu(gelu(...)): each gelu's recipe reads the previous output, itself recomputed, so the
  // chain deepens by one per op. The fourth would be 4 recipes deep: it is kept instead, and the
  // fifth starts again from it.
  static_assert(autograd::FnNode::kMaxRecomputeDepth == 3);
  auto once = [](bool recompute) {
    RecomputeMode mode(recompute);
    Leaves l = make_leaves();
    Tensor a = linear(l.x, l.W1);  // [N, F], kept by the first gelu either way
    const int64_t before = cpu_allocator_stats().live_bytes;
    Tensor y = a;
    for (int i = 0; i < 5; ++i) y = gelu(y);
    Tensor loss = sum(linear(y, l.W2) * l.c);
    y = a = Tensor();
    const int64_t held = cpu_allocator_stats().live_bytes - before;
    backward(loss);
    return std::make_tuple(held, l.W1.grad(), l.W2.grad());
  };
  const auto [held_kept, g1_kept, g2_kept] = once(false);
  const auto [held, g1, g2] = once(true);
  EXPECT_EQ(held_kept - held, 4 * (4 * N * F));  // gelu outputs 1, 2, 3 and 5 recomputed; 4 kept
  EXPECT_TRUE(allclose(g1_kept, g1, 0, 0));
  EXPECT_TRUE(allclose(g2_kept, g2, 0, 0));
}

TEST(Recompute, BatchNormOutputsAreRecomputedFromTheSavedStatistics) {
  // batch_norm -> gelu -> linear (Enformer's conv block): gelu keeps its input, the norm's output,
  // which is one pass over the saved input with the saved statistics. In training the recipe
  // computes no statistics, so the running statistics are updated once, by the forward.
  for (DType xd : {DType::f32, DType::bf16}) {  // bf16: normalised in f32 and rounded, as the forward
    auto once = [xd](bool recompute) {
      RecomputeMode mode(recompute);
      Leaves l = make_leaves();
      Tensor x = ops::to(l.x, xd).set_requires_grad(true);
      Tensor w1 = ops::to(l.W1, xd).set_requires_grad(true);
      Tensor rm = ops::zeros({D}), rv = ops::ones({D});
      const int64_t before = cpu_allocator_stats().live_bytes;
      Tensor y = linear(gelu(batch_norm(x, l.w, l.b, rm, rv, /*training=*/true, 0.1, 1e-5)), w1);
      const int64_t held = cpu_allocator_stats().live_bytes - before;
      const Tensor rm_after_forward = ops::clone(rm);
      backward(sum(to(y, DType::f32) * 0.5));
      EXPECT_TRUE(allclose(rm, rm_after_forward, 0, 0));
      return std::make_tuple(held, x.grad(), l.w.grad(), l.b.grad(), w1.grad());
    };
    const auto [held_kept, gx_k, gw_k, gb_k, g1_k] = once(false);
    const auto [held, gx, gw, gb, g1] = once(true);
    const int64_t e = static_cast<int64_t>(dtype_size(xd));
    EXPECT_EQ(held_kept - held, 2 * e * N * D) << dtype_name(xd);  // the norm's and gelu's outputs
    EXPECT_TRUE(allclose(gx_k, gx, 0, 0)) << dtype_name(xd);
    EXPECT_TRUE(allclose(gw_k, gw, 0, 0)) << dtype_name(xd);
    EXPECT_TRUE(allclose(gb_k, gb, 0, 0)) << dtype_name(xd);
    EXPECT_TRUE(allclose(g1_k, g1, 0, 0)) << dtype_name(xd);
  }
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
    Tensor y2;
    {
      RecomputeMode off(false);
      Tensor g2 = gelu(linear(l.x, l.W1));
      y2 = sum(linear(g2, l.W2) * l.c);
      ops::fill_(g2, 0);
    }
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
