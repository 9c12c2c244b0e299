// The six recipe configs parse and build their models, with the published checkpoints replaced by
// the tiny model folders of the golden fixtures, and a forward + backward runs on a synthetic batch.
// Trainable parts follow the recipes: LoRA adapters, the whole Enformer, the fusion and the head;
// frozen backbones contribute nothing. The same step runs in bf16-mixed.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/test_util.h"
#include "train/synth.h"
#include "train/task.h"

namespace strand::train {
namespace {

namespace fs = std::filesystem;
const std::string kSrc = STRAND_SOURCE_DIR;

class Recipe : public ::testing::TestWithParam<const char*> {};

TEST_P(Recipe, ParsesBuildsAndTrainsAStep) {
  const std::string fx = kSrc + "/tests/fixtures";
  Config cfg = load_config(kSrc + "/configs/" + GetParam() + ".toml",
                           {"model.dna_seq.model_dir=" + fx + "/enformer/tiny_a",
                            "model.rna_seq.model_dir=" + fx + "/aido_rna/tiny_rms/model",
                            "model.protein_seq.model_dir=" + fx + "/esm2/tiny_base/model"});
  manual_seed(1);
  RegressionTask task(cfg);
  int64_t lora = 0, frozen_backbone = 0;
  for (auto& [name, p] : task.named_parameters()) {
    if (name.find("lora_") != std::string::npos) {
      EXPECT_TRUE(p.requires_grad()) << name;
      ++lora;
    } else if (name.rfind("backbone", 0) == 0 && name.find(".model.") != std::string::npos &&
               cfg.backbones[name[8] == '.' ? 0 : name[8] - '0'].type != "enformer") {
      EXPECT_FALSE(p.requires_grad()) << name;  // LoRA'd or frozen transformer backbones: base frozen
      ++frozen_backbone;
    } else {
      EXPECT_TRUE(p.requires_grad()) << name;  // Enformer (full fine-tune), fusion, head
    }
  }
  bool any_lora = false;
  for (auto& b : cfg.backbones) any_lora |= b.lora.enabled;
  EXPECT_EQ(lora > 0, any_lora);
  // one batch of two synthetic samples; the tiny Enformer needs 800+ bp (crop to 100 bins)
  fs::path dir = fs::temp_directory_path() / ("strand_recipe_" + std::string(GetParam()));
  SynthConfig sc;
  sc.n_train = 2;
  sc.n_valid = 2;
  sc.n_test = 2;
  sc.train_files = 1;
  sc.dna_length = 1024;
  write_synthetic_dataset(dir.string(), sc);
  SplitData data({(dir / "train_1.tsv").string()});
  std::vector<Sample> batch = {data.get(0), data.get(1)};
  Tensor out = task.forward(batch);
  EXPECT_EQ(out.sizes(), (Shape{2, 30}));
  backward(mean(out * out));
  // Enformer's human/mouse heads stay trainable but off the embedding path: no gradient reaches
  // them (as in ModelGenerator, where AdamW then skips them). Everything else trainable gets one.
  for (auto& [name, p] : task.named_parameters())
    if (p.requires_grad()) EXPECT_EQ(p.grad().defined(), name.find("._heads.") == std::string::npos) << name;

  // The same step in bf16-mixed (the same initial weights): f32 predictions near the fp32 ones
  // but not equal to them (bf16 GEMMs ran), and every gradient on its f32 master weight.
  cfg.trainer.precision = "bf16-mixed";
  manual_seed(1);
  RegressionTask mixed(cfg);
  Tensor out16 = mixed.forward(batch);
  EXPECT_EQ(out16.dtype(), DType::f32);
  const double scale = item(ops::amax(ops::unary(UnaryOp::abs, ops::detach(out))));
  EXPECT_TRUE(test::allclose(out16, out, 0.05 * scale, 0.05));
  EXPECT_FALSE(test::allclose(out16, out, 0, 0));
  backward(mean(out16 * out16));
  const auto fp32_params = task.named_parameters(), mixed_params = mixed.named_parameters();
  ASSERT_EQ(fp32_params.size(), mixed_params.size());
  for (size_t i = 0; i < mixed_params.size(); ++i) {
    const auto& [name, p] = mixed_params[i];
    if (!p.requires_grad()) continue;
    EXPECT_EQ(p.grad().defined(), fp32_params[i].second.grad().defined()) << name;
    if (p.grad().defined()) EXPECT_EQ(p.grad().dtype(), DType::f32) << name;
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Configs, Recipe,
                         ::testing::Values("dna_rna_concat", "dna_rna_prot_concat", "dna_rna_attention",
                                           "dna_rna_prot_attention", "rna_only", "dna_only"));

}  // namespace
}  // namespace strand::train
