#include "nn/module.h"

#include <regex>
#include <set>
#include <sstream>

#include "tensor/safetensors.h"

namespace strand::nn {

// ---------------- key maps ----------------
KeyMap strip_prefix(const std::string& prefix) {
  return [prefix](const std::string& k) -> std::optional<std::string> {
    return k.rfind(prefix, 0) == 0 ? k.substr(prefix.size()) : k;
  };
}
KeyMap add_prefix(const std::string& prefix) {
  return [prefix](const std::string& k) -> std::optional<std::string> { return prefix + k; };
}
KeyMap rename(const std::string& regex, const std::string& replacement) {
  auto re = std::make_shared<std::regex>(regex);
  return [re, replacement](const std::string& k) -> std::optional<std::string> {
    return std::regex_replace(k, *re, replacement);
  };
}
KeyMap drop(const std::string& regex) {
  auto re = std::make_shared<std::regex>(regex);
  return [re](const std::string& k) -> std::optional<std::string> {
    if (std::regex_match(k, *re)) return std::nullopt;
    return k;
  };
}

std::string LoadReport::str() const {
  std::ostringstream os;
  os << "state dict: " << loaded.size() << " loaded";
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    os << "\n  " << v.size() << " " << what << ":";
    for (const auto& k : v) os << "\n    " << k;
  };
  list("missing from the checkpoint", missing);
  list("unexpected in the checkpoint", unexpected);
  list("with a different shape or dtype", mismatched);
  list("dropped by the key maps", dropped);
  return os.str();
}

// ---------------- registration ----------------
void Module::check_new_name(const std::string& name) const {
  STRAND_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name_, ": invalid member name '", name,
               "' (must be non-empty, without '.')");
  auto taken = [&](const auto& v) {
    for (const auto& [n, _] : v)
      if (n == name) return true;
    return false;
  };
  STRAND_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), type_name_, ": '", name,
               "' is already registered");
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool requires_grad) {
  check_new_name(name);
  if (t.defined()) {
    STRAND_CHECK(t.is_leaf(), type_name_, ": parameter '", name, "' must be a leaf tensor");
    if (is_floating(t.dtype())) t.set_requires_grad(requires_grad);
    autograd_meta(t).is_parameter = true;
    autograd_meta(t).recipe.reset();  // (a cast copy's) held for good now: its source need not be
  }
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name);
  if (t.defined() && t.impl()->autograd) t.impl()->autograd->recipe.reset();  // as for a parameter
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m, Setter setter) {
  check_new_name(name);
  STRAND_CHECK(m != nullptr, type_name_, ": child '", name, "' is null");
  children_.emplace_back(name, std::move(m));
  if (setter) setters_[name] = std::move(setter);
}

void Module::replace_module(const std::string& name, std::shared_ptr<Module> m) {
  STRAND_CHECK(m != nullptr, "replace_module: the new module for '", name, "' is null");
  for (auto& [n, c] : children_) {
    if (n != name) continue;
    auto it = setters_.find(name);
    if (it != setters_.end()) it->second(m);  // throws, leaving the tree unchanged, on a type mismatch
    c = std::move(m);
    return;
  }
  STRAND_CHECK(false, type_name_, " has no child named '", name, "'");
}

std::shared_ptr<Module> Module::child(const std::string& name) const {
  for (const auto& [n, c] : children_)
    if (n == name) return c;
  return nullptr;
}

// ---------------- listing ----------------
void Module::collect(const std::string& prefix, bool params, bool buffers, bool recurse, NamedTensors& out) const {
  if (params)
    for (const auto& [n, t] : params_)
      if (t.defined()) out.emplace_back(prefix + n, t);
  if (buffers)
    for (const auto& [n, t] : buffers_)
      if (t.defined()) out.emplace_back(prefix + n, t);
  if (recurse)
    for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, buffers, true, out);
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  collect("", true, false, recurse, out);
  return out;
}
std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}
std::vector<Tensor> Module::trainable_parameters() const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters())
    if (t.requires_grad()) out.push_back(t);
  return out;
}
NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  collect("", false, true, recurse, out);
  return out;
}
std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (auto& [n, c] : children_)
    for (auto& [sub, m] : c->named_modules()) out.emplace_back(sub.empty() ? n : n + "." + sub, m);
  return out;
}

// ---------------- modes and conversion ----------------
void Module::train(bool on) {
  training_ = on;
  for (auto& [_, c] : children_) c->train(on);
}

void Module::to(Device device) {
  NoGradGuard ng;
  for (auto& [_, t] : named_parameters()) t.set_data(ops::to(ops::detach(t), device));
  for (auto& [_, t] : named_buffers()) t.set_data(ops::to(ops::detach(t), device));
}

