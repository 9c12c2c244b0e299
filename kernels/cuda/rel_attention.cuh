// Enformer's relative-position attention on the GPU (the contract of cpu::rel_attention_*): the CPU
// kernel's blocked algorithm with cuBLAS doing the products. For each batch item and block of Q
// queries i0 .. i0 + bq, GEMMs batched over the heads give the content logits qc_blk kᵀ [H, bq, T]
// and the window products Z = qr_blk r[T - i0 - bq .. 2T - 2 - i0]ᵀ [H, bq, T + bq - 1]; one
// block of threads per row adds Z shifted by index (S[i, j] += Z[i, j + bq - 1 - i]), takes the
// softmax and its logsumexp, and applies the Philox dropout factors; a last GEMM gives P V.
// Backward recomputes P per block and follows the CPU's order: dV += (P∘keep)ᵀ dO, dP = dO vᵀ,
// dS = P ∘ (dP∘keep − rowsum(dO ∘ O)), dqc = dS k, dk += dSᵀ qc, dZ = dS shifted back,
// dqr = dZ window, dR[window] += dZᵀ qr_blk. Scratch is three [H, Q, T + Q] buffers, so memory
// is bounded by the block and not by T². No atomics; the GEMMs run in a fixed order.
//
// The kernels and the entry points' bodies, templated on the launch policy, which here also does
// the GEMMs (gemm_batched: row-major, batched at fixed strides, as cublas_util.cuh's) and zeroes
// memory (zero): cuBLAS on the GPU (BlasLaunch), plain loops on the SIMT emulator's.
#pragma once
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/dropout.cuh"
#include "kernels/ops.h"

namespace strand::cuda::rel {
STRAND_KERNELS_BEGIN

constexpr int64_t kQ = 256;  // queries per block

// Row (il, h) of the block: s[j] += z[j + bq - 1 - il] for j < T. s rows are T apart (heads Q·T),
// z rows W = T + bq - 1 apart (heads zs).
template <class T>
__device__ void add_shifted(T* s, const T* z, int64_t T_, int64_t bq, int64_t il) {
  for (int64_t j = threadIdx.x; j < T_; j += blockDim.x) s[j] += z[j + bq - 1 - il];
}

// Forward: logits -> P∘keep in place, lse saved. grid (bq, H).
template <class T>
__global__ void fwd_rows_kernel(T* S, const T* Z, T* lse, int64_t T_, int64_t bq, int64_t Q, int64_t zs, int64_t b,
                                int64_t H, int64_t i0, DropFactor d) {
  __shared__ T sh[32];
  const int64_t il = blockIdx.x, h = blockIdx.y, i = i0 + il;
  T* s = S + (h * Q + il) * T_;
  add_shifted(s, Z + h * zs + il * (T_ + bq - 1), T_, bq, il);
  T mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < T_; j += blockDim.x) mx = max(mx, s[j]);
  mx = block_reduce<T, true>(mx, sh);
  T sum = 0;
  for (int64_t j = threadIdx.x; j < T_; j += blockDim.x) sum += exp(s[j] - mx);
  sum = block_reduce<T, false>(sum, sh);
  const T l = mx + log(sum);
  const int64_t base = ((b * H + h) * T_ + i) * T_;
  for (int64_t j = threadIdx.x; j < T_; j += blockDim.x) {
    T p = exp(s[j] - l);
    if (d.on) p = static_cast<T>(p * static_cast<T>(d(base + j)));
    s[j] = p;
  }
  if (threadIdx.x == 0) lse[(b * H + h) * T_ + i] = l;
}

// Backward, step 1: logits -> P in S and P∘keep in P2. grid (bq, H).
template <class T>
__global__ void bwd_probs_kernel(T* S, T* P2, const T* Z, const T* lse, int64_t T_, int64_t bq, int64_t Q, int64_t zs,
                                 int64_t b, int64_t H, int64_t i0, DropFactor d) {
  const int64_t il = blockIdx.x, h = blockIdx.y, i = i0 + il;
  T* s = S + (h * Q + il) * T_;
  T* p2 = P2 + (h * Q + il) * T_;
  const T* z = Z + h * zs + il * (T_ + bq - 1);
  const T l = lse[(b * H + h) * T_ + i];
  const int64_t base = ((b * H + h) * T_ + i) * T_;
  for (int64_t j = threadIdx.x; j < T_; j += blockDim.x) {
    const T p = exp(s[j] + z[j + bq - 1 - il] - l);
    s[j] = p;
    p2[j] = d.on ? static_cast<T>(p * static_cast<T>(d(base + j))) : p;
  }
}

