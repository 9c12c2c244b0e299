// Golden parity of both backbones against their reference implementations, through the same
// model-folder loading users use. Fixtures (tools/golden/esm2.py, tools/golden/rnabert.py): tiny
// random configs saved with save_pretrained, a batch of different-length sequences with padding
// (and a <mask> for ESM), the reference last_hidden_state, and LoRA r=4 (alpha 8) on query/value
// with loss = sum(masked_mean(last_hidden_state) * w) and the reference gradient of every A and B.
// Tolerances (DESIGN.md): whole-model fp32 forward 1e-4 (abs + rel); LoRA gradients 1e-3. bf16-mixed:
// within twice PyTorch's own bf16 error (below).
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "autograd/autocast.h"
#include "models/esm2/esm2.h"
#include "models/aido_rna/rnabert.h"
#include "models/hf_dir.h"
#include "models/peft.h"
#include "tests/models/model_test_util.h"

namespace strand::models {
namespace {

using test::close_to_reference;
using test::fixture;

class GoldenParity : public ::testing::TestWithParam<std::string> {};

safetensors::File expected(const std::string& name) { return safetensors::load(fixture(name + "/expected.safetensors")); }

TEST_P(GoldenParity, TokenizerReproducesTheReferenceIds) {
  auto exp = expected(GetParam());
  auto seqs = nlohmann::json::parse(exp.metadata.at("sequences")).get<std::vector<std::string>>();
  const bool esm = GetParam().rfind("esm2/", 0) == 0;
  // ModelGenerator feeds AIDO.RNA text unchanged (no U->T), and maps unknown runs to [UNK].
  Tokenizer tok = esm ? Tokenizer::esm2() : Tokenizer::aido_rna(/*dna_letters=*/false);
  TokenizeOptions o;
  o.allow_unknown = true;
  Encoding e = tok.batch(seqs, o);
  EXPECT_EQ(ops::to_vector<int64_t>(e.input_ids), ops::to_vector<int64_t>(exp.tensors.at("input_ids")));
  EXPECT_EQ(ops::to_vector<int64_t>(e.attention_mask), ops::to_vector<int64_t>(exp.tensors.at("attention_mask")));
  EXPECT_EQ(ops::to_vector<int64_t>(e.special_tokens_mask),
            ops::to_vector<int64_t>(exp.tensors.at("special_tokens_mask")));
}

TEST_P(GoldenParity, LastHiddenStateMatchesTheReference) {
  auto exp = expected(GetParam());
  HfBackbone b = load_hf_backbone(fixture(GetParam() + "/model"));
  EXPECT_TRUE(b.report.state.ok()) << b.report.str();
  NoGradGuard ng;
  BackboneOutput out = b.model->forward(exp.tensors.at("input_ids"), exp.tensors.at("attention_mask"));
  EXPECT_TRUE(close_to_reference(out.last_hidden_state, exp.tensors.at("last_hidden_state"), 1e-4,
                                 GetParam() + " last_hidden_state"));
}

// transformers 4.56's EsmModel skips the mask in its embeddings (see Esm2Config); the switch
// reproduces that output too.
TEST(GoldenParityEsm, NewerTransformersEmbeddingBehaviourOnRequest) {
  for (std::string name : {"esm2/tiny_mlm", "esm2/tiny_base"}) {
    auto exp = expected(name);
    HfBackbone b = load_hf_backbone(fixture(name + "/model"));
    auto& esm = dynamic_cast<Esm2Model&>(*b.model);
    NoGradGuard ng;
    const auto& ids = exp.tensors.at("input_ids");
    const auto& mask = exp.tensors.at("attention_mask");
    Tensor masked = esm.forward(ids, mask).last_hidden_state;
    esm.config.embeddings_ignore_padding = true;
    Tensor unmasked = esm.forward(ids, mask).last_hidden_state;
    EXPECT_TRUE(close_to_reference(unmasked, exp.tensors.at("last_hidden_state_unmasked_embeddings"), 1e-4,
                                   name + " last_hidden_state (transformers 4.56 embeddings)"));
    // The two behaviours really differ on this batch (a <mask> token and padding).
    EXPECT_GT(test::deviation(masked, unmasked).max_abs, 1e-2);
  }
}

// The golden model with the fixture's LoRA (r 4, alpha 8 on query/value) and its A/B values.
HfBackbone with_fixture_lora(const std::string& name, const safetensors::File& exp) {
  HfBackbone b = load_hf_backbone(fixture(name + "/model"));
  nn::LoRAConfig cfg;
  cfg.r = 4;
  cfg.alpha = 8;
  cfg.dropout = 0;
  cfg.target_modules = {"query", "value"};
  const int64_t wrapped = apply_lora(*b.model, cfg);
  // Trainable = exactly the A/B of every query and value.
  auto trainable = b.model->trainable_parameters();
  EXPECT_EQ(static_cast<int64_t>(trainable.size()), 2 * wrapped);
  NoGradGuard ng;
  int64_t set = 0;
  for (auto& [pname, p] : b.model->named_parameters())
    if (p.requires_grad()) {
      auto it = exp.tensors.find("lora." + pname);
      STRAND_CHECK(it != exp.tensors.end(), "fixture has no LoRA value for ", pname);
      ops::copy_(p, it->second);
      ++set;
    }
  EXPECT_EQ(set, 2 * wrapped);
  return b;
}

TEST_P(GoldenParity, LoRAGradientsMatchTheReference) {
  auto exp = expected(GetParam());
  HfBackbone b = with_fixture_lora(GetParam(), exp);
  const auto& ids = exp.tensors.at("input_ids");
  const auto& mask = exp.tensors.at("attention_mask");
  BackboneOutput out = b.model->forward(ids, mask);
  Tensor loss = sum(mul(masked_mean(out.last_hidden_state, mask), exp.tensors.at("lora_loss_weight")));
  EXPECT_TRUE(close_to_reference(reshape(loss, {1}), exp.tensors.at("lora_loss"), 1e-4, GetParam() + " LoRA loss"));
  backward(loss);
  Tensor all_got, all_ref;
  std::vector<Tensor> got, ref;
  for (auto& [name, p] : b.model->named_parameters()) {
    if (!p.requires_grad()) {
      EXPECT_FALSE(p.grad().defined()) << name << " is frozen but received a gradient";
      continue;
    }
    ASSERT_TRUE(p.grad().defined()) << name;
    got.push_back(ops::flatten(p.grad()));
    ref.push_back(ops::flatten(exp.tensors.at("grad." + name)));
    EXPECT_TRUE(test::allclose(p.grad(), exp.tensors.at("grad." + name), 1e-3, 1e-3)) << name;
  }
  EXPECT_TRUE(close_to_reference(ops::concat(got, 0), ops::concat(ref, 0), 1e-3, GetParam() + " LoRA A/B gradients"));
}

// bf16-mixed (autograd/autocast.h) against PyTorch's bf16 autocast on the same model, batch and
// loss: both measured against the fp64 computation (tools/golden/*_bf16.py), strand's error of the
// last hidden state and of the LoRA gradients may be at most twice PyTorch's (the bar; the
// smaller of PyTorch's two measured variants, plain CPU autocast and CUDA's fp32 list, is used).
TEST_P(GoldenParity, Bf16MixedStaysWithinTwicePyTorchsBf16Error) {
  auto exp = expected(GetParam());
  auto ref = safetensors::load(fixture(GetParam() + "/bf16.safetensors"));
  const auto errors = nlohmann::json::parse(ref.metadata.at("bf16_errors"));
  HfBackbone b = with_fixture_lora(GetParam(), exp);
  const auto& ids = exp.tensors.at("input_ids");
  const auto& mask = exp.tensors.at("attention_mask");
  Tensor h;
  {
    AutocastGuard bf16(true);
    h = b.model->forward(ids, mask).last_hidden_state;
  }
  Tensor loss = sum(mul(masked_mean(h, mask), exp.tensors.at("lora_loss_weight")));
  backward(loss);
  std::vector<Tensor> got, want;
  for (auto& [name, p] : b.model->named_parameters()) {
    if (!p.requires_grad()) continue;
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_EQ(p.grad().dtype(), DType::f32) << name << ": master-weight gradients stay f32";
    got.push_back(ops::flatten(p.grad()));
    want.push_back(ops::flatten(ref.tensors.at("grad_f64." + name)));
  }
  const Tensor h64 = ref.tensors.at("last_hidden_state_f64");
  test::expect_within_twice_pytorch(test::bf16_error(h, h64), errors, "last_hidden_state", GetParam());
  test::expect_within_twice_pytorch(test::bf16_error(ops::concat(got, 0), ops::concat(want, 0)), errors, "lora_grads", GetParam());
  // bf16 really ran: the fp32 forward of the same model lands far closer to fp64.
  NoGradGuard ng;
  const Tensor h32 = b.model->forward(ids, mask).last_hidden_state;
  EXPECT_GT(test::bf16_error(h, h64).rel_l2, 100 * test::bf16_error(h32, h64).rel_l2);
}

// Attention dropout in training (on the CPU inside the fused attention, whose mask the ops-level
// tests show equals the composed path's): one generator offset per layer, replayed exactly from
// the same generator state, different from eval, and differentiable.
TEST_P(GoldenParity, AttentionDropoutInTrainingReplaysFromTheGeneratorState) {
  test::TempDir dir("attn_dropout");
  std::filesystem::copy(fixture(GetParam() + "/model"), dir.path);
  auto cfg = nlohmann::json::parse(read_hf_config(dir.path.string()));
  cfg["attention_probs_dropout_prob"] = 0.2;
  std::ofstream(dir.path / "config.json") << cfg.dump();
  auto exp = expected(GetParam());
  const auto& ids = exp.tensors.at("input_ids");
  const auto& mask = exp.tensors.at("attention_mask");
  HfBackbone b = load_hf_backbone(dir.path.string());
  b.model->train();
  const Generator start = default_generator();
  Tensor a = b.model->forward(ids, mask).last_hidden_state;
  const uint64_t used = default_generator().offset - start.offset;
  default_generator() = start;
  Tensor again = b.model->forward(ids, mask).last_hidden_state;
  const int64_t layers = cfg.at("num_hidden_layers").get<int64_t>();
  EXPECT_EQ(used, static_cast<uint64_t>(layers)) << "one dropout mask per attention layer";
  EXPECT_TRUE(test::allclose(again, a, 0, 0));
  b.model->eval();
  EXPECT_FALSE(test::allclose(b.model->forward(ids, mask).last_hidden_state, a, 1e-3, 1e-3));
  backward(sum(a));
  for (auto& [name, p] : b.model->named_parameters())
    if (p.requires_grad() && p.grad().defined())
      for (double g : ops::to_vector<double>(p.grad())) ASSERT_TRUE(std::isfinite(g)) << name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenParity,
                         ::testing::Values("esm2/tiny_mlm", "esm2/tiny_base", "aido_rna/tiny_mlm", "aido_rna/tiny_rms"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (c == '/') c = '_';
                           return s;
                         });

}  // namespace
}  // namespace strand::models
