#pragma once
// Module: named parameters, buffers and children with PyTorch-style dotted names
// ("encoder.layer.3.attention.self.query.weight"), so Hugging Face and PyTorch checkpoints load by
// name. Parameters are Tensor handles; conversions (to(device), to(dtype)) and loading change their
// data in place (Tensor::set_data / copy_), so every holder of a handle — a layer's member, an
// optimizer's list — keeps seeing the live parameter.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/functional.h"

namespace strand::nn {

using StateDict = std::map<std::string, Tensor>;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Maps a checkpoint key to the model key it should load into (nullopt: drop it). Applied in order.
using KeyMap = std::function<std::optional<std::string>(const std::string&)>;
KeyMap strip_prefix(const std::string& prefix);  // keys without the prefix pass unchanged
KeyMap add_prefix(const std::string& prefix);
KeyMap rename(const std::string& regex, const std::string& replacement);  // std::regex_replace
KeyMap drop(const std::string& regex);  // keys fully matching are dropped (e.g. unused heads)

struct LoadOptions {
  bool strict = true;             // any missing / unexpected / mismatched key is an error
  bool allow_dtype_cast = false;  // floating checkpoints may load into another floating dtype
  std::vector<KeyMap> remaps;
};

struct LoadReport {
  std::vector<std::string> loaded, missing, unexpected, mismatched, dropped;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string str() const;  // every problem, by name, one per line
};

class Module {
 public:
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  // Registration. Names are unique within a module and contain no '.'. An undefined parameter is
  // an absent optional one (a Linear without bias) and is skipped by every listing.
  Tensor register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor t);
  // Registers the module held in `member` and binds that member: replace_module later updates it,
  // so a layer's forward always calls the module the tree holds (LoRA injection relies on this).
  template <class M>
  std::shared_ptr<M>& register_module(const std::string& name, std::shared_ptr<M>& member) {
    STRAND_CHECK(member != nullptr, "register_module: module '", name, "' is null");
    add_child(name, member, [&member, name](const std::shared_ptr<Module>& m) {
      auto typed = std::dynamic_pointer_cast<M>(m);
      STRAND_CHECK(typed != nullptr, "replace_module: '", name, "' cannot hold a ", m->type_name());
      member = typed;
    });
    return member;
  }
  // Swaps a registered child for another (e.g. a Linear for a LoRALinear wrapping it).
  void replace_module(const std::string& name, std::shared_ptr<Module> m);
  std::shared_ptr<Module> child(const std::string& name) const;  // null if absent

  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<Tensor> trainable_parameters() const;  // those with requires_grad
  NamedTensors named_buffers(bool recurse = true) const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  // This module (named "") and every descendant, depth first, in registration order.
  std::vector<std::pair<std::string, Module*>> named_modules();

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves every parameter and buffer (floating ones only for dtype); handles stay valid.
  void to(Device device);
  void to(DType dtype);

  // Sets requires_grad on every parameter whose full dotted name matches the regex (std::regex,
  // whole-name match). Returns how many matched; matching none is an error naming the pattern.
  int64_t set_requires_grad(const std::string& name_regex, bool requires_grad);
  void freeze() { set_all_requires_grad(false); }
  void unfreeze() { set_all_requires_grad(true); }
  int64_t num_parameters(bool trainable_only = false) const;

  // Parameters and buffers by dotted name.
  StateDict state_dict() const;
  // Copies matching tensors in. Validates everything first: with strict (the default) a report
  // with any problem is thrown as one strand::Error and the model is left unchanged.
  LoadReport load_state_dict(const StateDict& sd, const LoadOptions& opts = {});
  void save(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const;
  LoadReport load(const std::string& path, const LoadOptions& opts = {});

  // Alternative checkpoint names for some of this module's own keys (local names, no prefix),
  // tried when the key itself is absent: how a LoRA-wrapped layer accepts the plain weights.
  virtual std::vector<std::pair<std::string, std::string>> key_aliases() const { return {}; }

 protected:
  // Containers (which read their children from the registry at use) add children unbound.
  using Setter = std::function<void(const std::shared_ptr<Module>&)>;
  void add_child(const std::string& name, std::shared_ptr<Module> m, Setter setter = {});

 private:
  void check_new_name(const std::string& name) const;
  void set_all_requires_grad(bool rg);
  void collect(const std::string& prefix, bool params, bool buffers, bool recurse, NamedTensors& out) const;

  std::string type_name_;
  bool training_ = true;
  NamedTensors params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::map<std::string, Setter> setters_;
};

// A module mapping one tensor to one tensor: every layer here. Calling it runs forward, through
// activation checkpointing when that is switched on (recomputed in backward, training only).
class UnaryModule : public Module {
 public:
  using Module::Module;
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x);
  void set_checkpointing(bool on) { checkpointing_ = on; }
  bool checkpointing() const { return checkpointing_; }

 private:
  bool checkpointing_ = false;
};

// Children named "0", "1", ...
class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    add_child(std::to_string(size_++), m);
    return m;
  }
  size_t size() const { return size_; }
  template <class M = Module>
  std::shared_ptr<M> at(size_t i) const {
    STRAND_CHECK(i < size_, "ModuleList: index ", i, " out of range for ", size_, " modules");
    return std::dynamic_pointer_cast<M>(child(std::to_string(i)));
  }

 private:
  size_t size_ = 0;
};

// Children by name, as PEFT's `lora_A.default` needs.
class ModuleDict : public Module {
 public:
  ModuleDict() : Module("ModuleDict") {}
  template <class M>
  std::shared_ptr<M> insert(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }
  template <class M = Module>
  std::shared_ptr<M> at(const std::string& name) const {
    auto c = child(name);
    STRAND_CHECK(c != nullptr, "ModuleDict: no module named '", name, "'");
    return std::dynamic_pointer_cast<M>(c);
  }
};

// Unary modules applied in order; children named "0", "1", ...
class Sequential : public UnaryModule {
 public:
  Sequential() : UnaryModule("Sequential") {}
  Sequential& add(std::shared_ptr<UnaryModule> m) {
    add_child(std::to_string(size_++), std::move(m));
    return *this;
  }
  Tensor forward(const Tensor& x) override;
  size_t size() const { return size_; }

 private:
  size_t size_ = 0;
};

}  // namespace strand::nn