// Backward, step 2: P2 holds dO vᵀ; becomes dS = P ∘ (dP∘keep − rowsum(dO ∘ O)). grid (bq, H).
template <class T>
__global__ void bwd_ds_kernel(const T* S, T* P2, const T* dout, const T* out, int64_t g_h, int64_t g_t, int64_t o_h,
                              int64_t o_t, int64_t Dv, int64_t T_, int64_t Q, int64_t b, int64_t H, int64_t i0,
                              DropFactor d) {
  __shared__ T sh[32];
  const int64_t il = blockIdx.x, h = blockIdx.y, i = i0 + il;
  const T* gr = dout + h * g_h + i * g_t;
  const T* orow = out + h * o_h + i * o_t;
  T delta = 0;
  for (int64_t c = threadIdx.x; c < Dv; c += blockDim.x) delta += gr[c] * orow[c];
  delta = block_reduce<T, false>(delta, sh);
  const T* s = S + (h * Q + il) * T_;
  T* p2 = P2 + (h * Q + il) * T_;
  const int64_t base = ((b * H + h) * T_ + i) * T_;
  for (int64_t j = threadIdx.x; j < T_; j += blockDim.x) {
    T dp = p2[j];
    if (d.on) dp = static_cast<T>(dp * static_cast<T>(d(base + j)));
    p2[j] = s[j] * (dp - delta);
  }
}

// Backward, step 3: dZ[il, c] = dS[il, c - (bq - 1 - il)] inside [0, T), else 0. grid (bq, H).
template <class T>
__global__ void bwd_scatter_kernel(const T* P2, T* Z, int64_t T_, int64_t bq, int64_t Q, int64_t zs) {
  const int64_t il = blockIdx.x, h = blockIdx.y, W = T_ + bq - 1, off = bq - 1 - il;
  const T* ds = P2 + (h * Q + il) * T_;
  T* z = Z + h * zs + il * W;
  for (int64_t c = threadIdx.x; c < W; c += blockDim.x) {
    const int64_t j = c - off;
    z[c] = j >= 0 && j < T_ ? ds[j] : T(0);
  }
}

// Sizes, the query block Q and the scratch and r strides, shared by forward and backward.
struct Geometry {
  int64_t B, H, T, Dk, Dv, Q, zs, rs;
};
inline Geometry geometry(const Tensor& qc, const Tensor& v, const char* op) {
  STRAND_CHECK(qc.size(3) > 0 && v.size(3) > 0, op,
               " on a GPU needs head dims above 0 (the op layer computes zero ones"
               " on the CPU), got Dk ",
               qc.size(3), " and Dv ", v.size(3));
  const int64_t T = qc.size(2), Dk = qc.size(3), Q = std::min(kQ, T);
  return {qc.size(0), qc.size(1), T, Dk, v.size(3), Q, Q * (T + Q - 1), (2 * T - 1) * Dk};
}

template <class Launch>
void rel_attention_forward(const Launch& launch, const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r,
                           const Tensor& v, const cpu::DropoutMask& dm, const Tensor& out, const Tensor& lse) {
  dispatch_float(qc.dtype(), "rel_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const auto [B, H, T_, Dk, Dv, Q, zs, rs] = geometry(qc, v, "rel_attention");
      const View4 QC = view_of(qc), QR = view_of(qr), K = view_of(k), V = view_of(v), O = view_of(out);
      const DropFactor d = DropFactor::of(dm);
      const TensorOptions o(qc.dtype(), qc.device());
      Tensor S = ops::empty({H * Q * T_}, o), Z = ops::empty({H * zs}, o);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i0 = 0; i0 < T_; i0 += Q) {
          const int64_t bq = std::min(Q, T_ - i0), W = T_ + bq - 1, m0 = T_ - (i0 + bq);
          launch.template gemm_batched<T>(false, true, bq, T_, Dk, ptr<T>(qc) + b * QC.b + i0 * QC.t, QC.t, QC.h,
                                          ptr<T>(k) + b * K.b, K.t, K.h, T(0), ptr<T>(S), T_, Q * T_, H);
          launch.template gemm_batched<T>(false, true, bq, W, Dk, ptr<T>(qr) + b * QR.b + i0 * QR.t, QR.t, QR.h,
                                          ptr<T>(r) + m0 * Dk, Dk, rs, T(0), ptr<T>(Z), W, zs, H);
          launch(fwd_rows_kernel<T>, dim3(static_cast<unsigned>(bq), static_cast<unsigned>(H)), dim3(kThreads), 0,
                 ptr<T>(S), ptr<T>(Z), ptr<T>(lse), T_, bq, Q, zs, b, H, i0, d);
          launch.template gemm_batched<T>(false, false, bq, Dv, T_, ptr<T>(S), T_, Q * T_, ptr<T>(v) + b * V.b, V.t,
                                          V.h, T(0), ptr<T>(out) + b * O.b + i0 * O.t, O.t, O.h, H);
        }
    } else {
      STRAND_CHECK(false, "cuda::rel_attention expects f32/f64 (the op layer converts half types)");
    }
  });
}

