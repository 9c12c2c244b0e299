// Fused AdamW: one pass over a parameter, its gradient and both moment buffers, instead of the six
// elementwise ops (and their temporaries) of the unfused update. Each step rounds to the tensor's
// dtype exactly where the unfused sequence of ops did, so both give the same numbers.
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

namespace strand::cpu {

void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) {
  dispatch_float(p.dtype(), "adamw", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    auto r = [](A x) { return A(T(x)); };  // the unfused ops store every result as T
    const A decay = A(1 - s.lr * s.weight_decay), a1 = A(1 - s.beta1), b2 = A(s.beta2), a2 = A(1 - s.beta2),
            c2 = A(s.bias_correction2_sqrt), eps = A(s.eps), neg_step = A(-s.step_size);
    const bool decays = s.weight_decay != 0, scales = s.grad_scale != 1;
    const A gscale = A(s.grad_scale);
    T* pp = p.data<T>();
    T* gp = g.data<T>();
    T* mp = m.data<T>();
    T* vp = v.data<T>();
    parallel_for(p.numel(), 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        A pi = A(pp[i]);
        if (decays) pi = r(pi * decay);
        A gi = A(gp[i]);
        if (scales) gp[i] = T(gi = r(gi * gscale));
        const A mi = r(A(mp[i]) + a1 * r(gi - A(mp[i])));
        const A vi = r(r(A(vp[i]) * b2) + a2 * r(gi * gi));
        const A den = r(r(r(std::sqrt(vi)) / c2) + eps);
        pp[i] = T(pi + neg_step * r(mi / den));
        mp[i] = T(mi);
        vp[i] = T(vi);
      }
    });
  });
}

}  // namespace strand::cpu
