#include "train/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>
#include <nlohmann/json.hpp>

#include "tensor/error.h"

namespace strand::train {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

namespace {

const char* type_name(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::boolean: return "boolean";
    case toml::value_t::integer: return "integer";
    case toml::value_t::floating: return "float";
    case toml::value_t::string: return "string";
    case toml::value_t::array: return "array";
    case toml::value_t::table: return "table";
    default: return "date/time";
  }
}

// Reads one table, remembering which keys the schema asked for; finish() rejects the rest.
class Reader {
 public:
  Reader(const toml::value* v, std::string path) : v_(v), path_(std::move(path)) {
    STRAND_CHECK(!v_ || v_->is_table(), "config: '", path_, "' must be a table, got ", type_name(*v_));
  }
  ~Reader() noexcept(false) {
    if (!std::uncaught_exceptions()) finish();
  }

  const toml::value* raw(const std::string& key) {
    known_.insert(key);
    if (!v_) return nullptr;
    const auto& t = v_->as_table();
    auto it = t.find(key);
    return it == t.end() ? nullptr : &it->second;
  }
  std::string where(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  void get(const std::string& key, std::string& out) {
    if (auto* v = raw(key)) {
      expect(key, *v, v->is_string(), "a string");
      out = v->as_string().str;
    }
  }
  void get(const std::string& key, bool& out) {
    if (auto* v = raw(key)) {
      expect(key, *v, v->is_boolean(), "a boolean");
      out = v->as_boolean();
    }
  }
  void get(const std::string& key, double& out) {
    if (auto* v = raw(key)) {
      expect(key, *v, v->is_floating() || v->is_integer(), "a number");
      out = v->is_integer() ? static_cast<double>(v->as_integer()) : v->as_floating();
    }
  }
  template <class I>
  std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool>> get(const std::string& key, I& out) {
    if (auto* v = raw(key)) {
      expect(key, *v, v->is_integer(), "an integer");
      out = static_cast<I>(v->as_integer());
    }
  }
  void get(const std::string& key, std::vector<std::string>& out) {
    if (auto* v = raw(key)) {
      expect(key, *v, v->is_array(), "an array of strings");
      out.clear();
      for (const auto& e : v->as_array()) {
        expect(key, e, e.is_string(), "an array of strings");
        out.push_back(e.as_string().str);
      }
    }
  }
  void get(const std::string& key, std::vector<int64_t>& out) {
    if (auto* v = raw(key)) {
      expect(key, *v, v->is_array(), "an array of integers");
      out.clear();
      for (const auto& e : v->as_array()) {
        expect(key, e, e.is_integer(), "an array of integers");
        out.push_back(e.as_integer());
      }
    }
  }
  Reader sub(const std::string& key) { return Reader(raw(key), where(key)); }
  bool has(const std::string& key) {
    return raw(key) != nullptr;
  }

  void finish() {
    if (!v_ || done_) return;
    done_ = true;
    for (const auto& [k, _] : v_->as_table()) {
      if (known_.count(k)) continue;
      std::string best;
      size_t bd = SIZE_MAX;
      for (const auto& c : known_)
        if (size_t d = edit_distance(k, c); d < bd) {
          bd = d;
          best = c;
        }
      STRAND_CHECK(false, "config: unknown key '", where(k), "'",
                   best.empty() ? std::string() : "; did you mean '" + where(best) + "'?");
    }
  }

 private:
  void expect(const std::string& key, const toml::value& v, bool ok, const char* want) const {
    STRAND_CHECK(ok, "config: '", where(key), "' must be ", want, ", got ", type_name(v));
  }
  const toml::value* v_;
  std::string path_;
  std::set<std::string> known_;
  bool done_ = false;
};

nlohmann::json to_json(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::boolean: return v.as_boolean();
    case toml::value_t::integer: return v.as_integer();
    case toml::value_t::floating: return v.as_floating();
    case toml::value_t::string: return v.as_string().str;
    case toml::value_t::array: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& e : v.as_array()) a.push_back(to_json(e));
      return a;
    }
    case toml::value_t::table: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& [k, e] : v.as_table()) o[k] = to_json(e);
      return o;
    }
    default: STRAND_CHECK(false, "config: dates and times are not supported"); return {};
  }
}

toml::value parse_toml(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  try {
    return toml::parse(in, name);
  } catch (const std::exception& e) {
    STRAND_CHECK(false, "config: cannot parse ", name, ": ", e.what());
  }
  return {};
}

