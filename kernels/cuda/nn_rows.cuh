// CUDA twins of the CPU row kernels: softmax/log_softmax over [outer, n, inner] (one block per
// row when inner == 1, one thread per column otherwise), layer_norm and rms_norm forward and
// backward (one block per row; the weight/bias gradients are deterministic column sums in double,
// colsum.cuh), and rotary (one thread per output element). Same contracts as the
// cpu:: functions of the same names.
//
// The kernels and the entry points' bodies, templated on the launch policy (cuda_common.cuh:
// DeviceLaunch on the GPU; the SIMT emulator's in tests/simt/).
#pragma once
#include <cmath>

#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace strand::cuda::rows {
STRAND_KERNELS_BEGIN

// ---------------- softmax ----------------
template <class T>
__global__ void softmax_rows_kernel(const T* x, T* out, int64_t rows, int64_t n, bool log) {
  using A = acc_t<T>;
  __shared__ A sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* o = out + r * n;
    A m = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = max(m, A(xr[j]));
    m = block_reduce<A, true>(m, sh);
    A s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += exp(A(xr[j]) - m);
    s = block_reduce<A, false>(s, sh);
    const A ls = log ? std::log(s) : A(1) / s;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) o[j] = log ? T(A(xr[j]) - m - ls) : T(exp(A(xr[j]) - m) * ls);
  }
}
// Rows up to kThreads * kCached long: each thread keeps its values in registers, so x is read once
// (the arithmetic is softmax_rows_kernel's, so the results are the same).
constexpr int kCached = 8;
template <class T>
__global__ void softmax_rows_cached_kernel(const T* x, T* out, int64_t rows, int64_t n, bool log) {
  using A = acc_t<T>;
  __shared__ A sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* o = out + r * n;
    A v[kCached];
    A m = -INFINITY;
#pragma unroll
    for (int c = 0; c < kCached; ++c) {
      const int64_t j = threadIdx.x + int64_t(c) * blockDim.x;
      v[c] = j < n ? A(xr[j]) : A(-INFINITY);
      m = max(m, v[c]);
    }
    m = block_reduce<A, true>(m, sh);
    A s = 0;
#pragma unroll
    for (int c = 0; c < kCached; ++c)
      if (threadIdx.x + int64_t(c) * blockDim.x < n) s += exp(v[c] - m);
    s = block_reduce<A, false>(s, sh);
    const A ls = log ? std::log(s) : A(1) / s;
#pragma unroll
    for (int c = 0; c < kCached; ++c) {
      const int64_t j = threadIdx.x + int64_t(c) * blockDim.x;
      if (j < n) o[j] = log ? T(v[c] - m - ls) : T(exp(v[c] - m) * ls);
    }
  }
}
template <class T>
__global__ void softmax_cols_kernel(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool log) {
  using A = acc_t<T>;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner;
       c += int64_t(blockDim.x) * gridDim.x) {
    const int64_t base = (c / inner) * n * inner + c % inner;
    A m = -INFINITY, s = 0;
    for (int64_t k = 0; k < n; ++k) m = max(m, A(x[base + k * inner]));
    for (int64_t k = 0; k < n; ++k) s += exp(A(x[base + k * inner]) - m);
    const A ls = log ? std::log(s) : A(1) / s;
    for (int64_t k = 0; k < n; ++k) {
      const A v = A(x[base + k * inner]) - m;
      out[base + k * inner] = log ? T(v - ls) : T(exp(v) * ls);
    }
  }
}
template <class T>
__global__ void softmax_bwd_rows_kernel(const T* g, const T* y, T* out, int64_t rows, int64_t n, bool log) {
  using A = acc_t<T>;
  __shared__ A sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    A s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      s += log ? A(g[r * n + j]) : A(g[r * n + j]) * A(y[r * n + j]);
    s = block_reduce<A, false>(s, sh);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const int64_t i = r * n + j;
      out[i] = log ? T(A(g[i]) - exp(A(y[i])) * s) : T(A(y[i]) * (A(g[i]) - s));
    }
  }
}
template <class T>
__global__ void softmax_bwd_cols_kernel(const T* g, const T* y, T* out, int64_t outer, int64_t n, int64_t inner,
                                        bool log) {
  using A = acc_t<T>;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < outer * inner;
       c += int64_t(blockDim.x) * gridDim.x) {
    const int64_t base = (c / inner) * n * inner + c % inner;
    A s = 0;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = base + k * inner;
      s += log ? A(g[i]) : A(g[i]) * A(y[i]);
    }
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = base + k * inner;
      out[i] = log ? T(A(g[i]) - exp(A(y[i])) * s) : T(A(y[i]) * (A(g[i]) - s));
    }
  }
}

