// Softmax over one dim of a contiguous tensor viewed as [outer, n, inner]. inner == 1 (the last
// dim) runs row by row; otherwise the statistics are vectors over the contiguous inner dim, so a
// softmax over a middle dim (Enformer's attention pooling, dim 2 of [B, n, 2, C]) needs no
// transposed copies.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec.h"

namespace strand::cpu {

namespace {
template <class T, class A>
A exp_shift_sum_row(const T* x, A shift, T* y, int64_t n) {
  if constexpr (std::is_same_v<T, A>) {
    return vec::exp_shift_sum(x, shift, y, n);
  } else {
    A s = 0;
    for (int64_t j = 0; j < n; ++j) {
      const A e = std::exp(A(x[j]) - shift);
      y[j] = T(e);
      s += e;
    }
    return s;
  }
}
}  // namespace

void softmax(const Tensor& x, const Tensor& out, int64_t n, int64_t inner, bool log) {
  dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t outer = n > 0 && inner > 0 ? x.numel() / (n * inner) : 0;
    const T* xp = x.data<T>();
    T* op = out.data<T>();
    if (inner == 1) {
      parallel_for(outer, n * 8, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const T* xr = xp + r * n;
          T* orow = op + r * n;
          A m = -INFINITY;
          if constexpr (std::is_same_v<T, A>) m = vec::max_of(xr, n);
          else
            for (int64_t j = 0; j < n; ++j) m = std::max(m, A(xr[j]));
          // exp(x - m) is written into the output first (exact for f32/f64, rounded for halves).
          const A s = exp_shift_sum_row(xr, m, orow, n);
          if (log) {
            const A ls = std::log(s);
            for (int64_t j = 0; j < n; ++j) orow[j] = T(A(xr[j]) - m - ls);
          } else if constexpr (std::is_same_v<T, A>) {
            vec::scale(orow, A(1) / s, orow, n);
          } else {
            const A inv = A(1) / s;
            for (int64_t j = 0; j < n; ++j) orow[j] = T(std::exp(A(xr[j]) - m) * inv);
          }
        }
      });
      return;
    }
    parallel_for(outer, n * inner * 8, [&](int64_t b, int64_t e) {
      std::vector<A> m(static_cast<size_t>(inner)), s(static_cast<size_t>(inner)), t(static_cast<size_t>(inner));
      for (int64_t r = b; r < e; ++r) {
        const T* xr = xp + r * n * inner;
        T* orow = op + r * n * inner;
        std::fill(m.begin(), m.end(), A(-INFINITY));
        std::fill(s.begin(), s.end(), A(0));
        for (int64_t k = 0; k < n; ++k)
          for (int64_t i = 0; i < inner; ++i) m[i] = std::max(m[i], A(xr[k * inner + i]));
        // exp(x - m) per slice k (kept in the output when it has the compute type), summed over k
        auto exp_slice = [&](int64_t k, A* dst) {
          for (int64_t i = 0; i < inner; ++i) dst[i] = A(xr[k * inner + i]) - m[i];
          if constexpr (std::is_same_v<A, float>) vec::exp_shift_sum(dst, 0.0f, dst, inner);
          else
            for (int64_t i = 0; i < inner; ++i) dst[i] = std::exp(dst[i]);
        };
        constexpr bool in_place = std::is_same_v<T, A>;
        for (int64_t k = 0; k < n; ++k) {
          A* dst = t.data();
          if constexpr (in_place) dst = orow + k * inner;
          exp_slice(k, dst);
          for (int64_t i = 0; i < inner; ++i) s[i] += dst[i];
        }
        for (int64_t i = 0; i < inner; ++i) s[i] = log ? std::log(s[i]) : A(1) / s[i];
        for (int64_t k = 0; k < n; ++k) {
          T* o = orow + k * inner;
          const T* xk = xr + k * inner;
          if (log) {
            for (int64_t i = 0; i < inner; ++i) o[i] = T(A(xk[i]) - m[i] - s[i]);
          } else if constexpr (in_place) {
            for (int64_t i = 0; i < inner; ++i) o[i] *= s[i];
          } else {
            exp_slice(k, t.data());
            for (int64_t i = 0; i < inner; ++i) o[i] = T(t[i] * s[i]);
          }
        }
      }
    });
  });
}

void softmax_backward(const Tensor& grad, const Tensor& y, const Tensor& out, int64_t n, int64_t inner, bool log) {
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t outer = n > 0 && inner > 0 ? y.numel() / (n * inner) : 0;
    const T* gp = grad.data<T>();
    const T* yp = y.data<T>();
    T* op = out.data<T>();
    // softmax: o = y (g - Σ g y); log_softmax: o = g - exp(y) Σ g. Sums over n, per inner index.
    parallel_for(outer, n * inner * 4, [&](int64_t b, int64_t e) {
      std::vector<A> s(static_cast<size_t>(inner));
      for (int64_t r = b; r < e; ++r) {
        const T* g = gp + r * n * inner;
        const T* yr = yp + r * n * inner;
        T* o = op + r * n * inner;
        if (inner == 1 && !log) {
          A d = 0;
          if constexpr (std::is_same_v<T, A>) d = vec::dot(g, yr, n);
          else
            for (int64_t j = 0; j < n; ++j) d += A(g[j]) * A(yr[j]);
          for (int64_t j = 0; j < n; ++j) o[j] = T(A(yr[j]) * (A(g[j]) - d));
          continue;
        }
        std::fill(s.begin(), s.end(), A(0));
        for (int64_t k = 0; k < n; ++k)
          for (int64_t i = 0; i < inner; ++i) s[i] += log ? A(g[k * inner + i]) : A(g[k * inner + i]) * A(yr[k * inner + i]);
        for (int64_t k = 0; k < n; ++k)
          for (int64_t i = 0; i < inner; ++i) {
            const int64_t j = k * inner + i;
            o[j] = log ? T(A(g[j]) - std::exp(A(yr[j])) * s[i]) : T(A(yr[j]) * (A(g[j]) - s[i]));
          }
      }
    });
  });
}

}  // namespace strand::cpu
