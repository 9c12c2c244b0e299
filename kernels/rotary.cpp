// The rotary op layer: checks, half types through f32, outputs in the input's memory order.
#include <algorithm>
#include <numeric>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/dispatch.h"
#include "kernels/ops.h"

namespace strand::ops {

namespace {
// An uninitialised tensor of x's shape whose memory order follows x's strides (outermost first).
Tensor empty_like_layout(const Tensor& x, DType dt) {
  const TensorOptions o(dt, x.device());
  std::vector<int64_t> order(static_cast<size_t>(x.dim()));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x.stride(a) > x.stride(b); });
  if (order.empty() || order.back() != x.dim() - 1) return empty(x.sizes(), o);  // keep the unit last dim
  Shape s;
  for (int64_t d : order) s.push_back(x.size(d));
  std::vector<int64_t> inv(order.size());
  for (size_t i = 0; i < order.size(); ++i) inv[static_cast<size_t>(order[i])] = static_cast<int64_t>(i);
  return permute(empty(s, o), inv);
}

Tensor run(const Tensor& x_in, const Tensor& cos, const Tensor& sin, bool backward) {
  const char* op = backward ? "rotary_backward" : "rotary";
  check_floating(x_in, op);
  check_same_device(x_in, cos, op);
  check_same_device(x_in, sin, op);
  STRAND_CHECK(x_in.dim() >= 2, op, ": input must be [..., T, D], got ", shape_str(x_in.sizes()));
  const int64_t T = x_in.size(-2), hd = x_in.size(-1);
  STRAND_CHECK(cos.dim() == 2 && sin.sizes() == cos.sizes() && cos.size(0) == T && cos.size(1) % 2 == 0 &&
                   cos.size(1) <= hd,
               op, ": tables cos ", shape_str(cos.sizes()), " / sin ", shape_str(sin.sizes()),
               " must both be [T, rd] with T = ", T, " and rd even and at most ", hd, " for input ",
               shape_str(x_in.sizes()));
  const DType ct = compute_dtype(x_in);
  Tensor x = unit_last(to(x_in, ct));
  Tensor c = contiguous(to(cos, ct)), s = contiguous(to(sin, ct));
  Tensor out = empty_like_layout(x, ct);
  if (out.numel()) STRAND_DISPATCH(x, rotary, x, c, s, out, backward);
  return to(out, x_in.dtype());
}
}  // namespace

Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin) { return run(x, cos, sin, false); }
Tensor rotary_backward(const Tensor& grad, const Tensor& cos, const Tensor& sin) { return run(grad, cos, sin, true); }

}  // namespace strand::ops