// ---------------- layer_norm / rms_norm ----------------
// rms: mean is not computed (0) and not stored.
template <class T, bool kRms>
__global__ void norm_kernel(const T* x, const T* w, const T* b, T* y, acc_t<T>* mean, acc_t<T>* rstd, int64_t rows,
                            int64_t n, double eps) {
  using A = acc_t<T>;
  __shared__ A sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    A m = 0;
    if (!kRms) {
      A s = 0;
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += A(xr[j]);
      m = block_reduce<A, false>(s, sh) / A(n);
    }
    A v = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) v += (A(xr[j]) - m) * (A(xr[j]) - m);
    v = block_reduce<A, false>(v, sh);
    const A rs = A(1) / sqrt(v / A(n) + A(eps));
    if (threadIdx.x == 0) {
      if (!kRms) mean[r] = m;
      rstd[r] = rs;
    }
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      A h = (A(xr[j]) - m) * rs;
      if (w) h *= A(w[j]);
      if (b) h += A(b[j]);
      y[r * n + j] = T(h);
    }
  }
}
// gx = rstd (dh - mean(dh) - xhat mean(dh xhat)), dh = g w (rms: without the mean(dh) term)
template <class T, bool kRms>
__global__ void norm_bwd_kernel(const T* g, const T* x, const T* w, const acc_t<T>* mean, const acc_t<T>* rstd, T* gx,
                                int64_t rows, int64_t n) {
  using A = acc_t<T>;
  __shared__ A sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const A m = kRms ? A(0) : mean[r], rs = rstd[r];
    A s1 = 0, s2 = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const A dh = A(g[r * n + j]) * (w ? A(w[j]) : A(1));
      s1 += dh;
      s2 += dh * (A(x[r * n + j]) - m) * rs;
    }
    s1 = kRms ? A(0) : block_reduce<A, false>(s1, sh) / A(n);
    s2 = block_reduce<A, false>(s2, sh) / A(n);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const A dh = A(g[r * n + j]) * (w ? A(w[j]) : A(1));
      gx[r * n + j] = T(rs * (dh - s1 - (A(x[r * n + j]) - m) * rs * s2));
    }
  }
}
// ---------------- rotary ----------------
constexpr int kMaxDims = 8;
struct RowGeometry {  // leading dims of x/out (all but the last), to map a row to offsets
  int nd;
  int64_t sizes[kMaxDims], xs[kMaxDims], os[kMaxDims];
};
template <class T>
__global__ void rotary_kernel(RowGeometry geo, const T* x, const T* cs, const T* sn, T* out, int64_t rows, int64_t hd,
                              int64_t rd, bool backward) {
  const int64_t h = rd / 2;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * hd;
       e += int64_t(blockDim.x) * gridDim.x) {
    int64_t row = e / hd, i = e % hd, xo = 0, oo = 0, t = 0;
    for (int d = geo.nd - 1; d >= 0; --d) {
      const int64_t idx = row % geo.sizes[d];
      row /= geo.sizes[d];
      if (d == geo.nd - 1) t = idx;
      xo += idx * geo.xs[d];
      oo += idx * geo.os[d];
    }
    const T* xr = x + xo;
    const T* c = cs + t * rd;
    const T* s = sn + t * rd;
    T v;
    if (i >= rd)
      v = xr[i];
    else if (!backward)
      v = i < h ? xr[i] * c[i] - xr[i + h] * s[i] : xr[i] * c[i] + xr[i - h] * s[i];
    else
      v = i < h ? xr[i] * c[i] + xr[i + h] * s[i + h] : xr[i] * c[i] - xr[i - h] * s[i - h];
    out[oo + i] = v;
  }
}

