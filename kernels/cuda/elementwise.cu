// The elementwise family (elementwise.cuh) launched on the GPU.
#include "kernels/cuda/elementwise.cuh"

namespace strand::cuda {

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b) {
  ew::unary(DeviceLaunch{}, op, x, out, a, b);
}
void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& v, const Tensor& out, double a, double b) {
  ew::unary_backward(DeviceLaunch{}, op, grad, v, out, a, b);
}
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  ew::binary(DeviceLaunch{}, op, a, b, out);
}
void compare(CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  ew::compare(DeviceLaunch{}, op, a, b, out);
}
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  ew::where(DeviceLaunch{}, cond, a, b, out);
}
void copy(const Tensor& src, const Tensor& dst) { ew::copy(DeviceLaunch{}, src, dst); }
void fill(const Tensor& dst, double value) { ew::fill(DeviceLaunch{}, dst, value); }
void add_(const Tensor& dst, const Tensor& src, double alpha) { ew::add_(DeviceLaunch{}, dst, src, alpha); }
void rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset) {
  ew::rand_uniform(DeviceLaunch{}, out, seed, offset);
}
void bernoulli(const Tensor& out, double p, double value, uint64_t seed, uint64_t offset) {
  ew::bernoulli(DeviceLaunch{}, out, p, value, seed, offset);
}

}  // namespace strand::cuda
