// The GPU entry points of nn_rows.cuh.
#include "kernels/cuda/nn_rows.cuh"

namespace strand::cuda {

void softmax(const Tensor& x, const Tensor& out, int64_t n, int64_t inner, bool log) {
  rows::softmax(DeviceLaunch{}, x, out, n, inner, log);
}
void softmax_backward(const Tensor& grad, const Tensor& y, const Tensor& out, int64_t n, int64_t inner, bool log) {
  rows::softmax_backward(DeviceLaunch{}, grad, y, out, n, inner, log);
}
void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y, const Tensor& mean,
                const Tensor& rstd) {
  rows::layer_norm(DeviceLaunch{}, x, w, b, eps, y, mean, rstd);
}
void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  rows::layer_norm_backward(DeviceLaunch{}, grad, x, w, mean, rstd, gx, gw, gb);
}
void rms_norm(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) {
  rows::rms_norm(DeviceLaunch{}, x, w, eps, y, rstd);
}
void rms_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& gx,
                       const Tensor& gw) {
  rows::rms_norm_backward(DeviceLaunch{}, grad, x, w, rstd, gx, gw);
}
void rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out, bool backward) {
  rows::rotary(DeviceLaunch{}, x, cos, sin, out, backward);
}
void softmax_pool(const Tensor& x, const Tensor& logits, const Tensor& out, int64_t window) {
  rows::softmax_pool(DeviceLaunch{}, x, logits, out, Tensor(), Tensor(), Tensor(), window);
}
void softmax_pool_backward(const Tensor& grad, const Tensor& x, const Tensor& logits, const Tensor& gx,
                           const Tensor& gl, int64_t window) {
  rows::softmax_pool(DeviceLaunch{}, x, logits, Tensor(), grad, gx, gl, window);
}

}  // namespace strand::cuda
