#include "models/esm2/esm2.h"

#include <cfloat>
#include <cmath>
#include <nlohmann/json.hpp>

#include "models/config_fields.h"

namespace strand::models {

using json = nlohmann::json;

// ---------------- config ----------------
Esm2Config Esm2Config::preset(const std::string& raw) {
  std::string n = raw;
  if (n.rfind("facebook/", 0) == 0) n = n.substr(9);
  if (n.rfind("esm2_", 0) == 0) n = n.substr(5);
  if (n.size() > 6 && n.compare(n.size() - 6, 6, "_UR50D") == 0) n = n.substr(0, n.size() - 6);
  Esm2Config c;
  auto set = [&](int64_t layers, int64_t d) {
    c.num_hidden_layers = layers;
    c.hidden_size = d;
    c.num_attention_heads = 20;
    c.intermediate_size = 4 * d;
  };
  if (n == "t6_8M") set(6, 320);
  else if (n == "t12_35M") set(12, 480);
  else if (n == "t30_150M") set(30, 640);
  else if (n == "t33_650M") set(33, 1280);
  else STRAND_CHECK(false, "ESM-2: unknown preset '", raw, "' (known: esm2_t6_8M_UR50D, esm2_t12_35M_UR50D, ",
                    "esm2_t30_150M_UR50D, esm2_t33_650M_UR50D)");
  return c;
}

Esm2Config Esm2Config::from_json(const std::string& text, const std::string& source) {
  const json j = parse_config_json(text, source);
  std::string model_type = "esm", pos = "rotary", act = "gelu";
  bool folding = false;
  get_field(j, "model_type", model_type, source);
  STRAND_CHECK(model_type == "esm", source, ": model_type is '", model_type, "', expected 'esm'");
  Esm2Config c;
  c.layer_norm_eps = -1;
  get_field(j, "vocab_size", c.vocab_size, source);
  get_field(j, "hidden_size", c.hidden_size, source);
  get_field(j, "num_hidden_layers", c.num_hidden_layers, source);
  get_field(j, "num_attention_heads", c.num_attention_heads, source);
  get_field(j, "intermediate_size", c.intermediate_size, source);
  get_field(j, "layer_norm_eps", c.layer_norm_eps, source);
  get_field(j, "token_dropout", c.token_dropout, source);
  get_field(j, "emb_layer_norm_before", c.emb_layer_norm_before, source);
  get_field(j, "pad_token_id", c.pad_token_id, source);
  get_field(j, "mask_token_id", c.mask_token_id, source);
  get_field(j, "max_position_embeddings", c.max_position_embeddings, source);
  get_field(j, "hidden_dropout_prob", c.hidden_dropout_prob, source);
  get_field(j, "attention_probs_dropout_prob", c.attention_probs_dropout_prob, source);
  get_field(j, "position_embedding_type", pos, source);
  get_field(j, "hidden_act", act, source);
  get_field(j, "is_folding_model", folding, source);
  STRAND_CHECK(c.layer_norm_eps > 0, source, ": layer_norm_eps is missing (ESM-2 uses 1e-5; EsmConfig's default ",
               "1e-12 would silently change the model)");
  STRAND_CHECK(pos == "rotary", source, ": position_embedding_type '", pos,
               "' is not supported (ESM-2 uses 'rotary'; ESM-1 style absolute/relative positions are not implemented)");
  STRAND_CHECK(act == "gelu", source, ": hidden_act '", act, "' is not supported (ESM-2 uses 'gelu', the exact erf form)");
  STRAND_CHECK(!folding, source, ": ESMFold (is_folding_model) is not supported");
  c.validate();
  return c;
}

void Esm2Config::validate() const {
  STRAND_CHECK(hidden_size > 0 && num_hidden_layers > 0 && num_attention_heads > 0 && intermediate_size > 0 &&
                   vocab_size > 0,
               "ESM-2 config: sizes must be positive (hidden_size ", hidden_size, ", num_hidden_layers ",
               num_hidden_layers, ", num_attention_heads ", num_attention_heads, ", intermediate_size ",
               intermediate_size, ", vocab_size ", vocab_size, ")");
  STRAND_CHECK(hidden_size % num_attention_heads == 0, "ESM-2 config: hidden_size ", hidden_size,
               " is not a multiple of num_attention_heads ", num_attention_heads);
  STRAND_CHECK(head_dim() % 2 == 0, "ESM-2 config: head dim ", head_dim(), " must be even for rotary embeddings");
  STRAND_CHECK(pad_token_id >= 0 && pad_token_id < vocab_size && mask_token_id < vocab_size,
               "ESM-2 config: pad_token_id ", pad_token_id, " / mask_token_id ", mask_token_id,
               " out of range for vocab_size ", vocab_size);
  STRAND_CHECK(hidden_dropout_prob >= 0 && hidden_dropout_prob < 1 && attention_probs_dropout_prob >= 0 &&
                   attention_probs_dropout_prob < 1,
               "ESM-2 config: dropout probabilities must be in [0, 1)");
}

// ---------------- layers ----------------
EsmSelfAttention::EsmSelfAttention(const Esm2Config& c)
    : Module("EsmSelfAttention"),
      heads(c.num_attention_heads),
      head_dim(c.head_dim()),
      attn_dropout(c.attention_probs_dropout_prob) {
  const int64_t d = c.hidden_size;
  query = std::make_shared<nn::Linear>(d, d);
  key = std::make_shared<nn::Linear>(d, d);
  value = std::make_shared<nn::Linear>(d, d);
  register_module("query", query);
  register_module("key", key);
  register_module("value", value);
  rotary_embeddings = container("RotaryEmbedding");
  // Overwritten by the checkpoint's (fp16-rounded) values when it has them.
  inv_freq = rotary_embeddings->register_buffer("inv_freq", rotary_inv_freq(head_dim));
  register_module("rotary_embeddings", rotary_embeddings);
}

Tensor EsmSelfAttention::forward(const Tensor& x, const Tensor& key_pad, const RotaryTables& rope) {
  const int64_t B = x.size(0), T = x.size(1);
  auto heads_first = [&](const Tensor& t) { return transpose(reshape(t, {B, T, heads, head_dim}), 1, 2); };
  Tensor q = heads_first((*query)(x)) * std::pow(static_cast<double>(head_dim), -0.5);
  Tensor k = heads_first((*key)(x));
  Tensor v = heads_first((*value)(x));
  q = apply_rotary(q, rope);
  k = apply_rotary(k, rope);
  Tensor o;  // [B, H, T, hd]
  const double p = is_training() ? attn_dropout : 0.0;
  // Attention dropout on a GPU: the composed path, until the CUDA kernels' dropout (written, with
  // CudaNnParity.FusedAttentionEveryVariant covering it) has run on one (ops::fused_gpu_attention).
  if (p > 0 && x.is_cuda() && !ops::fused_gpu_attention()) {
    Tensor s = matmul(q, transpose(k, -1, -2));  // [B, H, T, T]
    if (key_pad.defined()) s = masked_fill(s, key_pad, -FLT_MAX);  // HF adds finfo(float).min: the same after softmax
    o = matmul(dropout(softmax(s, -1), p, true), v);
  } else {  // the same function fused (q is already scaled), with the same dropout mask
    ops::AttentionParams ap{1.0, key_pad.defined() ? reshape(key_pad, {B, T}) : Tensor(), {}};
    ap.dropout = p;
    o = attention(q, k, v, ap);
  }
  return reshape(transpose(o, 1, 2), {B, T, heads * head_dim});
}

EsmLayer::EsmLayer(const Esm2Config& c) : Module("EsmLayer"), hidden_dropout(c.hidden_dropout_prob) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  self_attn = std::make_shared<EsmSelfAttention>(c);
  attn_out_dense = std::make_shared<nn::Linear>(d, d);
  intermediate_dense = std::make_shared<nn::Linear>(d, f);
  output_dense = std::make_shared<nn::Linear>(f, d);
  attn_ln = std::make_shared<nn::LayerNorm>(d, c.layer_norm_eps);
  ffn_ln = std::make_shared<nn::LayerNorm>(d, c.layer_norm_eps);
  auto attention = container("EsmAttention"), attn_output = container("EsmSelfOutput");
  auto intermediate = container("EsmIntermediate"), output = container("EsmOutput");
  attention->register_module("self", self_attn);
  attn_output->register_module("dense", attn_out_dense);
  attention->register_module("output", attn_output);
  attention->register_module("LayerNorm", attn_ln);
  intermediate->register_module("dense", intermediate_dense);
  output->register_module("dense", output_dense);
  register_module("attention", attention);
  register_module("intermediate", intermediate);
  register_module("output", output);
  register_module("LayerNorm", ffn_ln);
}