void apply_override(toml::value& root, const std::string& ov) {
  const auto eq = ov.find('=');
  STRAND_CHECK(eq != std::string::npos && eq > 0, "--set expects key.path=value, got '", ov, "'");
  const std::string path = ov.substr(0, eq), text = ov.substr(eq + 1);
  toml::value value;
  try {
    std::istringstream in("v = " + text);
    value = toml::find(toml::parse(in, "--set"), "v");
  } catch (const std::exception&) {
    value = toml::value(text);  // a bare word: a string
  }
  toml::value* node = &root;
  std::stringstream ss(path);
  std::string part;
  std::vector<std::string> parts;
  while (std::getline(ss, part, '.')) parts.push_back(part);
  for (size_t i = 0; i < parts.size(); ++i) {
    STRAND_CHECK(!parts[i].empty(), "--set: empty key in '", path, "'");
    if (!node->is_table()) *node = toml::table{};
    auto& t = node->as_table();
    if (i + 1 == parts.size()) {
      t[parts[i]] = value;
    } else {
      node = &t[parts[i]];
    }
  }
}

std::string resolve(const std::string& base, const std::string& p) {
  if (p.empty() || std::filesystem::path(p).is_absolute()) return p;
  return (std::filesystem::path(base) / p).lexically_normal().string();
}

void one_of(const std::string& where, const std::string& v, std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) {
    if (v == a) return;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  STRAND_CHECK(false, "config: '", where, "' is '", v, "'; expected one of ", list);
}

}  // namespace

