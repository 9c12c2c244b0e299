#include "models/hf_dir.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "models/aido_rna/rnabert.h"
#include "models/esm2/esm2.h"

namespace strand::models {

namespace fs = std::filesystem;

std::string HfLoadReport::str() const {
  std::ostringstream os;
  os << "model folder " << dir << "\n  weights:";
  for (const auto& f : weight_files) os << " " << fs::path(f).filename().string();
  if (weight_files.empty()) os << " (none: architecture only, random weights)";
  os << "\n  " << state.loaded.size() << " tensors loaded";
  if (!ignored.empty()) {
    os << "\n  " << ignored.size() << " checkpoint tensors ignored (not part of the backbone):";
    for (const auto& k : ignored) os << "\n    " << k;
  }
  for (const auto& n : notes) os << "\n  note: " << n;
  if (!state.ok()) os << "\n" << state.str();
  return os.str();
}

std::string read_hf_config(const std::string& dir) {
  STRAND_CHECK(fs::is_directory(dir), "model directory '", dir, "' does not exist or is not a directory");
  const fs::path p = fs::path(dir) / "config.json";
  STRAND_CHECK(fs::is_regular_file(p), "model directory '", dir,
               "' has no config.json (expected a Hugging Face model folder: config.json + model.safetensors)");
  std::ifstream f(p, std::ios::binary);
  STRAND_CHECK(f.good(), "cannot read ", p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string hf_model_type(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_hf_config(dir));
  } catch (const nlohmann::json::exception& e) {
    STRAND_CHECK(false, path, ": not valid JSON: ", e.what());
  }
  STRAND_CHECK(j.is_object() && j.contains("model_type") && j["model_type"].is_string(), path,
               ": no \"model_type\" string (expected \"esm\" or \"rnabert\")");
  return j["model_type"].get<std::string>();
}

safetensors::TensorMap read_hf_weights(const std::string& dir, std::vector<std::string>* files) {
  const fs::path d(dir), single = d / "model.safetensors", index = d / "model.safetensors.index.json";
  if (fs::is_regular_file(single)) {
    if (files) files->push_back(single.string());
    return safetensors::load(single.string()).tensors;
  }
  if (fs::is_regular_file(index)) {
    if (files) {
      files->push_back(index.string());
      std::ifstream f(index);
      try {
        auto j = nlohmann::json::parse(f);
        std::set<std::string> shards;
        for (auto& [k, v] : j.at("weight_map").items()) shards.insert(v.get<std::string>());
        for (auto& s : shards) files->push_back((d / s).string());
      } catch (const nlohmann::json::exception&) {
        // load_sharded below reports a malformed index with its own message
      }
    }
    return safetensors::load_sharded(index.string()).tensors;
  }
  bool has_bin = fs::is_regular_file(d / "pytorch_model.bin") || fs::is_regular_file(d / "pytorch_model.bin.index.json");
  STRAND_CHECK(!has_bin, "model directory '", dir, "' holds PyTorch weights (pytorch_model.bin) but no safetensors; ",
               "convert them once with: python tools/convert_checkpoint.py ", dir, " OUT_DIR");
  STRAND_CHECK(false, "model directory '", dir, "' has no weights (expected model.safetensors or ",
               "model.safetensors.index.json with its shards)");
  return {};
}

namespace {
bool has_prefix(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// Strips `prefix` from every key carrying it, when at least one key does.
safetensors::TensorMap strip_all(const safetensors::TensorMap& raw, const std::string& prefix, HfLoadReport& r) {
  bool any = false;
  for (auto& [k, _] : raw) any = any || has_prefix(k, prefix);
  if (!any) return raw;
  safetensors::TensorMap out;
  for (auto& [k, t] : raw) {
    const std::string key = has_prefix(k, prefix) ? k.substr(prefix.size()) : k;
    STRAND_CHECK(!out.count(key), "checkpoint has both '", prefix + key, "' and '", key,
                 "': cannot tell which one the backbone should use");
    out[key] = t;
  }
  r.notes.push_back("prefix '" + prefix + "' stripped from the checkpoint keys");
  return out;
}

void note_dtypes(const nn::StateDict& sd, HfLoadReport& r) {
  std::map<std::string, int> counts;
  for (auto& [k, t] : sd)
    if (t.dtype() != DType::f32 && is_floating(t.dtype())) ++counts[std::string(dtype_name(t.dtype()))];
  for (auto& [d, n] : counts) r.notes.push_back(std::to_string(n) + " tensors stored as " + d + " converted to f32");
}
}  // namespace

nn::StateDict prepare_esm_state(const safetensors::TensorMap& raw_in, Backbone& model, HfLoadReport& r) {
  auto raw = strip_all(raw_in, "esm.", r);
  static const std::regex ignore(
      R"((lm_head\..*|contact_head\..*|pooler\..*|embeddings\.position_embeddings\.weight|embeddings\.position_ids))");
  static const std::regex per_layer(R"(encoder\.layer\.(\d+)\.attention\.self\.rotary_embeddings\.inv_freq)");
  nn::StateDict sd;
  std::vector<std::pair<std::string, Tensor>> global_inv;
  int per_layer_found = 0;
  for (auto& [k, t] : raw) {
    if (std::regex_match(k, ignore)) {
      r.ignored.push_back(k + (has_prefix(k, "embeddings.position") ? "  (unused: rotary positions)" : "  (head, not backbone)"));
      continue;
    }
    if (k.size() >= 8 && k.compare(k.size() - 8, 8, "inv_freq") == 0) {
      if (std::regex_match(k, per_layer)) {
        ++per_layer_found;
        sd[k] = t;
      } else {
        global_inv.emplace_back(k, t);
      }
      continue;
    }
    sd[k] = t;
  }
  auto* esm = dynamic_cast<Esm2Model*>(&model);
  STRAND_ASSERT(esm != nullptr, "prepare_esm_state needs an Esm2Model");
  const int64_t L = esm->config.num_hidden_layers;
  STRAND_CHECK(global_inv.size() <= 1, "ESM-2 checkpoint has ", global_inv.size(),
               " model-level rotary inv_freq tensors (", global_inv[0].first, ", ", global_inv[1].first,
               "); expected at most one");
  auto layer_key = [](int64_t l) { return "encoder.layer." + std::to_string(l) + ".attention.self.rotary_embeddings.inv_freq"; };
  if (per_layer_found > 0) {
    r.notes.push_back("rotary inv_freq loaded per layer from the checkpoint (" + std::to_string(per_layer_found) + " copies)");
    for (auto& [k, _] : global_inv) r.ignored.push_back(k + "  (model-level inv_freq; the per-layer copies are used)");
  } else if (!global_inv.empty()) {
    for (int64_t l = 0; l < L; ++l) sd[layer_key(l)] = global_inv[0].second;
    r.notes.push_back("rotary inv_freq loaded once at model level (" + global_inv[0].first + ") and used by every layer");
  } else {
    for (int64_t l = 0; l < L; ++l) sd[layer_key(l)] = esm->layers->at<EsmLayer>(static_cast<size_t>(l))->self_attn->inv_freq;
    r.notes.push_back("rotary inv_freq not in the checkpoint: computed as 1/10000^(2i/hd) in fp32 (the published ESM-2 "
                      "files carry fp16-rounded values; outputs may then differ from the original model by ~1e-3)");
  }
  note_dtypes(sd, r);
  return sd;
}

nn::StateDict prepare_rnabert_state(const safetensors::TensorMap& raw_in, HfLoadReport& r) {
  auto raw = strip_all(raw_in, "bert.", r);
  static const std::regex ignore(R"((cls\..*|pooler\..*|.*inv_freq|embeddings\.position_ids))");
  nn::StateDict sd;
  for (auto& [k, t] : raw) {
    if (std::regex_match(k, ignore)) {
      r.ignored.push_back(k + (k.find("inv_freq") != std::string::npos ? "  (rotary inv_freq is recomputed in fp32)"
                                                                        : "  (head, not backbone)"));
      continue;
    }
    sd[k] = t;
  }
  note_dtypes(sd, r);
  return sd;
}

HfBackbone load_hf_backbone(const std::string& dir, const HfLoadOptions& o) {
  HfBackbone out;
  out.report.dir = dir;
  out.report.config_path = (fs::path(dir) / "config.json").string();
  const std::string text = read_hf_config(dir);
  const std::string type = hf_model_type(dir);
  if (type == "esm") {
    out.model = std::make_shared<Esm2Model>(Esm2Config::from_json(text, out.report.config_path));
    out.tokenizer = std::make_shared<Tokenizer>(Tokenizer::esm2());
  } else if (type == "rnabert") {
    out.model = std::make_shared<RNABertModel>(RNABertConfig::from_json(text, out.report.config_path));
    out.tokenizer = std::make_shared<Tokenizer>(Tokenizer::aido_rna(o.rna_dna_letters));
  } else {
    STRAND_CHECK(false, out.report.config_path, ": model_type '", type,
                 "' is not supported (supported: 'esm' for ESM-2, 'rnabert' for AIDO.RNA)");
  }
  if (o.load_weights) {
    auto raw = read_hf_weights(dir, &out.report.weight_files);
    nn::StateDict sd = type == "esm" ? prepare_esm_state(raw, *out.model, out.report) : prepare_rnabert_state(raw, out.report);
    nn::LoadOptions lo;
    lo.strict = false;
    lo.allow_dtype_cast = true;
    out.report.state = out.model->load_state_dict(sd, lo);
    STRAND_CHECK(!o.strict || out.report.state.ok(), "loading ", dir, " failed:\n", out.report.str());
  }
  out.model->eval();
  return out;
}

}  // namespace strand::models
