#pragma once
// The scalars of one AdamW step (torch.optim.adam's single-tensor arithmetic), shared by the op
// layer and the CPU/CUDA kernels.
namespace strand {
struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay;
  double step_size;              // lr / (1 - beta1^t)
  double bias_correction2_sqrt;  // sqrt(1 - beta2^t)
};
}  // namespace strand
