#pragma once
// Reverse-mode execution: dependency-counted topological order from the roots, fan-in gradients
// summed, leaf gradients accumulated (add) into .grad, leaf hooks fired when final.
#include <vector>

#include "tensor/tensor.h"

namespace strand {

// Backpropagates from `roots`. A root without an explicit gradient must have one element (the
// gradient is then 1). retain_graph keeps saved tensors so the graph can be run again.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads = {}, bool retain_graph = false);
inline void backward(const Tensor& root, const Tensor& grad = {}, bool retain_graph = false) {
  backward(std::vector<Tensor>{root}, grad.defined() ? std::vector<Tensor>{grad} : std::vector<Tensor>{},
           retain_graph);
}

}  // namespace strand