template <class Launch>
void rel_attention_backward(const Launch& launch, const Tensor& dout, const Tensor& qc, const Tensor& qr,
                            const Tensor& k, const Tensor& r, const Tensor& v, const Tensor& out, const Tensor& lse,
                            const cpu::DropoutMask& dm, const Tensor& dqc, const Tensor& dqr, const Tensor& dk,
                            const Tensor& dr, const Tensor& dv) {
  dispatch_float(qc.dtype(), "rel_attention_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const auto [B, H, T_, Dk, Dv, Q, zs, rs] = geometry(qc, v, "rel_attention_backward");
      const View4 QC = view_of(qc), QR = view_of(qr), K = view_of(k), V = view_of(v), O = view_of(out);
      const View4 G = view_of(dout), DQC = view_of(dqc), DQR = view_of(dqr), DK = view_of(dk), DV = view_of(dv);
      const DropFactor d = DropFactor::of(dm);
      const TensorOptions o(qc.dtype(), qc.device());
      Tensor S = ops::empty({H * Q * T_}, o), P2 = ops::empty({H * Q * T_}, o), Z = ops::empty({H * zs}, o);
      launch.zero(dr.raw_data(), dr.nbytes());  // [H, 2T-1, Dk], summed over blocks
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i0 = 0; i0 < T_; i0 += Q) {
          const int64_t bq = std::min(Q, T_ - i0), W = T_ + bq - 1, m0 = T_ - (i0 + bq);
          const dim3 rows(static_cast<unsigned>(bq), static_cast<unsigned>(H));
          const T beta = i0 == 0 ? T(0) : T(1);  // the first block of a batch item initialises dk, dv
          const T* qc_blk = ptr<T>(qc) + b * QC.b + i0 * QC.t;
          const T* qr_blk = ptr<T>(qr) + b * QR.b + i0 * QR.t;
          const T* g_blk = ptr<T>(dout) + b * G.b + i0 * G.t;
          const T* k_b = ptr<T>(k) + b * K.b;
          const T* v_b = ptr<T>(v) + b * V.b;
          const T* r_win = ptr<T>(r) + m0 * Dk;
          // P (S) and P∘keep (P2)
          launch.template gemm_batched<T>(false, true, bq, T_, Dk, qc_blk, QC.t, QC.h, k_b, K.t, K.h, T(0), ptr<T>(S),
                                          T_, Q * T_, H);
          launch.template gemm_batched<T>(false, true, bq, W, Dk, qr_blk, QR.t, QR.h, r_win, Dk, rs, T(0), ptr<T>(Z), W,
                                          zs, H);
          launch(bwd_probs_kernel<T>, dim3(rows), dim3(kThreads), 0, ptr<T>(S), ptr<T>(P2), ptr<T>(Z), ptr<T>(lse), T_,
                 bq, Q, zs, b, H, i0, d);
          // dv += (P∘keep)ᵀ dO
          launch.template gemm_batched<T>(true, false, T_, Dv, bq, ptr<T>(P2), T_, Q * T_, g_blk, G.t, G.h, beta,
                                          ptr<T>(dv) + b * DV.b, DV.t, DV.h, H);
          // dP = dO vᵀ -> dS
          launch.template gemm_batched<T>(false, true, bq, T_, Dv, g_blk, G.t, G.h, v_b, V.t, V.h, T(0), ptr<T>(P2), T_,
                                          Q * T_, H);
          launch(bwd_ds_kernel<T>, dim3(rows), dim3(kThreads), 0, ptr<T>(S), ptr<T>(P2), ptr<T>(dout) + b * G.b,
                 ptr<T>(out) + b * O.b, G.h, G.t, O.h, O.t, Dv, T_, Q, b, H, i0, d);
          // content: dqc = dS k; dk += dSᵀ qc
          launch.template gemm_batched<T>(false, false, bq, Dk, T_, ptr<T>(P2), T_, Q * T_, k_b, K.t, K.h, T(0),
                                          ptr<T>(dqc) + b * DQC.b + i0 * DQC.t, DQC.t, DQC.h, H);
          launch.template gemm_batched<T>(true, false, T_, Dk, bq, ptr<T>(P2), T_, Q * T_, qc_blk, QC.t, QC.h, beta,
                                          ptr<T>(dk) + b * DK.b, DK.t, DK.h, H);
          // position: dZ, dqr = dZ window, dr[window] += dZᵀ qr_blk
          launch(bwd_scatter_kernel<T>, dim3(rows), dim3(kThreads), 0, ptr<T>(P2), ptr<T>(Z), T_, bq, Q, zs);
          launch.template gemm_batched<T>(false, false, bq, Dk, W, ptr<T>(Z), W, zs, r_win, Dk, rs, T(0),
                                          ptr<T>(dqr) + b * DQR.b + i0 * DQR.t, DQR.t, DQR.h, H);
          launch.template gemm_batched<T>(true, false, W, Dk, bq, ptr<T>(Z), W, zs, qr_blk, QR.t, QR.h, T(1),
                                          ptr<T>(dr) + m0 * Dk, Dk, rs, H);
        }
    } else {
      STRAND_CHECK(false, "cuda::rel_attention_backward expects f32/f64");
    }
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::rel
