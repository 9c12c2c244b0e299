// The engine: fan-in, shared leaves, accumulation, retain_graph, leaf hooks, version checks,
// non-scalar roots, no-grad mode, and checkpoint equivalence.
#include "autograd/node.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::throws_with;

Tensor vec(std::vector<double> v) { return ops::from_vector<double>(v, {static_cast<int64_t>(v.size())}); }
Tensor leaf(std::vector<double> v) {
  Tensor t = vec(std::move(v));
  t.set_requires_grad(true);
  return t;
}

TEST(Engine, DiamondGraphSumsFanIn) {
  // y = 2x; z = sum((y + 1) * (3y))  =>  dz/dx = 2 * (3y + 3(y + 1)) = 12y + 6 = 24x + 6
  Tensor x = leaf({1, -2, 0.5});
  Tensor y = x * 2.0;
  Tensor z = sum((y + 1.0) * (y * 3.0));
  backward(z);
  EXPECT_TRUE(allclose(x.grad(), vec({30, -42, 18}), 0, 1e-15));
}

TEST(Engine, SharedLeafAndSelfProduct) {
  Tensor x = leaf({3, -1});
  backward(sum(x * x + x));
  EXPECT_TRUE(allclose(x.grad(), vec({7, -1}), 0, 0));
}

TEST(Engine, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = leaf({1, 2});
  backward(sum(x * 3.0));
  backward(sum(x * x));
  EXPECT_TRUE(allclose(x.grad(), vec({5, 7}), 0, 0));
  x.set_grad(Tensor());
  backward(sum(x));
  EXPECT_TRUE(allclose(x.grad(), vec({1, 1}), 0, 0));
}

TEST(Engine, GradientDoesNotAliasOtherLeaves) {
  // add's backward hands the same gradient to both inputs; each leaf must own its copy.
  Tensor a = leaf({1, 1}), b = leaf({2, 2});
  backward(sum(a + b));
  ops::fill_(a.grad(), 100);
  EXPECT_TRUE(allclose(b.grad(), vec({1, 1}), 0, 0));
}

TEST(Engine, FanInSumsIntoAnUnsharedBufferOnlyWhenItIsSafe) {
  // The engine adds a second gradient in place only into memory no one else sees. Nodes run
  // newest first, so the order of creation sets which gradient reaches a buffer first.
  {  // add hands both inputs one gradient tensor: the first to land in v's buffer is shared
    Tensor w = leaf({2, 5});
    Tensor v = w * 1.0;
    Tensor s = v + v;                   // both of its inputs are v
    Tensor t = s * 3.0;                 // older: its gradient reaches s second
    Tensor y = sum((s + v) * t);        // y = 18 v^2
    backward(y);
    EXPECT_TRUE(allclose(w.grad(), vec({72, 180}), 0, 0));
  }
  {  // a broadcast (stride-0) gradient, owned by no one else, lands first in u's buffer
    Tensor x = leaf({1, -2, 3});
    Tensor u = x * 1.0;
    Tensor sq = sum(u * u);             // its gradient 2u reaches u's buffer second
    Tensor y = ops::clone(u);
    autograd::record("broadcast_one", {u}, {y}, {}, [](autograd::FnNode&, const std::vector<Tensor>&) {
      return std::vector<Tensor>{ops::expand(ops::full({1}, 1.0, DType::f64), {3})};
    });
    backward(sum(y) + sq);              // d/du = 1 + 2u
    EXPECT_TRUE(allclose(x.grad(), vec({3, -3, 7}), 0, 0));
  }
}

TEST(Engine, RetainGraphAllowsASecondPass) {
  Tensor x = leaf({2});
  Tensor y = exp(x) * x;
  backward(y, {}, /*retain_graph=*/true);
  backward(y);
  const double g = std::exp(2.0) * 3;  // d/dx x e^x = (x + 1) e^x
  EXPECT_NEAR(ops::item(x.grad()), 2 * g, 1e-12);
  EXPECT_TRUE(throws_with([&] { backward(y); }, {"second time", "retain_graph"}));
}

