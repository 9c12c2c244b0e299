#pragma once
// LoRA on the backbones as ModelGenerator configures it (PEFT LoraConfig: r, lora_alpha,
// lora_dropout, target_modules; base frozen), and trainable-only checkpoints as its
// save_peft_only writes them: just the tensors that train, plus metadata naming the base model
// they need, checked when they are loaded back.
#include <string>

#include "models/backbone.h"
#include "nn/lora.h"

namespace strand::models {

// Freezes the backbone and wraps every Linear whose own name is in cfg.target_modules ("query",
// "value" in the recipes; "key", "dense", "gate_proj", ... are allowed). Returns how many were
// wrapped; strand::Error when none matches, naming the targets and the Linear names available.
int64_t apply_lora(Backbone& model, const nn::LoRAConfig& cfg);

// A short fingerprint of a backbone: model_type, sizes, and a hash of the embedding table and
// final-norm weights (so two checkpoints of one architecture, e.g. AIDO.RNA-650M and -650M-CDS,
// differ).
std::string base_model_signature(const Backbone& model);

// Writes every parameter with requires_grad (LoRA A/B and anything else unfrozen), with metadata:
// strand.format = "trainable-only", base_model (a name or path, informational), base_signature,
// lora_r, lora_alpha, lora_dropout, lora_target_modules.
void save_trainable(const Backbone& model, const std::string& path, const nn::LoRAConfig& cfg,
                    const std::string& base_model_name);

struct TrainableCheckpointInfo {
  std::string base_model, base_signature;
  nn::LoRAConfig lora;
  int64_t tensors = 0;
};
// Reads the metadata only (to know which base model and LoRA config to build first).
TrainableCheckpointInfo read_trainable_info(const std::string& path);
// Loads a trainable-only checkpoint into a model that already has the same adapters. Every tensor
// in the file must match a parameter by name and shape; the base signature must match unless
// check_base is false. Returns the number of tensors loaded.
int64_t load_trainable(Backbone& model, const std::string& path, bool check_base = true);

}  // namespace strand::models
