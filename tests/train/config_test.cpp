#include <gtest/gtest.h>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "kernels/ops.h"
#include "train/cli.h"
#include "train/config.h"
#include "tests/test_util.h"

namespace strand::train {
namespace {

using test::throws_with;

const char* kBase = R"(
[model]
backbone_order = ["dna_seq", "rna_seq"]
[model.dna_seq]
type = "enformer"
from_scratch = true
checkpointing = true
[model.dna_seq.config]
dim = 48
depth = 2
[model.rna_seq]
type = "aido_rna"
model_dir = "models/aido_rna_650m"
max_length = 512
[model.rna_seq.lora]
r = 32
alpha = 64
dropout = 0.1
[model.fusion]
kind = "attention"
heads = 4
[model.head]
hidden_sizes = [128]
[data]
dir = "data/synth"
batch_size = 2
[optim]
lr = 1e-4
betas = [0.9, 0.98]
[schedule]
kind = "cosine"
warmup_ratio = 0.01
[trainer]
epochs = 3
grad_clip = 0.1
val_interval = 499
run_dir = "runs/x"
)";

TEST(Config, ParsesEverySectionAndResolvesPaths) {
  Config c = parse_config(kBase, {}, "/exp");
  ASSERT_EQ(c.backbones.size(), 2u);
  EXPECT_EQ(c.backbones[0].type, "enformer");
  EXPECT_TRUE(c.backbones[0].from_scratch);
  EXPECT_TRUE(c.backbones[0].checkpointing);
  EXPECT_TRUE(c.backbones[0].checkpoint_conv);  // follows checkpointing unless set
  EXPECT_FALSE(c.backbones[1].checkpoint_conv);
  EXPECT_EQ(nlohmann::json::parse(c.backbones[0].config_json)["dim"], 48);
  EXPECT_EQ(c.backbones[1].model_dir, "/exp/models/aido_rna_650m");
  EXPECT_EQ(c.backbones[1].max_length, 512);
  EXPECT_TRUE(c.backbones[1].lora.enabled);
  EXPECT_EQ(c.backbones[1].lora.r, 32);
  EXPECT_EQ(c.backbones[1].lora.target_modules, (std::vector<std::string>{"query", "value"}));
  EXPECT_FALSE(c.backbones[0].lora.enabled);
  EXPECT_EQ(c.fusion.kind, "attention");
  EXPECT_EQ(c.fusion.heads, 4);
  EXPECT_EQ(c.head.hidden_sizes, (std::vector<int64_t>{128}));
  EXPECT_EQ(c.data.dir, "/exp/data/synth");
  EXPECT_EQ(c.data.eval_batch_size, 2);
  EXPECT_EQ(c.optim.beta2, 0.98);
  EXPECT_EQ(c.optim.weight_decay, 0.01);  // default
  EXPECT_EQ(c.trainer.run_dir, "/exp/runs/x");
  EXPECT_EQ(c.trainer.seed, 42u);
}

TEST(Config, OverridesWithSet) {
  Config c = parse_config(kBase, {"trainer.epochs=1", "optim.lr=3e-4", "trainer.device=cuda", "model.fusion.kind=concat",
                                  "model.rna_seq.lora.target_modules=[\"query\"]", "data.dir=/abs/data"});
  EXPECT_EQ(c.trainer.epochs, 1);
  EXPECT_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.trainer.device, "cuda");  // a bare word becomes a string
  EXPECT_EQ(c.fusion.kind, "concat");
  EXPECT_EQ(c.backbones[1].lora.target_modules, (std::vector<std::string>{"query"}));
  EXPECT_EQ(c.data.dir, "/abs/data");
  EXPECT_FALSE(c.trainer.tf32);  // off by default, as PyTorch
  EXPECT_TRUE(parse_config(kBase, {"trainer.tf32=true"}).trainer.tf32);
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"trainer.tf32=\"yes\""}); }, {"trainer.tf32"}));
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"trainer.epochs"}); }, {"--set", "key.path=value"}));
  // Enformer: checkpointing with the stem and tower steps kept (bf16-mixed needs less memory so)
  const Config t = parse_config(kBase, {"model.dna_seq.checkpoint_conv=false"});
  EXPECT_TRUE(t.backbones[0].checkpointing);
  EXPECT_FALSE(t.backbones[0].checkpoint_conv);
  EXPECT_FALSE(parse_config(kBase, {"model.rna_seq.checkpointing=true"}).backbones[1].checkpoint_conv);  // Enformer only
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"model.rna_seq.checkpoint_conv=true"}); },
                          {"model.rna_seq.checkpoint_conv", "Enformer", "aido_rna"}));
}

TEST(Config, DeviceFromConfigChecksTheMachineAndAppliesTf32) {
  Config c = parse_config(kBase);
  EXPECT_EQ(device_from_config(c), Device::cpu());
  c.trainer.device = "tpu";
  EXPECT_TRUE(throws_with([&] { device_from_config(c); }, {"tpu"}));
  if (!cuda_available()) {
    c.trainer.device = "cuda:1";
    EXPECT_TRUE(throws_with([&] { device_from_config(c); }, {"trainer.device 'cuda:1'", "no usable CUDA GPU"}));
  }
  // under mpirun (2 ranks here by its environment), a fixed GPU index is refused before anything else
  ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  c.trainer.device = "cuda:0";
  EXPECT_TRUE(throws_with([&] { device_from_config(c); }, {"'cuda:0'", "2 processes", "trainer.device = \"cuda\""}));
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  c.trainer.device = "cpu";
  c.trainer.tf32 = true;
  device_from_config(c);
  EXPECT_TRUE(ops::allow_tf32());
  c.trainer.tf32 = false;
  device_from_config(c);
  EXPECT_FALSE(ops::allow_tf32());
}

TEST(Config, UnknownKeysNameThePathAndTheNearestKey) {
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"trainer.epoch=2"}); },
                          {"unknown key 'trainer.epoch'", "did you mean 'trainer.epochs'"}));
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"model.rna_seq.lora.rank=4"}); },
                          {"'model.rna_seq.lora.rank'", "'model.rna_seq.lora.r'"}));
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"optimizer.lr=1"}); }, {"unknown key 'optimizer'", "'optim'"}));
}

TEST(Config, WrongTypesAndValuesAreClearErrors) {
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"trainer.epochs=\"three\""}); },
                          {"'trainer.epochs' must be an integer", "got string"}));
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"model.fusion.kind=sum"}); },
                          {"'model.fusion.kind' is 'sum'", "concat, attention"}));
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"model.backbone_order=[\"dna_seq\", \"dna_seq\"]"}); },
                          {"'dna_seq' listed twice"}));
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"model.backbone_order=[\"protein_seq\"]"}); },
                          {"no [model.protein_seq] table"}));
  EXPECT_TRUE(throws_with([] { parse_config(kBase, {"data.batch_size=0"}); }, {"'data.batch_size'", "positive", "0"}));
  EXPECT_TRUE(throws_with([] { parse_config("[model\nx = 1"); }, {"cannot parse"}));
  EXPECT_TRUE(throws_with([] { load_config("/nonexistent/x.toml"); }, {"cannot read config", "/nonexistent/x.toml"}));
  EXPECT_EQ(edit_distance("epoch", "epochs"), 1u);
}

}  // namespace
}  // namespace strand::train
