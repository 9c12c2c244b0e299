// The module system: names, traversal, modes, conversion, freezing, state dicts, checkpointing.
#include <cstdio>
#include <filesystem>

#include "nn/layers.h"
#include "nn/lora.h"
#include "tensor/safetensors.h"
#include "tests/test_util.h"

namespace strand::nn {
namespace {

using test::allclose;
using test::throws_with;

// attention.self.{query,key,value} + output, like an HF encoder layer
struct SelfAttn : Module {
  std::shared_ptr<Linear> query, key, value;
  SelfAttn() : Module("SelfAttn") {
    query = std::make_shared<Linear>(4, 4);
    key = std::make_shared<Linear>(4, 4);
    value = std::make_shared<Linear>(4, 4, false);
    register_module("query", query);
    register_module("key", key);
    register_module("value", value);
  }
  Tensor forward(const Tensor& x) { return (*query)(x) + (*key)(x) + (*value)(x); }
};
struct Layer : Module {
  std::shared_ptr<ModuleDict> attention = std::make_shared<ModuleDict>();
  std::shared_ptr<SelfAttn> self_attn = std::make_shared<SelfAttn>();
  std::shared_ptr<LayerNorm> ln = std::make_shared<LayerNorm>(4);
  Layer() : Module("Layer") {
    attention->insert("self", self_attn);
    add_child_dict();
    register_module("ln", ln);
  }
  void add_child_dict() { register_module("attention", attention); }
  Tensor forward(const Tensor& x) { return (*ln)(self_attn->forward(x)); }
};
struct Encoder : Module {
  std::shared_ptr<ModuleList> layer = std::make_shared<ModuleList>();
  std::shared_ptr<BatchNorm1d> bn = std::make_shared<BatchNorm1d>(4);
  Encoder(int n = 2) : Module("Encoder") {
    for (int i = 0; i < n; ++i) layer->push_back(std::make_shared<Layer>());
    register_module("layer", layer);
    register_module("bn", bn);
  }
  Tensor forward(const Tensor& x) {
    Tensor h = x;
    for (size_t i = 0; i < layer->size(); ++i) h = layer->at<Layer>(i)->forward(h);
    return (*bn)(h);
  }
};

std::vector<std::string> names(const NamedTensors& v) {
  std::vector<std::string> out;
  for (auto& [n, _] : v) out.push_back(n);
  return out;
}

TEST(Module, DottedNamesInRegistrationOrder) {
  Encoder enc(2);
  auto p = names(enc.named_parameters());
  std::vector<std::string> want = {"layer.0.attention.self.query.weight", "layer.0.attention.self.query.bias",
                                   "layer.0.attention.self.key.weight",   "layer.0.attention.self.key.bias",
                                   "layer.0.attention.self.value.weight", "layer.0.ln.weight",
                                   "layer.0.ln.bias"};
  ASSERT_GE(p.size(), want.size());
  EXPECT_EQ(std::vector<std::string>(p.begin(), p.begin() + 7), want);
  EXPECT_EQ(p.back(), "bn.bias");
  EXPECT_EQ(names(enc.named_buffers()),
            (std::vector<std::string>{"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}));
  EXPECT_EQ(enc.num_parameters(), 2 * (3 * 16 + 2 * 4 + 8) + 8);
  auto mods = enc.named_modules();
  EXPECT_EQ(mods[0].first, "");
  EXPECT_EQ(mods[1].first, "layer");
  EXPECT_EQ(mods[2].first, "layer.0");
  EXPECT_EQ(mods[3].first, "layer.0.attention");
  EXPECT_EQ(mods[4].first, "layer.0.attention.self");
  EXPECT_EQ(enc.state_dict().size(), p.size() + 3);
}

TEST(Module, RegistrationErrors) {
  Module m("M");
  m.register_parameter("w", ops::zeros({2}));
  EXPECT_TRUE(throws_with([&] { m.register_parameter("w", ops::zeros({2})); }, {"'w'", "already registered"}));
  EXPECT_TRUE(throws_with([&] { m.register_buffer("a.b", ops::zeros({2})); }, {"invalid member name 'a.b'"}));
  EXPECT_TRUE(throws_with([&] { m.replace_module("nope", std::make_shared<Linear>(2, 2)); }, {"no child named 'nope'"}));
  Layer l;
  EXPECT_TRUE(throws_with([&] { l.replace_module("ln", std::make_shared<Linear>(4, 4)); }, {"'ln'", "cannot hold a Linear"}));
  EXPECT_EQ(l.ln->type_name(), "LayerNorm");  // unchanged after the failed replace
}

TEST(Module, TrainEvalPropagates) {
  Encoder enc;
  EXPECT_TRUE(enc.layer->at<Layer>(1)->ln->is_training());
  enc.eval();
  EXPECT_FALSE(enc.layer->at<Layer>(1)->ln->is_training());
  EXPECT_FALSE(enc.bn->is_training());
  enc.train();
  EXPECT_TRUE(enc.bn->is_training());
}

TEST(Module, ToDtypeKeepsHandles) {
  Encoder enc;
  Tensor held = enc.layer->at<Layer>(0)->self_attn->query->weight;  // e.g. an optimizer's handle
  auto before = ops::to_vector<double>(held);
  enc.to(DType::f64);
  EXPECT_EQ(held.dtype(), DType::f64);
  EXPECT_EQ(enc.layer->at<Layer>(0)->self_attn->query->weight.dtype(), DType::f64);
  EXPECT_EQ(ops::to_vector<double>(held), before);
  EXPECT_TRUE(held.requires_grad());
  EXPECT_EQ(enc.bn->num_batches_tracked.dtype(), DType::i64);  // integer buffers stay as they are
  EXPECT_TRUE(throws_with([&] { enc.to(DType::i32); }, {"floating", "i32"}));
}

TEST(Module, FreezingByPatternAndCounts) {
  Encoder enc;
  const int64_t total = enc.num_parameters();
  EXPECT_EQ(enc.num_parameters(true), total);
  EXPECT_EQ(enc.set_requires_grad(R"(layer\.\d+\.attention\..*)", false), 10);
  EXPECT_EQ(enc.num_parameters(true), total - 2 * (3 * 16 + 2 * 4));
  EXPECT_FALSE(enc.layer->at<Layer>(1)->self_attn->key->bias.requires_grad());
  EXPECT_TRUE(enc.layer->at<Layer>(1)->ln->weight.requires_grad());
  EXPECT_TRUE(throws_with([&] { enc.set_requires_grad("decoder.*", true); }, {"'decoder.*'", "matches no parameter"}));
  enc.freeze();
  EXPECT_EQ(enc.num_parameters(true), 0);
  EXPECT_TRUE(enc.trainable_parameters().empty());
}

TEST(StateDict, StrictLoadReportsEverythingAtOnceAndChangesNothing) {
  Encoder a, b;
  StateDict sd = a.state_dict();
  sd.erase("bn.bias");                                  // missing
  sd["extra.weight"] = ops::zeros({1});                 // unexpected
  sd["layer.0.ln.weight"] = ops::zeros({5});            // wrong shape
  sd["layer.1.ln.bias"] = ops::zeros({4}, DType::f64);  // wrong dtype
  auto before = ops::to_vector<float>(b.layer->at<Layer>(0)->self_attn->query->weight);
  EXPECT_TRUE(throws_with([&] { b.load_state_dict(sd); },
                          {"bn.bias", "extra.weight", "layer.0.ln.weight: checkpoint [5] f32 vs model [4] f32",
                           "layer.1.ln.bias: checkpoint [4] f64 vs model [4] f32"}));
  EXPECT_EQ(ops::to_vector<float>(b.layer->at<Layer>(0)->self_attn->query->weight), before);
  // non-strict: loads what matches and returns the report
  LoadOptions lenient;
  lenient.strict = false;
  LoadReport r = b.load_state_dict(sd, lenient);
  EXPECT_EQ(r.missing, (std::vector<std::string>{"bn.bias"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra.weight"}));
  EXPECT_EQ(r.mismatched.size(), 2u);
  EXPECT_EQ(ops::to_vector<float>(b.layer->at<Layer>(0)->self_attn->query->weight),
            ops::to_vector<float>(a.layer->at<Layer>(0)->self_attn->query->weight));
  // a dtype cast, when allowed
  lenient.allow_dtype_cast = true;
  EXPECT_EQ(b.load_state_dict(sd, lenient).mismatched.size(), 1u);
}

TEST(StateDict, KeyMapsRenameStripAndDrop) {
  Encoder a, b;
  StateDict hf;
  for (auto& [k, t] : a.state_dict()) {
    std::string key = "model." + k;
    auto pos = key.find(".ln.");
    if (pos != std::string::npos) key.replace(pos, 4, ".LayerNorm.");
    hf[key] = t;
  }
  hf["model.pooler.dense.weight"] = ops::zeros({2, 2});
  LoadOptions o;
  o.remaps = {strip_prefix("model."), rename(R"(\.LayerNorm\.)", ".ln."), drop(R"(pooler\..*)")};
  LoadReport r = b.load_state_dict(hf, o);
  EXPECT_TRUE(r.ok()) << r.str();
  EXPECT_EQ(r.dropped, (std::vector<std::string>{"model.pooler.dense.weight"}));
  EXPECT_EQ(ops::to_vector<float>(b.bn->weight), ops::to_vector<float>(a.bn->weight));
  EXPECT_EQ(ops::to_vector<float>(b.layer->at<Layer>(1)->ln->bias), ops::to_vector<float>(a.layer->at<Layer>(1)->ln->bias));
}

TEST(StateDict, SaveAndLoadThroughSafetensors) {
  Encoder a, b;
  a.to(DType::f64);
  b.to(DType::f64);
  a.bn->forward(test::uniform({8, 4}, -1, 1, 3));  // changes running stats and the batch counter
  const std::string path = (std::filesystem::temp_directory_path() / "strand_module_test.safetensors").string();
  a.save(path, {{"format", "pt"}});
  LoadReport r = b.load(path);
  EXPECT_TRUE(r.ok()) << r.str();
  for (auto& [k, t] : a.state_dict()) EXPECT_EQ(ops::to_vector<double>(b.state_dict().at(k)), ops::to_vector<double>(t)) << k;
  EXPECT_EQ(ops::item(b.bn->num_batches_tracked), 1.0);
  std::filesystem::remove(path);
}

TEST(Checkpointing, ModuleCheckpointGivesTheSameGradients) {
  auto run = [](bool ckpt) {
    manual_seed(5);
    auto seq = std::make_shared<Sequential>();
    seq->add(std::make_shared<Linear>(6, 8)).add(std::make_shared<ActivationModule>(Activation::gelu));
    seq->add(std::make_shared<Dropout>(0.2)).add(std::make_shared<LayerNorm>(8)).add(std::make_shared<Linear>(8, 3));
    seq->to(DType::f64);
    seq->set_checkpointing(ckpt);
    Tensor x = test::uniform({5, 6}, -1, 1, 9);
    backward(sum((*seq)(x)));
    std::vector<std::vector<double>> grads;
    for (auto& p : seq->parameters()) grads.push_back(ops::to_vector<double>(p.grad()));
    return grads;
  };
  EXPECT_EQ(run(true), run(false));
}

}  // namespace
}  // namespace strand::nn
