#pragma once
// Global gradient-norm clipping, torch.nn.utils.clip_grad_norm_ semantics.
#include <limits>
#include <vector>

#include "tensor/tensor.h"

namespace strand::nn {

constexpr double kInfNorm = std::numeric_limits<double>::infinity();

// The p-norm of all gradients taken together, as one vector (parameters without a grad are
// skipped; 0 when none has one). norm_type > 0, or kInfNorm for max |g|. Computed in double in a
// fixed order, so it is the same on every run whatever the gradients' dtype.
double grad_norm(const std::vector<Tensor>& params, double norm_type = 2.0);

// clip_grad_norm_'s coefficient for a total norm: min(1, max_norm / (total + 1e-6)), NaN for a NaN
// total. Optimizer::step(coefficient) applies it fused into the optimizer's pass.
double clip_coefficient(double total_norm, double max_norm);

// Scales every gradient in place by min(1, max_norm / (total + 1e-6)) and returns the total norm
// before clipping. With error_if_nonfinite, a NaN or infinite total is an error and nothing is
// scaled; otherwise, as in PyTorch, the gradients become NaN (or zero for an infinite total).
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

}  // namespace strand::nn
