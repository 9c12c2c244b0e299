// The GPU entry points of conv1d (conv.cuh) and batch_norm (batch_norm.cuh): the two ops Enformer's
// convolution tower needs.
#include "kernels/cuda/batch_norm.cuh"
#include "kernels/cuda/conv.cuh"
#include "kernels/cuda/cublas_util.cuh"

namespace strand::cuda {

double batch_norm_stats(const Tensor& x, const Tensor& mean, const Tensor& var, const cpu::StatsReducer* reduce) {
  return bn::batch_norm_stats(DeviceLaunch{}, x, mean, var, reduce);
}

void batch_norm_apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& rstd,
                      const Tensor& y) {
  bn::batch_norm_apply(DeviceLaunch{}, x, w, b, mean, rstd, y);
}

void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         bool training, const Tensor& gx, const Tensor& gw, const Tensor& gb,
                         const cpu::StatsReducer* reduce) {
  bn::batch_norm_backward(DeviceLaunch{}, grad, x, w, mean, rstd, training, gx, gw, gb, reduce);
}

void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t pad, const Tensor& out) {
  conv::conv1d(BlasLaunch{{}, x.device().index}, x, w, bias, pad, out);
}

void conv1d_backward(const Tensor& grad, const Tensor& x, const Tensor& w, int64_t pad, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb) {
  conv::conv1d_backward(BlasLaunch{{}, x.device().index}, grad, x, w, pad, gx, gw, gb);
}

}  // namespace strand::cuda
