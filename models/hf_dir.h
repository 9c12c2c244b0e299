#pragma once
// Model folders as users have them from the Hugging Face Hub or save_pretrained():
//   DIR/config.json                         model_type "esm" (ESM-2) or "rnabert" (AIDO.RNA)
//   DIR/model.safetensors                   or
//   DIR/model.safetensors.index.json + model-0000i-of-0000n.safetensors
// PyTorch-only folders (pytorch_model.bin) are refused with a pointer to
// tools/convert_checkpoint.py. Loading is strict: after the documented key handling below, any
// missing, unexpected or mis-shaped tensor is an error listing every one by name.
//
// Key handling, all of it listed in the report:
//   ESM-2     "esm." prefix stripped (EsmForMaskedLM files); ignored: lm_head.*, contact_head.*,
//             pooler.*, embeddings.position_embeddings.weight (unused with rotary),
//             embeddings.position_ids. Rotary inv_freq: per layer as the published files hold it
//             (fp16-rounded values), or once at model level (transformers 5), copied to every
//             layer; when absent it is computed in fp32 and the report says so.
//   AIDO.RNA  "bert." prefix stripped (RNABertForMaskedLM files); ignored: cls.* (MLM head),
//             pooler.*, any *inv_freq (recomputed, as ModelGenerator does), embeddings.position_ids.
#include <memory>
#include <string>
#include <vector>

#include "models/backbone.h"
#include "models/tokenizers.h"
#include "tensor/safetensors.h"

namespace strand::models {

struct HfLoadReport {
  std::string dir, config_path;
  std::vector<std::string> weight_files;
  std::vector<std::string> ignored;  // checkpoint keys deliberately not used, with the reason
  std::vector<std::string> notes;    // inv_freq handling, dtype casts, ...
  nn::LoadReport state;              // after the key handling
  std::string str() const;
};

struct HfLoadOptions {
  bool strict = true;        // any missing / unexpected / mis-shaped key is an error
  bool load_weights = true;  // false: build the architecture from config.json only (random weights)
  bool rna_dna_letters = true;  // AIDO.RNA tokenizer: upper-case and U->T (false = ModelGenerator's exact input)
};

struct HfBackbone {
  std::shared_ptr<Backbone> model;
  std::shared_ptr<Tokenizer> tokenizer;
  HfLoadReport report;
};

// Reads DIR/config.json and the weights; errors name the folder and the missing or bad piece.
HfBackbone load_hf_backbone(const std::string& dir, const HfLoadOptions& o = {});

// config.json as text (strand::Error naming the path when absent or unreadable).
std::string read_hf_config(const std::string& dir);
// The "model_type" of DIR/config.json.
std::string hf_model_type(const std::string& dir);
// The weights of a folder: model.safetensors, else the sharded index. Fills `files` with what was read.
safetensors::TensorMap read_hf_weights(const std::string& dir, std::vector<std::string>* files = nullptr);

// The key handling above, applied to a raw checkpoint for a given model (exposed for tests and
// tools). Returns the state dict to load strictly; fills report.ignored / report.notes.
nn::StateDict prepare_esm_state(const safetensors::TensorMap& raw, Backbone& model, HfLoadReport& report);
nn::StateDict prepare_rnabert_state(const safetensors::TensorMap& raw, HfLoadReport& report);

}  // namespace strand::models
