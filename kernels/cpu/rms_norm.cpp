#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

namespace strand::cpu {

void rms_norm(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) {
  dispatch_float(x.dtype(), "rms_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
    const T* xp = x.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    T* yp = y.data<T>();
    A* rp = rstd.data<A>();
    parallel_for(rows, n * 3, [&](int64_t b0, int64_t e0) {
      for (int64_t r = b0; r < e0; ++r) {
        const T* xr = xp + r * n;
        A s = 0;
        for (int64_t j = 0; j < n; ++j) s += A(xr[j]) * A(xr[j]);
        const A rs = A(1) / std::sqrt(s / A(n) + A(eps));
        rp[r] = rs;
        T* yr = yp + r * n;
        for (int64_t j = 0; j < n; ++j) yr[j] = T(A(xr[j]) * rs * (wp ? A(wp[j]) : A(1)));
      }
    });
  });
}

void rms_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       const Tensor& gx, const Tensor& gw) {
  dispatch_float(x.dtype(), "rms_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
    const T* gp = grad.data<T>();
    const T* xp = x.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    const A* rp = rstd.data<A>();
    if (gx.defined()) {
      T* gxp = gx.data<T>();
      parallel_for(rows, n * 5, [&](int64_t b0, int64_t e0) {
        for (int64_t r = b0; r < e0; ++r) {
          const T* g = gp + r * n;
          const T* xr = xp + r * n;
          const A rs = rp[r];
          A s = 0;  // mean(dxhat * xhat)
          for (int64_t j = 0; j < n; ++j) s += A(g[j]) * (wp ? A(wp[j]) : A(1)) * A(xr[j]) * rs;
          s /= A(n);
          T* o = gxp + r * n;
          for (int64_t j = 0; j < n; ++j)
            o[j] = T(rs * (A(g[j]) * (wp ? A(wp[j]) : A(1)) - A(xr[j]) * rs * s));
        }
      });
    }
    if (gw.defined()) {
      std::vector<double> sw(static_cast<size_t>(n), 0.0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j)
          sw[j] += static_cast<double>(A(gp[r * n + j])) * static_cast<double>(A(xp[r * n + j])) * rp[r];
      for (int64_t j = 0; j < n; ++j) gw.data<T>()[j] = T(static_cast<A>(sw[j]));
    }
  });
}

}  // namespace strand::cpu
