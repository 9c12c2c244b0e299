#include "autograd/engine.h"

#include <queue>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace strand {

using autograd::Edge;
using autograd::Node;

namespace {
struct ByNewest {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

void accumulate(std::vector<Tensor>& buf, uint32_t slot, const Tensor& g) {
  if (!g.defined()) return;
  Tensor& b = buf[slot];
  if (!b.defined()) {
    b = g;
  } else if (b.unshared() && b.is_contiguous() && b.dtype() == g.dtype() && b.sizes() == g.sizes()) {
    ops::add_(b, g);  // memory no one else sees (g may alias other buffers, b does not): the same sum, in place
  } else {
    b = ops::add(b, g);
  }
}
}  // namespace

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  STRAND_CHECK(grads.empty() || grads.size() == roots.size(), "backward: ", roots.size(), " roots but ",
               grads.size(), " gradients");
  std::vector<Edge> root_edges;
  std::vector<Tensor> root_grads;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    STRAND_CHECK(r.defined() && r.requires_grad(), "backward: root ", i,
                 " does not require grad and has no grad_fn (", r.str(), ")");
    Tensor g = grads.empty() ? Tensor() : grads[i];
    if (!g.defined()) {
      STRAND_CHECK(r.numel() == 1, "backward: root ", i, " has shape ", shape_str(r.sizes()),
                   "; a gradient can be implied only for a one-element output, so pass one");
      g = ops::ones(r.sizes(), TensorOptions(r.dtype(), r.device()));
    }
    STRAND_CHECK(g.sizes() == r.sizes(), "backward: gradient shape ", shape_str(g.sizes()),
                 " does not match root shape ", shape_str(r.sizes()));
    root_edges.push_back(autograd::gradient_edge(r));
    root_grads.push_back(g);
  }

  // Dependencies: how many edges point into each node reachable from the roots.
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, std::shared_ptr<Node>> keep;  // keeps nodes alive while we run
  std::vector<Node*> stack;
  for (const Edge& e : root_edges) {
    if (keep.emplace(e.fn.get(), e.fn).second) stack.push_back(e.fn.get());
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.fn) continue;
      ++deps[e.fn.get()];
      if (keep.emplace(e.fn.get(), e.fn).second) stack.push_back(e.fn.get());
    }
  }

  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  auto buffer_of = [&](Node* n) -> std::vector<Tensor>& {
    auto& b = buffers[n];
    if (b.empty()) b.resize(std::max<size_t>(n->outputs.size(), 1));
    return b;
  };
  for (size_t i = 0; i < root_edges.size(); ++i)
    accumulate(buffer_of(root_edges[i].fn.get()), root_edges[i].input_nr, root_grads[i]);

  std::priority_queue<Node*, std::vector<Node*>, ByNewest> ready;
  for (auto& [n, _] : keep)
    if (deps[n] == 0 && buffers.count(n)) ready.push(n);

  NoGradGuard no_grad;
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    std::vector<Tensor> in = std::move(buffer_of(n));
    buffers.erase(n);
    bool any = false;
    for (const Tensor& g : in) any = any || g.defined();
    for (size_t i = 0; any && i < in.size() && i < n->outputs.size(); ++i) {
      if (in[i].defined()) continue;
      const auto& m = n->outputs[i];
      in[i] = ops::zeros(m.shape, TensorOptions(m.dtype, m.device));
    }
    std::vector<Tensor> out;
    if (any) out = n->apply(in);
    if (!retain_graph) n->release();
    for (size_t i = 0; i < n->next_edges.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.fn) continue;
      if (i < out.size() && out[i].defined()) {
        const auto& m = e.fn->outputs.at(e.input_nr);
        STRAND_ASSERT(out[i].sizes() == m.shape, n->name(), " returned gradient of shape ", shape_str(out[i].sizes()),
                      " for input ", i, " of shape ", shape_str(m.shape));
        accumulate(buffer_of(e.fn.get()), e.input_nr, out[i]);
      }
      // A node that no gradient reached still runs (as a no-op) so its dependants are released.
      if (--deps[e.fn.get()] == 0) {
        buffer_of(e.fn.get());
        ready.push(e.fn.get());
      }
    }
  }
}

}  // namespace strand
