#pragma once
// Enformer (Avsec et al. 2021) as enformer-pytorch builds it, channels-last ([B, L, C]) throughout,
// with enformer-pytorch's parameter names so its checkpoints load by name:
//   stem.0 (Conv1d 4 -> dim/2, k 15), stem.1.fn (residual ConvBlock k 1), stem.2 (softmax pooling)
//   conv_tower.{i}: .0 ConvBlock k 5, .1.fn residual ConvBlock k 1, .2 softmax pooling
//   transformer.{l}: .0.fn.0 LayerNorm, .0.fn.1 relative-position attention (to_q, to_k, to_v,
//     to_rel_k without bias; to_out with bias; rel_content_bias, rel_pos_bias [1, H, 1, Dk]);
//     .1.fn.0 LayerNorm, .1.fn.1 Linear(dim, 2dim), .1.fn.4 Linear(2dim, dim)
//   final_pointwise.1 (ConvBlock dim -> 2dim, k 1)
//   _heads.<name>.0 (Linear 2dim -> n, then softplus; not on the embedding path)
// ConvBlock = BatchNorm -> gelu_sigmoid -> Conv1d (children "0" and "2").
// forward() returns the trunk embedding [B, T', 2*dim] (ModelGenerator's return_only_embeddings).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/enformer/config.h"
#include "models/enformer/one_hot.h"
#include "nn/layers.h"

namespace strand::models::enformer {

namespace detail {
struct ConvBlock;
struct AttentionPool;
struct TowerBlock;
struct TransformerBlock;
}  // namespace detail

class Enformer : public nn::Module {
 public:
  explicit Enformer(const EnformerConfig& config, nn::LayerOptions o = {});
  ~Enformer() override;

  // one-hot DNA [B, L, 4] (see one_hot_dna) -> trunk embedding [B, T', 2*dim], T' = the configured
  // target_length for L = 2^num_downsamples * T (output_length(L) in general). Train mode: BatchNorm
  // uses batch statistics and updates its running ones, dropout is active; eval mode: running
  // statistics, no dropout. A too-short input is a strand::Error naming the lengths.
  Tensor forward(const Tensor& one_hot);
  // DNA strings (one shared length) -> trunk embedding.
  Tensor embed(const std::vector<std::string>& sequences) { return forward(one_hot_dna(sequences)); }
  // softplus(Linear(embedding)) for one of config().output_heads.
  Tensor head(const std::string& name, const Tensor& embedding);

  const EnformerConfig& config() const { return config_; }
  int64_t embedding_dim() const { return 2 * config_.dim; }
  // Checkpointing switches (training only): transformer blocks / stem + conv tower.
  void set_checkpointing(bool transformer, bool conv) {
    config_.use_checkpointing = transformer;
    config_.checkpoint_conv = conv;
  }
  // Sets every dropout rate (e.g. 0 for deterministic train-mode runs); the config records them.
  void set_dropout(double rate, double attn, double pos);
  // Parameters of the trunk only (everything but _heads.*).
  int64_t num_trunk_parameters() const;

 private:
  Tensor stem_forward(const Tensor& x);
  Tensor tower_forward(size_t i, const Tensor& x);
  Tensor block_forward(size_t l, const Tensor& x);
  Tensor attention(size_t l, const Tensor& x);
  Tensor conv_block(const detail::ConvBlock& b, const Tensor& x);
  Tensor pool(const detail::AttentionPool& p, const Tensor& x);
  // Runs fn as one checkpointed segment when `on` (and training with grad): BatchNorm running
  // statistics are updated by the first run only, not by the recomputation in backward.
  Tensor segment(bool on, const std::function<Tensor(const Tensor&)>& fn, const Tensor& x);
  const Tensor& positions(int64_t T);

  EnformerConfig config_;
  std::unique_ptr<detail::ConvBlock> stem_block_;
  std::shared_ptr<nn::Conv1d> stem_conv_;
  std::unique_ptr<detail::AttentionPool> stem_pool_;
  std::vector<detail::TowerBlock> tower_;
  std::vector<detail::TransformerBlock> blocks_;
  std::unique_ptr<detail::ConvBlock> final_block_;
  std::map<std::string, std::shared_ptr<nn::Linear>> heads_;
  Tensor tf_gamma_;
  std::map<int64_t, Tensor> positions_;  // [2T-1, F6] per trunk length T (constants)
  bool recomputing_ = false;
};

struct LoadEnformerOptions {
  // Overrides applied to the folder's config.json before building (e.g. checkpointing switches,
  // tf_gamma_path); leave unset to keep the file's values.
  std::function<void(EnformerConfig&)> edit_config;
  nn::LayerOptions layer_options;  // dtype / device of the built model (loaded weights are cast)
};

// Loads an Enformer from a Hugging Face folder saved by enformer-pytorch: config.json (model_type
// "enformer") plus model.safetensors or model.safetensors.index.json with its shards. Keys may use
// the canonical names (stem.*, conv_tower.*, transformer.*, final_pointwise.*), the aliased trunk
// names (_trunk.1.* = stem, _trunk.2.* = conv_tower, _trunk.4.* = transformer, _trunk.6.* =
// final_pointwise) or both (then each pair must hold identical values). Strict: any missing,
// unexpected or wrongly shaped key is a strand::Error listing them by name. Returned in eval mode.
std::shared_ptr<Enformer> load_enformer(const std::string& folder, const LoadEnformerOptions& opts = {});

// Maps the aliased `_trunk.<i>.` key names of enformer-pytorch's state dict to the canonical ones
// (other keys unchanged) and removes duplicated aliases after checking they hold the same values.
nn::StateDict canonicalize_enformer_state_dict(const nn::StateDict& sd);

}  // namespace strand::models::enformer
