// The optimizer's multi-tensor kernels (optim.cuh) launched on the GPU.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/optim.cuh"

namespace strand::cuda {

void adamw_multi(const std::vector<AdamWParam>& params) { optim::adamw_multi(DeviceLaunch{}, params); }

void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) {
  adamw_multi({AdamWParam{p, g, m, v, s}});
}

std::vector<double> sum_squares(const std::vector<Tensor>& xs) { return optim::sum_squares(DeviceLaunch{}, xs); }

}  // namespace strand::cuda
