// CUDA conv1d (channels last), and the GPU entry points of batch_norm (batch_norm.cuh): the two ops
// Enformer's convolution tower needs.
//
// conv1d follows cpu::conv1d step for step: output rows in blocks, each block's im2col matrix
// [rows, K·Cin] built by one kernel, then one cuBLAS GEMM with the weights as W_flat [Cout, K·Cin];
// the weight gradient is gW_flat += gᵀ·col over the same blocks, the input gradient K shifted GEMMs
// gx[l + k - pad] += g[l]·W_k. The im2col block is capped (kColElems), so memory stays bounded at
// Enformer's 196,608-long stem. The bias gradient is a column sum in double (colsum.cuh).
#include <algorithm>
#include <vector>

#include "kernels/cuda/batch_norm.cuh"
#include "kernels/cuda/cublas_util.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/colsum.cuh"
#include "kernels/cuda/conv_cudnn.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/ops.h"

namespace strand::cuda {

namespace {

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
template <class T>
Tensor reorder(const Tensor& w, bool taps) {
  Tensor r = ops::empty({w.numel()}, on(w, w.dtype()));
  reorder_kernel<T><<<grid_for(w.numel()), kThreads, 0, stream()>>>(ptr<T>(w), ptr<T>(r), w.size(0), w.size(1), w.size(2), taps, false);
  STRAND_CUDA_LAUNCH_CHECK();
  return r;
}
template <class T>
__global__ void fill_rows_kernel(T* out, const T* bias, int64_t n, int64_t C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    out[i] = bias[i % C];
}
int64_t block_rows(int64_t KC, int64_t Lout) { return std::min(Lout, std::max<int64_t>(64, kColElems / std::max<int64_t>(KC, 1))); }

// Calls f(b, l0, rows, a) for every block of output rows, a = the block's im2col rows (or x itself
// for an unpadded K = 1 convolution).
template <class T, class F>
void for_each_col_block(const Tensor& x, int64_t K, int64_t pad, int64_t Lout, F&& f) {
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
        im2col_kernel<T><<<grid_for(rows * KC), kThreads, 0, stream()>>>(xp + b * L * Cin, L, Cin, K, pad, l0, rows, ptr<T>(col));
        STRAND_CUDA_LAUNCH_CHECK();
        a = ptr<T>(col);
      }
      f(b, l0, rows, a);
    }
}

}  // namespace

double batch_norm_stats(const Tensor& x, const Tensor& mean, const Tensor& var, const cpu::StatsReducer* reduce) {
  return bn::batch_norm_stats(DeviceLaunch{}, x, mean, var, reduce);
}

void batch_norm_apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& rstd,
                      const Tensor& y) {
  bn::batch_norm_apply(DeviceLaunch{}, x, w, b, mean, rstd, y);
}

void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         bool training, const Tensor& gx, const Tensor& gw, const Tensor& gb,
                         const cpu::StatsReducer* reduce) {
  bn::batch_norm_backward(DeviceLaunch{}, grad, x, w, mean, rstd, training, gx, gw, gb, reduce);
}

void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t pad, const Tensor& out) {
  dispatch_float(x.dtype(), "conv1d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    {  // bf16/f16: tensor-core GEMMs; each output row block is written once (bias + product, one rounding)
      const int64_t Cout = w.size(0), K = w.size(2), KC = K * x.size(2), Lout = out.size(1);
      T* op = ptr<T>(out);
      if (bias.defined()) {
        fill_rows_kernel<T><<<grid_for(out.numel()), kThreads, 0, stream()>>>(op, ptr<T>(bias), out.numel(), Cout);
        STRAND_CUDA_LAUNCH_CHECK();
      } else {
        cudaMemsetAsync(op, 0, out.nbytes(), stream());
      }
      if (KC == 0 || Cout == 0) return;  // no input channels: the bias rows are the output
      const Tensor wf = reorder<T>(w, false);
      // cuDNN (opt-in): onto the bias rows (beta = 1), one rounding as below
      if (ops::cudnn_conv() && conv1d_forward_cudnn(x, wf, Cout, K, pad, out, /*accumulate=*/bias.defined())) return;
      cublasHandle_t h = cublas_handle(x.device().index);
      for_each_col_block<T>(x, K, pad, Lout, [&](int64_t b, int64_t l0, int64_t rows, const T* a) {
        gemm<T>(h, false, true, rows, Cout, KC, a, KC, ptr<T>(wf), KC, T(1), op + (b * Lout + l0) * Cout, Cout);
      });
    }
  });
}

