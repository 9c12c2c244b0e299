#pragma once
// ESM-2 (Lin et al. 2023) as Hugging Face's EsmModel computes it, with HF parameter names (no
// "esm." prefix; models/hf_dir.h strips it). Per layer, pre-LN:
//   h = LN(x); q = (h Wq + bq) * hd^-0.5 (scaled BEFORE rotary); k, v biased; RoPE on q, k with
//   inv_freq from the checkpoint (the published files hold fp16-rounded values);
//   softmax(q kᵀ + key-padding mask); x += o Wo + bo; x += W2 gelu_erf(W1 LN(x) + b1) + b2
// then a final LayerNorm (emb_layer_norm_after). Embeddings: no positions, token-dropout rescale
// (×0.88 / (1 - mask ratio), also at inference) and pad positions zeroed.
#include <memory>
#include <string>

#include "models/backbone.h"
#include "nn/layers.h"

namespace strand::models {

struct Esm2Config {
  int64_t vocab_size = 33;
  int64_t hidden_size = 320;
  int64_t num_hidden_layers = 6;
  int64_t num_attention_heads = 20;
  int64_t intermediate_size = 1280;
  double layer_norm_eps = 1e-5;  // the ESM-2 files say 1e-5 (EsmConfig's own default is 1e-12)
  bool token_dropout = true;
  bool emb_layer_norm_before = false;
  int64_t pad_token_id = 1;
  int64_t mask_token_id = 32;
  int64_t max_position_embeddings = 1026;
  double hidden_dropout_prob = 0.0;
  double attention_probs_dropout_prob = 0.0;
  // transformers >= 4.5x (4.56.2 checked) calls EsmEmbeddings without the attention mask: the
  // token-dropout ratio is then taken over the PADDED length and pad embeddings are not zeroed, so
  // a sequence's output depends on the rest of its batch. Off (the default) is fair-esm's and
  // transformers 4.38's behaviour (ModelGenerator pins 4.38); on reproduces the newer HF output.
  bool embeddings_ignore_padding = false;

  // "esm2_t6_8M_UR50D", "esm2_t12_35M_UR50D", "esm2_t30_150M_UR50D", "esm2_t33_650M_UR50D" (the
  // facebook/ prefix and the _UR50D suffix are optional: "t6_8M" works).
  static Esm2Config preset(const std::string& name);
  // From a config.json text (model_type "esm"); fields absent there take EsmConfig's defaults,
  // except layer_norm_eps, whose absence is an error (the 1e-12 default is wrong for ESM-2).
  static Esm2Config from_json(const std::string& json_text, const std::string& source = "config.json");
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  void validate() const;
};

class EsmSelfAttention : public nn::Module {
 public:
  explicit EsmSelfAttention(const Esm2Config& c);
  // x [B, T, D], key_pad [B, 1, 1, T] bool (true = padding key; undefined = no padding), rotary tables for T.
  Tensor forward(const Tensor& x, const Tensor& key_pad, const RotaryTables& rope);
  std::shared_ptr<nn::UnaryModule> query, key, value;  // LoRA may wrap any of them
  std::shared_ptr<nn::Module> rotary_embeddings;       // holds the buffer inv_freq [hd/2]
  Tensor inv_freq;
  int64_t heads, head_dim;
  double attn_dropout;
};

class EsmLayer : public nn::Module {
 public:
  explicit EsmLayer(const Esm2Config& c);
  Tensor forward(const Tensor& x, const Tensor& key_pad);
  // Children as HF names them: attention.{self, output.dense, LayerNorm}, intermediate.dense,
  // output.dense, LayerNorm.
  std::shared_ptr<EsmSelfAttention> self_attn;
  std::shared_ptr<nn::UnaryModule> attn_out_dense, intermediate_dense, output_dense;
  std::shared_ptr<nn::LayerNorm> attn_ln, ffn_ln;
  double hidden_dropout;
};

class Esm2Model : public Backbone {
 public:
  explicit Esm2Model(const Esm2Config& c);
  BackboneOutput forward(const Tensor& input_ids, const Tensor& attention_mask) override;
  int64_t hidden_size() const override { return config.hidden_size; }
  std::string model_type() const override { return "esm"; }
  // The token-dropout-rescaled, pad-zeroed embeddings (the input of layer 0).
  Tensor embed(const Tensor& input_ids, const Tensor& attention_mask);

  Esm2Config config;
  std::shared_ptr<nn::Embedding> word_embeddings;
  std::shared_ptr<nn::LayerNorm> emb_layer_norm;  // only with emb_layer_norm_before (not ESM-2)
  std::shared_ptr<nn::ModuleList> layers;
  std::shared_ptr<nn::LayerNorm> emb_layer_norm_after;
};

}  // namespace strand::models
