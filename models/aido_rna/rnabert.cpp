#include "models/aido_rna/rnabert.h"

#include <cfloat>
#include <cmath>
#include <nlohmann/json.hpp>

#include "models/config_fields.h"

namespace strand::models {

namespace {
using json = nlohmann::json;


std::shared_ptr<nn::UnaryModule> make_norm(const RNABertConfig& c) {
  if (c.normalization_type == "LayerNorm") return std::make_shared<nn::LayerNorm>(c.hidden_size, c.layer_norm_eps);
  return std::make_shared<nn::RMSNorm>(c.hidden_size, c.layer_norm_eps);
}
}  // namespace

// ---------------- config ----------------
RNABertConfig RNABertConfig::preset(const std::string& raw) {
  std::string n;
  for (char ch : raw) n += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (n.rfind("genbio-ai/", 0) == 0) n = n.substr(10);
  for (char& ch : n)
    if (ch == '.' || ch == '-') ch = '_';
  RNABertConfig c;
  c.normalization_type = "LayerNorm";
  c.max_position_embeddings = 1024;
  if (n == "aido_rna_650m" || n == "aido_rna_650m_cds") {
    c.num_hidden_layers = 33;
    c.hidden_size = 1280;
    c.num_attention_heads = 20;
    c.intermediate_size = 3392;
  } else if (n == "aido_rna_1b600m" || n == "aido_rna_1b600m_cds" || n == "aido_rna_1_6b" || n == "aido_rna_1_6b_cds") {
    c.num_hidden_layers = 32;
    c.hidden_size = 2048;
    c.num_attention_heads = 32;
    c.intermediate_size = 5440;
  } else {
    STRAND_CHECK(false, "AIDO.RNA: unknown preset '", raw, "' (known: aido_rna_650m, aido_rna_650m_cds, ",
                 "aido_rna_1b600m, aido_rna_1b600m_cds, or the Hub names AIDO.RNA-650M, AIDO.RNA-1.6B and their -CDS)");
  }
  return c;
}

RNABertConfig RNABertConfig::from_json(const std::string& text, const std::string& source) {
  const json j = parse_config_json(text, source);
  std::string model_type = "rnabert", pos = "rope", act = "swiglu";
  get_field(j, "model_type", model_type, source);
  STRAND_CHECK(model_type == "rnabert", source, ": model_type is '", model_type, "', expected 'rnabert'");
  RNABertConfig c;
  get_field(j, "vocab_size", c.vocab_size, source);
  get_field(j, "hidden_size", c.hidden_size, source);
  get_field(j, "num_hidden_layers", c.num_hidden_layers, source);
  get_field(j, "num_attention_heads", c.num_attention_heads, source);
  get_field(j, "intermediate_size", c.intermediate_size, source);
  get_field(j, "layer_norm_eps", c.layer_norm_eps, source);
  get_field(j, "normalization_type", c.normalization_type, source);
  get_field(j, "add_linear_bias", c.add_linear_bias, source);
  get_field(j, "rotary_percent", c.rotary_percent, source);
  get_field(j, "pad_token_id", c.pad_token_id, source);
  get_field(j, "max_position_embeddings", c.max_position_embeddings, source);
  get_field(j, "hidden_dropout_prob", c.hidden_dropout_prob, source);
  get_field(j, "attention_probs_dropout_prob", c.attention_probs_dropout_prob, source);
  get_field(j, "position_embedding_type", pos, source);
  get_field(j, "hidden_act", act, source);
  STRAND_CHECK(pos == "rope", source, ": position_embedding_type '", pos, "' is not supported (AIDO.RNA uses 'rope')");
  STRAND_CHECK(act == "swiglu", source, ": hidden_act '", act, "' is not supported (RNABert allows only 'swiglu')");
  STRAND_CHECK(!j.contains("seq_len_interpolation_factor") || j["seq_len_interpolation_factor"].is_null(), source,
               ": seq_len_interpolation_factor is not supported (the published models leave it null)");
  c.validate();
  return c;
}

void RNABertConfig::validate() const {
  STRAND_CHECK(hidden_size > 0 && num_hidden_layers > 0 && num_attention_heads > 0 && intermediate_size > 0 &&
                   vocab_size > 0,
               "RNABert config: sizes must be positive (hidden_size ", hidden_size, ", num_hidden_layers ",
               num_hidden_layers, ", num_attention_heads ", num_attention_heads, ", intermediate_size ",
               intermediate_size, ", vocab_size ", vocab_size, ")");
  STRAND_CHECK(hidden_size % num_attention_heads == 0, "RNABert config: hidden_size ", hidden_size,
               " is not a multiple of num_attention_heads ", num_attention_heads);
  STRAND_CHECK(normalization_type == "LayerNorm" || normalization_type == "RMSNorm",
               "RNABert config: normalization_type must be 'LayerNorm' or 'RMSNorm', got '", normalization_type, "'");
  STRAND_CHECK(rotary_percent > 0 && rotary_percent <= 1 && rotary_dim() % 2 == 0 && rotary_dim() > 0,
               "RNABert config: rotary_percent ", rotary_percent, " gives rotary dim ", rotary_dim(),
               " of head dim ", head_dim(), " (must be positive and even)");
  STRAND_CHECK(pad_token_id >= 0 && pad_token_id < vocab_size, "RNABert config: pad_token_id ", pad_token_id,
               " out of range for vocab_size ", vocab_size);
  STRAND_CHECK(hidden_dropout_prob >= 0 && hidden_dropout_prob < 1 && attention_probs_dropout_prob >= 0 &&
                   attention_probs_dropout_prob < 1,
               "RNABert config: dropout probabilities must be in [0, 1)");
}

// ---------------- layers ----------------
RNABertSelfAttention::RNABertSelfAttention(const RNABertConfig& c)
    : Module("RNABertSelfAttention"),
      heads(c.num_attention_heads),
      head_dim(c.head_dim()),
      attn_dropout(c.attention_probs_dropout_prob) {
  const int64_t d = c.hidden_size;
  query = std::make_shared<nn::Linear>(d, d, c.add_linear_bias);
  key = std::make_shared<nn::Linear>(d, d, c.add_linear_bias);
  value = std::make_shared<nn::Linear>(d, d, c.add_linear_bias);
  register_module("query", query);
  register_module("key", key);
  register_module("value", value);
}

Tensor RNABertSelfAttention::forward(const Tensor& x, const Tensor& pad, const RotaryTables& rope) {
  const int64_t B = x.size(0), T = x.size(1);
  auto heads_first = [&](const Tensor& t) { return transpose(reshape(t, {B, T, heads, head_dim}), 1, 2); };
  Tensor q = apply_rotary(heads_first((*query)(x)), rope);
  Tensor k = apply_rotary(heads_first((*key)(x)), rope);
  Tensor v = heads_first((*value)(x));
  Tensor o;  // [B, H, T, hd]
  const double drop = is_training() ? attn_dropout : 0.0;
  // Attention dropout on a GPU: the composed path, until the CUDA kernels' dropout (written, with
  // CudaNnParity.FusedAttentionEveryVariant covering it) has run on one (ops::fused_gpu_attention).
  if (drop > 0 && x.is_cuda() && !ops::fused_gpu_attention()) {
    Tensor s = matmul(q, transpose(k, -1, -2)) / std::sqrt(static_cast<double>(head_dim));
    // s + finfo.min equals finfo.min in fp32 for any finite score, so masked_fill gives the same
    // softmax: pad keys get exactly 0, fully blocked (pad query) rows are uniform, then zeroed.
    Tensor p;
    if (pad.defined()) {
      Tensor pf = ops::to(pad, DType::f32);  // blocked = pad_i or pad_j, [B, 1, T, T]
      Tensor blocked = ops::compare(CompareOp::gt, ops::add(ops::reshape(pf, {B, 1, T, 1}), ops::reshape(pf, {B, 1, 1, T})), 0.0);
      p = masked_fill(softmax(masked_fill(s, blocked, -FLT_MAX), -1), blocked, 0.0);
    } else {
      p = softmax(s, -1);
    }
    o = matmul(dropout(p, drop, true), v);
  } else {  // the same function fused: pad keys masked, pad query rows zero, the same dropout mask
    ops::AttentionParams ap{1.0 / std::sqrt(static_cast<double>(head_dim)), pad, pad};
    ap.dropout = drop;
    o = attention(q, k, v, ap);
  }
  return reshape(transpose(o, 1, 2), {B, T, heads * head_dim});
}

RNABertLayer::RNABertLayer(const RNABertConfig& c) : Module("RNABertLayer"), hidden_dropout(c.hidden_dropout_prob) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  const bool b = c.add_linear_bias;
  self_attn = std::make_shared<RNABertSelfAttention>(c);
  attn_ln = make_norm(c);
  ln = make_norm(c);
  attn_out_dense = std::make_shared<nn::Linear>(d, d, b);
  gate_proj = std::make_shared<nn::Linear>(d, f, b);
  up_proj = std::make_shared<nn::Linear>(d, f, b);
  down_proj = std::make_shared<nn::Linear>(f, d, b);
  auto attention = container("RNABertAttention"), attn_output = container("RNABertSelfOutput");
  auto mlp = container("RNABertMLP");
  attention->register_module("ln", attn_ln);
  attention->register_module("self", self_attn);
  attn_output->register_module("dense", attn_out_dense);
  attention->register_module("output", attn_output);
  mlp->register_module("up_proj", up_proj);
  mlp->register_module("down_proj", down_proj);
  mlp->register_module("gate_proj", gate_proj);
  register_module("attention", attention);
  register_module("ln", ln);
  register_module("mlp", mlp);
}

