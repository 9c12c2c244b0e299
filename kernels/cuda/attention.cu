// CUDA fused attention: the same function as kernels/cpu/attention.cpp (same masks, the same
// lowest-value masking so every-key-masked rows are uniform, lse = +inf for zeroed padded queries
// and -inf for uniform rows), with no [Tq, Tk] matrix in memory.
//   forward:  one warp per query row; online softmax over the keys (running max, rescaled sum and
//             output accumulator, FlashAttention's recurrence), each lane holding D/32 features.
//   backward: one warp per query row for dQ (and delta = rowsum(dO ∘ O)), then one warp per key row
//             for dK and dV, each recomputing p = exp(s - lse) — no atomics, so the gradients are
//             deterministic.
// This is the straightforward reference-speed GPU version; the tiled tensor-core kernel is the
// next step (issue 8).
#include <cfloat>
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace strand::cuda {

namespace {

constexpr int kMaxPerLane = 8;  // head dim up to 256
constexpr int kWarpsPerBlock = 8;

struct View4 {  // element strides of a [B, H, T, D] tensor (unit last stride)
  int64_t b, h, t;
  __device__ int64_t at(int64_t bi, int64_t hi, int64_t ti) const { return bi * b + hi * h + ti * t; }
};
View4 view_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

struct Geometry {
  int64_t B, H, Tq, Tk, D;
  double scale;
  const uint8_t* key_pad;
  const uint8_t* query_pad;
  bool zero_padded_queries;
};

template <class A>
__device__ A lowest() {
  return sizeof(A) == 8 ? A(-DBL_MAX) : A(-FLT_MAX);
}

// s = scale · q·k over the warp (q held per lane), masked to the lowest value for a padded key.
template <class T, class A>
__device__ A logit(const Geometry& g, const A (&q)[kMaxPerLane], const T* k, View4 kv, int64_t b, int64_t h, int64_t j,
                   int lane) {
  A d = 0;
  const T* kr = k + kv.at(b, h, j);
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t f = lane + 32 * c;
    if (f < g.D) d += q[c] * A(kr[f]);
  }
  d = warp_sum(d) * A(g.scale);
  return g.key_pad && g.key_pad[b * g.Tk + j] ? lowest<A>() : d;
}

template <class T>
__global__ void attn_fwd_kernel(Geometry g, const T* q, View4 qv, const T* k, View4 kv, const T* v, View4 vv, T* o,
                                View4 ov, T* lse) {
  using A = T;  // f32 or f64 (the op layer converts half types)
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= g.B * g.H * g.Tq) return;
  const int64_t i = row % g.Tq, bh = row / g.Tq, h = bh % g.H, b = bh / g.H;
  T* orow = o + ov.at(b, h, i);
  const bool qpad = g.query_pad && g.query_pad[b * g.Tq + i];
  if (qpad && g.zero_padded_queries) {
    for (int64_t f = lane; f < g.D; f += 32) orow[f] = T(0);
    if (lane == 0) lse[row] = T(INFINITY);
    return;
  }
  A qr[kMaxPerLane], acc[kMaxPerLane];
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t f = lane + 32 * c;
    qr[c] = f < g.D ? A(q[qv.at(b, h, i) + f]) : A(0);
    acc[c] = 0;
  }
  A m = -INFINITY, l = 0;
  for (int64_t j = 0; j < g.Tk; ++j) {
    // a padded query with uniform rows sees every key masked
    const A s = qpad ? lowest<A>() : logit<T, A>(g, qr, k, kv, b, h, j, lane);
    const A mn = max(m, s);
    const A corr = exp(m - mn), p = exp(s - mn);
    l = l * corr + p;
    const T* vr = v + vv.at(b, h, j);
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t f = lane + 32 * c;
      if (f < g.D) acc[c] = acc[c] * corr + p * A(vr[f]);
    }
    m = mn;
  }
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t f = lane + 32 * c;
    if (f < g.D) orow[f] = T(acc[c] / l);
  }
  // every key masked (or a uniform padded query): the logits were all `lowest`
  if (lane == 0) lse[row] = g.Tk == 0 ? T(-INFINITY) : (m == lowest<A>() ? T(-INFINITY) : T(m + log(l)));
}

