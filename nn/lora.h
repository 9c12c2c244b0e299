#pragma once
// LoRA (Hu et al. 2021) as PEFT implements it: y = base(x) + (α/r) · B(A(dropout(x))), dropout on
// the LoRA branch input only, A kaiming-uniform(a=√5), B zeros (so a fresh adapter changes
// nothing), base frozen. Parameter names follow PEFT — `base_layer.weight`, `lora_A.default.weight`,
// `lora_B.default.weight` — and a plain `weight`/`bias` checkpoint loads into the base layer.
#include <string>
#include <vector>

#include "nn/layers.h"

namespace strand::nn {

struct LoRAConfig {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  std::vector<std::string> target_modules = {"query", "value"};
};

class LoRALinear : public UnaryModule {
 public:
  LoRALinear(std::shared_ptr<Linear> base, int64_t r, double alpha, double dropout);
  Tensor forward(const Tensor& x) override;
  // Folds the adapter into the base weight (W += scale·B·A) for inference, and back.
  void merge();
  void unmerge();
  bool merged() const { return merged_; }
  std::vector<std::pair<std::string, std::string>> key_aliases() const override {
    return {{"base_layer.weight", "weight"}, {"base_layer.bias", "bias"}};
  }

  std::shared_ptr<Linear> base_layer;
  std::shared_ptr<Linear> lora_A, lora_B;  // also reachable as lora_A.default / lora_B.default
  int64_t r;
  double alpha, scale, dropout_p;

 private:
  bool merged_ = false;
};

// Wraps every Linear child whose own name is in cfg.target_modules, anywhere under `root`, in a
// LoRALinear, after freezing all of root's parameters. Returns the number wrapped; none is an
// error naming the targets. Models declare such projections as std::shared_ptr<UnaryModule>
// members so the bound member can take the wrapper (a Linear-typed member is an error).
int64_t inject_lora(Module& root, const LoRAConfig& cfg);

}  // namespace strand::nn
