// The softmax-pooling op layer: checks, contiguous operands. Half-type x and logits of one dtype go
// to the kernels as they are (they compute in f32 and write f32 outputs and half-type gradients);
// mixed dtypes are brought to the compute type first.
#include "kernels/dispatch.h"
#include "kernels/ops.h"

namespace strand::ops {

namespace {
void check(const Tensor& x, const Tensor& logits, int64_t window, const char* op) {
  check_floating(x, op);
  check_same_device(x, logits, op);
  STRAND_CHECK(x.dim() >= 2 && logits.sizes() == x.sizes(), op, ": x ", shape_str(x.sizes()), " and logits ",
               shape_str(logits.sizes()), " must be the same [..., L, C]");
  STRAND_CHECK(window >= 1 && x.size(-2) % window == 0, op, ": length ", x.size(-2),
               " is not a multiple of the window ", window, " (pad it first)");
}
Shape pooled_shape(const Tensor& x, int64_t window) {
  Shape s = x.sizes();
  s[s.size() - 2] /= window;
  return s;
}

// x and logits as the kernels take them: their own dtype if they share it, else the compute type.
std::pair<Tensor, Tensor> kernel_operands(const Tensor& x, const Tensor& l) {
  const DType ct = compute_dtype(x);
  const bool own = x.dtype() == l.dtype();
  return {contiguous(own ? x : to(x, ct)), contiguous(own ? l : to(l, ct))};
}
}  // namespace

Tensor softmax_pool(const Tensor& x_in, const Tensor& l_in, int64_t window, std::optional<DType> out_dtype) {
  check(x_in, l_in, window, "softmax_pool");
  const auto [x, l] = kernel_operands(x_in, l_in);
  Tensor out = empty(pooled_shape(x, window), TensorOptions(compute_dtype(x), x.device()));
  if (out.numel()) STRAND_DISPATCH(x, softmax_pool, x, l, out, window);
  return to(out, out_dtype.value_or(x_in.dtype()));
}

std::pair<Tensor, Tensor> softmax_pool_backward(const Tensor& grad, const Tensor& x_in, const Tensor& l_in,
                                                int64_t window) {
  check(x_in, l_in, window, "softmax_pool_backward");
  check_same_device(x_in, grad, "softmax_pool_backward");
  STRAND_CHECK(grad.sizes() == pooled_shape(x_in, window), "softmax_pool_backward: gradient ",
               shape_str(grad.sizes()), " for input ", shape_str(x_in.sizes()), " and window ", window);
  const auto [x, l] = kernel_operands(x_in, l_in);
  const Tensor g = contiguous(to(grad, compute_dtype(x)));
  Tensor gx = empty(x.sizes(), TensorOptions(x.dtype(), x.device())), gl = empty(x.sizes(), TensorOptions(x.dtype(), x.device()));
  if (g.numel()) STRAND_DISPATCH(x, softmax_pool_backward, g, x, l, gx, gl, window);
  return {to(gx, x_in.dtype()), to(gl, l_in.dtype())};
}

}  // namespace strand::ops
