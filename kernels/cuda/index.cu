// The GPU entry points of index.cuh.
#include "kernels/cuda/index.cuh"

namespace strand::cuda {

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  idx::index_select(DeviceLaunch{}, x, dim, index, out);
}
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  idx::index_add(DeviceLaunch{}, out, dim, index, src);
}
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  idx::gather(DeviceLaunch{}, x, dim, index, out);
}
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  idx::scatter_add(DeviceLaunch{}, out, dim, index, src);
}

}  // namespace strand::cuda
