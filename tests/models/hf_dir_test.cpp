// Model folders: the layouts users have (prefixes, heads, sharding, the three places ESM's rotary
// inv_freq can be), strict loading that names every bad key, and clear errors for broken folders.
#include <filesystem>
#include <fstream>

#include "models/aido_rna/rnabert.h"
#include "models/esm2/esm2.h"
#include "models/hf_dir.h"
#include "tests/models/model_test_util.h"

namespace strand::models {
namespace {

namespace fs = std::filesystem;
using test::fixture;
using test::TempDir;
using test::throws_with;

bool contains(const std::vector<std::string>& v, const std::string& needle) {
  for (auto& s : v)
    if (s.find(needle) != std::string::npos) return true;
  return false;
}

// A copy of a fixture folder whose weights are replaced by `edit(tensors)` in one model.safetensors.
std::string edited_copy(const TempDir& tmp, const std::string& src,
                        const std::function<void(safetensors::TensorMap&)>& edit) {
  const std::string dst = tmp.str("model");
  fs::create_directories(dst);
  fs::copy_file(fixture(src + "/config.json"), dst + "/config.json");
  auto w = read_hf_weights(fixture(src));
  edit(w);
  safetensors::save(dst + "/model.safetensors", w);
  return dst;
}

Tensor run(Backbone& m, const std::string& fixture_name) {
  auto exp = safetensors::load(fixture(fixture_name + "/expected.safetensors"));
  NoGradGuard ng;
  return m.forward(exp.tensors.at("input_ids"), exp.tensors.at("attention_mask")).last_hidden_state;
}
Tensor reference(const std::string& fixture_name) {
  return safetensors::load(fixture(fixture_name + "/expected.safetensors")).tensors.at("last_hidden_state");
}

TEST(HfDir, EsmMaskedLMFolderStripsPrefixAndListsTheHeads) {
  HfBackbone b = load_hf_backbone(fixture("esm2/tiny_mlm/model"));
  EXPECT_EQ(b.model->model_type(), "esm");
  EXPECT_EQ(b.tokenizer->name(), "ESM-2");
  EXPECT_TRUE(contains(b.report.notes, "prefix 'esm.' stripped"));
  EXPECT_TRUE(contains(b.report.notes, "inv_freq loaded per layer"));
  EXPECT_TRUE(contains(b.report.ignored, "lm_head.dense.weight"));
  EXPECT_TRUE(contains(b.report.ignored, "contact_head.regression.weight"));
  EXPECT_EQ(b.report.state.loaded.size(), b.model->state_dict().size());
  const std::string s = b.report.str();
  EXPECT_NE(s.find("model.safetensors"), std::string::npos) << s;
  // The fp16-rounded inv_freq of the file is what the model holds (not the recomputed values).
  auto& esm = dynamic_cast<Esm2Model&>(*b.model);
  Tensor inv = esm.layers->at<EsmLayer>(0)->self_attn->inv_freq;
  EXPECT_TRUE(test::allclose(inv, ops::to(ops::to(rotary_inv_freq(12), DType::f16), DType::f32), 0, 0));
  EXPECT_FALSE(test::allclose(inv, rotary_inv_freq(12), 1e-7, 0));
}

TEST(HfDir, ShardedEsmModelFolderWithPooler) {
  HfBackbone b = load_hf_backbone(fixture("esm2/tiny_base/model"));
  EXPECT_EQ(b.report.weight_files.size(), 4u);  // index + 3 shards
  EXPECT_TRUE(contains(b.report.ignored, "pooler.dense.weight"));
  EXPECT_FALSE(contains(b.report.notes, "prefix"));
}

TEST(HfDir, EsmInvFreqAtModelLevelIsUsedByEveryLayer) {
  TempDir tmp("inv_model_level");
  const std::string dir = edited_copy(tmp, "esm2/tiny_mlm/model", [](safetensors::TensorMap& w) {
    Tensor inv = w.at("esm.encoder.layer.0.attention.self.rotary_embeddings.inv_freq");
    for (auto it = w.begin(); it != w.end();) it = it->first.find("inv_freq") != std::string::npos ? w.erase(it) : ++it;
    w["esm.rotary_embeddings.inv_freq"] = inv;  // transformers 5 keeps one copy at model level
  });
  HfBackbone b = load_hf_backbone(dir);
  EXPECT_TRUE(contains(b.report.notes, "model level (rotary_embeddings.inv_freq)")) << b.report.str();
  EXPECT_TRUE(test::close_to_reference(run(*b.model, "esm2/tiny_mlm"), reference("esm2/tiny_mlm"), 1e-4,
                                       "esm2/tiny_mlm with model-level inv_freq"));
}

TEST(HfDir, EsmInvFreqAbsentIsComputedAndReported) {
  auto strip = [](safetensors::TensorMap& w) {
    for (auto it = w.begin(); it != w.end();) it = it->first.find("inv_freq") != std::string::npos ? w.erase(it) : ++it;
  };
  {  // tiny_base was saved with exact fp32 values: computing them gives the reference again
    TempDir tmp("inv_absent_exact");
    HfBackbone b = load_hf_backbone(edited_copy(tmp, "esm2/tiny_base/model", strip));
    EXPECT_TRUE(contains(b.report.notes, "not in the checkpoint: computed")) << b.report.str();
    EXPECT_TRUE(test::close_to_reference(run(*b.model, "esm2/tiny_base"), reference("esm2/tiny_base"), 1e-4,
                                         "esm2/tiny_base with computed inv_freq"));
  }
  {  // tiny_mlm carries fp16-rounded values, as the published files: computing them is visibly different
    TempDir tmp("inv_absent_rounded");
    HfBackbone b = load_hf_backbone(edited_copy(tmp, "esm2/tiny_mlm/model", strip));
    EXPECT_GT(test::deviation(run(*b.model, "esm2/tiny_mlm"), reference("esm2/tiny_mlm")).max_abs, 1e-4);
  }
}

TEST(HfDir, StrictLoadingNamesMissingUnexpectedAndMisshapedKeys) {
  TempDir tmp("strict");
  const std::string dir = edited_copy(tmp, "esm2/tiny_mlm/model", [](safetensors::TensorMap& w) {
    w.erase("esm.encoder.layer.1.attention.self.key.bias");
    w["esm.encoder.layer.0.attention.self.extra.weight"] = ops::zeros({2, 2});
    w["esm.encoder.layer.0.intermediate.dense.bias"] = ops::zeros({7});
  });
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(dir); },
                          {"encoder.layer.1.attention.self.key.bias", "missing",
                           "encoder.layer.0.attention.self.extra.weight", "unexpected",
                           "encoder.layer.0.intermediate.dense.bias: checkpoint [7]", "model [52]"}));
  // A key with and without the prefix: ambiguous, never silently picked.
  TempDir tmp2("ambiguous");
  const std::string amb = edited_copy(tmp2, "esm2/tiny_mlm/model", [](safetensors::TensorMap& w) {
    w["encoder.emb_layer_norm_after.bias"] = w.at("esm.encoder.emb_layer_norm_after.bias");
  });
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(amb); },
                          {"'esm.encoder.emb_layer_norm_after.bias'", "'encoder.emb_layer_norm_after.bias'"}));
  HfLoadOptions lenient;
  lenient.strict = false;
  HfBackbone b = load_hf_backbone(dir, lenient);
  EXPECT_EQ(b.report.state.missing.size(), 1u);
  EXPECT_EQ(b.report.state.unexpected.size(), 1u);
  EXPECT_EQ(b.report.state.mismatched.size(), 1u);
}

