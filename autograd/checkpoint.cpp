// Activation checkpointing (the reentrant scheme): the forward runs under no-grad and keeps only
// its inputs; backward restores the random state and the autocast mode, recomputes the forward
// with grad on, and runs a nested backward through the recomputed graph.
#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "autograd/node.h"

namespace strand {

using autograd::FnNode;

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  const Generator rng = default_generator();
  const bool autocast = autocast_enabled();  // the recomputation casts as the forward did
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    outputs = fn(inputs);
  }
  // Outputs computed under no-grad may alias inputs; give each its own handle before recording.
  for (Tensor& o : outputs) o = ops::detach(o);
  if (!grad_enabled()) return outputs;

  std::vector<autograd::SavedTensor> saved(inputs.begin(), inputs.end());
  std::vector<bool> input_rg;
  for (const Tensor& t : inputs) input_rg.push_back(t.requires_grad());
  // Parameters captured by fn make the checkpoint need gradients even when no input does; the
  // node is recorded with a dummy requires-grad input in that case so backward reaches it.
  std::vector<Tensor> edges_from = inputs;
  Tensor anchor;
  if (!autograd::any_requires_grad(inputs)) {
    anchor = ops::zeros({}, TensorOptions(DType::f32));
    anchor.set_requires_grad(true);
    edges_from.push_back(anchor);
  }
  const size_t n_in = inputs.size();
  autograd::record("checkpoint", edges_from, outputs, std::move(saved),
                   [fn, rng, autocast, input_rg, n_in](FnNode& node, const std::vector<Tensor>& grads) {
                     std::vector<Tensor> detached;
                     for (size_t i = 0; i < n_in; ++i) {
                       Tensor d = ops::detach(node.saved(i));
                       if (input_rg[i]) d.set_requires_grad(true);
                       detached.push_back(d);
                     }
                     std::vector<Tensor> outs;
                     {
                       // Replay the forward's random numbers, then continue the stream as before.
                       Generator now = default_generator();
                       default_generator() = rng;
                       GradModeGuard grad_on(true);
                       AutocastGuard cast(autocast);
                       outs = fn(detached);
                       default_generator() = now;
                     }
                     std::vector<Tensor> roots, root_grads;
                     for (size_t i = 0; i < outs.size() && i < grads.size(); ++i) {
                       if (!outs[i].requires_grad() || !grads[i].defined()) continue;
                       roots.push_back(outs[i]);
                       root_grads.push_back(grads[i]);
                     }
                     if (!roots.empty()) backward(roots, root_grads);
                     std::vector<Tensor> result;
                     for (size_t i = 0; i < n_in; ++i) result.push_back(input_rg[i] ? detached[i].grad() : Tensor());
                     result.push_back(Tensor());  // the anchor, if any, gets nothing
                     return result;
                   });
  return outputs;
}

}  // namespace strand