// ---------------- softmax pooling ----------------
// One thread per pooled value (r, c), consecutive threads on consecutive channels. Without g: the
// forward into out; with g: the gradients into gx, gl. The arithmetic is cpu::softmax_pool's, in
// A = acc_t<T>: x, logits, gx, gl of T (half types read as they are, gradients rounded once), out
// and g of A. The first kPoolCached exps of a window are computed once and kept in registers (the
// loops over them are unrolled, so the array is indexed by constants); longer windows recompute
// the rest.
constexpr int kPoolCached = 4;
template <class T>
__global__ void softmax_pool_kernel(const T* x, const T* l, acc_t<T>* out, const acc_t<T>* g, T* gx, T* gl,
                                    int64_t rows, int64_t W, int64_t C) {
  using A = acc_t<T>;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * C;
       e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t base = (e / C) * W * C + e % C;
    A m = A(l[base]);
    for (int64_t j = 1; j < W; ++j) m = max(m, A(l[base + j * C]));
    auto exp_at = [&](int64_t j) { return exp(A(l[base + j * C]) - m); };
    A ex[kPoolCached];
    A s = 0;
#pragma unroll
    for (int k = 0; k < kPoolCached; ++k) {
      ex[k] = k < W ? exp_at(k) : A(0);
      if (k < W) s += ex[k];
    }
    for (int64_t j = kPoolCached; j < W; ++j) s += exp_at(j);
    const A inv = A(1) / s;
    A o = 0;
#pragma unroll
    for (int k = 0; k < kPoolCached; ++k)
      if (k < W) o += ex[k] * inv * A(x[base + k * C]);
    for (int64_t j = kPoolCached; j < W; ++j) o += exp_at(j) * inv * A(x[base + j * C]);
    if (!g) {
      out[e] = o;
      continue;
    }
    const A gv = g[e];
    auto grads = [&](int64_t i, A a) {
      const A ga = gv * (a * inv);
      gx[i] = T(ga);
      gl[i] = T(ga * (A(x[i]) - o));
    };
#pragma unroll
    for (int k = 0; k < kPoolCached; ++k)
      if (k < W) grads(base + k * C, ex[k]);
    for (int64_t j = kPoolCached; j < W; ++j) grads(base + j * C, exp_at(j));
  }
}

template <class Launch>
void softmax_pool(const Launch& launch, const Tensor& x, const Tensor& l, const Tensor& out, const Tensor& g,
                  const Tensor& gx, const Tensor& gl, int64_t window) {
  dispatch_float(x.dtype(), "softmax_pool", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const Tensor& pooled = g.defined() ? g : out;
    const int64_t C = pooled.size(-1), rows = pooled.numel() / C;
    launch(softmax_pool_kernel<T>, dim3(grid_for(rows * C)), dim3(kThreads), 0, ptr<T>(x), ptr<T>(l),
           out.defined() ? ptr<A>(out) : nullptr, g.defined() ? ptr<A>(g) : nullptr,
           gx.defined() ? ptr<T>(gx) : nullptr, gl.defined() ? ptr<T>(gl) : nullptr, rows, window, C);
  });
}

template <class Launch>
void softmax(const Launch& launch, const Tensor& x, const Tensor& out, int64_t n, int64_t inner, bool log) {
  dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t outer = n > 0 && inner > 0 ? x.numel() / (n * inner) : 0;
    if (inner == 1 && n <= kThreads * kCached)
      launch(softmax_rows_cached_kernel<T>, dim3(grid_for(outer * kThreads)), dim3(kThreads), 0, ptr<T>(x), ptr<T>(out),
             outer, n, log);
    else if (inner == 1)
      launch(softmax_rows_kernel<T>, dim3(grid_for(outer * kThreads)), dim3(kThreads), 0, ptr<T>(x), ptr<T>(out), outer,
             n, log);
    else
      launch(softmax_cols_kernel<T>, dim3(grid_for(outer * inner)), dim3(kThreads), 0, ptr<T>(x), ptr<T>(out), outer, n,
             inner, log);
  });
}

