#pragma once
// ModelGenerator's fusion adapters and heads (modelgenerator/adapters/{fusion,adapters}.py), with
// the same module and parameter names so its checkpoints load by name:
//   MLPAdapter       Sequential: Dropout -> [Linear -> act -> (Dropout)]* -> Linear  ("0", "1", ...)
//   MLPPoolAdapter   masked mean (or CLS) pooling -> mlp (an MLPAdapter)
//   ConcatFusion     per modality: masked mean pool (specials included, pads excluded) -> Linear to
//                    project_size (project, project_1, project_2); concatenated in backbone order
//   CrossAttentionFusion  the first modality's tokens query the second's (cross_attention_layer_01)
//                    and then the third's (cross_attention_layer_02): biased q/k/v/dense, scores
//                    where(mask, s, -1e30), softmax, dense + residual; no norm, FFN or dropout
//   MMFusionTokenAdapter  adapter(fusion_module(...))             (ConcatFusion + MLPAdapter)
//   MMFusionSeqAdapter    adapter(fusion_module(...), masks[0])  (CrossAttentionFusion + MLPPoolAdapter)
// Hidden states are [B, L, D]; masks are [B, L] (any dtype, 1 = keep).
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"

namespace strand::models {

enum class Pooling { mean, cls };
Pooling pooling_from_string(const std::string& s);  // "mean_pooling" | "cls_pooling"
// sum_L(h * m) / clamp(sum_L(m), 1e-9); an undefined mask gives the plain mean over L.
Tensor masked_mean_pool(const Tensor& h, const Tensor& mask);
Tensor pool(Pooling p, const Tensor& h, const Tensor& mask);

struct MLPOptions {
  std::vector<int64_t> hidden_sizes;
  nn::Activation activation = nn::Activation::tanh;
  bool bias = true;
  double dropout = 0.0;
  bool dropout_in_middle = true;
};

class MLPAdapter : public nn::Sequential {
 public:
  MLPAdapter(int64_t in_features, int64_t out_features, const MLPOptions& o = {});
};

class MLPPoolAdapter : public nn::Module {
 public:
  MLPPoolAdapter(int64_t in_features, int64_t out_features, Pooling pooling = Pooling::mean, const MLPOptions& o = {});
  Tensor forward(const Tensor& h, const Tensor& mask);
  Pooling pooling;
  std::shared_ptr<MLPAdapter> mlp;
};

// Common interface of the two fusion modules.
class Fusion : public nn::Module {
 public:
  using nn::Module::Module;
  virtual Tensor forward(const std::vector<Tensor>& hidden, const std::vector<Tensor>& masks) = 0;
  int64_t output_hidden_size = 0;
};

class ConcatFusion : public Fusion {
 public:
  // hidden_sizes: one per modality (2 or 3), in backbone order.
  ConcatFusion(const std::vector<int64_t>& hidden_sizes, int64_t project_size = 512, Pooling pooling = Pooling::mean);
  Tensor forward(const std::vector<Tensor>& hidden, const std::vector<Tensor>& masks) override;
  Pooling pooling;
  std::vector<std::shared_ptr<nn::UnaryModule>> projects;  // project, project_1, project_2
};

class CrossAttentionBlock : public nn::Module {
 public:
  CrossAttentionBlock(int64_t hidden_size, int64_t context_size, int64_t num_heads);
  // x [B, T, H] queries context c [B, Lc, Dc]; mask_q [B, T], mask_c [B, Lc].
  Tensor forward(const Tensor& x, const Tensor& c, const Tensor& mask_q, const Tensor& mask_c);
  int64_t num_heads, head_size;
  std::shared_ptr<nn::UnaryModule> query, key, value, dense;
};

class CrossAttentionFusion : public Fusion {
 public:
  CrossAttentionFusion(int64_t hidden_size, int64_t context_size_1, int64_t context_size_2 = 0, int64_t num_heads = 16);
  Tensor forward(const std::vector<Tensor>& hidden, const std::vector<Tensor>& masks) override;
  std::shared_ptr<CrossAttentionBlock> layer_01, layer_02;  // cross_attention_layer_01 / _02
};

// The multi-modal regression head: a fusion module plus an adapter.
class FusionHead : public nn::Module {
 public:
  // kind "concat": ConcatFusion(project_size) + MLPAdapter; "attention": CrossAttentionFusion(heads)
  // + MLPPoolAdapter (ModelGenerator's MMFusionTokenAdapter / MMFusionSeqAdapter).
  FusionHead(const std::string& kind, const std::vector<int64_t>& hidden_sizes, int64_t out_features,
             const MLPOptions& adapter, int64_t project_size = 512, int64_t num_heads = 16,
             Pooling pooling = Pooling::mean);
  Tensor forward(const std::vector<Tensor>& hidden, const std::vector<Tensor>& masks);
  std::string kind;
  std::shared_ptr<Fusion> fusion_module;
  std::shared_ptr<nn::Module> adapter;
};

}  // namespace strand::models
