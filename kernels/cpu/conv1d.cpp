// Channels-last conv1d as GEMMs over im2col blocks. In [B, L, C] layout the receptive field of
// output row l, x[l - pad .. l - pad + K), is one contiguous run of K·Cin values, so a block of
// output rows gets its [rows, K·Cin] im2col matrix by one copy per row (zeros where it reaches into
// the padding) and then a single GEMM with the weights as W_flat [Cout, K·Cin]:
//   out[rows] = col · W_flatᵀ (+ bias),   gW_flat += g[rows]ᵀ · col.
// Blocks keep the im2col buffer near kColFloats, so memory stays small at Enformer's lengths, and
// K·Cin-deep GEMMs replace K shallow ones (the stem's Cin = 4 made those pure packing overhead).
// The input gradient is K shifted GEMMs gx[l + k - pad] += g[l] · W_k (no overlapping scatter).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

namespace strand::cpu {

namespace {
constexpr int64_t kColFloats = int64_t{1} << 20;  // 4 MiB of f32 per im2col block

// w [Cout, Cin, K] -> taps [K, Cout, Cin] (one [Cout, Cin] matrix per tap), or flat [Cout, K, Cin]
// (so a row of im2col meets its weights in memory order)
template <class T>
std::vector<T> reorder_weights(const T* w, int64_t Cout, int64_t Cin, int64_t K, bool taps) {
  std::vector<T> r(static_cast<size_t>(K * Cout * Cin));
  for (int64_t co = 0; co < Cout; ++co)
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t k = 0; k < K; ++k) r[(taps ? k * Cout + co : co * K + k) * Cin + ci] = w[(co * Cin + ci) * K + k];
  return r;
}
// Output rows l in [lo, hi) read input rows l + k - pad inside [0, L).
inline void tap_range(int64_t k, int64_t pad, int64_t L, int64_t Lout, int64_t& lo, int64_t& hi) {
  lo = std::max<int64_t>(0, pad - k);
  hi = std::min<int64_t>(Lout, L + pad - k);
}
int64_t block_rows(int64_t KC) { return std::max<int64_t>(64, kColFloats / std::max<int64_t>(KC, 1)); }

// col[r, :] = x[l0 + r - pad .. + K) (rows of one batch item), zero outside [0, L).
template <class T>
void im2col(const T* x, int64_t L, int64_t Cin, int64_t K, int64_t pad, int64_t l0, int64_t rows, T* col) {
  const int64_t KC = K * Cin;
  parallel_for(rows, KC, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t first = l0 + r - pad;  // input row of tap 0
      T* dst = col + r * KC;
      const int64_t k0 = std::clamp<int64_t>(-first, 0, K), k1 = std::clamp<int64_t>(L - first, 0, K);
      if (k0 > 0) std::fill(dst, dst + std::min(k0, K) * Cin, T(0));
      if (k1 > k0) std::memcpy(dst + k0 * Cin, x + (first + k0) * Cin, static_cast<size_t>((k1 - k0) * Cin) * sizeof(T));
      if (k1 < K) std::fill(dst + std::max(k1, k0) * Cin, dst + KC, T(0));
    }
  });
}
}  // namespace

void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t pad, const Tensor& out) {
  dispatch_float(x.dtype(), "conv1d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t B = x.size(0), L = x.size(1), Cin = x.size(2), Cout = w.size(0), K = w.size(2);
      const int64_t Lout = out.size(1), KC = K * Cin;
      const T* xp = x.data<T>();
      T* op = out.data<T>();
      const auto wf = reorder_weights(w.data<T>(), Cout, Cin, K, false);
      for (int64_t r = 0; r < B * Lout; ++r) {
        T* o = op + r * Cout;
        if (bias.defined()) std::copy(bias.data<T>(), bias.data<T>() + Cout, o);
        else std::fill(o, o + Cout, T(0));
      }
      const int64_t R = block_rows(KC);
      std::vector<T> col(static_cast<size_t>(std::min(R, Lout) * KC));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t l0 = 0; l0 < Lout; l0 += R) {
          const int64_t rows = std::min(R, Lout - l0);
          const T* a = xp + (b * L + l0) * Cin;  // K = 1 without padding: x rows are the im2col rows
          if (K != 1 || pad != 0) {
            im2col(xp + b * L * Cin, L, Cin, K, pad, l0, rows, col.data());
            a = col.data();
          }
          gemm<T>(false, true, rows, Cout, KC, T(1), a, KC, wf.data(), KC, T(1), op + (b * Lout + l0) * Cout, Cout);
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
      const int64_t Lout = grad.size(1), KC = K * Cin;
      const T* gp = grad.data<T>();
      const T* xp = x.data<T>();
      if (gx.defined()) {
        T* gxp = gx.data<T>();
        std::fill(gxp, gxp + gx.numel(), T(0));
        const auto taps = reorder_weights(w.data<T>(), Cout, Cin, K, true);
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
        std::vector<T> gf(static_cast<size_t>(Cout * KC), T(0));  // [Cout, K, Cin]
        const int64_t R = block_rows(KC);
        std::vector<T> col(static_cast<size_t>(std::min(R, Lout) * KC));
        for (int64_t b = 0; b < B; ++b)
          for (int64_t l0 = 0; l0 < Lout; l0 += R) {
            const int64_t rows = std::min(R, Lout - l0);
            const T* a = xp + (b * L + l0) * Cin;
            if (K != 1 || pad != 0) {
              im2col(xp + b * L * Cin, L, Cin, K, pad, l0, rows, col.data());
              a = col.data();
            }
            // gW_flat += g rowsᵀ · col   ([Cout, rows] x [rows, K·Cin])
            gemm<T>(true, false, Cout, KC, rows, T(1), gp + (b * Lout + l0) * Cout, Cout, a, KC, T(1), gf.data(), KC);
          }
        T* gwp = gw.data<T>();
        for (int64_t co = 0; co < Cout; ++co)
          for (int64_t ci = 0; ci < Cin; ++ci)
            for (int64_t k = 0; k < K; ++k) gwp[(co * Cin + ci) * K + k] = gf[(co * K + k) * Cin + ci];
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
