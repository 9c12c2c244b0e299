#include "autograd/node.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "autograd/grad_mode.h"
#include "kernels/ops.h"

namespace strand {

namespace {
thread_local bool t_grad_enabled = true;
std::atomic<uint64_t> g_sequence{0};
}  // namespace
bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool on) { t_grad_enabled = on; }

namespace autograd {

namespace {
std::atomic<bool>& recompute_flag() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("STRAND_RECOMPUTE");
    return !(e && std::strcmp(e, "0") == 0);
  }()};
  return on;
}
}  // namespace
bool recompute_enabled() { return recompute_flag().load(std::memory_order_relaxed); }
void set_recompute_enabled(bool on) { recompute_flag().store(on); }

namespace {
// The node that can recompute t: its grad_fn (an only output), or the recipe of a tensor that
// requires no gradient (FnNode::set_recipe).
std::shared_ptr<const FnNode> recipe_owner(const Tensor& t) {
  const AutogradMeta* m = t.impl()->autograd.get();
  if (!m) return nullptr;
  if (m->grad_fn) return m->output_nr == 0 ? std::dynamic_pointer_cast<const FnNode>(m->grad_fn) : nullptr;
  return std::dynamic_pointer_cast<const FnNode>(m->recipe);
}
}  // namespace

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  if (auto fn = recipe_owner(t); fn && fn->can_recompute(t)) {
    producer_ = std::move(fn);
    return;
  }
  data_ = ops::detach(t);
  version_ = t.version();
}

Tensor SavedTensor::unpack(const std::string& op) const {
  STRAND_CHECK(!released_, "trying to backward through the graph a second time (the tensors saved by ", op,
               " were freed by the first backward); pass retain_graph=true to the first backward");
  if (producer_) return producer_->recompute();
  if (!data_.defined()) return data_;
  STRAND_CHECK(data_.version() == version_, "a tensor saved by ", op,
               " for the backward pass was modified by an in-place operation (", data_.str(), " is at version ",
               data_.version(), ", expected ", version_, ")");
  return data_;
}

int SavedTensor::recompute_depth() const { return producer_ ? producer_->recompute_depth() : 0; }

Node::Node() : sequence_nr(g_sequence.fetch_add(1)) {}

AccumulateGrad::AccumulateGrad(Tensor l) : leaf(std::move(l)) {
  outputs.push_back({leaf.sizes(), leaf.dtype(), leaf.device()});
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>& grads) {
  Tensor g = grads.at(0);
  STRAND_ASSERT(g.sizes() == leaf.sizes(), "gradient shape ", shape_str(g.sizes()), " for leaf ", leaf.str());
  AutogradMeta& m = autograd_meta(leaf);
  if (!m.grad.defined()) {
    // Own the gradient: the incoming tensor may alias another leaf's gradient or a view.
    m.grad = ops::clone(ops::to(g, leaf.dtype()));
  } else {
    ops::add_(m.grad, ops::to(g, m.grad.dtype()));
  }
  for (auto& hook : m.hooks) hook(m.grad);
  return {};
}

std::vector<Tensor> FnNode::apply(std::vector<Tensor>& grads) {
  STRAND_CHECK(!released_, "trying to backward through the graph a second time (", name_,
               " was already freed by an earlier backward); pass retain_graph=true to the first backward");
  return fn_(*this, grads);
}

void FnNode::release() {
  released_ = true;
  recompute_ = nullptr;
  for (auto& s : saved_) s.reset();
}

void FnNode::set_recompute(const Tensor& y, RecomputeFn fn) {
  STRAND_ASSERT(outputs.size() == 1 && y.grad_fn().get() == this, name_, ": set_recompute on an output of another node");
  declare_recompute(y, std::move(fn));
}

void FnNode::set_recipe(const Tensor& y, std::string name, std::vector<SavedTensor> saved, RecomputeFn fn) {
  STRAND_ASSERT(!y.requires_grad() && y.is_leaf(), "set_recipe on ", y.str(), ", which has a place in the graph");
  auto node = std::make_shared<FnNode>(std::move(name), std::move(saved), BackwardFn());
  node->outputs.push_back({y.sizes(), y.dtype(), y.device()});
  node->declare_recompute(y, std::move(fn));
  if (node->recompute_) autograd_meta(y).recipe = std::move(node);
}

void FnNode::declare_recompute(const Tensor& y, RecomputeFn fn) {
  int depth = 1;
  for (const SavedTensor& s : saved_) depth = std::max(depth, 1 + s.recompute_depth());
  if (depth > kMaxRecomputeDepth) return;
  recompute_ = std::move(fn);
  recompute_depth_ = depth;
  output_version_ = y.version();
}

bool FnNode::can_recompute(const Tensor& t) const {
  return recompute_ && recompute_enabled() && recipe_owner(t).get() == this && t.version() == output_version_;
}

Tensor FnNode::recompute() const {
  STRAND_CHECK(!released_ && recompute_, "trying to backward through the graph a second time (", name_,
               " was already freed by an earlier backward); pass retain_graph=true to the first backward");
  Tensor y = recompute_(*this);
  const OutputMeta& m = outputs[0];
  STRAND_ASSERT(y.sizes() == m.shape && y.dtype() == m.dtype && y.device() == m.device, name_,
                ": recomputed output ", y.str(), " differs from the forward's");
  return y;
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.grad_fn()) return {t.grad_fn(), t.output_nr()};
  AutogradMeta& m = autograd_meta(t);
  std::shared_ptr<Node> acc = m.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t);
    m.grad_accumulator = acc;
  }
  return {acc, 0};
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

std::shared_ptr<FnNode> record(const std::string& name, const std::vector<Tensor>& inputs,
                               const std::vector<Tensor>& outputs, std::vector<SavedTensor> saved, BackwardFn fn) {
  if (!any_requires_grad(inputs)) return nullptr;
  auto node = std::make_shared<FnNode>(name, std::move(saved), std::move(fn));
  for (const Tensor& t : inputs) node->next_edges.push_back(gradient_edge(t));
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& o = outputs[i];
    node->outputs.push_back({o.sizes(), o.dtype(), o.device()});
    if (!is_floating(o.dtype())) continue;  // integer outputs (argmax) carry no gradient
    AutogradMeta& m = autograd_meta(o);
    STRAND_ASSERT(!m.grad_fn, "output of ", name, " already has a grad_fn");
    m.requires_grad = true;
    m.grad_fn = node;
    m.output_nr = static_cast<uint32_t>(i);
  }
  return node;
}

}  // namespace autograd
}  // namespace strand
