#pragma once
// AIDO.RNA: ModelGenerator's RNABertModel (Megatron-derived BERT), HF parameter names without the
// "bert." prefix. Per layer, pre-norm (LayerNorm with bias, or weight-only RMSNorm computed in
// fp32, per config.normalization_type):
//   h = norm(x); q, k, v = h W + b; RoPE on q, k (inv_freq recomputed in fp32, never loaded);
//   s = q kᵀ / sqrt(hd) (scaled AFTER RoPE) + M·finfo(float).min with the outer-product pad mask
//   M = !(m_i & m_j); p = softmax(s) with p[M] = 0 (pad query rows become all zero);
//   x += o Wo + bo; x += down(silu(gate(norm(x))) * up(norm(x)))
// then the final norm (encoder.ln).
#include <memory>
#include <string>

#include "models/backbone.h"
#include "nn/layers.h"

namespace strand::models {

struct RNABertConfig {
  int64_t vocab_size = 16;
  int64_t hidden_size = 1024;
  int64_t num_hidden_layers = 24;
  int64_t num_attention_heads = 16;
  int64_t intermediate_size = 4096;
  double layer_norm_eps = 1e-5;
  std::string normalization_type = "RMSNorm";  // RNABertConfig's default; the published models say LayerNorm
  bool add_linear_bias = true;
  double rotary_percent = 1.0;
  int64_t pad_token_id = 0;
  int64_t max_position_embeddings = 512;
  double hidden_dropout_prob = 0.0;
  double attention_probs_dropout_prob = 0.0;

  // "aido_rna_650m", "aido_rna_650m_cds", "aido_rna_1b600m", "aido_rna_1b600m_cds" (ModelGenerator's
  // names) or the Hub names "AIDO.RNA-650M", "AIDO.RNA-1.6B", "AIDO.RNA-650M-CDS", "AIDO.RNA-1.6B-CDS".
  static RNABertConfig preset(const std::string& name);
  // From a config.json text (model_type "rnabert"); absent fields take RNABertConfig's defaults.
  static RNABertConfig from_json(const std::string& json_text, const std::string& source = "config.json");
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t rotary_dim() const { return static_cast<int64_t>(static_cast<double>(head_dim()) * rotary_percent); }
  void validate() const;
};

class RNABertSelfAttention : public nn::Module {
 public:
  explicit RNABertSelfAttention(const RNABertConfig& c);
  // pad [B, T] bool (true = padding; undefined = no padding): pad keys are masked, pad query rows zero.
  Tensor forward(const Tensor& x, const Tensor& pad, const RotaryTables& rope);
  std::shared_ptr<nn::UnaryModule> query, key, value;
  int64_t heads, head_dim;
  double attn_dropout;
};

class RNABertLayer : public nn::Module {
 public:
  explicit RNABertLayer(const RNABertConfig& c);
  Tensor forward(const Tensor& x, const Tensor& pad, const RotaryTables& rope);
  std::shared_ptr<RNABertSelfAttention> self_attn;
  std::shared_ptr<nn::UnaryModule> attn_ln, attn_out_dense, ln, gate_proj, up_proj, down_proj;
  double hidden_dropout;
};

class RNABertModel : public Backbone {
 public:
  explicit RNABertModel(const RNABertConfig& c);
  BackboneOutput forward(const Tensor& input_ids, const Tensor& attention_mask) override;
  int64_t hidden_size() const override { return config.hidden_size; }
  std::string model_type() const override { return "rnabert"; }

  RNABertConfig config;
  std::shared_ptr<nn::Embedding> word_embeddings;
  std::shared_ptr<nn::ModuleList> layers;
  std::shared_ptr<nn::UnaryModule> final_ln;
  Tensor inv_freq;  // recomputed in fp32 (not a parameter or buffer: checkpoints' copies are ignored)
};

}  // namespace strand::models
