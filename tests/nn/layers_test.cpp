// Layers: PyTorch default initialisation (bounds and moments), forward against the functional ops
// or hand computation, train/eval behaviour, and LoRA (merge, PEFT names, training only A and B).
#include <cmath>

#include "nn/init.h"
#include "nn/layers.h"
#include "nn/lora.h"
#include "tests/test_util.h"

namespace strand::nn {
namespace {

using test::allclose;
using test::throws_with;

void expect_uniform(const Tensor& t, double bound, const char* what) {
  auto v = ops::to_vector<double>(t);
  double mn = 1e9, mx = -1e9, m = 0, ss = 0;
  for (double e : v) {
    mn = std::min(mn, e);
    mx = std::max(mx, e);
    m += e;
    ss += e * e;
  }
  m /= static_cast<double>(v.size());
  const double var = ss / static_cast<double>(v.size()) - m * m;
  EXPECT_GE(mn, -bound) << what;
  EXPECT_LE(mx, bound) << what;
  EXPECT_GT(mx, 0.9 * bound) << what;  // fills the interval
  EXPECT_LT(mn, -0.9 * bound) << what;
  EXPECT_NEAR(var, bound * bound / 3, 0.1 * bound * bound / 3) << what;  // variance of U(-b, b)
}

TEST(Linear, DefaultInitAndForward) {
  Linear l(256, 64);
  expect_uniform(l.weight, 1.0 / 16, "weight");  // kaiming-uniform(a=√5) = U(±1/√in)
  EXPECT_EQ(l.weight.sizes(), (Shape{64, 256}));
  EXPECT_TRUE(l.weight.requires_grad());
  Linear small(3, 2);
  small.to(DType::f64);
  Tensor x = test::uniform({4, 3}, -1, 1, 1);
  auto X = ops::to_vector<double>(x), W = ops::to_vector<double>(small.weight), B = ops::to_vector<double>(small.bias);
  std::vector<double> ref;
  for (int i = 0; i < 4; ++i)
    for (int o = 0; o < 2; ++o) {
      double s = B[o];
      for (int k = 0; k < 3; ++k) s += X[i * 3 + k] * W[o * 3 + k];
      ref.push_back(s);
    }
  EXPECT_TRUE(allclose(small(x), ops::from_vector<double>(ref, {4, 2}), 1e-14, 1e-14));
  Linear nb(3, 2, false);
  EXPECT_FALSE(nb.bias.defined());
  EXPECT_EQ(nb.named_parameters().size(), 1u);
  EXPECT_TRUE(throws_with([] { Linear(0, 3); }, {"Linear", "in_features", "0"}));
  EXPECT_TRUE(throws_with([&] { small(test::uniform({4, 5})); }, {"linear", "[4, 5]", "[2, 3]"}));
  Linear big_bias(1024, 512);
  expect_uniform(big_bias.bias, 1.0 / 32, "bias");
}

TEST(Embedding, NormalInitPaddingRowAndGradient) {
  Embedding e(2000, 16, 1);
  auto v = ops::to_vector<double>(e.weight);
  double m = 0, ss = 0;
  for (double x : v) {
    m += x;
    ss += x * x;
  }
  m /= static_cast<double>(v.size());
  EXPECT_NEAR(m, 0.0, 0.02);
  EXPECT_NEAR(ss / static_cast<double>(v.size()), 1.0, 0.03);
  EXPECT_EQ(ops::to_vector<double>(ops::select(e.weight, 0, 1)), std::vector<double>(16, 0.0));
  Tensor idx = ops::from_vector<int64_t>({0, 1, 1, 3}, {2, 2});
  Tensor y = e(idx);
  EXPECT_EQ(y.sizes(), (Shape{2, 2, 16}));
  backward(sum(y));
  auto g = ops::to_vector<double>(e.weight.grad());
  EXPECT_EQ(g[0 * 16], 1.0);
  EXPECT_EQ(g[1 * 16], 0.0);  // the padding row gets nothing
  EXPECT_EQ(g[3 * 16], 1.0);
  EXPECT_TRUE(throws_with([] { Embedding(4, 2, 4); }, {"padding_idx 4"}));
}

TEST(Norms, LayerNormRMSNormModulesMatchTheOps) {
  LayerNorm ln(5);
  EXPECT_EQ(ops::to_vector<float>(ln.weight), std::vector<float>(5, 1.0f));
  EXPECT_EQ(ops::to_vector<float>(ln.bias), std::vector<float>(5, 0.0f));
  Tensor x = test::uniform({3, 5}, -2, 2, 4, DType::f32);
  EXPECT_TRUE(allclose(ln(x), ops::layer_norm(x, ln.weight, ln.bias, 1e-5).y, 0, 0));
  LayerNorm nob(5, 1e-12, true, false);
  EXPECT_FALSE(nob.bias.defined());
  RMSNorm rms(5, 1e-6);
  auto X = ops::to_vector<double>(x);
  std::vector<double> ref;
  for (int r = 0; r < 3; ++r) {
    double ms = 0;
    for (int j = 0; j < 5; ++j) ms += X[r * 5 + j] * X[r * 5 + j];
    for (int j = 0; j < 5; ++j) ref.push_back(X[r * 5 + j] / std::sqrt(ms / 5 + 1e-6));
  }
  EXPECT_TRUE(allclose(rms(x), ops::from_vector<double>(ref, {3, 5}), 1e-6, 1e-5));
}

TEST(BatchNorm1d, TrainUpdatesRunningStatsEvalUsesThem) {
  BatchNorm1d bn(3);
  bn.to(DType::f64);
  Tensor x = test::uniform({4, 5, 3}, -1, 3, 6);  // channels last: stats over 20 values each
  Tensor y = bn(x);
  auto X = ops::to_vector<double>(x);
  std::vector<double> mean(3, 0), var(3, 0);
  for (int i = 0; i < 20; ++i)
    for (int c = 0; c < 3; ++c) mean[c] += X[i * 3 + c] / 20;
  for (int i = 0; i < 20; ++i)
    for (int c = 0; c < 3; ++c) var[c] += (X[i * 3 + c] - mean[c]) * (X[i * 3 + c] - mean[c]) / 20;
  auto rm = ops::to_vector<double>(bn.running_mean), rv = ops::to_vector<double>(bn.running_var);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(rm[c], 0.1 * mean[c], 1e-12);
    EXPECT_NEAR(rv[c], 0.9 + 0.1 * var[c] * 20 / 19, 1e-12);  // unbiased variance, as PyTorch
  }
  EXPECT_EQ(ops::item(bn.num_batches_tracked), 1.0);
  auto Y = ops::to_vector<double>(y);
  EXPECT_NEAR(Y[0], (X[0] - mean[0]) / std::sqrt(var[0] + 1e-5), 1e-12);
  bn.eval();
  Tensor ye = bn(x);
  EXPECT_NEAR(ops::to_vector<double>(ye)[1], (X[1] - rm[1]) / std::sqrt(rv[1] + 1e-5), 1e-12);
  EXPECT_EQ(ops::item(bn.num_batches_tracked), 1.0);  // eval does not count
  EXPECT_EQ(ops::to_vector<double>(bn.running_mean), rm);
}

TEST(Conv1d, InitShapeAndSamePadding) {
  Conv1d c(8, 16, 5);
  EXPECT_EQ(c.weight.sizes(), (Shape{16, 8, 5}));
  expect_uniform(c.weight, 1.0 / std::sqrt(40.0), "conv weight");
  Tensor y = c(test::uniform({2, 11, 8}, -1, 1, 7, DType::f32));
  EXPECT_EQ(y.sizes(), (Shape{2, 11, 16}));
  Conv1d valid(8, 4, 3, 0, false);
  EXPECT_EQ(valid(test::uniform({1, 11, 8}, -1, 1, 8, DType::f32)).sizes(), (Shape{1, 9, 4}));
  EXPECT_TRUE(throws_with([] { Conv1d(2, 2, 4); }, {"odd kernel", "4"}));
}

TEST(Dropout, TrainVersusEvalAndActivations) {
  Dropout d(0.5);
  Tensor x = ops::ones({1000});
  Tensor y = d(x);
  auto v = ops::to_vector<float>(y);
  int zeros = 0;
  for (float e : v) {
    EXPECT_TRUE(e == 0.0f || e == 2.0f);
    zeros += e == 0.0f;
  }
  EXPECT_NEAR(zeros, 500, 60);
  d.eval();
  EXPECT_TRUE(d(x).is_same(x));
  EXPECT_TRUE(throws_with([] { Dropout(1.0); }, {"[0, 1)", "1"}));
  Tensor z = ops::from_vector<float>({-1, 0.5}, {2});
  EXPECT_TRUE(allclose(ActivationModule(activation_from_string("gelu_sigmoid"))(z), gelu_sigmoid(z), 0, 0));
  EXPECT_TRUE(allclose(ActivationModule(activation_from_string("tanh"))(z), tanh(z), 0, 0));
  EXPECT_TRUE(throws_with([] { activation_from_string("mish"); }, {"unknown activation 'mish'"}));
}

// ---------------- LoRA ----------------
// Projections that LoRA may wrap are held as UnaryModule, so the bound member can take the wrapper.
struct Attn : Module {
  std::shared_ptr<UnaryModule> query = std::make_shared<Linear>(6, 6), key = std::make_shared<Linear>(6, 6),
                               value = std::make_shared<Linear>(6, 6);
  Attn() : Module("Attn") {
    register_module("query", query);
    register_module("key", key);
    register_module("value", value);
  }
  Tensor forward(const Tensor& x) { return (*query)(x) * (*key)(x) + (*value)(x); }
};

TEST(LoRA, FreshAdapterChangesNothingAndUsesPeftNames) {
  Attn a;
  Tensor x = test::uniform({3, 6}, -1, 1, 11, DType::f32);
  Tensor before = a.forward(x);
  LoRAConfig cfg;
  cfg.r = 4;
  cfg.alpha = 8;
  EXPECT_EQ(inject_lora(a, cfg), 2);
  EXPECT_TRUE(allclose(a.forward(x), before, 0, 0));
  std::vector<std::string> trainable;
  for (auto& [n, t] : a.named_parameters())
    if (t.requires_grad()) trainable.push_back(n);
  EXPECT_EQ(trainable, (std::vector<std::string>{"query.lora_A.default.weight", "query.lora_B.default.weight",
                                                 "value.lora_A.default.weight", "value.lora_B.default.weight"}));
  EXPECT_TRUE(a.state_dict().count("query.base_layer.weight"));
  EXPECT_TRUE(a.state_dict().count("key.weight"));  // not a target
  auto lora = std::dynamic_pointer_cast<LoRALinear>(a.child("query"));
  ASSERT_TRUE(lora);
  EXPECT_EQ(lora->scale, 2.0);
  expect_uniform(LoRALinear(std::make_shared<Linear>(900, 8), 64, 16, 0).lora_A->weight, 1.0 / 30, "lora_A");
  EXPECT_TRUE(throws_with([&] { inject_lora(a, LoRAConfig{4, 8, 0, {"out_proj"}}); }, {"out_proj", "no Linear"}));
  // A member typed as Linear cannot hold the wrapper: injection fails loudly instead of silently
  // leaving forward() on the unwrapped layer.
  struct Typed : Module {
    std::shared_ptr<Linear> query = std::make_shared<Linear>(2, 2);
    Typed() : Module("Typed") { register_module("query", query); }
  } typed;
  EXPECT_TRUE(throws_with([&] { inject_lora(typed, LoRAConfig{}); }, {"'query' cannot hold a LoRALinear"}));
  EXPECT_TRUE(typed.query->weight.requires_grad());  // a failed injection leaves the model as it was
  Attn untouched;
  EXPECT_THROW(inject_lora(untouched, LoRAConfig{4, 8, 0, {"nothing"}}), Error);
  EXPECT_EQ(untouched.num_parameters(true), untouched.num_parameters());
  // query wraps fine, value cannot: the wrapped query is put back too
  struct Mixed : Module {
    std::shared_ptr<UnaryModule> query = std::make_shared<Linear>(2, 2);
    std::shared_ptr<Linear> value = std::make_shared<Linear>(2, 2);
    Mixed() : Module("Mixed") {
      register_module("query", query);
      register_module("value", value);
    }
  } mixed;
  EXPECT_THROW(inject_lora(mixed, LoRAConfig{}), Error);
  EXPECT_NE(dynamic_cast<Linear*>(mixed.query.get()), nullptr);
  EXPECT_EQ(dynamic_cast<LoRALinear*>(mixed.child("query").get()), nullptr);
  EXPECT_EQ(mixed.num_parameters(true), mixed.num_parameters());
}

TEST(LoRA, ForwardIsBasePlusScaledLowRankAndMergeIsExact) {
  auto base = std::make_shared<Linear>(5, 3);
  LoRALinear l(base, 2, 6, 0.0);
  init::uniform_(l.lora_B->weight, -1, 1);  // a trained-looking adapter
  Tensor x = test::uniform({4, 5}, -1, 1, 12, DType::f32);
  Tensor delta = ops::matmul(l.lora_B->weight, l.lora_A->weight);  // [3, 5]
  Tensor ref = ops::linear(x, ops::add(base->weight, ops::mul(delta, 3.0)), base->bias);
  EXPECT_TRUE(allclose(l(x), ref, 1e-5, 1e-5));
  const auto w0 = ops::to_vector<float>(base->weight);
  l.merge();
  EXPECT_TRUE(l.merged());
  EXPECT_TRUE(allclose(l(x), ref, 1e-5, 1e-5));
  l.unmerge();
  auto w1 = ops::to_vector<float>(base->weight);
  for (size_t i = 0; i < w0.size(); ++i) EXPECT_NEAR(w1[i], w0[i], 1e-6);
}

TEST(LoRA, TrainingChangesOnlyAAndB) {
  Attn a;
  inject_lora(a, LoRAConfig{2, 4, 0.1, {"query", "value"}});
  StateDict before;
  for (auto& [k, t] : a.state_dict()) before[k] = ops::clone(t);
  for (int step = 0; step < 3; ++step) {
    Tensor loss = mean(pow(a.forward(test::uniform({4, 6}, -1, 1, 20 + step, DType::f32)) - 0.3, 2.0));
    backward(loss);
    NoGradGuard ng;
    for (Tensor& p : a.trainable_parameters()) {
      ops::add_(p, p.grad(), -0.5);
      p.set_grad(Tensor());
    }
  }
  for (auto& [k, t] : a.state_dict()) {
    const bool is_lora = k.find("lora_") != std::string::npos;
    const bool same = ops::to_vector<float>(t) == ops::to_vector<float>(before[k]);
    EXPECT_EQ(same, !is_lora) << k;
  }
}

TEST(LoRA, PlainCheckpointLoadsIntoTheWrappedBase) {
  Attn plain, wrapped;
  inject_lora(wrapped, LoRAConfig{2, 4, 0, {"query"}});
  LoadOptions o;
  o.strict = false;  // the LoRA tensors are not in a base checkpoint
  LoadReport r = wrapped.load_state_dict(plain.state_dict(), o);
  EXPECT_TRUE(r.unexpected.empty()) << r.str();
  EXPECT_EQ(r.missing, (std::vector<std::string>{"query.lora_A.default.weight", "query.lora_B.default.weight"}));
  auto l = std::dynamic_pointer_cast<LoRALinear>(wrapped.child("query"));
  EXPECT_EQ(ops::to_vector<float>(l->base_layer->weight),
            ops::to_vector<float>(std::dynamic_pointer_cast<Linear>(plain.query)->weight));
}

}  // namespace
}  // namespace strand::nn
