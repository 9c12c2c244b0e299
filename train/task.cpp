#include "train/task.h"

#include <sstream>

#include "autograd/autocast.h"
#include "models/backbone.h"
#include "models/enformer/config.h"
#include "models/enformer/enformer.h"
#include "models/enformer/one_hot.h"
#include "models/esm2/esm2.h"
#include "models/aido_rna/rnabert.h"
#include "models/fusion/fusion.h"
#include "models/hf_dir.h"
#include "models/peft.h"
#include "models/tokenizers.h"

namespace strand::train {

namespace {

// Where a module's parameters live (the CPU for one without any): inputs are moved there.
Device device_of(nn::Module& m) {
  const auto ps = m.parameters();
  return ps.empty() ? Device::cpu() : ps.front().device();
}

class EnformerEncoder : public ModalityEncoder {
 public:
  explicit EnformerEncoder(const BackboneConfig& b) : ModalityEncoder("EnformerEncoder") {
    auto edit = [&](models::enformer::EnformerConfig& c) {
      c.use_checkpointing = b.checkpointing;
      c.checkpoint_conv = b.checkpoint_conv;
    };
    if (b.from_scratch) {
      models::enformer::EnformerConfig c = models::enformer::EnformerConfig::from_json_string(b.config_json, "model." + b.modality + ".config");
      edit(c);
      model_ = std::make_shared<models::enformer::Enformer>(c);
    } else {
      models::enformer::LoadEnformerOptions o;
      o.edit_config = edit;
      model_ = models::enformer::load_enformer(b.model_dir, o);
    }
    STRAND_CHECK(!b.lora.enabled, "config: LoRA is for the transformer backbones; model.", b.modality,
                 " is an Enformer (train it fully or freeze it)");
    register_module("model", model_);
    if (b.frozen) model_->freeze();
  }
  Out encode(const std::vector<std::string>& seqs) override {
    const Device d = device_of(*model_);
    Tensor h = model_->forward(ops::to(models::enformer::one_hot_dna(seqs), d));
    return {h, ops::ones({h.size(0), h.size(1)}, TensorOptions(DType::i64, d))};
  }
  int64_t hidden_size() const override { return model_->embedding_dim(); }

 private:
  std::shared_ptr<models::enformer::Enformer> model_;
};

class TokenEncoder : public ModalityEncoder {
 public:
  explicit TokenEncoder(const BackboneConfig& b) : ModalityEncoder("TokenEncoder"), max_length_(b.max_length) {
    if (b.from_scratch) {
      if (b.type == "esm2") {
        model_ = std::make_shared<models::Esm2Model>(models::Esm2Config::from_json(b.config_json, "model." + b.modality + ".config"));
        tokenizer_ = std::make_shared<models::Tokenizer>(models::Tokenizer::esm2());
      } else {
        model_ = std::make_shared<models::RNABertModel>(models::RNABertConfig::from_json(b.config_json, "model." + b.modality + ".config"));
        tokenizer_ = std::make_shared<models::Tokenizer>(models::Tokenizer::aido_rna());
      }
    } else {
      models::HfBackbone hb = models::load_hf_backbone(b.model_dir);
      const std::string want = b.type == "esm2" ? "esm" : "rnabert";
      STRAND_CHECK(hb.model->model_type() == want, "config: model.", b.modality, " has type '", b.type, "' but '",
                   b.model_dir, "' holds a '", hb.model->model_type(), "' model");
      model_ = hb.model;
      tokenizer_ = hb.tokenizer;
    }
    register_module("model", model_);
    if (b.frozen) model_->freeze();
    if (b.lora.enabled) {
      nn::LoRAConfig l;
      l.r = b.lora.r;
      l.alpha = b.lora.alpha;
      l.dropout = b.lora.dropout;
      l.target_modules = b.lora.target_modules;
      models::apply_lora(*model_, l);
    }
  }
  Out encode(const std::vector<std::string>& seqs) override {
    models::TokenizeOptions o;
    o.max_length = max_length_;
    o.allow_unknown = true;  // real data holds the odd ambiguous letter; it becomes <unk>
    models::Encoding e = tokenizer_->batch(seqs, o);
    const Device d = device_of(*model_);
    Tensor mask = ops::to(e.attention_mask, d);
    models::BackboneOutput out = model_->forward(ops::to(e.input_ids, d), mask);
    return {out.last_hidden_state, mask};
  }
  int64_t hidden_size() const override { return model_->hidden_size(); }

