// Channels-last conv1d as K shifted GEMMs: out[b, l, :] += x[b, l + k - pad, :] · W_kᵀ, with
// W_k = w[:, :, k]. In [B, L, C] layout a shifted x is a contiguous block of rows, so no im2col
// buffer is needed and kernel size 1 is a single GEMM.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

namespace strand::cpu {

namespace {
// w [Cout, Cin, K] -> taps [K, Cout, Cin]
template <class T>
std::vector<T> taps_of(const T* w, int64_t Cout, int64_t Cin, int64_t K) {
  std::vector<T> t(static_cast<size_t>(K * Cout * Cin));
  for (int64_t co = 0; co < Cout; ++co)
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t k = 0; k < K; ++k) t[(k * Cout + co) * Cin + ci] = w[(co * Cin + ci) * K + k];
  return t;
}
// Output rows l in [lo, hi) read input rows l + k - pad inside [0, L).
inline void tap_range(int64_t k, int64_t pad, int64_t L, int64_t Lout, int64_t& lo, int64_t& hi) {
  lo = std::max<int64_t>(0, pad - k);
  hi = std::min<int64_t>(Lout, L + pad - k);
}
}  // namespace

void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t pad, const Tensor& out) {
  dispatch_float(x.dtype(), "conv1d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t B = x.size(0), L = x.size(1), Cin = x.size(2), Cout = w.size(0), K = w.size(2);
      const int64_t Lout = out.size(1);
      const T* xp = x.data<T>();
      T* op = out.data<T>();
      const auto taps = taps_of(w.data<T>(), Cout, Cin, K);
      for (int64_t r = 0; r < B * Lout; ++r) {
        T* o = op + r * Cout;
        if (bias.defined()) std::copy(bias.data<T>(), bias.data<T>() + Cout, o);
        else std::fill(o, o + Cout, T(0));
      }
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < K; ++k) {
          int64_t lo, hi;
          tap_range(k, pad, L, Lout, lo, hi);
          if (hi <= lo) continue;
          gemm<T>(false, true, hi - lo, Cout, Cin, T(1), xp + (b * L + lo + k - pad) * Cin, Cin,
                  taps.data() + k * Cout * Cin, Cin, T(1), op + (b * Lout + lo) * Cout, Cout);
        }
    } else {
      STRAND_ASSERT(false, "cpu::conv1d expects f32/f64");
    }
  });
}

void conv1d_backward(const Tensor& grad, const Tensor& x, const Tensor& w, int64_t pad, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb) {
  dispatch_float(x.dtype(), "conv1d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t B = x.size(0), L = x.size(1), Cin = x.size(2), Cout = w.size(0), K = w.size(2);
      const int64_t Lout = grad.size(1);
      const T* gp = grad.data<T>();
      const T* xp = x.data<T>();
      if (gx.defined()) {
        T* gxp = gx.data<T>();
        std::fill(gxp, gxp + gx.numel(), T(0));
        const auto taps = taps_of(w.data<T>(), Cout, Cin, K);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t k = 0; k < K; ++k) {
            int64_t lo, hi;
            tap_range(k, pad, L, Lout, lo, hi);
            if (hi <= lo) continue;
            // gx rows += g rows · W_k   ([M, Cout] x [Cout, Cin])
            gemm<T>(false, false, hi - lo, Cin, Cout, T(1), gp + (b * Lout + lo) * Cout, Cout,
                    taps.data() + k * Cout * Cin, Cin, T(1), gxp + (b * L + lo + k - pad) * Cin, Cin);
          }
      }
      if (gw.defined()) {
        std::vector<T> gtaps(static_cast<size_t>(K * Cout * Cin), T(0));
        for (int64_t b = 0; b < B; ++b)
          for (int64_t k = 0; k < K; ++k) {
            int64_t lo, hi;
            tap_range(k, pad, L, Lout, lo, hi);
            if (hi <= lo) continue;
            // gW_k += g rowsᵀ · x rows   ([Cout, M] x [M, Cin])
            gemm<T>(true, false, Cout, Cin, hi - lo, T(1), gp + (b * Lout + lo) * Cout, Cout,
                    xp + (b * L + lo + k - pad) * Cin, Cin, T(1), gtaps.data() + k * Cout * Cin, Cin);
          }
        T* gwp = gw.data<T>();
        for (int64_t co = 0; co < Cout; ++co)
          for (int64_t ci = 0; ci < Cin; ++ci)
            for (int64_t k = 0; k < K; ++k) gwp[(co * Cin + ci) * K + k] = gtaps[(k * Cout + co) * Cin + ci];
      }
      if (gb.defined()) {
        std::vector<double> s(static_cast<size_t>(Cout), 0.0);
        for (int64_t r = 0; r < B * Lout; ++r)
          for (int64_t c = 0; c < Cout; ++c) s[c] += static_cast<double>(gp[r * Cout + c]);
        for (int64_t c = 0; c < Cout; ++c) gb.data<T>()[c] = static_cast<T>(s[c]);
      }
    } else {
      STRAND_ASSERT(false, "cpu::conv1d_backward expects f32/f64");
    }
  });
}

}  // namespace strand::cpu
