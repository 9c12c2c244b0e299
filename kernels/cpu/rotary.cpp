// Rotary position embedding on rows of the last dim, reading x through its strides (the models'
// transposed [B, H, T, D] projections) and writing `out` (any strides, unit last):
//   y[i] = x[i] c[t, i] - x[i + h] s[t, i]   (i < h)
//   y[i] = x[i] c[t, i] + x[i - h] s[t, i]   (h <= i < rd),   y[i] = x[i] beyond rd.
// The backward is the transposed map: dx[i] = g[i] c[i] + g[i + h] s[i + h] (i < h),
// dx[i] = g[i] c[i] - g[i - h] s[i - h] (h <= i < rd).
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

namespace strand::cpu {

void rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out, bool backward) {
  dispatch_float(x.dtype(), "rotary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t nd = x.dim(), hd = x.size(-1), rd = cos.size(-1), h = rd / 2;
      const int64_t rows = x.numel() / hd;
      const T* xp = x.data<T>();
      const T* cp = cos.data<T>();
      const T* sp = sin.data<T>();
      T* op = out.data<T>();
      const Shape &sz = x.sizes(), &xs = x.strides(), &os = out.strides();
      parallel_for(rows, hd * 4, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          int64_t xo = 0, oo = 0, rem = r, t = 0;
          for (int64_t d = nd - 2; d >= 0; --d) {
            const int64_t i = rem % sz[d];
            rem /= sz[d];
            if (d == nd - 2) t = i;
            xo += i * xs[d];
            oo += i * os[d];
          }
          const T* xr = xp + xo;
          T* o = op + oo;
          const T* c = cp + t * rd;
          const T* s = sp + t * rd;
          if (!backward) {
            for (int64_t i = 0; i < h; ++i) o[i] = xr[i] * c[i] - xr[i + h] * s[i];
            for (int64_t i = h; i < rd; ++i) o[i] = xr[i] * c[i] + xr[i - h] * s[i];
          } else {
            for (int64_t i = 0; i < h; ++i) o[i] = xr[i] * c[i] + xr[i + h] * s[i + h];
            for (int64_t i = h; i < rd; ++i) o[i] = xr[i] * c[i] - xr[i - h] * s[i - h];
          }
          for (int64_t i = rd; i < hd; ++i) o[i] = xr[i];
        }
      });
    } else {
      STRAND_ASSERT(false, "cpu::rotary expects f32/f64 (the op layer converts half types)");
    }
  });
}

}  // namespace strand::cpu