void conv1d_backward(const Tensor& grad, const Tensor& x, const Tensor& w, int64_t pad, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb) {
  dispatch_float(x.dtype(), "conv1d_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    // The input and weight gradients are sums of several GEMMs (over taps, over row blocks): for
    // bf16/f16 they accumulate in f32 (gemm_f32_out) and are rounded once, as the CPU does.
    constexpr bool half = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;
    using Acc = std::conditional_t<half, float, T>;
    auto acc_gemm = [](cublasHandle_t h, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
                       const T* B, int64_t ldb, Acc* C, int64_t ldc) {
      if constexpr (half) gemm_f32_out<T>(h, ta, tb, M, N, K, A, lda, B, ldb, 1.0f, C, ldc);
      else gemm<T>(h, ta, tb, M, N, K, A, lda, B, ldb, T(1), C, ldc);
    };
    const DType acc_dt = half ? DType::f32 : x.dtype();
    {
      const int64_t B = x.size(0), L = x.size(1), Cin = x.size(2), Cout = w.size(0), K = w.size(2);
      const int64_t Lout = grad.size(1), KC = K * Cin;
      const T* gp = ptr<T>(grad);
      cublasHandle_t h = cublas_handle(x.device().index);
      // cuDNN (opt-in) for the input and weight gradients; each falls back to the GEMMs below
      const bool dnn = ops::cudnn_conv() && !std::is_same_v<T, double> && KC > 0 && Cout > 0;
      bool gx_done = false, gw_done = false;
      if (dnn && gx.defined() && gx.numel() > 0) gx_done = conv1d_data_cudnn(grad, reorder<T>(w, false), Cout, K, pad, gx);
      if (dnn && gw.defined() && gw.numel() > 0) {
        Tensor gf = ops::empty({Cout * KC}, on(x, x.dtype()));  // [Cout, K, Cin]
        gw_done = conv1d_filter_cudnn(grad, x, Cout, K, pad, gf);
        if (gw_done) {
          reorder_kernel<T><<<grid_for(gw.numel()), kThreads, 0, stream()>>>(ptr<T>(gw), ptr<T>(gf), Cout, Cin, K, false,
                                                                             true);
          STRAND_CUDA_LAUNCH_CHECK();
        }
      }
      if (!gx_done && gx.defined() && gx.numel() > 0) {
        // half types: one batch item's [L, Cin] f32 accumulator at a time, rounded into gx[b]
        Tensor acc = half ? ops::empty({L, Cin}, on(x, acc_dt)) : gx;
        if (!half) cudaMemsetAsync(acc.raw_data(), 0, acc.nbytes(), stream());
        const Tensor taps = reorder<T>(w, true);
        for (int64_t b = 0; b < B; ++b) {
          if (half) cudaMemsetAsync(acc.raw_data(), 0, acc.nbytes(), stream());
          Acc* ab = ptr<Acc>(acc) + (half ? 0 : b * L * Cin);
          for (int64_t k = 0; k < K; ++k) {
            const int64_t lo = std::max<int64_t>(0, pad - k), hi = std::min<int64_t>(Lout, L + pad - k);
            if (hi <= lo || Cout == 0) continue;
            acc_gemm(h, false, false, hi - lo, Cin, Cout, gp + (b * Lout + lo) * Cout, Cout, ptr<T>(taps) + k * Cout * Cin,
                     Cin, ab + (lo + k - pad) * Cin, Cin);
          }
          if (half) ops::copy_(ops::select(gx, 0, b), acc);
        }
      }
      if (!gw_done && gw.defined() && gw.numel() > 0) {
        Tensor gf = ops::zeros({Cout * KC}, on(x, acc_dt));  // [Cout, K, Cin]
        for_each_col_block<T>(x, K, pad, Lout, [&](int64_t b, int64_t l0, int64_t rows, const T* a) {
          acc_gemm(h, true, false, Cout, KC, rows, gp + (b * Lout + l0) * Cout, Cout, a, KC, ptr<Acc>(gf), KC);
        });
        Tensor gwa = half ? ops::empty(gw.sizes(), on(x, acc_dt)) : gw;
        reorder_kernel<Acc><<<grid_for(gw.numel()), kThreads, 0, stream()>>>(ptr<Acc>(gwa), ptr<Acc>(gf), Cout, Cin, K, false, true);
        STRAND_CUDA_LAUNCH_CHECK();
        if (half) ops::copy_(gw, gwa);
      }
      if (gb.defined()) store_sums<T>(column_sums(Value<T>{gp, Cout}, B * Lout, Cout, x), gb);
    }
  });
}

}  // namespace strand::cuda