Tensor RNABertLayer::forward(const Tensor& x, const Tensor& pad, const RotaryTables& rope) {
  Tensor a = self_attn->forward((*attn_ln)(x), pad, rope);
  Tensor h = x + dropout((*attn_out_dense)(a), hidden_dropout, is_training());
  Tensor n = (*ln)(h);
  Tensor m = (*down_proj)(silu((*gate_proj)(n)) * (*up_proj)(n));
  return h + dropout(m, hidden_dropout, is_training());
}

// ---------------- model ----------------
RNABertModel::RNABertModel(const RNABertConfig& c) : Backbone("RNABertModel"), config(c) {
  config.validate();
  word_embeddings = std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size, c.pad_token_id);
  auto embeddings = container("RNABertEmbeddings");
  embeddings->register_module("word_embeddings", word_embeddings);
  layers = std::make_shared<nn::ModuleList>();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(std::make_shared<RNABertLayer>(c));
  final_ln = make_norm(c);
  auto encoder = container("RNABertEncoder");
  encoder->register_module("layer", layers);
  encoder->register_module("ln", final_ln);
  register_module("embeddings", embeddings);
  register_module("encoder", encoder);
  inv_freq = rotary_inv_freq(c.rotary_dim());
}

BackboneOutput RNABertModel::forward(const Tensor& ids, const Tensor& attention_mask) {
  STRAND_CHECK(ids.dim() == 2 && ids.dtype() == DType::i64, "RNABertModel: input_ids must be i64 [B, L], got ",
               ids.str());
  STRAND_CHECK(attention_mask.sizes() == ids.sizes(), "RNABertModel: attention_mask ",
               shape_str(attention_mask.sizes()), " does not match input_ids ", shape_str(ids.sizes()));
  const int64_t T = ids.size(1);
  Tensor x = dropout((*word_embeddings)(ids), config.hidden_dropout_prob, is_training());
  Tensor pad = ops::compare(CompareOp::eq, ops::to(attention_mask, DType::i64), 0.0);  // [B, T]
  if (ops::item(ops::sum(pad)) > 0) pad = ops::to(pad, x.device());
  else pad = Tensor();  // nothing padded: the mask would change nothing
  RotaryTables rope = rotary_tables(inv_freq, T, x.dtype(), x.device());
  for (size_t i = 0; i < layers->size(); ++i) x = layers->at<RNABertLayer>(i)->forward(x, pad, rope);
  return {(*final_ln)(x), attention_mask};
}

}  // namespace strand::models
