// CUDA conv1d, channels last (x [B, L, Cin], w [Cout, Cin, K], out [B, Lout, Cout]), following
// cpu::conv1d step for step: output rows in blocks, each block's im2col matrix [rows, K·Cin] built
// by one kernel, then one GEMM with the weights as W_flat [Cout, K·Cin]; the weight gradient is
// gW_flat += gᵀ·col over the same blocks, the input gradient K shifted GEMMs gx[l + k - pad] +=
// g[l]·W_k. The im2col block is capped (kColElems), so memory stays bounded at Enformer's
// 196,608-long stem. The bias gradient is a column sum in double (colsum.cuh).
//
// Templated on the launch policy, which here also does the GEMMs (gemm, and gemm_f32_out for
// bf16/f16 operands summed in f32) and zeroes memory (zero): cuBLAS on the GPU (BlasLaunch), plain
// loops on the SIMT emulator's. cuDNN is tried first where the policy's cudnn() says so (the GPU's:
// ops::cudnn_conv, opt-in; never on the emulator, whose pointers are the CPU's).
#pragma once
#include <algorithm>
#include <type_traits>

#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/conv_cudnn.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/ops.h"

namespace strand::cuda::conv {
STRAND_KERNELS_BEGIN

constexpr int64_t kColElems = int64_t{1} << 26;  // im2col block cap: 256 MiB of f32

// ---------------- conv1d ----------------
// col[r, k·Cin + ci] = x[l0 + r - pad + k, ci] (one batch item), zero outside [0, L)
template <class T>
__global__ void im2col_kernel(const T* x, int64_t L, int64_t Cin, int64_t K, int64_t pad, int64_t l0, int64_t rows,
                              T* col) {
  const int64_t KC = K * Cin;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * KC; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = e / KC, j = e % KC, src = l0 + r - pad + j / Cin;
    col[e] = src >= 0 && src < L ? x[src * Cin + j % Cin] : T(0);
  }
}
// w [Cout, Cin, K] <-> taps [K, Cout, Cin] or flat [Cout, K, Cin]; `back` writes w from r.
template <class T>
__global__ void reorder_kernel(T* w, T* r, int64_t Cout, int64_t Cin, int64_t K, bool taps, bool back) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < Cout * Cin * K; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t k = e % K, ci = (e / K) % Cin, co = e / (K * Cin);
    const int64_t o = (taps ? k * Cout + co : co * K + k) * Cin + ci;
    if (back) w[e] = r[o];
    else r[o] = w[e];
  }
}
template <class T, class Launch>
Tensor reorder(const Launch& launch, const Tensor& w, bool taps) {
  Tensor r = ops::empty({w.numel()}, on(w, w.dtype()));
  launch(reorder_kernel<T>, dim3(grid_for(w.numel())), dim3(kThreads), 0, ptr<T>(w), ptr<T>(r), w.size(0), w.size(1),
         w.size(2), taps, false);
  return r;
}
inline int64_t block_rows(int64_t KC, int64_t Lout) { return std::min(Lout, std::max<int64_t>(64, kColElems / std::max<int64_t>(KC, 1))); }

// Calls f(b, l0, rows, a) for every block of output rows, a = the block's im2col rows (or x itself
// for an unpadded K = 1 convolution).
template <class T, class Launch, class F>
void for_each_col_block(const Launch& launch, const Tensor& x, int64_t K, int64_t pad, int64_t Lout, F&& f) {
  const int64_t B = x.size(0), L = x.size(1), Cin = x.size(2), KC = K * Cin;
  const bool direct = K == 1 && pad == 0;
  const int64_t R = block_rows(KC, Lout);
  Tensor col = direct || R == 0 ? Tensor() : ops::empty({R * KC}, on(x, x.dtype()));
  const T* xp = ptr<T>(x);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l0 = 0; l0 < Lout; l0 += R) {
      const int64_t rows = std::min(R, Lout - l0);
      const T* a = xp + (b * L + l0) * Cin;
      if (!direct) {
        launch(im2col_kernel<T>, dim3(grid_for(rows * KC)), dim3(kThreads), 0, xp + b * L * Cin, L, Cin, K, pad, l0, rows,
               ptr<T>(col));
        a = ptr<T>(col);
      }
      f(b, l0, rows, a);
    }
}

template <class Launch>
void conv1d(const Launch& launch, const Tensor& x, const Tensor& w, const Tensor& bias, int64_t pad, const Tensor& out) {
  dispatch_float(x.dtype(), "conv1d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    {  // bf16/f16: tensor-core GEMMs; each output row block is written once (bias + product, one rounding)
      const int64_t Cout = w.size(0), K = w.size(2), KC = K * x.size(2), Lout = out.size(1);
      T* op = ptr<T>(out);
      if (bias.defined()) {
        launch(fill_rows_kernel<T>, dim3(grid_for(out.numel())), dim3(kThreads), 0, op, ptr<T>(bias), out.numel(), Cout);
      } else {
        launch.zero(op, out.nbytes());
      }
      if (KC == 0 || Cout == 0) return;  // no input channels: the bias rows are the output
      const Tensor wf = reorder<T>(launch, w, false);
      // cuDNN (opt-in): onto the bias rows (beta = 1), one rounding as below
      if (launch.cudnn() && conv1d_forward_cudnn(x, wf, Cout, K, pad, out, /*accumulate=*/bias.defined())) return;
      for_each_col_block<T>(launch, x, K, pad, Lout, [&](int64_t b, int64_t l0, int64_t rows, const T* a) {
        launch.template gemm<T>(false, true, rows, Cout, KC, a, KC, ptr<T>(wf), KC, T(1), op + (b * Lout + l0) * Cout, Cout);
      });
    }
  });
}

