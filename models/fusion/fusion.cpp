#include "models/fusion/fusion.h"

#include "models/backbone.h"

#include <cmath>

namespace strand::models {

Pooling pooling_from_string(const std::string& s) {
  if (s == "mean_pooling" || s == "mean") return Pooling::mean;
  if (s == "cls_pooling" || s == "cls") return Pooling::cls;
  STRAND_CHECK(false, "unknown pooling '", s, "' (expected mean_pooling or cls_pooling)");
  return Pooling::mean;
}

Tensor masked_mean_pool(const Tensor& h, const Tensor& mask) {
  STRAND_CHECK(h.dim() == 3, "mean pooling expects hidden states [B, L, D], got ", shape_str(h.sizes()));
  if (!mask.defined()) return mean(h, {1});
  return masked_mean(h, ops::to(mask, h.device()));
}

Tensor pool(Pooling p, const Tensor& h, const Tensor& mask) {
  if (p == Pooling::cls) return select(h, 1, 0);
  return masked_mean_pool(h, mask);
}

MLPAdapter::MLPAdapter(int64_t in, int64_t out, const MLPOptions& o) {
  add(std::make_shared<nn::Dropout>(o.dropout));
  int64_t d = in;
  for (int64_t h : o.hidden_sizes) {
    add(std::make_shared<nn::Linear>(d, h, o.bias));
    add(std::make_shared<nn::ActivationModule>(o.activation));
    if (o.dropout_in_middle) add(std::make_shared<nn::Dropout>(o.dropout));
    d = h;
  }
  add(std::make_shared<nn::Linear>(d, out, o.bias));
}

MLPPoolAdapter::MLPPoolAdapter(int64_t in, int64_t out, Pooling p, const MLPOptions& o)
    : Module("MLPPoolAdapter"), pooling(p), mlp(std::make_shared<MLPAdapter>(in, out, o)) {
  register_module("mlp", mlp);
}
Tensor MLPPoolAdapter::forward(const Tensor& h, const Tensor& mask) { return (*mlp)(pool(pooling, h, mask)); }

ConcatFusion::ConcatFusion(const std::vector<int64_t>& hidden_sizes, int64_t project_size, Pooling p)
    : Fusion("ConcatFusion"), pooling(p) {
  STRAND_CHECK(hidden_sizes.size() == 2 || hidden_sizes.size() == 3, "ConcatFusion fuses 2 or 3 modalities, got ",
               hidden_sizes.size());
  STRAND_CHECK(project_size > 0, "ConcatFusion: project_size must be positive, got ", project_size);
  projects.resize(hidden_sizes.size());
  for (size_t i = 0; i < hidden_sizes.size(); ++i) {
    projects[i] = std::make_shared<nn::Linear>(hidden_sizes[i], project_size);
    register_module(i == 0 ? "project" : "project_" + std::to_string(i), projects[i]);
  }
  output_hidden_size = project_size * static_cast<int64_t>(hidden_sizes.size());
}

Tensor ConcatFusion::forward(const std::vector<Tensor>& hidden, const std::vector<Tensor>& masks) {
  STRAND_CHECK(hidden.size() == projects.size() && masks.size() == projects.size(), "ConcatFusion: expected ",
               projects.size(), " modalities, got ", hidden.size(), " hidden states and ", masks.size(), " masks");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < hidden.size(); ++i) parts.push_back((*projects[i])(pool(pooling, hidden[i], masks[i])));
  return concat(parts, 1);
}

CrossAttentionBlock::CrossAttentionBlock(int64_t hidden, int64_t ctx, int64_t heads)
    : Module("MultiHeadAttention"), num_heads(heads) {
  STRAND_CHECK(heads > 0 && hidden % heads == 0, "cross attention: hidden size ", hidden,
               " is not divisible by the number of heads ", heads);
  head_size = hidden / heads;
  query = std::make_shared<nn::Linear>(hidden, hidden);
  key = std::make_shared<nn::Linear>(ctx, hidden);
  value = std::make_shared<nn::Linear>(ctx, hidden);
  dense = std::make_shared<nn::Linear>(hidden, hidden);
  register_module("query", query);
  register_module("key", key);
  register_module("value", value);
  register_module("dense", dense);
}