// p(i, j) from the saved lse: +inf -> 0 (zeroed query), -inf -> 1/Tk (uniform row)
template <class A>
__device__ A prob(A s, A l, int64_t Tk) {
  if (isinf(l)) return l > 0 ? A(0) : A(1) / A(Tk);
  return exp(s - l);
}

template <class T>
__global__ void attn_bwd_q_kernel(Geometry g, const T* q, View4 qv, const T* k, View4 kv, const T* v, View4 vv,
                                  const T* o, View4 ov, const T* dout, View4 gv, const T* lse, T* delta, T* dq,
                                  View4 dqv) {
  using A = T;
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= g.B * g.H * g.Tq) return;
  const int64_t i = row % g.Tq, bh = row / g.Tq, h = bh % g.H, b = bh / g.H;
  A qr[kMaxPerLane], gr[kMaxPerLane], acc[kMaxPerLane];
  A dl = 0;
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t f = lane + 32 * c;
    qr[c] = f < g.D ? A(q[qv.at(b, h, i) + f]) : A(0);
    gr[c] = f < g.D ? A(dout[gv.at(b, h, i) + f]) : A(0);
    dl += f < g.D ? gr[c] * A(o[ov.at(b, h, i) + f]) : A(0);
    acc[c] = 0;
  }
  dl = warp_sum(dl);
  if (lane == 0) delta[row] = T(dl);
  const A l = A(lse[row]);
  T* dqr = dq + dqv.at(b, h, i);
  if (isinf(l)) {  // zeroed or uniform row: no gradient reaches the logits
    for (int64_t f = lane; f < g.D; f += 32) dqr[f] = T(0);
    return;
  }
  for (int64_t j = 0; j < g.Tk; ++j) {
    const A s = logit<T, A>(g, qr, k, kv, b, h, j, lane);
    const A p = prob(s, l, g.Tk);
    A dp = 0;
    const T* vr = v + vv.at(b, h, j);
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t f = lane + 32 * c;
      if (f < g.D) dp += gr[c] * A(vr[f]);
    }
    const A ds = p * (warp_sum(dp) - dl) * A(g.scale);
    const T* kr = k + kv.at(b, h, j);
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t f = lane + 32 * c;
      if (f < g.D) acc[c] += ds * A(kr[f]);
    }
  }
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t f = lane + 32 * c;
    if (f < g.D) dqr[f] = T(acc[c]);
  }
}

template <class T>
__global__ void attn_bwd_kv_kernel(Geometry g, const T* q, View4 qv, const T* k, View4 kv, const T* v, View4 vv,
                                   const T* dout, View4 gv, const T* lse, const T* delta, T* dk, View4 dkv, T* dv,
                                   View4 dvv) {
  using A = T;
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  if (row >= g.B * g.H * g.Tk) return;
  const int64_t j = row % g.Tk, bh = row / g.Tk, h = bh % g.H, b = bh / g.H;
  A kr[kMaxPerLane], vr[kMaxPerLane], ak[kMaxPerLane], av[kMaxPerLane];
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t f = lane + 32 * c;
    kr[c] = f < g.D ? A(k[kv.at(b, h, j) + f]) : A(0);
    vr[c] = f < g.D ? A(v[vv.at(b, h, j) + f]) : A(0);
    ak[c] = av[c] = 0;
  }
  const bool kpad = g.key_pad && g.key_pad[b * g.Tk + j];
  for (int64_t i = 0; i < g.Tq; ++i) {
    const A l = A(lse[bh * g.Tq + i]);
    if (isinf(l) && l > 0) continue;  // zeroed query row: p = 0
    const T* qr = q + qv.at(b, h, i);
    const T* gr = dout + gv.at(b, h, i);
    A s = 0, dp = 0;
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t f = lane + 32 * c;
      if (f < g.D) {
        s += A(qr[f]) * kr[c];
        dp += A(gr[f]) * vr[c];
      }
    }
    s = kpad ? lowest<A>() : warp_sum(s) * A(g.scale);
    dp = warp_sum(dp);
    const A p = prob(s, l, g.Tk);
    const A ds = isinf(l) ? A(0) : p * (dp - A(delta[bh * g.Tq + i])) * A(g.scale);
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t f = lane + 32 * c;
      if (f < g.D) {
        av[c] += p * A(gr[f]);
        ak[c] += ds * A(qr[f]);
      }
    }
  }
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int64_t f = lane + 32 * c;
    if (f < g.D) {
      dk[dkv.at(b, h, j) + f] = T(ak[c]);
      dv[dvv.at(b, h, j) + f] = T(av[c]);
    }
  }
}

