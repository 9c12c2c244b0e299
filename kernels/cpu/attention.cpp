// Fused attention on the CPU, FlashAttention-style: no [B, H, Tq, Tk] tensor is ever allocated.
// Work is split into tasks of (batch, head, block of kBlockQ queries); a task computes its
// [kBlockQ, Tk] logits into a per-thread buffer with one GEMM, takes the softmax row by row
// (vectorised exp), and multiplies by V with a second GEMM. The logsumexp of every row is saved;
// backward recomputes P = exp(S - lse) per block (FlashAttention-2's algorithm) and accumulates
// dK, dV per (batch, head) task, so no two threads write the same gradient row.
//
// Masking follows the models' composed code exactly: a padded key's logit becomes the lowest
// finite value (masked_fill with -FLT_MAX), so a row whose keys are all padded is uniform; a
// padded query (AIDO.RNA's outer-product mask) gets an all-zero output row and, through
// lse = +inf, zero gradients — or, for ModelGenerator's cross-attention, has every key masked. A
// row with every key masked is uniform (as masked_fill then softmax gives) and, as there, passes no
// gradient to its logits; its lse is stored as -inf to say so. Dropout (m.dropout) multiplies each
// probability row by its keep factors before P V, and backward regenerates them: dV takes the
// dropped P, dP = (dO Vᵀ) ∘ keep, and dS = P ∘ (dP − rowsum(dO ∘ O)) as without dropout.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_common.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec.h"