Tensor CrossAttentionBlock::forward(const Tensor& x, const Tensor& c, const Tensor& mask_q, const Tensor& mask_c) {
  STRAND_CHECK(x.dim() == 3 && c.dim() == 3 && x.size(0) == c.size(0), "cross attention: query ", shape_str(x.sizes()),
               " and context ", shape_str(c.sizes()), " must be [B, L, D] with the same batch");
  const int64_t B = x.size(0), T = x.size(1), Lc = c.size(1);
  auto heads = [&](const Tensor& t, int64_t L) { return permute(reshape(t, {B, L, num_heads, head_size}), {0, 2, 1, 3}); };
  Tensor q = heads((*query)(x), T), k = heads((*key)(c), Lc), v = heads((*value)(c), Lc);
  // ModelGenerator keeps (i, j) where mask_q[i] * mask_c[j] > 0.5 and fills the rest with -1e30 before
  // the softmax: a padded context key is masked, and a padded query has every key masked (uniform
  // row). The fused op computes exactly that (a masked logit only has to be far below the rest).
  auto padded = [&](const Tensor& m) { return ops::compare(CompareOp::le, ops::to(ops::to(m, x.device()), DType::f32), 0.5); };
  ops::AttentionParams ap{1.0 / std::sqrt(static_cast<double>(head_size)), padded(mask_c), padded(mask_q), false};
  Tensor ctx = reshape(permute(attention(q, k, v, ap), {0, 2, 1, 3}), {B, T, num_heads * head_size});
  return (*dense)(ctx) + x;
}

CrossAttentionFusion::CrossAttentionFusion(int64_t hidden, int64_t ctx1, int64_t ctx2, int64_t heads)
    : Fusion("CrossAttentionFusion") {
  layer_01 = std::make_shared<CrossAttentionBlock>(hidden, ctx1, heads);
  register_module("cross_attention_layer_01", layer_01);
  if (ctx2 > 0) {
    layer_02 = std::make_shared<CrossAttentionBlock>(hidden, ctx2, heads);
    register_module("cross_attention_layer_02", layer_02);
  }
  output_hidden_size = hidden;
}

Tensor CrossAttentionFusion::forward(const std::vector<Tensor>& hidden, const std::vector<Tensor>& masks) {
  const size_t n = layer_02 ? 3 : 2;
  STRAND_CHECK(hidden.size() == n && masks.size() == n, "CrossAttentionFusion: expected ", n, " modalities, got ",
               hidden.size(), " hidden states and ", masks.size(), " masks");
  Tensor f = layer_01->forward(hidden[0], hidden[1], masks[0], masks[1]);
  if (layer_02) f = layer_02->forward(f, hidden[2], masks[0], masks[2]);  // sequential, not a sum
  return f;
}

FusionHead::FusionHead(const std::string& k, const std::vector<int64_t>& hidden_sizes, int64_t out,
                       const MLPOptions& adapter_opts, int64_t project_size, int64_t num_heads, Pooling pooling)
    : Module("FusionHead"), kind(k) {
  STRAND_CHECK(hidden_sizes.size() == 2 || hidden_sizes.size() == 3, "fusion head: 2 or 3 backbones, got ",
               hidden_sizes.size());
  if (kind == "concat") {
    fusion_module = std::make_shared<ConcatFusion>(hidden_sizes, project_size, pooling);
    adapter = std::make_shared<MLPAdapter>(fusion_module->output_hidden_size, out, adapter_opts);
  } else if (kind == "attention") {
    fusion_module = std::make_shared<CrossAttentionFusion>(hidden_sizes[0], hidden_sizes[1],
                                                           hidden_sizes.size() == 3 ? hidden_sizes[2] : 0, num_heads);
    adapter = std::make_shared<MLPPoolAdapter>(fusion_module->output_hidden_size, out, pooling, adapter_opts);
  } else {
    STRAND_CHECK(false, "unknown fusion '", kind, "' (expected concat or attention)");
  }
  register_module("fusion_module", fusion_module);
  register_module("adapter", adapter);
}

Tensor FusionHead::forward(const std::vector<Tensor>& hidden, const std::vector<Tensor>& masks) {
  Tensor fused = fusion_module->forward(hidden, masks);
  if (auto* mlp = dynamic_cast<MLPAdapter*>(adapter.get())) return (*mlp)(fused);
  return static_cast<MLPPoolAdapter*>(adapter.get())->forward(fused, masks[0]);
}

}  // namespace strand::models
