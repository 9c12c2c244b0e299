#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec.h"

namespace strand::cpu {

void softmax(const Tensor& x, const Tensor& out, bool log) {
  dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = x.dim() ? x.size(-1) : 1, rows = n ? x.numel() / n : 0;
    const T* xp = x.data<T>();
    T* op = out.data<T>();
    parallel_for(rows, n * 8, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* xr = xp + r * n;
        T* orow = op + r * n;
        if constexpr (std::is_same_v<T, A>) {  // f32, f64: vectorised row passes
          const A m = vec::max_of(xr, n);
          if (log) {
            const A ls = std::log(vec::exp_shift_sum(xr, m, orow, n));
            for (int64_t j = 0; j < n; ++j) orow[j] = xr[j] - m - ls;
          } else {
            vec::scale(orow, A(1) / vec::exp_shift_sum(xr, m, orow, n), orow, n);
          }
          continue;
        }
        A m = -INFINITY;
        for (int64_t j = 0; j < n; ++j) m = std::max(m, A(xr[j]));
        A s = 0;
        for (int64_t j = 0; j < n; ++j) s += std::exp(A(xr[j]) - m);
        if (log) {
          const A ls = std::log(s);
          for (int64_t j = 0; j < n; ++j) orow[j] = T(A(xr[j]) - m - ls);
        } else {
          const A inv = A(1) / s;
          for (int64_t j = 0; j < n; ++j) orow[j] = T(std::exp(A(xr[j]) - m) * inv);
        }
      }
    });
  });
}

void softmax_backward(const Tensor& grad, const Tensor& y, const Tensor& out, bool log) {
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = y.dim() ? y.size(-1) : 1, rows = n ? y.numel() / n : 0;
    const T* gp = grad.data<T>();
    const T* yp = y.data<T>();
    T* op = out.data<T>();
    parallel_for(rows, n * 4, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* g = gp + r * n;
        const T* yr = yp + r * n;
        T* o = op + r * n;
        A s = 0;
        if (log) {
          for (int64_t j = 0; j < n; ++j) s += A(g[j]);
          for (int64_t j = 0; j < n; ++j) o[j] = T(A(g[j]) - std::exp(A(yr[j])) * s);
        } else {
          for (int64_t j = 0; j < n; ++j) s += A(g[j]) * A(yr[j]);
          for (int64_t j = 0; j < n; ++j) o[j] = T(A(yr[j]) * (A(g[j]) - s));
        }
      }
    });
  });
}

}  // namespace strand::cpu
