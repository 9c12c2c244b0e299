#pragma once
// The experiment config: one TOML file per run (configs/*.toml), overridable from the command line
// with --set a.b=c. Every key is checked: an unknown key is an error naming its full path and the
// nearest valid key; a value of the wrong type names the path, the expected and the given type.
//
//   [model]        backbone_order = ["dna_seq", "rna_seq", "protein_seq"]
//   [model.<modality>]  type = "enformer" | "aido_rna" | "esm2", model_dir = "...", from_scratch,
//                  frozen, max_length, checkpointing, checkpoint_conv (Enformer's stem and tower
//                  steps too; default: checkpointing), [model.<modality>.config] (architecture
//                  fields as in config.json, used with from_scratch), [model.<modality>.lora]
//   [model.fusion] kind = "concat" | "attention", project_size, heads, pooling
//   [model.head]   hidden_sizes, dropout, dropout_in_middle, activation
//   [data]         dir, batch_size, eval_batch_size, num_labels, normalize
//   [optim]        lr, betas, eps, weight_decay
//   [schedule]     kind = "cosine" | "linear" | "constant", warmup_ratio, warmup_steps
//   [trainer]      epochs, max_steps, grad_clip, val_interval, run_dir, seed, device, precision, tf32,
//                  log_interval, save_trainable_only
#include <cstdint>
#include <string>
#include <vector>

namespace strand::train {

struct LoRAOptions {
  bool enabled = false;
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  std::vector<std::string> target_modules = {"query", "value"};
};

struct BackboneConfig {
  std::string modality;  // dna_seq | rna_seq | protein_seq
  std::string type;      // enformer | aido_rna | esm2
  std::string model_dir;
  bool from_scratch = false;
  std::string config_json = "{}";  // [model.<modality>.config] as JSON (architecture fields)
  bool frozen = false;
  int64_t max_length = 1024;  // tokens including the special ones (RNA, protein)
  bool checkpointing = false;    // recompute the transformer blocks (AIDO.RNA, ESM-2: the layers) in backward
  bool checkpoint_conv = false;  // Enformer: also each stem and tower step (default: checkpointing)
  LoRAOptions lora;
};

struct Config {
  std::vector<BackboneConfig> backbones;  // in backbone order
  struct {
    std::string kind = "concat";
    int64_t project_size = 1024;
    int64_t heads = 16;
    std::string pooling = "mean_pooling";
  } fusion;
  struct {
    std::vector<int64_t> hidden_sizes = {1024};
    double dropout = 0.1;
    bool dropout_in_middle = false;
    std::string activation = "tanh";
  } head;
  struct {
    std::string dir;
    int64_t batch_size = 4;
    int64_t eval_batch_size = 0;  // 0: same as batch_size
    int num_labels = 30;
    bool normalize = true;
  } data;
  struct {
    double lr = 1e-4;
    double beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.01;
  } optim;
  struct {
    std::string kind = "cosine";
    double warmup_ratio = 0.01;
    int64_t warmup_steps = -1;  // >= 0 overrides warmup_ratio
  } schedule;
  struct {
    int64_t epochs = 3;
    int64_t max_steps = -1;  // > 0 stops early
    double grad_clip = 0.1;  // <= 0 disables clipping
    int64_t val_interval = 499;
    std::string run_dir = "runs/default";
    uint64_t seed = 42;
    std::string device = "cpu";
    std::string precision = "fp32";  // or "bf16-mixed": the forward under bf16 autocast (autograd/autocast.h)
    bool tf32 = false;  // f32 GEMMs/convolutions in TF32 on GPUs (ops::set_allow_tf32)
    int64_t log_interval = 10;
    bool save_trainable_only = false;
  } trainer;
};

// Reads `path` (TOML), applies the overrides ("a.b=c", value parsed as TOML, else a string), checks
// every key and value, and returns the config. Relative paths inside (data.dir, model_dir) are
// resolved against the config file's directory.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from TOML text (for tests); relative paths resolve against `base_dir`.
Config parse_config(const std::string& toml_text, const std::vector<std::string>& overrides = {},
                    const std::string& base_dir = ".");

// Edit distance, for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace strand::train
