// LoRA on the backbones: which layers get adapters, frozen base, training moves only A/B, and
// trainable-only checkpoints that know their base model.
#include "models/aido_rna/rnabert.h"
#include "models/esm2/esm2.h"
#include "models/hf_dir.h"
#include "models/peft.h"
#include "nn/optim.h"
#include "tests/models/model_test_util.h"

namespace strand::models {
namespace {

using test::fixture;
using test::TempDir;
using test::throws_with;

Esm2Config tiny_esm() {
  Esm2Config c;
  c.hidden_size = 12;
  c.num_attention_heads = 2;
  c.num_hidden_layers = 2;
  c.intermediate_size = 20;
  return c;
}

TEST(LoRA, TargetsByNameFrozenBaseAndPeftKeys) {
  Esm2Model m(tiny_esm());
  nn::LoRAConfig cfg;
  cfg.r = 2;
  cfg.alpha = 4;
  cfg.target_modules = {"query", "value"};
  EXPECT_EQ(apply_lora(m, cfg), 4);
  auto sd = m.state_dict();
  EXPECT_TRUE(sd.count("encoder.layer.1.attention.self.value.lora_B.default.weight"));
  EXPECT_TRUE(sd.count("encoder.layer.0.attention.self.query.base_layer.weight"));
  EXPECT_EQ(m.num_parameters(true), 4 * (2 * 12 + 12 * 2));
  for (auto& [n, p] : m.named_parameters())
    EXPECT_EQ(p.requires_grad(), n.find("lora_") != std::string::npos) << n;
  // Any Linear name works, e.g. the FFN of RNABert.
  RNABertConfig rc;
  rc.hidden_size = 8;
  rc.num_attention_heads = 2;
  rc.num_hidden_layers = 1;
  rc.intermediate_size = 6;
  RNABertModel r(rc);
  nn::LoRAConfig ffn = cfg;
  ffn.target_modules = {"gate_proj", "dense"};
  EXPECT_EQ(apply_lora(r, ffn), 2);
  Esm2Model other(tiny_esm());
  nn::LoRAConfig bad = cfg;
  bad.target_modules = {"q_proj"};
  EXPECT_TRUE(throws_with([&] { apply_lora(other, bad); }, {"q_proj", "query", "value", "dense"}));
}

TEST(LoRA, TrainingMovesOnlyTheAdapters) {
  HfBackbone b = load_hf_backbone(fixture("aido_rna/tiny_mlm/model"));
  nn::LoRAConfig cfg;
  cfg.r = 4;
  cfg.alpha = 8;
  apply_lora(*b.model, cfg);
  b.model->train();
  auto before = b.model->state_dict();
  std::map<std::string, Tensor> copy;
  for (auto& [k, t] : before) copy[k] = ops::clone(t);
  Encoding e = b.tokenizer->batch({"ACGTAC", "GGT"});
  nn::AdamW opt(b.model->trainable_parameters(), 1e-2);
  for (int step = 0; step < 2; ++step) {
    Tensor loss = sum(masked_mean(b.model->forward(e.input_ids, e.attention_mask).last_hidden_state, e.attention_mask));
    opt.zero_grad();
    backward(loss);
    opt.step();
  }
  for (auto& [k, t] : b.model->state_dict()) {
    const bool same = test::allclose(t, copy[k], 0, 0);
    if (k.find("lora_") != std::string::npos)
      EXPECT_FALSE(same) << k << " should have trained";
    else
      EXPECT_TRUE(same) << k << " is frozen";
  }
}

TEST(LoRA, TrainableOnlyCheckpointRoundTripAndBaseCheck) {
  TempDir tmp("peft");
  const std::string path = tmp.str("adapter.safetensors");
  nn::LoRAConfig cfg;
  cfg.r = 4;
  cfg.alpha = 8;
  cfg.dropout = 0.1;
  HfBackbone a = load_hf_backbone(fixture("esm2/tiny_mlm/model"));
  apply_lora(*a.model, cfg);
  {
    NoGradGuard ng;
    for (auto& p : a.model->trainable_parameters()) ops::copy_(p, ops::randn(p.sizes()));
  }
  save_trainable(*a.model, path, cfg, "tests/fixtures/esm2/tiny_mlm");
  auto header = safetensors::read_header(path);
  EXPECT_EQ(header.size(), 8u);  // 2 layers x {query, value} x {A, B}: nothing of the base
  auto info = read_trainable_info(path);
  EXPECT_EQ(info.base_model, "tests/fixtures/esm2/tiny_mlm");
  EXPECT_EQ(info.lora.r, 4);
  EXPECT_DOUBLE_EQ(info.lora.alpha, 8);
  EXPECT_DOUBLE_EQ(info.lora.dropout, 0.1);
  EXPECT_EQ(info.lora.target_modules, (std::vector<std::string>{"query", "value"}));

  HfBackbone b = load_hf_backbone(fixture("esm2/tiny_mlm/model"));
  apply_lora(*b.model, info.lora);
  EXPECT_EQ(load_trainable(*b.model, path), 8);
  for (auto& [k, t] : a.model->state_dict()) EXPECT_TRUE(test::allclose(b.model->state_dict().at(k), t, 0, 0)) << k;

  // Another base model (other weights, same kind) is refused, naming both.
  HfBackbone c = load_hf_backbone(fixture("esm2/tiny_base/model"));
  apply_lora(*c.model, info.lora);
  EXPECT_TRUE(throws_with([&] { load_trainable(*c.model, path); }, {"tests/fixtures/esm2/tiny_mlm", "esm hidden 36", "esm hidden 30"}));
  // Adapters on other modules do not fit.
  HfBackbone d = load_hf_backbone(fixture("esm2/tiny_mlm/model"));
  nn::LoRAConfig keys = info.lora;
  keys.target_modules = {"key"};
  apply_lora(*d.model, keys);
  EXPECT_TRUE(throws_with([&] { load_trainable(*d.model, path); }, {"query.lora_A.default.weight", "no such parameter"}));
  EXPECT_TRUE(throws_with([&] { read_trainable_info(fixture("esm2/tiny_mlm/expected.safetensors")); }, {"not a trainable-only checkpoint"}));
}

}  // namespace
}  // namespace strand::models
