// CUDA index_select (a row gather, any element type) and index_add (its gradient, e.g. the
// embedding backward). index_add is deterministic without atomics: each output element sums, in
// index order, the source rows whose index names it — a scan over all indices per output, cheap for
// the models' vocabularies (16 to 33 tokens), linear in the vocabulary size in general. The index
// is i64 on the device (the op layer converts and validates it). Same contracts as cpu::.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace strand::cuda {

namespace {
void split(const Tensor& t, int64_t dim, int64_t& outer, int64_t& inner) {
  outer = inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
}
template <class U>  // an unsigned type of the element's size: rows are moved bit for bit
__global__ void select_kernel(const U* x, const int64_t* idx, U* out, int64_t outer, int64_t n, int64_t m, int64_t inner) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < outer * m * inner; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t j = e % inner, r = e / inner, i = r % m, o = r / m;
    out[e] = x[(o * n + idx[i]) * inner + j];
  }
}
template <class T>
__global__ void add_kernel(T* out, const int64_t* idx, const T* src, int64_t outer, int64_t n, int64_t m, int64_t inner) {
  using A = acc_t<T>;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < outer * n * inner; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t j = e % inner, r = e / inner, v = r % n, o = r / n;
    A s = A(out[e]);
    for (int64_t i = 0; i < m; ++i)
      if (idx[i] == v) s += A(src[(o * m + i) * inner + j]);
    out[e] = T(s);
  }
}
}  // namespace

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  int64_t outer, inner;
  split(x, dim, outer, inner);
  const int64_t n = x.size(dim), m = index.numel(), total = outer * m * inner;
  const int64_t* ip = ptr<int64_t>(index);
  auto launch = [&](auto zero) {
    using U = decltype(zero);
    select_kernel<U><<<grid_for(total), kThreads>>>(ptr<U>(x), ip, ptr<U>(out), outer, n, m, inner);
  };
  switch (x.element_size()) {
    case 1: launch(uint8_t{}); break;
    case 2: launch(uint16_t{}); break;
    case 4: launch(uint32_t{}); break;
    case 8: launch(uint64_t{}); break;
    default: STRAND_CHECK(false, "cuda::index_select: element size ", x.element_size());
  }
  STRAND_CUDA_LAUNCH_CHECK();
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  dispatch_float(out.dtype(), "index_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    int64_t outer, inner;
    split(out, dim, outer, inner);
    const int64_t n = out.size(dim), m = index.numel();
    add_kernel<T><<<grid_for(outer * n * inner), kThreads>>>(ptr<T>(out), ptr<int64_t>(index), ptr<T>(src), outer, n,
                                                                  m, inner);
    STRAND_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace strand::cuda