TEST(Engine, NonScalarRootNeedsExplicitGradient) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = x * x;
  EXPECT_TRUE(throws_with([&] { backward(y); }, {"[3]", "pass one"}));
  backward(y, vec({1, 0, -1}));
  EXPECT_TRUE(allclose(x.grad(), vec({2, 0, -6}), 0, 0));
  EXPECT_TRUE(throws_with([&] { backward(x * 2.0, vec({1, 2})); }, {"gradient shape [2]", "root shape [3]"}));
}

TEST(Engine, MultipleRoots) {
  Tensor x = leaf({1, 2});
  backward({sum(x), sum(x * x)}, {});
  EXPECT_TRUE(allclose(x.grad(), vec({3, 5}), 0, 0));
}

TEST(Engine, LeafHooksFireOnceWithTheFinalGradientLastLayerFirst) {
  Tensor w1 = leaf({0.5, -1}), w2 = leaf({2, 3}), x = vec({1, 1});
  std::vector<std::string> order;
  Tensor seen;
  w1.register_hook([&](const Tensor& g) { order.push_back("w1"); });
  w2.register_hook([&](const Tensor& g) {
    order.push_back("w2");
    seen = ops::clone(g);
  });
  w2.register_hook([&](const Tensor&) { order.push_back("w2-second"); });
  // w2 is used twice (fan-in): its hook must still fire once, after both contributions.
  Tensor h = tanh(x * w1);
  Tensor out = sum(h * w2 + w2 * w2);
  backward(out);
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0], "w2");  // the layer nearest the loss is final first (what DDP overlaps on)
  EXPECT_EQ(order[1], "w2-second");
  EXPECT_EQ(order[2], "w1");
  EXPECT_TRUE(allclose(seen, w2.grad(), 0, 0));
  auto h_v = ops::to_vector<double>(h);
  EXPECT_TRUE(allclose(w2.grad(), vec({h_v[0] + 4, h_v[1] + 6}), 1e-15, 0));
  EXPECT_TRUE(throws_with([&] { vec({1}).register_hook([](const Tensor&) {}); }, {"does not require grad"}));
  EXPECT_TRUE(throws_with([&] { (w1 * 2.0).register_hook([](const Tensor&) {}); }, {"leaf"}));
}

TEST(Engine, InPlaceChangeOfASavedTensorIsAClearError) {
  Tensor w = leaf({1, 2});
  Tensor c = vec({3, 4});  // saved by mul for w's gradient
  Tensor y = sum(w * c);
  ops::fill_(c, 0);
  EXPECT_TRUE(throws_with([&] { backward(y); }, {"mul", "modified by an in-place operation", "version"}));
  // A change through a view of the saved tensor is caught too (views share the version counter).
  Tensor d = vec({3, 4});
  Tensor y2 = sum(exp(w) * d);
  ops::fill_(ops::narrow(d, 0, 1, 1), 7);
  EXPECT_TRUE(throws_with([&] { backward(y2); }, {"in-place"}));
  // Modifying a tensor that no node saved is fine.
  Tensor e = vec({1, 1});
  Tensor y3 = sum(w + e);
  ops::fill_(e, 5);
  backward(y3);
}

