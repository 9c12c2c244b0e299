#include "nn/lora.h"

#include <algorithm>
#include <tuple>

#include "nn/init.h"

namespace strand::nn {

LoRALinear::LoRALinear(std::shared_ptr<Linear> base, int64_t rank, double a, double drop)
    : UnaryModule("LoRALinear"), base_layer(std::move(base)), r(rank), alpha(a), dropout_p(drop) {
  STRAND_CHECK(base_layer != nullptr, "LoRALinear: base layer is null");
  STRAND_CHECK(r > 0, "LoRALinear: rank r must be positive, got ", r);
  STRAND_CHECK(drop >= 0 && drop < 1, "LoRALinear: dropout must be in [0, 1), got ", drop);
  scale = alpha / static_cast<double>(r);
  register_module("base_layer", base_layer);
  const LayerOptions o{base_layer->weight.dtype(), base_layer->weight.device()};
  lora_A = std::make_shared<Linear>(base_layer->in_features, r, false, o);  // kaiming-uniform(a=√5), as PEFT
  lora_B = std::make_shared<Linear>(r, base_layer->out_features, false, o);
  init::constant_(lora_B->weight, 0);
  auto a_dict = std::make_shared<ModuleDict>(), b_dict = std::make_shared<ModuleDict>();
  a_dict->insert("default", lora_A);
  b_dict->insert("default", lora_B);
  add_child("lora_A", a_dict);
  add_child("lora_B", b_dict);
  base_layer->freeze();
  train(base_layer->is_training());
}

Tensor LoRALinear::forward(const Tensor& x) {
  Tensor y = (*base_layer)(x);
  if (merged_) return y;
  return y + (*lora_B)((*lora_A)(dropout(x, dropout_p, is_training()))) * scale;
}

void LoRALinear::merge() {
  if (merged_) return;
  NoGradGuard ng;
  ops::add_(base_layer->weight, ops::to(ops::matmul(lora_B->weight, lora_A->weight), base_layer->weight.dtype()), scale);
  merged_ = true;
}

void LoRALinear::unmerge() {
  if (!merged_) return;
  NoGradGuard ng;
  ops::add_(base_layer->weight, ops::to(ops::matmul(lora_B->weight, lora_A->weight), base_layer->weight.dtype()), -scale);
  merged_ = false;
}

int64_t inject_lora(Module& root, const LoRAConfig& cfg) {
  // On any failure (no target found, a member that cannot hold the wrapper) the model is left as
  // it was: requires_grad restored and already-wrapped layers put back.
  std::vector<std::pair<Tensor, bool>> was;
  for (auto& [_, t] : root.named_parameters()) was.emplace_back(t, t.requires_grad());
  std::vector<std::tuple<Module*, std::string, std::shared_ptr<Module>>> done;  // parent, name, original
  auto restore = [&] {
    for (auto it = done.rbegin(); it != done.rend(); ++it) std::get<0>(*it)->replace_module(std::get<1>(*it), std::get<2>(*it));
    for (auto& [t, rg] : was)
      if (is_floating(t.dtype())) t.set_requires_grad(rg);
  };
  try {
    root.freeze();
    for (auto& [path, m] : root.named_modules()) {
      if (dynamic_cast<LoRALinear*>(m)) continue;  // do not wrap a wrapper's own layers
      std::vector<std::string> targets;
      for (auto& [name, c] : m->named_children())
        if (dynamic_cast<Linear*>(c.get()) &&
            std::find(cfg.target_modules.begin(), cfg.target_modules.end(), name) != cfg.target_modules.end())
          targets.push_back(name);
      for (auto& name : targets) {
        auto base = std::dynamic_pointer_cast<Linear>(m->child(name));
        m->replace_module(name, std::make_shared<LoRALinear>(base, cfg.r, cfg.alpha, cfg.dropout));
        done.emplace_back(m, name, base);
      }
    }
    if (done.empty()) {
      std::string t;
      for (auto& s : cfg.target_modules) t += (t.empty() ? "" : ", ") + s;
      STRAND_CHECK(false, "inject_lora: no Linear layer named any of [", t, "] under ", root.type_name());
    }
  } catch (...) {
    restore();
    throw;
  }
  return static_cast<int64_t>(done.size());
}

}  // namespace strand::nn
