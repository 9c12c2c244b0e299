#pragma once
// CUDA kernels behind the op layer (compiled only with STRAND_CUDA=ON). Same contracts as the
// cpu:: kernels of the same name; ops.cpp dispatches to them for CUDA tensors.
#include "kernels/elementwise_math.h"
#include "tensor/tensor.h"

namespace strand::cuda {

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b);
void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& v, const Tensor& out, double a, double b);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void compare(CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);
void copy(const Tensor& src, const Tensor& dst);  // both on the same GPU; broadcast + cast
void fill(const Tensor& dst, double value);
void add_(const Tensor& dst, const Tensor& src, double alpha);
void rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset);
void bernoulli(const Tensor& out, double p, double value, uint64_t seed, uint64_t offset);

}  // namespace strand::cuda