Tensor EsmLayer::forward(const Tensor& x, const Tensor& key_pad) {
  const int64_t T = x.size(1);
  RotaryTables rope = rotary_tables(self_attn->inv_freq, T, x.dtype(), x.device());
  Tensor a = self_attn->forward((*attn_ln)(x), key_pad, rope);
  Tensor h = x + dropout((*attn_out_dense)(a), hidden_dropout, is_training());
  Tensor f = (*output_dense)(gelu((*intermediate_dense)((*ffn_ln)(h))));
  return h + dropout(f, hidden_dropout, is_training());
}

// ---------------- model ----------------
Esm2Model::Esm2Model(const Esm2Config& c) : Backbone("EsmModel"), config(c) {
  config.validate();
  const int64_t d = c.hidden_size;
  word_embeddings = std::make_shared<nn::Embedding>(c.vocab_size, d, c.pad_token_id);
  auto embeddings = container("EsmEmbeddings");
  embeddings->register_module("word_embeddings", word_embeddings);
  if (c.emb_layer_norm_before) {
    emb_layer_norm = std::make_shared<nn::LayerNorm>(d, c.layer_norm_eps);
    embeddings->register_module("layer_norm", emb_layer_norm);
  }
  layers = std::make_shared<nn::ModuleList>();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(std::make_shared<EsmLayer>(c));
  emb_layer_norm_after = std::make_shared<nn::LayerNorm>(d, c.layer_norm_eps);
  auto encoder = container("EsmEncoder");
  encoder->register_module("layer", layers);
  encoder->register_module("emb_layer_norm_after", emb_layer_norm_after);
  register_module("embeddings", embeddings);
  register_module("encoder", encoder);
}