Config parse_config(const std::string& text, const std::vector<std::string>& overrides, const std::string& base_dir) {
  toml::value root = parse_toml(text, "config");
  for (const auto& ov : overrides) apply_override(root, ov);
  Config c;
  Reader top(&root, "");
  {
    Reader model = top.sub("model");
    std::vector<std::string> order;
    model.get("backbone_order", order);
    STRAND_CHECK(!order.empty() && order.size() <= 3, "config: 'model.backbone_order' must list 1 to 3 modalities, got ",
                 order.size());
    std::set<std::string> seen;
    for (const auto& m : order) {
      one_of("model.backbone_order", m, {"dna_seq", "rna_seq", "protein_seq"});
      STRAND_CHECK(seen.insert(m).second, "config: modality '", m, "' listed twice in model.backbone_order");
      BackboneConfig b;
      b.modality = m;
      STRAND_CHECK(model.has(m), "config: 'model.backbone_order' names '", m, "' but there is no [model.", m, "] table");
      Reader r = model.sub(m);
      r.get("type", b.type);
      one_of("model." + m + ".type", b.type, {"enformer", "aido_rna", "esm2"});
      r.get("model_dir", b.model_dir);
      b.model_dir = resolve(base_dir, b.model_dir);
      r.get("from_scratch", b.from_scratch);
      if (const toml::value* cfg = r.raw("config")) {
        STRAND_CHECK(cfg->is_table(), "config: 'model.", m, ".config' must be a table");
        b.config_json = to_json(*cfg).dump();
      }
      STRAND_CHECK(b.from_scratch || !b.model_dir.empty(), "config: [model.", m,
                   "] needs model_dir (a Hugging Face folder) or from_scratch = true");
      r.get("frozen", b.frozen);
      r.get("max_length", b.max_length);
      STRAND_CHECK(b.max_length >= 3, "config: 'model.", m, ".max_length' must be at least 3, got ", b.max_length);
      r.get("checkpointing", b.checkpointing);
      b.checkpoint_conv = b.type == "enformer" && b.checkpointing;
      STRAND_CHECK(b.type == "enformer" || !r.has("checkpoint_conv"), "config: 'model.", m,
                   ".checkpoint_conv' is for an Enformer (its stem and tower); this backbone is ", b.type);
      r.get("checkpoint_conv", b.checkpoint_conv);
      if (r.has("lora")) {
        Reader l = r.sub("lora");
        b.lora.enabled = true;
        l.get("enabled", b.lora.enabled);
        l.get("r", b.lora.r);
        l.get("alpha", b.lora.alpha);
        l.get("dropout", b.lora.dropout);
        l.get("target_modules", b.lora.target_modules);
        STRAND_CHECK(b.lora.r > 0, "config: 'model.", m, ".lora.r' must be positive, got ", b.lora.r);
        STRAND_CHECK(b.lora.dropout >= 0 && b.lora.dropout < 1, "config: 'model.", m, ".lora.dropout' must be in [0, 1)");
      }
      c.backbones.push_back(std::move(b));
    }
    // Tables of modalities left out of backbone_order are allowed (so --set can switch
    // modalities off) but not read.
    for (const char* m : {"dna_seq", "rna_seq", "protein_seq"}) (void)model.raw(m);
    Reader f = model.sub("fusion");
    f.get("kind", c.fusion.kind);
    one_of("model.fusion.kind", c.fusion.kind, {"concat", "attention"});
    f.get("project_size", c.fusion.project_size);
    f.get("heads", c.fusion.heads);
    f.get("pooling", c.fusion.pooling);
    one_of("model.fusion.pooling", c.fusion.pooling, {"mean_pooling", "cls_pooling"});
    Reader h = model.sub("head");
    h.get("hidden_sizes", c.head.hidden_sizes);
    h.get("dropout", c.head.dropout);
    h.get("dropout_in_middle", c.head.dropout_in_middle);
    h.get("activation", c.head.activation);
    STRAND_CHECK(c.head.dropout >= 0 && c.head.dropout < 1, "config: 'model.head.dropout' must be in [0, 1), got ",
                 c.head.dropout);
  }
  {
    Reader d = top.sub("data");
    d.get("dir", c.data.dir);
    c.data.dir = resolve(base_dir, c.data.dir);
    d.get("batch_size", c.data.batch_size);
    d.get("eval_batch_size", c.data.eval_batch_size);
    d.get("num_labels", c.data.num_labels);
    d.get("normalize", c.data.normalize);
    STRAND_CHECK(!c.data.dir.empty(), "config: 'data.dir' is required");
    STRAND_CHECK(c.data.batch_size > 0, "config: 'data.batch_size' must be positive, got ", c.data.batch_size);
    STRAND_CHECK(c.data.num_labels > 0, "config: 'data.num_labels' must be positive, got ", c.data.num_labels);
    if (c.data.eval_batch_size <= 0) c.data.eval_batch_size = c.data.batch_size;
  }
  {
    Reader o = top.sub("optim");
    o.get("lr", c.optim.lr);
    if (const toml::value* b = o.raw("betas")) {
      STRAND_CHECK(b->is_array() && b->as_array().size() == 2, "config: 'optim.betas' must be an array of 2 numbers");
      auto num = [](const toml::value& v) { return v.is_integer() ? static_cast<double>(v.as_integer()) : v.as_floating(); };
      c.optim.beta1 = num(b->as_array()[0]);
      c.optim.beta2 = num(b->as_array()[1]);
    }
    o.get("eps", c.optim.eps);
    o.get("weight_decay", c.optim.weight_decay);
    STRAND_CHECK(c.optim.lr > 0, "config: 'optim.lr' must be positive, got ", c.optim.lr);
  }
  {
    Reader s = top.sub("schedule");
    s.get("kind", c.schedule.kind);
    one_of("schedule.kind", c.schedule.kind, {"cosine", "linear", "constant"});
    s.get("warmup_ratio", c.schedule.warmup_ratio);
    s.get("warmup_steps", c.schedule.warmup_steps);
    STRAND_CHECK(c.schedule.warmup_ratio >= 0 && c.schedule.warmup_ratio <= 1,
                 "config: 'schedule.warmup_ratio' must be in [0, 1], got ", c.schedule.warmup_ratio);
  }
  {
    Reader t = top.sub("trainer");
    t.get("epochs", c.trainer.epochs);
    t.get("max_steps", c.trainer.max_steps);
    t.get("grad_clip", c.trainer.grad_clip);
    t.get("val_interval", c.trainer.val_interval);
    t.get("run_dir", c.trainer.run_dir);
    c.trainer.run_dir = resolve(base_dir, c.trainer.run_dir);
    t.get("seed", c.trainer.seed);
    t.get("device", c.trainer.device);
    t.get("precision", c.trainer.precision);
    one_of("trainer.precision", c.trainer.precision, {"fp32", "bf16-mixed"});
    t.get("tf32", c.trainer.tf32);
    t.get("log_interval", c.trainer.log_interval);
    t.get("save_trainable_only", c.trainer.save_trainable_only);
    STRAND_CHECK(c.trainer.epochs > 0, "config: 'trainer.epochs' must be positive, got ", c.trainer.epochs);
    STRAND_CHECK(c.trainer.val_interval > 0, "config: 'trainer.val_interval' must be positive");
    STRAND_CHECK(c.trainer.log_interval > 0, "config: 'trainer.log_interval' must be positive");
  }
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  STRAND_CHECK(in.good(), "cannot read config '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string base = std::filesystem::path(path).parent_path().string();
  return parse_config(ss.str(), overrides, base.empty() ? "." : base);
}

}  // namespace strand::train