namespace strand::cpu {

namespace {
constexpr int64_t kBlockQ = 64;

template <class T>
void mask_logits(T* s, int64_t Tk, const uint8_t* key_pad) {
  if (!key_pad) return;
  for (int64_t j = 0; j < Tk; ++j)
    if (key_pad[j]) s[j] = std::numeric_limits<T>::lowest();
}
bool all_set(const uint8_t* p, int64_t n) {
  if (!p) return false;
  for (int64_t j = 0; j < n; ++j)
    if (!p[j]) return false;
  return true;
}
}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMasks& m, double scale,
                       const Tensor& out, const Tensor& lse) {
  dispatch_float(q.dtype(), "attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3), Tk = k.size(2);
      const int64_t nqb = (Tq + kBlockQ - 1) / kBlockQ;
      const T* qp = q.data<T>();
      const T* kp = k.data<T>();
      const T* vp = v.data<T>();
      T* op = out.data<T>();
      T* lp = lse.data<T>();
      const Rows Q{q}, K{k}, V{v}, O{out};
      const bool drop = m.dropout.p > 0;
      parallel_for(B * H * nqb, kBlockQ * Tk * D * 4, [&](int64_t t0, int64_t t1) {
        std::vector<T> s(static_cast<size_t>(kBlockQ * Tk)), keep(drop ? static_cast<size_t>(Tk) : 0);
        for (int64_t task = t0; task < t1; ++task) {
          const int64_t bh = task / nqb, b = bh / H, h = bh % H, i0 = (task % nqb) * kBlockQ;
          const int64_t bq = std::min(kBlockQ, Tq - i0);
          gemm<T>(false, true, bq, Tk, D, static_cast<T>(scale), qp + Q(b, h, i0), Q.ld(), kp + K(b, h, 0), K.ld(),
                  T(0), s.data(), Tk);
          const uint8_t* kpad = m.key_pad ? m.key_pad + b * Tk : nullptr;
          const bool none = all_set(kpad, Tk);
          for (int64_t r = 0; r < bq; ++r) {
            T* row = s.data() + r * Tk;
            T& l = lp[bh * Tq + i0 + r];
            const bool qpad = m.query_pad && m.query_pad[b * Tq + i0 + r];
            if (qpad && m.zero_padded_queries) {
              std::fill(row, row + Tk, T(0));
              l = std::numeric_limits<T>::infinity();
              continue;
            }
            if (none || qpad) {
              std::fill(row, row + Tk, T(1) / static_cast<T>(Tk));
              l = -std::numeric_limits<T>::infinity();
            } else {
              mask_logits(row, Tk, kpad);
              const T mx = vec::max_of(row, Tk);
              const T sum = vec::exp_shift_sum(row, mx, row, Tk);
              vec::scale(row, T(1) / sum, row, Tk);
              l = mx + std::log(sum);
            }
            if (drop) {
              keep_factors(keep.data(), Tk, (bh * Tq + i0 + r) * Tk, m.dropout);
              times_keep(row, row, keep.data(), Tk);
            }
          }
          gemm<T>(false, false, bq, D, Tk, T(1), s.data(), Tk, vp + V(b, h, 0), V.ld(), T(0), op + O(b, h, i0), O.ld());
        }
      });
    } else {
      STRAND_ASSERT(false, "cpu::attention expects f32/f64 (the op layer converts half types)");
    }
  });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const AttentionMasks& m, double scale, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv) {
  dispatch_float(q.dtype(), "attention_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3), Tk = k.size(2);
      const T* qp = q.data<T>();
      const T* kp = k.data<T>();
      const T* vp = v.data<T>();
      const T* op = out.data<T>();
      const T* gp = dout.data<T>();
      const T* lp = lse.data<T>();
      T* dqp = dq.data<T>();
      T* dkp = dk.data<T>();
      T* dvp = dv.data<T>();
      const Rows Q{q}, K{k}, V{v}, O{out}, G{dout}, DQ{dq}, DK{dk}, DV{dv};
      const T sc = static_cast<T>(scale);
      const bool drop = m.dropout.p > 0;
      parallel_for(B * H, Tq * Tk * D * 10, [&](int64_t t0, int64_t t1) {
        std::vector<T> p(static_cast<size_t>(kBlockQ * Tk)), dp(static_cast<size_t>(kBlockQ * Tk));
        std::vector<T> keep(drop ? static_cast<size_t>(kBlockQ * Tk) : 0);
        for (int64_t bh = t0; bh < t1; ++bh) {
          const int64_t b = bh / H, h = bh % H;
          const uint8_t* kpad = m.key_pad ? m.key_pad + b * Tk : nullptr;
          for (int64_t i0 = 0; i0 < Tq; i0 += kBlockQ) {
            const int64_t bq = std::min(kBlockQ, Tq - i0);
            const T beta = i0 == 0 ? T(0) : T(1);  // the first block initialises dK, dV
            gemm<T>(false, true, bq, Tk, D, sc, qp + Q(b, h, i0), Q.ld(), kp + K(b, h, 0), K.ld(), T(0), p.data(), Tk);
            for (int64_t r = 0; r < bq; ++r) {
              T* row = p.data() + r * Tk;
              const T l = lp[bh * Tq + i0 + r];
              if (drop) keep_factors(keep.data() + r * Tk, Tk, (bh * Tq + i0 + r) * Tk, m.dropout);
              if (std::isinf(l)) {  // a padded query: P = 0; every key padded: uniform
                std::fill(row, row + Tk, l > 0 ? T(0) : T(1) / static_cast<T>(Tk));
                continue;
              }
              mask_logits(row, Tk, kpad);
              vec::exp_shift_sum(row, l, row, Tk);
            }
            // dV += (P ∘ keep)ᵀ dO (the dropped P in dp for the moment)
            const T* pd = p.data();
            if (drop) {
              times_keep(dp.data(), p.data(), keep.data(), bq * Tk);
              pd = dp.data();
            }
            gemm<T>(true, false, Tk, D, bq, T(1), pd, Tk, gp + G(b, h, i0), G.ld(), beta, dvp + DV(b, h, 0), DV.ld());
            // dP = (dO Vᵀ) ∘ keep;  dS = P ∘ (dP − rowsum(dO ∘ O))
            gemm<T>(false, true, bq, Tk, D, T(1), gp + G(b, h, i0), G.ld(), vp + V(b, h, 0), V.ld(), T(0), dp.data(), Tk);
            if (drop)
              times_keep(dp.data(), dp.data(), keep.data(), bq * Tk);
            for (int64_t r = 0; r < bq; ++r) {
              const T delta = vec::dot(gp + G(b, h, i0 + r), op + O(b, h, i0 + r), D);
              T* d = dp.data() + r * Tk;
              const T* pr = p.data() + r * Tk;
              if (std::isinf(lp[bh * Tq + i0 + r])) {  // masked_fill passes no gradient to the logits
                std::fill(d, d + Tk, T(0));
                continue;
              }
              for (int64_t j = 0; j < Tk; ++j) d[j] = pr[j] * (d[j] - delta);
            }
            // dQ = scale dS K;  dK += scale dSᵀ Q
            gemm<T>(false, false, bq, D, Tk, sc, dp.data(), Tk, kp + K(b, h, 0), K.ld(), T(0), dqp + DQ(b, h, i0), DQ.ld());
            gemm<T>(true, false, Tk, D, bq, sc, dp.data(), Tk, qp + Q(b, h, i0), Q.ld(), beta, dkp + DK(b, h, 0), DK.ld());
          }
        }
      });
    } else {
      STRAND_ASSERT(false, "cpu::attention_backward expects f32/f64");
    }
  });
}

}  // namespace strand::cpu
