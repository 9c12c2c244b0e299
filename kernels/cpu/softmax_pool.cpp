// Softmax pooling over windows of W consecutive positions (Enformer's AttentionPool after its
// logits): x, logits [rows * W, C] row-major, out [rows, C]:
//   a_j = softmax_j(logits[r W + j, c]),  out[r, c] = sum_j a_j x[r W + j, c]
// backward (g [rows, C]): dx_j = g a_j,  dlogits_j = g a_j (x_j - out).
// Per channel, the window's max is subtracted before exp (vec::exp8 on f32, as the softmax kernel).
// Half-type inputs are read as they are and computed in f32 (outputs: out f32, gx and gl rounded
// once to the input's type), so bf16-mixed keeps no f32 copy of x and logits.
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec.h"

namespace strand::cpu {

namespace {
// e[i] = exp(e[i]) for i < n.
inline void exp_inplace(float* e, int64_t n) {
  int64_t i = 0;
#if STRAND_VEC_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(e + i, vec::exp8(_mm256_loadu_ps(e + i)));
#endif
  for (; i < n; ++i) e[i] = vec::exp1(e[i]);
}
inline void exp_inplace(double* e, int64_t n) {
  for (int64_t i = 0; i < n; ++i) e[i] = std::exp(e[i]);
}

// The window's softmax weights a [W, C] and the pooled values o [C] of row r; m and s: [C] scratch.
template <class T>
void window_weights(const T* x, const T* l, int64_t W, int64_t C, T* a, T* o, T* m, T* s) {
  for (int64_t c = 0; c < C; ++c) {
    m[c] = l[c];
    s[c] = T(0);
  }
  for (int64_t j = 1; j < W; ++j)
    for (int64_t c = 0; c < C; ++c) m[c] = std::max(m[c], l[j * C + c]);
  for (int64_t j = 0; j < W; ++j) {
    T* aj = a + j * C;
    for (int64_t c = 0; c < C; ++c) aj[c] = l[j * C + c] - m[c];
    exp_inplace(aj, C);
    for (int64_t c = 0; c < C; ++c) s[c] += aj[c];
  }
  for (int64_t c = 0; c < C; ++c) {
    const T inv = T(1) / s[c];
    T acc = 0;
    for (int64_t j = 0; j < W; ++j) {
      a[j * C + c] *= inv;
      acc += a[j * C + c] * x[j * C + c];
    }
    o[c] = acc;
  }
}

// A window's W * C values of x or logits in the compute type A: the values themselves when the
// tensor is of that type, else converted into `buf` (half types; exact).
template <class A, class T>
const A* as_acc(const T* p, int64_t n, std::vector<A>& buf) {
  if constexpr (std::is_same_v<A, T>) {
    return p;
  } else {
    buf.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<A>(p[i]);
    return buf.data();
  }
}
}  // namespace

// x, logits, gx, gl of dtype T (f32, f64, bf16, f16); out and grad of its compute type (acc_t).
void softmax_pool(const Tensor& x, const Tensor& logits, const Tensor& out, int64_t window) {
  dispatch_float(x.dtype(), "softmax_pool", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t C = out.size(-1), rows = out.numel() / C, W = window;
    const T* xp = x.data<T>();
    const T* lp = logits.data<T>();
    A* op = out.data<A>();
    parallel_for(rows, W * C * 8, [&](int64_t r0, int64_t r1) {
      std::vector<A> a(static_cast<size_t>(W * C)), ms(static_cast<size_t>(2 * C)), xb, lb;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t base = r * W * C;
        window_weights(as_acc(xp + base, W * C, xb), as_acc(lp + base, W * C, lb), W, C, a.data(), op + r * C,
                       ms.data(), ms.data() + C);
      }
    });
  });
}

void softmax_pool_backward(const Tensor& grad, const Tensor& x, const Tensor& logits, const Tensor& gx,
                           const Tensor& gl, int64_t window) {
  dispatch_float(x.dtype(), "softmax_pool_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t C = grad.size(-1), rows = grad.numel() / C, W = window;
    const A* gp = grad.data<A>();
    const T* xp = x.data<T>();
    const T* lp = logits.data<T>();
    T* gxp = gx.data<T>();
    T* glp = gl.data<T>();
    parallel_for(rows, W * C * 12, [&](int64_t r0, int64_t r1) {
      std::vector<A> a(static_cast<size_t>(W * C)), o(static_cast<size_t>(C)), ms(static_cast<size_t>(2 * C)), xb, lb;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t base = r * W * C;
        const A* xr = as_acc(xp + base, W * C, xb);
        window_weights(xr, as_acc(lp + base, W * C, lb), W, C, a.data(), o.data(), ms.data(), ms.data() + C);
        const A* g = gp + r * C;
        for (int64_t j = 0; j < W; ++j)
          for (int64_t c = 0; c < C; ++c) {
            const A ga = g[c] * a[j * C + c];
            gxp[base + j * C + c] = static_cast<T>(ga);
            glp[base + j * C + c] = static_cast<T>(ga * (xr[j * C + c] - o[c]));
          }
      }
    });
  });
}

}  // namespace strand::cpu