TEST(HfDir, HalfPrecisionWeightsLoadAndAreReported) {
  TempDir tmp("f16");
  const std::string dir = edited_copy(tmp, "aido_rna/tiny_mlm/model", [](safetensors::TensorMap& w) {
    for (auto& [k, t] : w) t = ops::to(t, DType::f16);
  });
  HfBackbone b = load_hf_backbone(dir);
  EXPECT_TRUE(contains(b.report.notes, "stored as f16 converted to f32")) << b.report.str();
  EXPECT_TRUE(test::allclose(run(*b.model, "aido_rna/tiny_mlm"), reference("aido_rna/tiny_mlm"), 0.1, 0.05));
}

TEST(HfDir, RNABertFoldersAndTheirHeads) {
  HfBackbone b = load_hf_backbone(fixture("aido_rna/tiny_mlm/model"));
  EXPECT_EQ(b.model->model_type(), "rnabert");
  EXPECT_TRUE(contains(b.report.notes, "prefix 'bert.' stripped"));
  EXPECT_TRUE(contains(b.report.ignored, "cls.predictions.transform.dense.weight"));
  HfBackbone r = load_hf_backbone(fixture("aido_rna/tiny_rms/model"));
  auto& rna = dynamic_cast<RNABertModel&>(*r.model);
  EXPECT_EQ(rna.config.normalization_type, "RMSNorm");
  EXPECT_EQ(rna.config.rotary_dim(), 6);
  EXPECT_TRUE(r.report.ignored.empty());
  // A stored inv_freq is dropped, as ModelGenerator's RotaryEmbedding does.
  TempDir tmp("rna_inv");
  const std::string dir = edited_copy(tmp, "aido_rna/tiny_rms/model", [](safetensors::TensorMap& w) {
    w["rotary_pos_emb.inv_freq"] = ops::ones({3});
  });
  HfBackbone d = load_hf_backbone(dir);
  EXPECT_TRUE(contains(d.report.ignored, "rotary_pos_emb.inv_freq"));
  EXPECT_TRUE(test::allclose(run(*d.model, "aido_rna/tiny_rms"), reference("aido_rna/tiny_rms"), 1e-4, 1e-4));
}

