// CUDA fused AdamW: the CPU kernel's arithmetic (kernels/cpu/optim.cpp), one thread per element,
// one launch per parameter (a multi-tensor launch over all parameters is the next step).
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace strand::cuda {

namespace {
template <class T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, int64_t n, acc_t<T> decay, bool decays, acc_t<T> a1,
                             acc_t<T> b2, acc_t<T> a2, acc_t<T> c2, acc_t<T> eps, acc_t<T> neg_step) {
  using A = acc_t<T>;
  auto r = [](A x) { return A(T(x)); };
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    A pi = A(p[i]);
    if (decays) pi = r(pi * decay);
    const A gi = A(g[i]);
    const A mi = r(A(m[i]) + a1 * r(gi - A(m[i])));
    const A vi = r(r(A(v[i]) * b2) + a2 * r(gi * gi));
    const A den = r(r(r(sqrt(vi)) / c2) + eps);
    p[i] = T(pi + neg_step * r(mi / den));
    m[i] = T(mi);
    v[i] = T(vi);
  }
}
}  // namespace

void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) {
  dispatch_float(p.dtype(), "adamw", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = p.numel();
    adamw_kernel<T><<<grid_for(n), kThreads>>>(
        ptr<T>(p), ptr<T>(g), ptr<T>(m), ptr<T>(v), n, A(1 - s.lr * s.weight_decay), s.weight_decay != 0,
        A(1 - s.beta1), A(s.beta2), A(1 - s.beta2), A(s.bias_correction2_sqrt), A(s.eps), A(-s.step_size));
    STRAND_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace strand::cuda
