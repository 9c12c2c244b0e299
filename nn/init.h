#pragma once
// PyTorch's default initialisations, drawn from strand's Philox generator (so the distributions
// match PyTorch's, the exact values do not). All work in place on a parameter under no-grad.
#include "tensor/generator.h"
#include "tensor/tensor.h"

namespace strand::nn::init {

void uniform_(const Tensor& t, double lo, double hi, Generator* g = nullptr);
void normal_(const Tensor& t, double mean = 0, double std = 1, Generator* g = nullptr);
void constant_(const Tensor& t, double value);
// fan_in of a weight: size(1) * prod(size(2:)) (PyTorch's _calculate_fan_in_and_fan_out).
int64_t fan_in(const Tensor& w);
// kaiming_uniform_(w, a): bound = sqrt(2 / (1 + a^2)) * sqrt(3 / fan_in), leaky_relu gain.
void kaiming_uniform_(const Tensor& w, double a, Generator* g = nullptr);

}  // namespace strand::nn::init