void Module::to(DType dtype) {
  STRAND_CHECK(is_floating(dtype), "Module::to: target dtype must be floating, got ", dtype_name(dtype));
  NoGradGuard ng;
  auto convert = [&](const Tensor& t) {
    if (is_floating(t.dtype())) t.set_data(ops::to(ops::detach(t), dtype));
  };
  for (auto& [_, t] : named_parameters()) convert(t);
  for (auto& [_, t] : named_buffers()) convert(t);
}

int64_t Module::set_requires_grad(const std::string& name_regex, bool requires_grad) {
  std::regex re(name_regex);
  int64_t n = 0;
  auto params = named_parameters();
  for (auto& [name, t] : params)
    if (std::regex_match(name, re) && is_floating(t.dtype())) {
      t.set_requires_grad(requires_grad);
      ++n;
    }
  if (n == 0) {
    std::ostringstream os;
    for (size_t i = 0; i < params.size() && i < 5; ++i) os << (i ? ", " : "") << params[i].first;
    STRAND_CHECK(false, "set_requires_grad: pattern '", name_regex, "' matches no parameter of ", type_name_,
                 " (parameters include: ", os.str(), params.size() > 5 ? ", ..." : "", ")");
  }
  return n;
}

void Module::set_all_requires_grad(bool rg) {
  for (auto& [_, t] : named_parameters())
    if (is_floating(t.dtype())) t.set_requires_grad(rg);
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (auto& [_, t] : named_parameters())
    if (!trainable_only || t.requires_grad()) n += t.numel();
  return n;
}

// ---------------- state dict ----------------
StateDict Module::state_dict() const {
  StateDict sd;
  NamedTensors all;
  collect("", true, true, true, all);
  for (auto& [n, t] : all) sd.emplace(n, t);
  return sd;
}

LoadReport Module::load_state_dict(const StateDict& sd, const LoadOptions& opts) {
  LoadReport r;
  // Checkpoint keys after the key maps.
  std::map<std::string, Tensor> ckpt;
  for (const auto& [k, t] : sd) {
    std::optional<std::string> key = k;
    for (const auto& m : opts.remaps) {
      key = m(*key);
      if (!key) break;
    }
    if (!key) {
      r.dropped.push_back(k);
      continue;
    }
    STRAND_CHECK(!ckpt.count(*key), "load_state_dict: checkpoint keys '", k, "' and another both map to '", *key, "'");
    ckpt.emplace(*key, t);
  }
  // Aliases declared by modules, with their prefixes.
  std::map<std::string, std::string> aliases;
  for (auto& [prefix, m] : named_modules())
    for (auto& [local, alt] : m->key_aliases()) {
      const std::string p = prefix.empty() ? "" : prefix + ".";
      aliases[p + local] = p + alt;
    }

  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  std::set<std::string> used;
  for (const auto& [name, dst] : state_dict()) {
    auto it = ckpt.find(name);
    if (it == ckpt.end()) {
      auto a = aliases.find(name);
      if (a != aliases.end()) it = ckpt.find(a->second);
    }
    if (it == ckpt.end()) {
      r.missing.push_back(name);
      continue;
    }
    used.insert(it->first);
    const Tensor& src = it->second;
    const bool dtype_ok = src.dtype() == dst.dtype() ||
                          (opts.allow_dtype_cast && is_floating(src.dtype()) && is_floating(dst.dtype()));
    if (src.sizes() != dst.sizes() || !dtype_ok) {
      r.mismatched.push_back(name + ": checkpoint " + shape_str(src.sizes()) + " " + std::string(dtype_name(src.dtype())) +
                             " vs model " + shape_str(dst.sizes()) + " " + std::string(dtype_name(dst.dtype())));
      continue;
    }
    copies.emplace_back(dst, src);
    r.loaded.push_back(name);
  }
  for (const auto& [k, _] : ckpt)
    if (!used.count(k)) r.unexpected.push_back(k);
  STRAND_CHECK(!opts.strict || r.ok(), r.str());
  NoGradGuard ng;
  for (auto& [dst, src] : copies) ops::copy_(dst, src);
  return r;
}

void Module::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  safetensors::save(path, state_dict(), metadata);
}

LoadReport Module::load(const std::string& path, const LoadOptions& opts) {
  return load_state_dict(safetensors::load_any(path).tensors, opts);
}

// ---------------- unary modules ----------------
Tensor UnaryModule::operator()(const Tensor& x) {
  if (!checkpointing_ || !is_training() || !grad_enabled()) return forward(x);
  return checkpoint([this](const std::vector<Tensor>& in) { return std::vector<Tensor>{forward(in[0])}; }, {x})[0];
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& [name, c] : named_children()) {
    auto* m = dynamic_cast<UnaryModule*>(c.get());
    STRAND_CHECK(m != nullptr, "Sequential: child '", name, "' (", c->type_name(), ") is not a unary module");
    h = (*m)(h);
  }
  return h;
}

}  // namespace strand::nn