TEST(Engine, NoGradModeRecordsNothing) {
  Tensor x = leaf({1});
  {
    NoGradGuard ng;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
    EXPECT_FALSE(grad_enabled());
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_TRUE((x * 2.0).requires_grad());
  EXPECT_FALSE((vec({1}) * 2.0).requires_grad());
}

TEST(Engine, RequiresGradOnlyOnFloatingLeaves) {
  EXPECT_TRUE(throws_with([] { ops::arange(0, 3).set_requires_grad(true); }, {"floating", "i64"}));
  Tensor x = leaf({1});
  Tensor y = x * 2.0;
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(throws_with([&] { y.set_requires_grad(false); }, {"leaf"}));
  EXPECT_TRUE(throws_with([] { backward(vec({1})); }, {"does not require grad"}));
}

TEST(Engine, PartialGraphsOnlyReachLeavesThatNeedGrad) {
  Tensor a = leaf({1, 2}), b = vec({3, 4});
  backward(sum(matmul(reshape(a, {1, 2}), reshape(b, {2, 1}))));
  EXPECT_TRUE(allclose(a.grad(), vec({3, 4}), 0, 0));
  EXPECT_FALSE(b.grad().defined());
}

TEST(Engine, UnusedOutputOfAMultiOutputOpGetsZeros) {
  Tensor x = leaf({1, 5, 2, 8});
  auto [v, i] = max(reshape(x, {2, 2}), 1);  // the indices output gets no gradient
  backward(sum(v * 2.0));
  EXPECT_TRUE(allclose(x.grad(), vec({0, 2, 0, 2}), 0, 0));
}

// A two-layer block with a captured parameter and dropout, run plainly and under checkpoint.
struct Block {
  Tensor w1, w2;
  std::vector<Tensor> operator()(const std::vector<Tensor>& in) const {
    Tensor h = gelu(matmul(in[0], w1));
    h = dropout(h, 0.3, true);
    return {layer_norm(matmul(h, w2), Tensor(), Tensor()) + in[1]};
  }
};

TEST(Checkpoint, GradientsEqualThePlainGraphBitForBit) {
  auto run = [](bool ckpt) {
    manual_seed(123);
    Block blk{test::param({4, 6}, -1, 1, 71), test::param({6, 5}, -1, 1, 72)};
    Tensor x = test::param({3, 4}, -1, 1, 73), r = test::param({3, 5}, -1, 1, 74);
    std::vector<Tensor> out = ckpt ? checkpoint(blk, {x, r}) : blk({x, r});
    Tensor loss = sum(out[0] * out[0]);
    backward(loss);
    return std::vector<Tensor>{loss, x.grad(), r.grad(), blk.w1.grad(), blk.w2.grad()};
  };
  auto plain = run(false), ck = run(true);
  for (size_t i = 0; i < plain.size(); ++i) {
    ASSERT_TRUE(ck[i].defined()) << i;
    EXPECT_EQ(ops::to_vector<double>(ck[i]), ops::to_vector<double>(plain[i])) << "tensor " << i;
  }
}

TEST(Checkpoint, ReachesCapturedParametersWhenNoInputNeedsGrad) {
  Tensor w = test::param({3}, -1, 1, 75);
  Tensor x = vec({1, 2, 3});
  auto out = checkpoint([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{exp(in[0] * w)}; }, {x});
  ASSERT_TRUE(out[0].requires_grad());
  backward(sum(out[0]));
  auto wv = ops::to_vector<double>(w);
  EXPECT_TRUE(allclose(w.grad(), vec({std::exp(wv[0]), 2 * std::exp(2 * wv[1]), 3 * std::exp(3 * wv[2])}), 1e-14, 1e-14));
}

TEST(Checkpoint, SavesNoIntermediateActivations) {
  // Under checkpoint, the forward runs without a graph: its output's node holds only the inputs.
  Tensor x = test::param({64, 64}, -1, 1, 76);
  reset_cpu_peak_bytes();
  const int64_t live0 = cpu_allocator_stats().live_bytes;
  auto out = checkpoint(
      [](const std::vector<Tensor>& in) {
        Tensor h = in[0];
        for (int i = 0; i < 8; ++i) h = tanh(h * 1.01);
        return std::vector<Tensor>{h};
      },
      {x});
  const int64_t retained = cpu_allocator_stats().live_bytes - live0;
  EXPECT_LE(retained, 64 * 64 * 8 + 1024) << "only the output should stay alive";
  backward(sum(out[0]));
  EXPECT_TRUE(x.grad().defined());
}

}  // namespace
}  // namespace strand