template <class Launch>
void conv1d_backward(const Launch& launch, const Tensor& grad, const Tensor& x, const Tensor& w, int64_t pad, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb) {
  dispatch_float(x.dtype(), "conv1d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    // The input and weight gradients are sums of several GEMMs (over taps, over row blocks): for
    // bf16/f16 they accumulate in f32 (gemm_f32_out) and are rounded once, as the CPU does.
    constexpr bool half = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;
    using Acc = std::conditional_t<half, float, T>;
    auto acc_gemm = [&launch](bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                              int64_t ldb, Acc* C, int64_t ldc) {
      if constexpr (half) launch.template gemm_f32_out<T>(ta, tb, M, N, K, A, lda, B, ldb, 1.0f, C, ldc);
      else launch.template gemm<T>(ta, tb, M, N, K, A, lda, B, ldb, T(1), C, ldc);
    };
    const DType acc_dt = half ? DType::f32 : x.dtype();
    {
      const int64_t B = x.size(0), L = x.size(1), Cin = x.size(2), Cout = w.size(0), K = w.size(2);
      const int64_t Lout = grad.size(1), KC = K * Cin;
      const T* gp = ptr<T>(grad);
      // cuDNN (opt-in) for the input and weight gradients; each falls back to the GEMMs below
      const bool dnn = launch.cudnn() && !std::is_same_v<T, double> && KC > 0 && Cout > 0;
      bool gx_done = false, gw_done = false;
      if (dnn && gx.defined() && gx.numel() > 0) gx_done = conv1d_data_cudnn(grad, reorder<T>(launch, w, false), Cout, K, pad, gx);
      if (dnn && gw.defined() && gw.numel() > 0) {
        Tensor gf = ops::empty({Cout * KC}, on(x, x.dtype()));  // [Cout, K, Cin]
        gw_done = conv1d_filter_cudnn(grad, x, Cout, K, pad, gf);
        if (gw_done) {
          launch(reorder_kernel<T>, dim3(grid_for(gw.numel())), dim3(kThreads), 0, ptr<T>(gw), ptr<T>(gf), Cout, Cin, K,
                 false, true);
        }
      }
      if (!gx_done && gx.defined() && gx.numel() > 0) {
        // half types: one batch item's [L, Cin] f32 accumulator at a time, rounded into gx[b]
        Tensor acc = half ? ops::empty({L, Cin}, on(x, acc_dt)) : gx;
        if (!half) launch.zero(acc.raw_data(), acc.nbytes());
        const Tensor taps = reorder<T>(launch, w, true);
        for (int64_t b = 0; b < B; ++b) {
          if (half) launch.zero(acc.raw_data(), acc.nbytes());
          Acc* ab = ptr<Acc>(acc) + (half ? 0 : b * L * Cin);
          for (int64_t k = 0; k < K; ++k) {
            const int64_t lo = std::max<int64_t>(0, pad - k), hi = std::min<int64_t>(Lout, L + pad - k);
            if (hi <= lo || Cout == 0) continue;
            acc_gemm(false, false, hi - lo, Cin, Cout, gp + (b * Lout + lo) * Cout, Cout, ptr<T>(taps) + k * Cout * Cin,
                     Cin, ab + (lo + k - pad) * Cin, Cin);
          }
          if (half) ops::copy_(ops::select(gx, 0, b), acc);
        }
      }
      if (!gw_done && gw.defined() && gw.numel() > 0) {
        Tensor gf = ops::zeros({Cout * KC}, on(x, acc_dt));  // [Cout, K, Cin]
        for_each_col_block<T>(launch, x, K, pad, Lout, [&](int64_t b, int64_t l0, int64_t rows, const T* a) {
          acc_gemm(true, false, Cout, KC, rows, gp + (b * Lout + l0) * Cout, Cout, a, KC, ptr<Acc>(gf), KC);
        });
        Tensor gwa = half ? ops::empty(gw.sizes(), on(x, acc_dt)) : gw;
        launch(reorder_kernel<Acc>, dim3(grid_for(gw.numel())), dim3(kThreads), 0, ptr<Acc>(gwa), ptr<Acc>(gf), Cout, Cin,
               K, false, true);
        if (half) ops::copy_(gw, gwa);
      }
      if (gb.defined()) store_sums<T>(launch, column_sums(launch, Value<T>{gp, Cout}, B * Lout, Cout, x), gb);
    }
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::conv
