#pragma once
// The regression tasks of ModelGenerator built from a config: MMSequenceRegression (2 or 3
// backbones + a fusion head) and SequenceRegression (one backbone + MLPPoolAdapter). Children are
// named as ModelGenerator names them — backbone, backbone1, backbone2, adapter — so its checkpoint
// keys map onto ours. Each backbone turns its modality's raw strings into hidden states and a mask:
// Enformer one-hot encodes DNA ([B, T, 2·dim], all-ones mask); AIDO.RNA and ESM-2 tokenise
// (special tokens included in the mask, truncation to max_length).
#include <memory>
#include <string>
#include <vector>

#include "train/config.h"
#include "train/trainer.h"

namespace strand::train {

// One modality's encoder: a module (the backbone's weights live under it) plus its input handling.
class ModalityEncoder : public nn::Module {
 public:
  using nn::Module::Module;
  struct Out {
    Tensor hidden, mask;
  };
  virtual Out encode(const std::vector<std::string>& seqs) = 0;
  virtual int64_t hidden_size() const = 0;
};

class RegressionTask : public TaskModel {
 public:
  explicit RegressionTask(const Config& cfg);
  // With trainer.precision = "bf16-mixed" the forward runs under bf16 autocast
  // (autograd/autocast.h) and its bf16 predictions come back as f32, for an f32 loss against the labels.
  Tensor forward(const std::vector<Sample>& batch) override;
  const std::vector<std::string>& modalities() const { return modalities_; }
  // A one-line summary: backbones, trainable / total parameters.
  std::string summary();

 private:
  Tensor forward_impl(const std::vector<Sample>& batch);
  std::vector<std::string> modalities_;
  std::vector<std::shared_ptr<ModalityEncoder>> encoders_;
  std::shared_ptr<nn::Module> adapter_;
  bool bf16_mixed_ = false;
};

// Builds one backbone from its config section (model folder, or from_scratch with its config table).
std::shared_ptr<ModalityEncoder> make_encoder(const BackboneConfig& b);

}  // namespace strand::train