 private:
  int64_t max_length_;
  std::shared_ptr<models::Backbone> model_;
  std::shared_ptr<models::Tokenizer> tokenizer_;
};

const std::string& field(const Sample& s, const std::string& modality) {
  if (modality == "dna_seq") return s.dna;
  if (modality == "rna_seq") return s.rna;
  return s.protein;
}

}  // namespace

std::shared_ptr<ModalityEncoder> make_encoder(const BackboneConfig& b) {
  if (b.type == "enformer") {
    STRAND_CHECK(b.modality == "dna_seq", "config: an Enformer reads DNA, but model.", b.modality, " asks for one");
    return std::make_shared<EnformerEncoder>(b);
  }
  return std::make_shared<TokenEncoder>(b);
}

RegressionTask::RegressionTask(const Config& cfg) : TaskModel("RegressionTask") {
  static const char* kNames[] = {"backbone", "backbone1", "backbone2"};
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < cfg.backbones.size(); ++i) {
    modalities_.push_back(cfg.backbones[i].modality);
    encoders_.push_back(make_encoder(cfg.backbones[i]));
    register_module(kNames[i], encoders_.back());
    sizes.push_back(encoders_.back()->hidden_size());
  }
  models::MLPOptions mlp;
  mlp.hidden_sizes = cfg.head.hidden_sizes;
  mlp.activation = nn::activation_from_string(cfg.head.activation);
  mlp.dropout = cfg.head.dropout;
  mlp.dropout_in_middle = cfg.head.dropout_in_middle;
  const models::Pooling pooling = models::pooling_from_string(cfg.fusion.pooling);
  if (encoders_.size() == 1) {
    adapter_ = std::make_shared<models::MLPPoolAdapter>(sizes[0], cfg.data.num_labels, pooling, mlp);
  } else {
    adapter_ = std::make_shared<models::FusionHead>(cfg.fusion.kind, sizes, cfg.data.num_labels, mlp,
                                                    cfg.fusion.project_size, cfg.fusion.heads, pooling);
  }
  register_module("adapter", adapter_);
  bf16_mixed_ = cfg.trainer.precision == "bf16-mixed";
}

Tensor RegressionTask::forward(const std::vector<Sample>& batch) {
  AutocastGuard autocast(bf16_mixed_ || autocast_enabled());  // an enclosing autocast stays on
  Tensor out = forward_impl(batch);
  return out.dtype() == DType::bf16 ? strand::to(out, DType::f32) : out;
}

Tensor RegressionTask::forward_impl(const std::vector<Sample>& batch) {
  std::vector<Tensor> hidden, masks;
  for (size_t i = 0; i < encoders_.size(); ++i) {
    std::vector<std::string> seqs;
    for (const Sample& s : batch) seqs.push_back(field(s, modalities_[i]));
    auto out = encoders_[i]->encode(seqs);
    hidden.push_back(out.hidden);
    masks.push_back(out.mask);
  }
  if (encoders_.size() == 1) return static_cast<models::MLPPoolAdapter*>(adapter_.get())->forward(hidden[0], masks[0]);
  return static_cast<models::FusionHead*>(adapter_.get())->forward(hidden, masks);
}

std::string RegressionTask::summary() {
  std::ostringstream os;
  os << "task: ";
  for (size_t i = 0; i < modalities_.size(); ++i) os << (i ? " + " : "") << modalities_[i];
  os << " | parameters " << num_parameters() << " (trainable " << num_parameters(true) << ")";
  return os.str();
}

}  // namespace strand::train
