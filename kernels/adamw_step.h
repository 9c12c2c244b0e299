#pragma once
// The scalars of one AdamW step (torch.optim.adam's single-tensor arithmetic), shared by the op
// layer and the CPU/CUDA kernels.
#include "tensor/tensor.h"

namespace strand {
struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay;
  double step_size;              // lr / (1 - beta1^t)
  double bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  // Gradient-norm clipping fused into the step: when not 1, the gradient is first scaled in place
  // (g = g * grad_scale, rounded to its dtype, as clip_grad_norm_'s g.mul_(coef) would leave it).
  double grad_scale = 1;
};

// One parameter of a multi-tensor step: the parameter, its gradient, both moment buffers (all
// contiguous, of one dtype and device) and its step's scalars.
struct AdamWParam {
  Tensor p, g, m, v;
  AdamWStep s;
};
}  // namespace strand
