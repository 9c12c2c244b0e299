#pragma once
// The graph: a Node per differentiable op application, with edges to the nodes that produced its
// inputs (or to a leaf's AccumulateGrad). Nodes hold exactly the tensors their backward needs, as
// SavedTensors that remember the storage version at save time. An op whose output can be
// recomputed cheaply from what its own node saved anyway (an activation from its input, a norm
// from its input and statistics) marks it so; a later op that saves that output then keeps the
// producing node instead of the output's memory, and recomputes it in backward.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace strand::autograd {

class Node;
class FnNode;

// Whether saving a recomputable output keeps its recipe instead of its memory (on by default;
// STRAND_RECOMPUTE=0 turns it off). Gradients are the same either way: the recipe reruns the
// same kernels on the same inputs.
bool recompute_enabled();
void set_recompute_enabled(bool on);

struct Edge {
  std::shared_ptr<Node> fn;  // null: this input needs no gradient
  uint32_t input_nr = 0;     // which output of fn this edge feeds
};

// A tensor kept for backward. Stored as a fresh handle onto the same storage (no autograd meta),
// so saving an op's own output creates no reference cycle. unpack() fails clearly if the storage
// was modified in place after saving, or if the graph was already freed by a backward pass.
// When `t` is an unmodified output its producing node can recompute (FnNode::set_recompute), it
// holds that node instead, which the graph keeps alive anyway: t's memory is freed once the
// forward drops t, and unpack() recomputes the values t had. An in-place change to t after
// saving then cannot affect the backward, which gets the values the saving op used.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t);  // NOLINT: saving is the only use
  Tensor unpack(const std::string& op) const;
  void reset() { data_ = Tensor(); producer_.reset(); released_ = true; }
  bool defined() const { return data_.defined() || producer_ || released_; }
  // Holds a recipe, no memory of its own.
  bool recomputed() const { return producer_ != nullptr; }
  // How many recipes unpack() runs, one inside the other (0: none).
  int recompute_depth() const;

 private:
  Tensor data_;
  std::shared_ptr<const FnNode> producer_;
  uint64_t version_ = 0;
  bool released_ = false;
};

struct OutputMeta {
  Shape shape;
  DType dtype;
  Device device;
};

class Node {
 public:
  Node();
  virtual ~Node() = default;
  // grads: one per output of the op (an output no gradient reached is filled with zeros before
  // the call). Returns one gradient per next edge (undefined where that input needs none).
  virtual std::vector<Tensor> apply(std::vector<Tensor>& grads) = 0;
  virtual std::string name() const = 0;
  // Frees saved tensors after a backward pass without retain_graph.
  virtual void release() {}

  std::vector<Edge> next_edges;
  std::vector<OutputMeta> outputs;
  uint64_t sequence_nr;  // creation order: among ready nodes the newest runs first
};

// Gradient sink of a leaf: accumulates into leaf.grad and then fires the leaf's hooks.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(Tensor leaf);
  std::vector<Tensor> apply(std::vector<Tensor>& grads) override;
  std::string name() const override { return "AccumulateGrad"; }
  Tensor leaf;
};

// The generic op node: a name, saved tensors, and a backward function.
using BackwardFn = std::function<std::vector<Tensor>(FnNode& self, const std::vector<Tensor>& grads)>;

class FnNode : public Node {
 public:
  FnNode(std::string name, std::vector<SavedTensor> saved, BackwardFn fn)
      : name_(std::move(name)), saved_(std::move(saved)), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(std::vector<Tensor>& grads) override;
  std::string name() const override { return name_; }
  void release() override;
  Tensor saved(size_t i) const { return saved_.at(i).unpack(name_); }
  // Whether input i needs a gradient (so its computation can be skipped).
  bool needs_grad(size_t i) const { return i < next_edges.size() && next_edges[i].fn != nullptr; }

  // Declares this node's only output `y` (just made, unmodified) recomputable by `fn` from this
  // node's saved tensors. `fn` must rerun the forward's own kernels, so the values are the same.
  // Nothing is cached: each unpack reruns the recipe, and the recipes of the saved tensors it
  // reads. So a recipe is declined (y is then kept as usual) where that chain would be more than
  // kMaxRecomputeDepth recipes deep, which bounds the work of one unpack (a norm, the cast of its
  // output, a dropout over it: 3).
  static constexpr int kMaxRecomputeDepth = 3;
  using RecomputeFn = std::function<Tensor(const FnNode& self)>;
  void set_recompute(const Tensor& y, RecomputeFn fn);
  // The same for a `y` no gradient flows to (it requires none: autocast's cast of a frozen
  // parameter): a node outside the graph, held by y's autograd meta, keeps `saved` and the recipe.
  // `name` is what an error about the saved tensors calls the recipe.
  static void set_recipe(const Tensor& y, std::string name, std::vector<SavedTensor> saved, RecomputeFn fn);
  // Whether `t` is that output, still unmodified, and recompute is enabled.
  bool can_recompute(const Tensor& t) const;
  Tensor recompute() const;
  int recompute_depth() const { return recompute_depth_; }

 private:
  void declare_recompute(const Tensor& y, RecomputeFn fn);

  std::string name_;
  std::vector<SavedTensor> saved_;
  BackwardFn fn_;
  RecomputeFn recompute_;
  int recompute_depth_ = 0;  // of recompute_: 1 + the deepest saved tensor's
  uint64_t output_version_ = 0;
  bool released_ = false;
};

// The edge through which gradient reaches `t` (its grad_fn, or its leaf accumulator).
Edge gradient_edge(const Tensor& t);

// True when grad mode is on and any input requires grad.
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Connects outputs to a new node whose edges point at `inputs`. No-op (returns null) when no
// input requires grad or grad mode is off.
std::shared_ptr<FnNode> record(const std::string& name, const std::vector<Tensor>& inputs,
                               const std::vector<Tensor>& outputs, std::vector<SavedTensor> saved, BackwardFn fn);

}  // namespace strand::autograd