Geometry geometry(const Tensor& q, const Tensor& k, const cpu::AttentionMasks& m, double scale) {
  STRAND_CHECK(q.size(3) <= 32 * kMaxPerLane, "CUDA attention supports head dims up to ", 32 * kMaxPerLane, ", got ",
               q.size(3));
  return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), scale, m.key_pad, m.query_pad, m.zero_padded_queries};
}
unsigned blocks(int64_t rows) { return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const cpu::AttentionMasks& m, double scale,
                       const Tensor& out, const Tensor& lse) {
  dispatch_float(q.dtype(), "attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const Geometry g = geometry(q, k, m, scale);
      const int64_t rows = g.B * g.H * g.Tq;
      if (rows == 0) return;
      attn_fwd_kernel<T><<<blocks(rows), 32 * kWarpsPerBlock>>>(g, ptr<T>(q), view_of(q), ptr<T>(k), view_of(k),
                                                                  ptr<T>(v), view_of(v), ptr<T>(out), view_of(out),
                                                                  ptr<T>(lse));
      STRAND_CUDA_LAUNCH_CHECK();
    } else {
      STRAND_CHECK(false, "cuda::attention expects f32/f64 (the op layer converts half types)");
    }
  });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const cpu::AttentionMasks& m, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
  dispatch_float(q.dtype(), "attention_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const Geometry g = geometry(q, k, m, scale);
      const int64_t qrows = g.B * g.H * g.Tq, krows = g.B * g.H * g.Tk;
      Tensor delta = Tensor::empty({std::max<int64_t>(qrows, 1)}, TensorOptions(q.dtype(), q.device()));
      if (qrows > 0) {
        attn_bwd_q_kernel<T><<<blocks(qrows), 32 * kWarpsPerBlock>>>(
            g, ptr<T>(q), view_of(q), ptr<T>(k), view_of(k), ptr<T>(v), view_of(v), ptr<T>(out), view_of(out),
            ptr<T>(dout), view_of(dout), ptr<T>(lse), ptr<T>(delta), ptr<T>(dq), view_of(dq));
        STRAND_CUDA_LAUNCH_CHECK();
      }
      if (krows > 0) {
        attn_bwd_kv_kernel<T><<<blocks(krows), 32 * kWarpsPerBlock>>>(
            g, ptr<T>(q), view_of(q), ptr<T>(k), view_of(k), ptr<T>(v), view_of(v), ptr<T>(dout), view_of(dout),
            ptr<T>(lse), ptr<T>(delta), ptr<T>(dk), view_of(dk), ptr<T>(dv), view_of(dv));
        STRAND_CUDA_LAUNCH_CHECK();
      }
    } else {
      STRAND_CHECK(false, "cuda::attention_backward expects f32/f64");
    }
  });
}

}  // namespace strand::cuda
