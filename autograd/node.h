#pragma once
// The graph: a Node per differentiable op application, with edges to the nodes that produced its
// inputs (or to a leaf's AccumulateGrad). Nodes hold exactly the tensors their backward needs, as
// SavedTensors that remember the storage version at save time.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace strand::autograd {

class Node;

struct Edge {
  std::shared_ptr<Node> fn;  // null: this input needs no gradient
  uint32_t input_nr = 0;     // which output of fn this edge feeds
};

// A tensor kept for backward. Stored as a fresh handle onto the same storage (no autograd meta),
// so saving an op's own output creates no reference cycle. unpack() fails clearly if the storage
// was modified in place after saving, or if the graph was already freed by a backward pass.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t);  // NOLINT: saving is the only use
  Tensor unpack(const std::string& op) const;
  void reset() { data_ = Tensor(); released_ = true; }
  bool defined() const { return data_.defined() || released_; }

 private:
  Tensor data_;
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
class FnNode;
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

 private:
  std::string name_;
  std::vector<SavedTensor> saved_;
  BackwardFn fn_;
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