template <class Launch>
void softmax_backward(const Launch& launch, const Tensor& grad, const Tensor& y, const Tensor& out, int64_t n,
                      int64_t inner, bool log) {
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t outer = n > 0 && inner > 0 ? y.numel() / (n * inner) : 0;
    if (inner == 1)
      launch(softmax_bwd_rows_kernel<T>, dim3(grid_for(outer * kThreads)), dim3(kThreads), 0, ptr<T>(grad), ptr<T>(y),
             ptr<T>(out), outer, n, log);
    else
      launch(softmax_bwd_cols_kernel<T>, dim3(grid_for(outer * inner)), dim3(kThreads), 0, ptr<T>(grad), ptr<T>(y),
             ptr<T>(out), outer, n, inner, log);
  });
}

template <bool kRms, class Launch>
void norm_fwd(const Launch& launch, const char* name, const Tensor& x, const Tensor& w, const Tensor& b, double eps,
              const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
    launch(norm_kernel<T, kRms>, dim3(grid_for(rows * kThreads)), dim3(kThreads), 0, ptr<T>(x),
           w.defined() ? ptr<T>(w) : nullptr, b.defined() ? ptr<T>(b) : nullptr, ptr<T>(y),
           kRms ? nullptr : ptr<A>(mean), ptr<A>(rstd), rows, n, eps);
  });
}
template <bool kRms, class Launch>
void norm_bwd(const Launch& launch, const char* name, const Tensor& grad, const Tensor& x, const Tensor& w,
              const Tensor& mean, const Tensor& rstd, const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
    const A* mp = kRms ? nullptr : ptr<A>(mean);
    if (gx.defined()) {
      launch(norm_bwd_kernel<T, kRms>, dim3(grid_for(rows * kThreads)), dim3(kThreads), 0, ptr<T>(grad), ptr<T>(x),
             w.defined() ? ptr<T>(w) : nullptr, mp, ptr<A>(rstd), ptr<T>(gx), rows, n);
    }
    if (gw.defined()) {
      const GradTimesXhat<T, false, kRms> terms{ptr<T>(grad), ptr<T>(x), mp, ptr<A>(rstd), n};  // row statistics
      store_sums<T>(launch, column_sums(launch, terms, rows, n, x), gw);
    }
    if (gb.defined()) store_sums<T>(launch, column_sums(launch, Value<T>{ptr<T>(grad), n}, rows, n, x), gb);
  });
}

template <class Launch>
void layer_norm(const Launch& launch, const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                const Tensor& mean, const Tensor& rstd) {
  norm_fwd<false>(launch, "layer_norm", x, w, b, eps, y, mean, rstd);
}
template <class Launch>
void layer_norm_backward(const Launch& launch, const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean,
                         const Tensor& rstd, const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  norm_bwd<false>(launch, "layer_norm_backward", grad, x, w, mean, rstd, gx, gw, gb);
}
template <class Launch>
void rms_norm(const Launch& launch, const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd) {
  norm_fwd<true>(launch, "rms_norm", x, w, Tensor(), eps, y, Tensor(), rstd);
}
template <class Launch>
void rms_norm_backward(const Launch& launch, const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       const Tensor& gx, const Tensor& gw) {
  norm_bwd<true>(launch, "rms_norm_backward", grad, x, w, Tensor(), rstd, gx, gw, Tensor());
}

template <class Launch>
void rotary(const Launch& launch, const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out,
            bool backward) {
  dispatch_float(x.dtype(), "rotary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>) {
      STRAND_CHECK(false, "cuda::rotary expects f32/f64 (the op layer converts half types)");
      return;
    }
    const int64_t hd = x.size(-1), rows = x.numel() / hd;
    RowGeometry geo{};
    geo.nd = static_cast<int>(x.dim()) - 1;
    STRAND_CHECK(geo.nd <= kMaxDims, "CUDA rotary supports at most ", kMaxDims + 1, " dims, got ",
                 shape_str(x.sizes()));
    for (int d = 0; d < geo.nd; ++d) {
      geo.sizes[d] = x.size(d);
      geo.xs[d] = x.stride(d);
      geo.os[d] = out.stride(d);
    }
    launch(rotary_kernel<T>, dim3(grid_for(rows * hd)), dim3(kThreads), 0, geo, ptr<T>(x), ptr<T>(cos), ptr<T>(sin),
           ptr<T>(out), rows, hd, cos.size(-1), backward);
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::rows
