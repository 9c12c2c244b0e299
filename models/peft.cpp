#include "models/peft.h"

#include <cstring>
#include <set>
#include <sstream>

#include "tensor/safetensors.h"

namespace strand::models {

int64_t apply_lora(Backbone& model, const nn::LoRAConfig& cfg) {
  STRAND_CHECK(!cfg.target_modules.empty(), "LoRA: target_modules is empty");
  std::set<std::string> linear_names;
  for (auto& [path, m] : model.named_modules())
    for (auto& [name, c] : m->named_children())
      if (dynamic_cast<nn::Linear*>(c.get())) linear_names.insert(name);
  std::string targets, available;
  for (auto& t : cfg.target_modules) targets += (targets.empty() ? "" : ", ") + t;
  for (auto& n : linear_names) available += (available.empty() ? "" : ", ") + n;
  bool any = false;
  for (auto& t : cfg.target_modules) any = any || linear_names.count(t);
  STRAND_CHECK(any, "LoRA: no Linear layer of ", model.type_name(), " is named any of [", targets,
               "] (its Linear layers are named: ", available, ")");
  return nn::inject_lora(model, cfg);
}

namespace {
uint64_t fnv1a(const Tensor& t, uint64_t h) {
  Tensor c = ops::contiguous(ops::to(ops::to(ops::detach(t), Device::cpu()), DType::f32));
  const auto* p = static_cast<const unsigned char*>(c.raw_data());
  for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
}  // namespace

std::string base_model_signature(const Backbone& model) {
  std::ostringstream os;
  int64_t n_base = 0;
  uint64_t h = 1469598103934665603ull;
  for (auto& [name, t] : model.named_parameters()) {
    if (name.find("lora_") != std::string::npos) continue;
    n_base += t.numel();
    if (name.find("word_embeddings") != std::string::npos || name.rfind("encoder.ln.", 0) == 0 ||
        name.rfind("encoder.emb_layer_norm_after.", 0) == 0)
      h = fnv1a(t, h);
  }
  os << model.model_type() << " hidden " << model.hidden_size() << " params " << n_base << " hash " << std::hex << h;
  return os.str();
}

void save_trainable(const Backbone& model, const std::string& path, const nn::LoRAConfig& cfg,
                    const std::string& base_model_name) {
  safetensors::TensorMap out;
  for (auto& [name, t] : model.named_parameters())
    if (t.requires_grad()) out[name] = t;
  STRAND_CHECK(!out.empty(), "save_trainable: ", model.type_name(), " has no trainable parameters");
  std::string targets;
  for (auto& s : cfg.target_modules) targets += (targets.empty() ? "" : ",") + s;
  std::ostringstream alpha, drop;
  alpha.precision(17);
  drop.precision(17);
  alpha << cfg.alpha;
  drop << cfg.dropout;
  safetensors::save(path, out,
                    {{"strand.format", "trainable-only"},
                     {"base_model", base_model_name},
                     {"base_signature", base_model_signature(model)},
                     {"lora_r", std::to_string(cfg.r)},
                     {"lora_alpha", alpha.str()},
                     {"lora_dropout", drop.str()},
                     {"lora_target_modules", targets}});
}

TrainableCheckpointInfo read_trainable_info(const std::string& path) {
  safetensors::Metadata md;
  auto header = safetensors::read_header(path, &md);
  auto get = [&](const char* k) {
    auto it = md.find(k);
    STRAND_CHECK(it != md.end(), path, ": not a trainable-only checkpoint (metadata has no '", k, "')");
    return it->second;
  };
  STRAND_CHECK(get("strand.format") == "trainable-only", path, ": strand.format is '", get("strand.format"),
               "', expected 'trainable-only'");
  TrainableCheckpointInfo info;
  info.base_model = get("base_model");
  info.base_signature = get("base_signature");
  try {
    info.lora.r = std::stoll(get("lora_r"));
    info.lora.alpha = std::stod(get("lora_alpha"));
    info.lora.dropout = std::stod(get("lora_dropout"));
  } catch (const std::logic_error&) {
    STRAND_CHECK(false, path, ": malformed LoRA metadata (lora_r '", get("lora_r"), "', lora_alpha '", get("lora_alpha"),
                 "', lora_dropout '", get("lora_dropout"), "')");
  }
  info.lora.target_modules.clear();
  std::stringstream ss(get("lora_target_modules"));
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) info.lora.target_modules.push_back(t);
  info.tensors = static_cast<int64_t>(header.size());
  return info;
}

int64_t load_trainable(Backbone& model, const std::string& path, bool check_base) {
  auto info = read_trainable_info(path);
  if (check_base) {
    const std::string sig = base_model_signature(model);
    STRAND_CHECK(sig == info.base_signature, path, " was trained on base model '", info.base_model, "' (", info.base_signature,
                 "), but the model given is ", sig);
  }
  auto file = safetensors::load(path);
  auto params = model.named_parameters();
  std::map<std::string, Tensor> by_name(params.begin(), params.end());
  std::vector<std::string> problems;
  for (auto& [k, t] : file.tensors) {
    auto it = by_name.find(k);
    if (it == by_name.end())
      problems.push_back(k + ": no such parameter (were the same LoRA target modules applied?)");
    else if (it->second.sizes() != t.sizes())
      problems.push_back(k + ": checkpoint " + shape_str(t.sizes()) + " vs model " + shape_str(it->second.sizes()));
  }
  if (!problems.empty()) {
    std::string msg;
    for (auto& p : problems) msg += "\n  " + p;
    STRAND_CHECK(false, path, ": ", problems.size(), " tensors do not fit the model:", msg);
  }
  NoGradGuard ng;
  for (auto& [k, t] : file.tensors) ops::copy_(by_name[k], t);
  return static_cast<int64_t>(file.tensors.size());
}

}  // namespace strand::models