Tensor Esm2Model::embed(const Tensor& ids, const Tensor& attention_mask) {
  Tensor x = (*word_embeddings)(ids);  // [B, T, D]
  const int64_t B = ids.size(0);
  if (config.token_dropout) {
    Tensor is_mask = ops::compare(CompareOp::eq, ids, static_cast<double>(config.mask_token_id));  // [B, T]
    x = masked_fill(x, unsqueeze(is_mask, -1), 0.0);
    Tensor n_mask = ops::to(ops::sum(ops::to(is_mask, DType::i64), {1}), DType::f32);
    Tensor n_tok = config.embeddings_ignore_padding
                       ? ops::full({B}, static_cast<double>(ids.size(1)), DType::f32)
                       : ops::to(ops::sum(ops::to(attention_mask, DType::i64), {1}), DType::f32);
    Tensor keep = ops::to(ops::neg(ops::add(ops::div(n_mask, n_tok), -1.0)), x.dtype());  // 1 - observed ratio
    const double mask_ratio_train = 0.15 * 0.8;  // hard-coded in every ESM training run
    x = div(mul(x, 1 - mask_ratio_train), reshape(keep, {B, 1, 1}));
  }
  if (emb_layer_norm) x = (*emb_layer_norm)(x);
  if (config.embeddings_ignore_padding) return x;
  return mul(x, unsqueeze(mask_as(attention_mask, x), -1));
}

BackboneOutput Esm2Model::forward(const Tensor& ids, const Tensor& attention_mask) {
  STRAND_CHECK(ids.dim() == 2 && ids.dtype() == DType::i64, "EsmModel: input_ids must be i64 [B, L], got ", ids.str());
  STRAND_CHECK(attention_mask.sizes() == ids.sizes(), "EsmModel: attention_mask ", shape_str(attention_mask.sizes()),
               " does not match input_ids ", shape_str(ids.sizes()));
  Tensor x = embed(ids, attention_mask);
  const int64_t B = ids.size(0), T = ids.size(1);
  Tensor is_pad = ops::compare(CompareOp::eq, ops::to(attention_mask, DType::i64), 0.0);
  Tensor key_pad;  // undefined when nothing is padded: the mask would change nothing
  if (ops::item(ops::sum(is_pad)) > 0) key_pad = ops::to(ops::reshape(is_pad, {B, 1, 1, T}), x.device());
  for (size_t i = 0; i < layers->size(); ++i) x = layers->at<EsmLayer>(i)->forward(x, key_pad);
  return {(*emb_layer_norm_after)(x), attention_mask};
}

}  // namespace strand::models