TEST(HfDir, BrokenFoldersGiveClearErrors) {
  EXPECT_TRUE(throws_with([] { load_hf_backbone("/nonexistent/strand_model"); }, {"/nonexistent/strand_model", "does not exist"}));
  TempDir tmp("broken");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"no config.json"}));
  auto write = [&](const std::string& name, const std::string& text) { std::ofstream(tmp.str(name)) << text; };
  write("config.json", "{\"model_type\": \"esm\", ");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"config.json", "not valid JSON"}));
  write("config.json", "{\"model_type\": \"llama\"}");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"model_type 'llama'", "esm", "rnabert"}));
  write("config.json", "{\"hidden_size\": 8}");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"no \"model_type\""}));
  write("config.json", "{\"model_type\": \"esm\", \"hidden_size\": 8, \"num_attention_heads\": 2}");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"layer_norm_eps is missing"}));
  write("config.json", "{\"model_type\": \"esm\", \"hidden_size\": 12, \"num_attention_heads\": 5, \"layer_norm_eps\": 1e-5}");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"hidden_size 12", "num_attention_heads 5"}));
  write("config.json", "{\"model_type\": \"rnabert\", \"hidden_size\": \"big\"}");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"hidden_size", "wrong type"}));
  write("config.json", "{\"model_type\": \"rnabert\", \"hidden_size\": 8, \"num_attention_heads\": 2, "
                       "\"num_hidden_layers\": 1, \"intermediate_size\": 4}");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"has no weights", "model.safetensors"}));
  write("pytorch_model.bin", "");
  EXPECT_TRUE(throws_with([&] { load_hf_backbone(tmp.str()); }, {"pytorch_model.bin", "tools/convert_checkpoint.py"}));
  HfLoadOptions arch_only;
  arch_only.load_weights = false;
  EXPECT_EQ(load_hf_backbone(tmp.str(), arch_only).model->hidden_size(), 8);
}

TEST(Presets, PublishedShapes) {
  auto e8 = Esm2Config::preset("facebook/esm2_t6_8M_UR50D");
  EXPECT_EQ(e8.hidden_size, 320);
  EXPECT_EQ(e8.num_hidden_layers, 6);
  EXPECT_EQ(e8.head_dim(), 16);
  EXPECT_EQ(Esm2Config::preset("t12_35M").hidden_size, 480);
  EXPECT_EQ(Esm2Config::preset("esm2_t30_150M_UR50D").intermediate_size, 2560);
  auto e650 = Esm2Config::preset("esm2_t33_650M_UR50D");
  EXPECT_EQ(e650.num_hidden_layers, 33);
  EXPECT_EQ(e650.head_dim(), 64);
  EXPECT_DOUBLE_EQ(e650.layer_norm_eps, 1e-5);
  EXPECT_TRUE(throws_with([] { Esm2Config::preset("t48_15B"); }, {"unknown preset 't48_15B'"}));
  // Parameter count of the 8M backbone: emb 33d + 6 layers x (12d^2 + 13d) + final LN 2d (architectures.md B.8).
  EXPECT_EQ(Esm2Model(e8).num_parameters(), 7408960);

  auto r650 = RNABertConfig::preset("aido_rna_650m");
  EXPECT_EQ(r650.hidden_size, 1280);
  EXPECT_EQ(r650.intermediate_size, 3392);
  EXPECT_EQ(r650.normalization_type, "LayerNorm");
  auto r16 = RNABertConfig::preset("genbio-ai/AIDO.RNA-1.6B-CDS");
  EXPECT_EQ(r16.num_hidden_layers, 32);
  EXPECT_EQ(r16.hidden_size, 2048);
  EXPECT_EQ(r16.num_attention_heads, 32);
  EXPECT_EQ(RNABertConfig::preset("aido_rna_650m_cds").num_hidden_layers, 33);
  EXPECT_EQ(RNABertConfig::preset("AIDO.RNA-1.6B").intermediate_size, 5440);
  EXPECT_TRUE(throws_with([] { RNABertConfig::preset("aido_rna_25m"); }, {"unknown preset 'aido_rna_25m'"}));
}

}  // namespace
}  // namespace strand::models
