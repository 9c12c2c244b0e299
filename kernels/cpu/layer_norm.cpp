#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec.h"

namespace strand::cpu {

void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                const Tensor& mean, const Tensor& rstd) {
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
    const T* xp = x.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    const T* bp = b.defined() ? b.data<T>() : nullptr;
    T* yp = y.data<T>();
    A* mp = mean.data<A>();
    A* rp = rstd.data<A>();
    parallel_for(rows, n * 4, [&](int64_t b0, int64_t e0) {
      for (int64_t r = b0; r < e0; ++r) {
        const T* xr = xp + r * n;
        A m, v;
        if constexpr (std::is_same_v<T, A>) {  // f32/f64: lane-parallel sums (vec.h)
          m = vec::sum(xr, n) / A(n);
          v = vec::sq_dev_sum(xr, m, n);
        } else {
          A s = 0;
          for (int64_t j = 0; j < n; ++j) s += A(xr[j]);
          m = s / A(n);
          v = 0;
          for (int64_t j = 0; j < n; ++j) v += (A(xr[j]) - m) * (A(xr[j]) - m);
        }
        const A rs = A(1) / std::sqrt(v / A(n) + A(eps));
        mp[r] = m;
        rp[r] = rs;
        T* yr = yp + r * n;
        // one branch-free loop per affine case, so each vectorises
        if (wp && bp)
          for (int64_t j = 0; j < n; ++j) yr[j] = T((A(xr[j]) - m) * rs * A(wp[j]) + A(bp[j]));
        else if (wp)
          for (int64_t j = 0; j < n; ++j) yr[j] = T((A(xr[j]) - m) * rs * A(wp[j]));
        else if (bp)
          for (int64_t j = 0; j < n; ++j) yr[j] = T((A(xr[j]) - m) * rs + A(bp[j]));
        else
          for (int64_t j = 0; j < n; ++j) yr[j] = T((A(xr[j]) - m) * rs);
      }
    });
  });
}

void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean,
                         const Tensor& rstd, const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
    const T* gp = grad.data<T>();
    const T* xp = x.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    const A* mp = mean.data<A>();
    const A* rp = rstd.data<A>();
    if (gx.defined()) {
      T* gxp = gx.data<T>();
      parallel_for(rows, n * 6, [&](int64_t b0, int64_t e0) {
        for (int64_t r = b0; r < e0; ++r) {
          const T* g = gp + r * n;
          const T* xr = xp + r * n;
          const A m = mp[r], rs = rp[r];
          A s1 = 0, s2 = 0;  // mean(dxhat), mean(dxhat * xhat)
          for (int64_t j = 0; j < n; ++j) {
            A dh = A(g[j]) * (wp ? A(wp[j]) : A(1));
            s1 += dh;
            s2 += dh * (A(xr[j]) - m) * rs;
          }
          s1 /= A(n);
          s2 /= A(n);
          T* o = gxp + r * n;
          for (int64_t j = 0; j < n; ++j) {
            A dh = A(g[j]) * (wp ? A(wp[j]) : A(1));
            o[j] = T(rs * (dh - s1 - (A(xr[j]) - m) * rs * s2));
          }
        }
      });
    }
    // Parameter gradients: rows summed in order (deterministic), in double.
    if (gw.defined() || gb.defined()) {
      std::vector<double> sw(static_cast<size_t>(n), 0.0), sb(static_cast<size_t>(n), 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        const T* g = gp + r * n;
        const T* xr = xp + r * n;
        const double m = mp[r], rs = rp[r];
        for (int64_t j = 0; j < n; ++j) {
          const double gv = static_cast<double>(A(g[j]));
          sw[j] += gv * (static_cast<double>(A(xr[j])) - m) * rs;
          sb[j] += gv;
        }
      }
      if (gw.defined())
        for (int64_t j = 0; j < n; ++j) gw.data<T>()[j] = T(static_cast<A>(sw[j]));
      if (gb.defined())
        for (int64_t j = 0; j < n; ++j) gb.data<T>()[j] = T(static_cast<A>(sb[j]));
    }
  });
}

}  // namespace strand::cpu
