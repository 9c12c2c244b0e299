// Enformer's relative-position attention on the CPU, fused as kernels/cpu/attention.cpp fuses the
// plain one: no [B, H, T, T] or [B, H, T, 2T-1] tensor is allocated. A task is (batch, head, block
// of kBlockQ queries i0..i1). Its content logits are one GEMM, qc_blk kᵀ [bq, T]. Its position
// logits need r[T-1 + j - i] for i in the block and every j: the window r[T - i1 .. 2T - 2 - i0]
// ([T + bq - 1, Dk]) covers them, so a second GEMM gives Z = qr_blk windowᵀ [bq, T + bq - 1] and
// S[il, j] += Z[il, j + bq - 1 - il] (the relative shift, by index). Softmax as in attention.cpp,
// logsumexp saved; dropout multiplies by the Philox keep factors (attention_common.h) before P v.
// Backward (FlashAttention-2's order, one task per (batch, head) so dK, dV and the per-batch dR
// rows have one writer): recompute S and P, dP = (dO vᵀ) ∘ mask, dS = P ∘ (dP − rowsum(dO ∘ O)),
// then dqc = dS k, dk += dSᵀ qc, and through dZ (dS shifted back) dqr = dZ window,
// dR_b[window] += dZᵀ qr_blk. dR is the sum of the per-batch dR_b in batch order.
#include <cmath>
#include <vector>

#include "kernels/cpu/attention_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec.h"

namespace strand::cpu {

namespace {
constexpr int64_t kBlockQ = 64;

template <class T>
void add_into(T* y, const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

// S = qc_blk kᵀ + shift(qr_blk windowᵀ) for queries i0 .. i0 + bq; z is [bq, T + bq - 1] scratch.
template <class T>
void logits(const T* qc, const T* qr, const T* k, const T* r, const Rows& QC, const Rows& QR, const Rows& K,
            int64_t rs_h, int64_t rs_m, int64_t b, int64_t h, int64_t i0, int64_t bq, int64_t T_, int64_t Dk, T* s,
            T* z) {
  const int64_t W = T_ + bq - 1, m0 = T_ - (i0 + bq);
  gemm<T>(false, true, bq, T_, Dk, T(1), qc + QC(b, h, i0), QC.ld(), k + K(b, h, 0), K.ld(), T(0), s, T_);
  gemm<T>(false, true, bq, W, Dk, T(1), qr + QR(b, h, i0), QR.ld(), r + h * rs_h + m0 * rs_m, rs_m, T(0), z, W);
  for (int64_t il = 0; il < bq; ++il) add_into(s + il * T_, z + il * W + (bq - 1 - il), T_);
}
}  // namespace

void rel_attention_forward(const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r, const Tensor& v,
                           const DropoutMask& d, const Tensor& out, const Tensor& lse) {
  dispatch_float(qc.dtype(), "rel_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t B = qc.size(0), H = qc.size(1), T_ = qc.size(2), Dk = qc.size(3), Dv = v.size(3);
      const int64_t nqb = (T_ + kBlockQ - 1) / kBlockQ;
      const Rows QC{qc}, QR{qr}, K{k}, V{v}, O{out};
      const T *qcp = qc.data<T>(), *qrp = qr.data<T>(), *kp = k.data<T>(), *rp = r.data<T>(), *vp = v.data<T>();
      T* op = out.data<T>();
      T* lp = lse.data<T>();
      parallel_for(B * H * nqb, kBlockQ * T_ * (2 * Dk + Dv) * 2, [&](int64_t t0, int64_t t1) {
        std::vector<T> s(static_cast<size_t>(kBlockQ * T_)), z(static_cast<size_t>(kBlockQ * (T_ + kBlockQ)));
        std::vector<T> keep(d.p > 0 ? static_cast<size_t>(T_) : 0);
        for (int64_t task = t0; task < t1; ++task) {
          const int64_t bh = task / nqb, b = bh / H, h = bh % H, i0 = (task % nqb) * kBlockQ;
          const int64_t bq = std::min(kBlockQ, T_ - i0);
          logits<T>(qcp, qrp, kp, rp, QC, QR, K, r.stride(0), r.stride(1), b, h, i0, bq, T_, Dk, s.data(), z.data());
          for (int64_t il = 0; il < bq; ++il) {
            T* row = s.data() + il * T_;
            const T mx = vec::max_of(row, T_);
            const T sum = vec::exp_shift_sum(row, mx, row, T_);
            vec::scale(row, T(1) / sum, row, T_);
            lp[bh * T_ + i0 + il] = mx + std::log(sum);
            if (d.p > 0) {
              keep_factors(keep.data(), T_, (bh * T_ + i0 + il) * T_, d);
              times_keep(row, row, keep.data(), T_);
            }
          }
          gemm<T>(false, false, bq, Dv, T_, T(1), s.data(), T_, vp + V(b, h, 0), V.ld(), T(0), op + O(b, h, i0), O.ld());
        }
      });
    } else {
      STRAND_ASSERT(false, "cpu::rel_attention expects f32/f64 (the op layer converts half types)");
    }
  });
}

