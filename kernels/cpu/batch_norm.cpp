#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

namespace strand::cpu {

// x is [N, C] (channels last). Per-channel sums run over rows in order, in double. With a reducer
// (SyncBatchNorm) both passes are summed across processes, so mean and variance are those of the
// global batch; returns the number of rows the statistics cover.
double batch_norm_stats(const Tensor& x, const Tensor& mean, const Tensor& var, const StatsReducer* reduce) {
  double total = 0;
  dispatch_float(x.dtype(), "batch_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
    const T* xp = x.data<T>();
    std::vector<double> s(static_cast<size_t>(C), 0.0), ss(static_cast<size_t>(C), 0.0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) s[c] += static_cast<double>(A(xp[i * C + c]));
    total = static_cast<double>(N);
    if (reduce) total = reduce_channel_sums(*reduce, total, s);
    for (int64_t c = 0; c < C; ++c) s[c] /= total;
    // The second pass (deviations from the global mean) keeps the variance as accurate as one process's.
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) {
        double d = static_cast<double>(A(xp[i * C + c])) - s[c];
        ss[c] += d * d;
      }
    if (reduce) (*reduce)(ss);
    for (int64_t c = 0; c < C; ++c) {
      mean.data<A>()[c] = static_cast<A>(s[c]);
      var.data<A>()[c] = static_cast<A>(ss[c] / total);
    }
  });
  return total;
}

void batch_norm_apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& rstd,
                      const Tensor& y) {
  dispatch_float_param(x.dtype(), batch_norm_param_dtype(x, w, b), "batch_norm", [&](auto tag, auto ptag) {
    using T = typename decltype(tag)::type;
    using P = typename decltype(ptag)::type;
    using A = acc_t<T>;
    const int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    // Per channel y = x*scale + shift.
    std::vector<A> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      A g = w.defined() ? A(w.data<P>()[c]) : A(1), bb = b.defined() ? A(b.data<P>()[c]) : A(0);
      scale[c] = g * rstd.data<A>()[c];
      shift[c] = bb - mean.data<A>()[c] * scale[c];
    }
    parallel_for(N, C, [&](int64_t b0, int64_t e0) {
      for (int64_t i = b0; i < e0; ++i)
        for (int64_t c = 0; c < C; ++c) yp[i * C + c] = T(A(xp[i * C + c]) * scale[c] + shift[c]);
    });
  });
}

void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean,
                         const Tensor& rstd, bool training, const Tensor& gx, const Tensor& gw, const Tensor& gb,
                         const StatsReducer* reduce) {
  dispatch_float_param(x.dtype(), batch_norm_param_dtype(x, w, gb), "batch_norm_backward", [&](auto tag, auto ptag) {
    using T = typename decltype(tag)::type;
    using P = typename decltype(ptag)::type;
    using A = acc_t<T>;
    const int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
    const T* gp = grad.data<T>();
    const T* xp = x.data<T>();
    const A* mp = mean.data<A>();
    const A* rp = rstd.data<A>();
    std::vector<double> sg(static_cast<size_t>(C), 0.0), sgx(static_cast<size_t>(C), 0.0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) {
        double g = static_cast<double>(A(gp[i * C + c]));
        sg[c] += g;
        sgx[c] += g * (static_cast<double>(A(xp[i * C + c])) - mp[c]) * rp[c];
      }
    if (gw.defined())
      for (int64_t c = 0; c < C; ++c) gw.data<P>()[c] = P(static_cast<A>(sgx[c]));
    if (gb.defined())
      for (int64_t c = 0; c < C; ++c) gb.data<P>()[c] = P(static_cast<A>(sg[c]));
    if (!gx.defined()) return;
    // SyncBatchNorm: weight and bias gradients stay local (DDP averages them); the input gradient
    // needs the sums over the global batch, as the statistics covered it.
    double total = static_cast<double>(N);
    if (reduce && training) total = reduce_channel_sums(*reduce, total, sg, &sgx);
    T* gxp = gx.data<T>();
    std::vector<A> k(static_cast<size_t>(C)), mg(static_cast<size_t>(C)), mgx(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      k[c] = (w.defined() ? A(w.data<P>()[c]) : A(1)) * rp[c];
      mg[c] = training ? static_cast<A>(sg[c] / total) : A(0);
      mgx[c] = training ? static_cast<A>(sgx[c] / total) : A(0);
    }
    parallel_for(N, C * 2, [&](int64_t b0, int64_t e0) {
      for (int64_t i = b0; i < e0; ++i)
        for (int64_t c = 0; c < C; ++c) {
          A g = A(gp[i * C + c]);
          if (training) {
            A xh = (A(xp[i * C + c]) - mp[c]) * rp[c];
            g = g - mg[c] - xh * mgx[c];
          }
          gxp[i * C + c] = T(k[c] * g);
        }
    });
  });
}

}  // namespace strand::cpu