void rel_attention_backward(const Tensor& dout, const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r,
                            const Tensor& v, const Tensor& out, const Tensor& lse, const DropoutMask& d,
                            const Tensor& dqc, const Tensor& dqr, const Tensor& dk, const Tensor& dr, const Tensor& dv) {
  dispatch_float(qc.dtype(), "rel_attention_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t B = qc.size(0), H = qc.size(1), T_ = qc.size(2), Dk = qc.size(3), Dv = v.size(3);
      const int64_t M = 2 * T_ - 1;
      const Rows QC{qc}, QR{qr}, K{k}, V{v}, O{out}, G{dout}, DQC{dqc}, DQR{dqr}, DK{dk}, DV{dv};
      const T *qcp = qc.data<T>(), *qrp = qr.data<T>(), *kp = k.data<T>(), *rp = r.data<T>(), *vp = v.data<T>();
      const T *op = out.data<T>(), *gp = dout.data<T>(), *lp = lse.data<T>();
      T *dqcp = dqc.data<T>(), *dqrp = dqr.data<T>(), *dkp = dk.data<T>(), *dvp = dv.data<T>();
      // dR per (batch, head): each task writes its own, summed over the batch below (fixed order).
      std::vector<T> drb(static_cast<size_t>(B * H * M * Dk), T(0));
      parallel_for(B * H, T_ * T_ * (3 * Dk + 2 * Dv) * 2, [&](int64_t t0, int64_t t1) {
        const size_t blk = static_cast<size_t>(kBlockQ * T_), zsz = static_cast<size_t>(kBlockQ * (T_ + kBlockQ));
        std::vector<T> p(blk), dp(blk), z(zsz), keep(d.p > 0 ? blk : 0);
        for (int64_t bh = t0; bh < t1; ++bh) {
          const int64_t b = bh / H, h = bh % H;
          T* dr_bh = drb.data() + bh * M * Dk;
          for (int64_t i0 = 0; i0 < T_; i0 += kBlockQ) {
            const int64_t bq = std::min(kBlockQ, T_ - i0), W = T_ + bq - 1, m0 = T_ - (i0 + bq);
            const T beta = i0 == 0 ? T(0) : T(1);  // the first block initialises dK, dV
            logits<T>(qcp, qrp, kp, rp, QC, QR, K, r.stride(0), r.stride(1), b, h, i0, bq, T_, Dk, p.data(), z.data());
            for (int64_t il = 0; il < bq; ++il) {
              T* row = p.data() + il * T_;
              vec::exp_shift_sum(row, lp[bh * T_ + i0 + il], row, T_);  // P
              if (d.p > 0) keep_factors(keep.data() + il * T_, T_, (bh * T_ + i0 + il) * T_, d);
            }
            // dV += (P ∘ keep)ᵀ dO: the kept probabilities in dp for the moment
            const T* pd = p.data();
            if (d.p > 0) {
              times_keep(dp.data(), p.data(), keep.data(), bq * T_);
              pd = dp.data();
            }
            gemm<T>(true, false, T_, Dv, bq, T(1), pd, T_, gp + G(b, h, i0), G.ld(), beta, dvp + DV(b, h, 0), DV.ld());
            // dP = (dO vᵀ) ∘ keep;  dS = P ∘ (dP − rowsum(dO ∘ O))
            gemm<T>(false, true, bq, T_, Dv, T(1), gp + G(b, h, i0), G.ld(), vp + V(b, h, 0), V.ld(), T(0), dp.data(), T_);
            if (d.p > 0) times_keep(dp.data(), dp.data(), keep.data(), bq * T_);
            for (int64_t il = 0; il < bq; ++il) {
              const T delta = vec::dot(gp + G(b, h, i0 + il), op + O(b, h, i0 + il), Dv);
              T* dd = dp.data() + il * T_;
              const T* pr = p.data() + il * T_;
              for (int64_t j = 0; j < T_; ++j) dd[j] = pr[j] * (dd[j] - delta);
            }
            // content: dqc = dS k;  dk += dSᵀ qc
            gemm<T>(false, false, bq, Dk, T_, T(1), dp.data(), T_, kp + K(b, h, 0), K.ld(), T(0), dqcp + DQC(b, h, i0),
                    DQC.ld());
            gemm<T>(true, false, T_, Dk, bq, T(1), dp.data(), T_, qcp + QC(b, h, i0), QC.ld(), beta, dkp + DK(b, h, 0),
                    DK.ld());
            // position: dZ (dS shifted back into the window), dqr = dZ window, dR_b[window] += dZᵀ qr_blk
            std::fill(z.begin(), z.begin() + bq * W, T(0));
            for (int64_t il = 0; il < bq; ++il) std::copy(dp.data() + il * T_, dp.data() + (il + 1) * T_, z.data() + il * W + (bq - 1 - il));
            gemm<T>(false, false, bq, Dk, W, T(1), z.data(), W, rp + h * r.stride(0) + m0 * r.stride(1), r.stride(1), T(0),
                    dqrp + DQR(b, h, i0), DQR.ld());
            gemm<T>(true, false, W, Dk, bq, T(1), z.data(), W, qrp + QR(b, h, i0), QR.ld(), T(1), dr_bh + m0 * Dk, Dk);
          }
        }
      });
      T* drp = dr.data<T>();  // contiguous [H, 2T-1, Dk]
      parallel_for(H * M * Dk, 1024, [&](int64_t e0, int64_t e1) {
        for (int64_t e = e0; e < e1; ++e) {
          T acc = T(0);
          for (int64_t b = 0; b < B; ++b) acc += drb[static_cast<size_t>(b * H * M * Dk + e)];
          drp[e] = acc;
        }
      });
    } else {
      STRAND_ASSERT(false, "cpu::rel_attention_backward expects f32/f64");
    }
  });
}

}  // namespace strand::cpu
