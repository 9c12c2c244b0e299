// CUDA fused attention: the same function as kernels/cpu/attention.cpp (same masks, the same
// lowest-value masking so every-key-masked rows are uniform, lse = +inf for zeroed padded queries
// and -inf for uniform rows), with no [Tq, Tk] matrix in memory.
//   forward:  one warp per query row; online softmax over the keys (running max, rescaled sum and
//             output accumulator, FlashAttention's recurrence), each lane holding D/32 features.
//   backward: one warp per query row for dQ (and delta = rowsum(dO ∘ O)), then one warp per key row
//             for dK and dV, each recomputing p = exp(s - lse) — no atomics, so the gradients are
//             deterministic.
// Dropout (m.dropout) multiplies each probability by its Philox factor where it meets V (the
// output, dV) and dP, as the CPU kernel does; the softmax's normaliser and lse are taken before it.
// These row kernels serve head dims over 128 (64 in f64); smaller ones take the tiled kernels below
// (shared-memory tiles, FlashAttention-2's loop order, CUDA cores). bf16/f16 on the tensor cores:
// attention_tc.cuh.
//
// The kernels and their launchers, templated on the launch policy (cuda_common.cuh: DeviceLaunch on
// the GPU; the SIMT emulator's in tests/simt/).
#pragma once
#include <cfloat>
#include <cmath>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace strand::cuda::attn {
STRAND_KERNELS_BEGIN


constexpr int kWarpsPerBlock = 8;

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
    const A pd = g.drop.on ? p * drop_factor<A>(g, b, h, i, j) : p;  // the output takes the dropped p
    const T* vr = v + vv.at(b, h, j);
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t f = lane + 32 * c;
      if (f < g.D) acc[c] = acc[c] * corr + pd * A(vr[f]);
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
    dp = warp_sum(dp);
    if (g.drop.on) dp *= drop_factor<A>(g, b, h, i, j);
    const A ds = p * (dp - dl) * A(g.scale);
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
    const A keep = g.drop.on ? drop_factor<A>(g, b, h, i, j) : A(1);
    const A ds = isinf(l) ? A(0) : p * (dp * keep - A(delta[bh * g.Tq + i])) * A(g.scale);
    for (int c = 0; c < kMaxPerLane; ++c) {
      const int64_t f = lane + 32 * c;
      if (f < g.D) {
        av[c] += p * keep * A(gr[f]);
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

// ---------------- tiled kernels (head dim up to 128) ----------------
// FlashAttention-2's blocking without tensor cores: a block of 256 threads owns a 64-row tile and
// streams 64-row tiles of the other operand through shared memory. Thread (tr, tc) = (tid / 16,
// tid % 16) holds rows tr*4 + i (i < 4) and columns tc + 16*j of every 64 x 64 score tile, and
// DM/16 columns of the 64 x DM output tile (out_col: runs of up to 16 bytes, the half-warp's runs
// side by side), so a row's 16 owners are lanes of one half-warp and reduce with shuffles. DM is the head dim rounded up to 32, 64 or 128
// (zero-padded features add nothing). Three kernels: forward (online softmax), dQ (also writes
// delta = rowsum(dO ∘ O)), and dK/dV (one key tile per block) — no atomics, so the gradients stay
// deterministic.
//
// Shared-memory reads are 16-byte runs: a tile row holds DM + kVec elements (kVec: 16 bytes'
// worth), which keeps every row 16-byte aligned and puts a half-warp's 16 rows on distinct banks
// (two wavefronts per 256 bytes, the minimum). With one 4-byte read per two FMAs (the layout
// before, rows of DM + 1) the inner products were bound by shared-memory bandwidth at half the
// FMA rate; now it is one 16-byte read per eight FMAs in mm_abt and per four in mm_ab_acc. The
// order of every sum is unchanged.
constexpr int kTile = 64, kTiledThreads = 256;
template <class A>
constexpr int kVec = 16 / int(sizeof(A));  // 4 f32, 2 f64
template <class A, int DM>
constexpr int kRow = DM + kVec<A>;  // operand tile row stride
template <class A>
constexpr int kPStride = kTile + kVec<A>;  // score tile row stride
// The output column of a thread's e-th output value: runs of W = min(DM/16, kVec) columns, the 16
// threads' runs side by side (one 16 * W-wide stripe per run), so their reads of a tile row are
// one contiguous span.
template <class A, int DM>
constexpr int kOutRun = DM / 16 < kVec<A> ? DM / 16 : kVec<A>;
template <class A, int DM>
__device__ __forceinline__ int out_col(int tc, int e) {
  constexpr int W = kOutRun<A, DM>;
  return (e / W) * 16 * W + tc * W + e % W;
}
// W consecutive elements of a shared tile, read at once
template <class A, int W>
struct alignas(sizeof(A) * W) Run {
  A x[W];
};
template <int W, class A>
__device__ __forceinline__ Run<A, W> read_run(const A* p) {
#if defined(STRAND_SIMT_EMULATOR)  // a GPU faults on a misaligned vector read; the emulator says so
  STRAND_CHECK(reinterpret_cast<uintptr_t>(p) % alignof(Run<A, W>) == 0, "attention: misaligned ",
               sizeof(Run<A, W>), "-byte shared-memory read at ", static_cast<const void*>(p));
#endif
  return *reinterpret_cast<const Run<A, W>*>(p);
}

// rows [r0, r0 + 64) of a [rows, D] matrix (row stride given, unit last stride) into s [64][kRow],
// zeros past the last row and the last feature
template <class A, int DM>
__device__ void load_tile(A* s, const A* base, int64_t row_stride, int64_t r0, int64_t rows, int64_t D) {
  for (int e = threadIdx.x; e < kTile * DM; e += kTiledThreads) {
    const int r = e / DM, d = e % DM;
    s[r * kRow<A, DM> + d] = r0 + r < rows && d < D ? base[(r0 + r) * row_stride + d] : A(0);
  }
}
// acc[i][j] = sum_d a[tr*4 + i][d] * b[tc + 16 j][d]   (a, b: [64][kRow])
template <class A, int DM>
__device__ void mm_abt(const A* a, const A* b, A (&acc)[4][4], int tr, int tc) {
  constexpr int V = kVec<A>, R = kRow<A, DM>;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0;
#pragma unroll 2
  for (int d = 0; d < DM; d += V) {
    Run<A, V> av[4], bv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) av[i] = read_run<V>(a + (tr * 4 + i) * R + d);
#pragma unroll
    for (int j = 0; j < 4; ++j) bv[j] = read_run<V>(b + (tc + 16 * j) * R + d);
#pragma unroll
    for (int u = 0; u < V; ++u)
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i].x[u] * bv[j].x[u];
  }
}
// out[i][e] += sum_c p[tr*4 + i][c] * b[c][out_col(tc, e)]   (p: [64][kPStride], b: [64][kRow])
template <class A, int DM>
__device__ void mm_ab_acc(const A* p, const A* b, A (&out)[4][DM / 16], int tr, int tc) {
  constexpr int V = kVec<A>, R = kRow<A, DM>, E = DM / 16, W = kOutRun<A, DM>;
#pragma unroll 2
  for (int c0 = 0; c0 < kTile; c0 += V) {
    Run<A, V> pv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) pv[i] = read_run<V>(p + (tr * 4 + i) * kPStride<A> + c0);
#pragma unroll
    for (int u = 0; u < V; ++u) {
      const A* brow = b + (c0 + u) * R;
#pragma unroll
      for (int e0 = 0; e0 < E; e0 += W) {
        const Run<A, W> bv = read_run<W>(brow + out_col<A, DM>(tc, e0));
#pragma unroll
        for (int w = 0; w < W; ++w)
#pragma unroll
          for (int i = 0; i < 4; ++i) out[i][e0 + w] += pv[i].x[u] * bv.x[w];
      }
    }
  }
}
template <class A>
__device__ A half_warp_max(A v) {
  for (int o = 8; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <class A>
__device__ A half_warp_sum(A v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class A, int DM>
__device__ void store_rows(const A (&acc)[4][DM / 16], A* base, View4 w, int64_t b, int64_t h, int64_t r0, int64_t rows,
                           int64_t D, int tr, int tc) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = r0 + tr * 4 + i;
    if (r >= rows) continue;
#pragma unroll
    for (int e = 0; e < DM / 16; ++e) {
      const int64_t d = out_col<A, DM>(tc, e);
      if (d >= D) continue;
      base[w.at(b, h, r) + d] = acc[i][e];
    }
  }
}

template <class A, int DM>
__global__ void __launch_bounds__(kTiledThreads) attn_fwd_tiled(Geometry g, const A* q, View4 qv, const A* k, View4 kv,
                                                                const A* v, View4 vv, A* o, View4 ov, A* lse) {
  unsigned char* const smem_raw = dynamic_smem();
  A* Qs = reinterpret_cast<A*>(smem_raw);
  A* Ks = Qs + kTile * kRow<A, DM>;
  A* Vs = Ks + kTile * kRow<A, DM>;
  A* Ps = Vs + kTile * kRow<A, DM>;
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, q0 = int64_t(blockIdx.x) * kTile;
  const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
  load_tile<A, DM>(Qs, q + qv.at(b, h, 0), qv.t, q0, g.Tq, g.D);
  A m[4], l[4], acc[4][DM / 16];
  bool qpad[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = q0 + tr * 4 + i;
    qpad[i] = g.query_pad && r < g.Tq && g.query_pad[b * g.Tq + r];
    m[i] = -INFINITY;
    l[i] = 0;
#pragma unroll
    for (int e = 0; e < DM / 16; ++e) acc[i][e] = 0;
  }
  for (int64_t k0 = 0; k0 < g.Tk; k0 += kTile) {
    __syncthreads();  // the previous tile's K, V and P are read
    load_tile<A, DM>(Ks, k + kv.at(b, h, 0), kv.t, k0, g.Tk, g.D);
    load_tile<A, DM>(Vs, v + vv.at(b, h, 0), vv.t, k0, g.Tk, g.D);
    __syncthreads();
    A s[4][4];
    mm_abt<A, DM>(Qs, Ks, s, tr, tc);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      A mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t c = k0 + tc + 16 * j;
        if (c >= g.Tk) s[i][j] = -INFINITY;  // past the last key: no weight at all
        else if (qpad[i] || (g.key_pad && g.key_pad[b * g.Tk + c])) s[i][j] = lowest<A>();
        else s[i][j] *= A(g.scale);
        mx = max(mx, s[i][j]);
      }
      const A mn = max(m[i], half_warp_max(mx));  // finite: every tile holds a real key
      const A corr = exp(m[i] - mn);
      A rs = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const A p = exp(s[i][j] - mn);
        rs += p;
        const int64_t c = k0 + tc + 16 * j, r = q0 + tr * 4 + i;
        // P V takes the dropped probabilities; the normaliser l does not
        Ps[(tr * 4 + i) * kPStride<A> + tc + 16 * j] =
            g.drop.on && c < g.Tk && r < g.Tq ? p * drop_factor<A>(g, b, h, r, c) : p;
      }
      l[i] = l[i] * corr + half_warp_sum(rs);
      m[i] = mn;
#pragma unroll
      for (int e = 0; e < DM / 16; ++e) acc[i][e] *= corr;
    }
    __syncthreads();
    mm_ab_acc<A, DM>(Ps, Vs, acc, tr, tc);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = q0 + tr * 4 + i;
    const bool zero = qpad[i] && g.zero_padded_queries;
#pragma unroll
    for (int e = 0; e < DM / 16; ++e) acc[i][e] = zero ? A(0) : acc[i][e] / l[i];
    if (tc == 0 && r < g.Tq)
      lse[bh * g.Tq + r] = zero ? A(INFINITY) : (m[i] == lowest<A>() ? A(-INFINITY) : A(m[i] + log(l[i])));
  }
  store_rows<A, DM>(acc, o, ov, b, h, q0, g.Tq, g.D, tr, tc);
}

// dQ for one query tile, and delta = rowsum(dO ∘ O) for the dK/dV kernel.
template <class A, int DM>
__global__ void __launch_bounds__(kTiledThreads) attn_bwd_q_tiled(Geometry g, const A* q, View4 qv, const A* k,
                                                                  View4 kv, const A* v, View4 vv, const A* o, View4 ov,
                                                                  const A* dout, View4 gv, const A* lse, A* delta,
                                                                  A* dq, View4 dqv) {
  unsigned char* const smem_raw = dynamic_smem();
  A* Qs = reinterpret_cast<A*>(smem_raw);
  A* Gs = Qs + kTile * kRow<A, DM>;
  A* Ks = Gs + kTile * kRow<A, DM>;
  A* Vs = Ks + kTile * kRow<A, DM>;
  A* Ss = Vs + kTile * kRow<A, DM>;
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, q0 = int64_t(blockIdx.x) * kTile;
  const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
  load_tile<A, DM>(Qs, q + qv.at(b, h, 0), qv.t, q0, g.Tq, g.D);
  load_tile<A, DM>(Gs, dout + gv.at(b, h, 0), gv.t, q0, g.Tq, g.D);
  A l[4], dl[4], acc[4][DM / 16];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = q0 + tr * 4 + i;
    A part = 0;
    if (r < g.Tq)
      for (int64_t d = tc; d < g.D; d += 16) part += A(dout[gv.at(b, h, r) + d]) * A(o[ov.at(b, h, r) + d]);
    dl[i] = half_warp_sum(part);
    l[i] = r < g.Tq ? A(lse[bh * g.Tq + r]) : A(INFINITY);
    if (tc == 0 && r < g.Tq) delta[bh * g.Tq + r] = dl[i];
#pragma unroll
    for (int e = 0; e < DM / 16; ++e) acc[i][e] = 0;
  }
  for (int64_t k0 = 0; k0 < g.Tk; k0 += kTile) {
    __syncthreads();
    load_tile<A, DM>(Ks, k + kv.at(b, h, 0), kv.t, k0, g.Tk, g.D);
    load_tile<A, DM>(Vs, v + vv.at(b, h, 0), vv.t, k0, g.Tk, g.D);
    __syncthreads();
    A s[4][4], dp[4][4];
    mm_abt<A, DM>(Qs, Ks, s, tr, tc);
    mm_abt<A, DM>(Gs, Vs, dp, tr, tc);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t c = k0 + tc + 16 * j;
        A ds = 0;
        if (c < g.Tk && !isinf(l[i])) {  // zeroed or uniform rows pass no gradient to the logits
          const A sv = g.key_pad && g.key_pad[b * g.Tk + c] ? lowest<A>() : s[i][j] * A(g.scale);
          const A dpk = g.drop.on ? dp[i][j] * drop_factor<A>(g, b, h, q0 + tr * 4 + i, c) : dp[i][j];
          ds = prob(sv, l[i], g.Tk) * (dpk - dl[i]) * A(g.scale);
        }
        Ss[(tr * 4 + i) * kPStride<A> + tc + 16 * j] = ds;
      }
    __syncthreads();
    mm_ab_acc<A, DM>(Ss, Ks, acc, tr, tc);
  }
  store_rows<A, DM>(acc, dq, dqv, b, h, q0, g.Tq, g.D, tr, tc);
}

// dK and dV for one key tile (rows = keys, columns = queries of each streamed query tile).
template <class A, int DM>
__global__ void __launch_bounds__(kTiledThreads) attn_bwd_kv_tiled(Geometry g, const A* q, View4 qv, const A* k,
                                                                   View4 kv, const A* v, View4 vv, const A* dout,
                                                                   View4 gv, const A* lse, const A* delta, A* dk,
                                                                   View4 dkv, A* dv, View4 dvv) {
  unsigned char* const smem_raw = dynamic_smem();
  A* Ks = reinterpret_cast<A*>(smem_raw);
  A* Vs = Ks + kTile * kRow<A, DM>;
  A* Qs = Vs + kTile * kRow<A, DM>;
  A* Gs = Qs + kTile * kRow<A, DM>;
  A* Ps = Gs + kTile * kRow<A, DM>;  // P, then dS: one score tile (an A100 gives a block 163 KB)
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, k0 = int64_t(blockIdx.x) * kTile;
  const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
  load_tile<A, DM>(Ks, k + kv.at(b, h, 0), kv.t, k0, g.Tk, g.D);
  load_tile<A, DM>(Vs, v + vv.at(b, h, 0), vv.t, k0, g.Tk, g.D);
  A ak[4][DM / 16], av[4][DM / 16];
  bool kpad[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = k0 + tr * 4 + i;
    kpad[i] = g.key_pad && r < g.Tk && g.key_pad[b * g.Tk + r];
#pragma unroll
    for (int e = 0; e < DM / 16; ++e) ak[i][e] = av[i][e] = 0;
  }
  for (int64_t q0 = 0; q0 < g.Tq; q0 += kTile) {
    __syncthreads();
    load_tile<A, DM>(Qs, q + qv.at(b, h, 0), qv.t, q0, g.Tq, g.D);
    load_tile<A, DM>(Gs, dout + gv.at(b, h, 0), gv.t, q0, g.Tq, g.D);
    __syncthreads();
    A st[4][4], dpt[4][4];
    mm_abt<A, DM>(Ks, Qs, st, tr, tc);
    mm_abt<A, DM>(Vs, Gs, dpt, tr, tc);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t qr = q0 + tc + 16 * j;
      const A l = qr < g.Tq ? A(lse[bh * g.Tq + qr]) : A(INFINITY), dl = qr < g.Tq ? A(delta[bh * g.Tq + qr]) : A(0);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        A p = 0, ds = 0;
        const int64_t key = k0 + tr * 4 + i;
        if (!(isinf(l) && l > 0)) {  // a zeroed query row (or past the last query) has p = 0
          p = prob(kpad[i] ? lowest<A>() : st[i][j] * A(g.scale), l, g.Tk);
          const A keep = g.drop.on && key < g.Tk ? drop_factor<A>(g, b, h, qr, key) : A(1);
          ds = isinf(l) ? A(0) : p * (dpt[i][j] * keep - dl) * A(g.scale);
          p *= keep;  // dV takes the dropped probabilities
        }
        Ps[(tr * 4 + i) * kPStride<A> + tc + 16 * j] = p;
        dpt[i][j] = ds;  // into the score tile once P is used
      }
    }
    __syncthreads();
    mm_ab_acc<A, DM>(Ps, Gs, av, tr, tc);
    __syncthreads();  // P is read
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) Ps[(tr * 4 + i) * kPStride<A> + tc + 16 * j] = dpt[i][j];
    __syncthreads();
    mm_ab_acc<A, DM>(Ps, Qs, ak, tr, tc);
  }
  store_rows<A, DM>(ak, dk, dkv, b, h, k0, g.Tk, g.D, tr, tc);
  store_rows<A, DM>(av, dv, dvv, b, h, k0, g.Tk, g.D, tr, tc);
}

// Shared memory of each tiled kernel: `tiles` [64][kRow] operand tiles and `ptiles` [64][kPStride] tiles.
template <class A, int DM>
size_t tiled_smem(int tiles, int ptiles) {
  return sizeof(A) * (size_t(tiles) * kTile * kRow<A, DM> + size_t(ptiles) * kTile * kPStride<A>);
}
// The rounded head dim of the tiled kernels (0: use the row kernels): up to 128 in f32, 64 in f64,
// at least one key, at most 65,535 (batch, head) pairs, and shared memory the device can give
// (smem_limit, the launch policy's): f32 at 128 needs 152,576 B, within an A100's 166,912; f64 at
// 64 needs 168,960 B, an H100's 232,448 but not an A100's.
template <class T>
int tiled_dm(const Geometry& g, size_t smem_limit) {
  if (g.Tk == 0 || g.Tq == 0) return 0;
  if (g.B * g.H > 65535) return 0;  // the tiled grids put (batch, head) on blockIdx.y
  const int dm = g.D <= 32 ? 32 : g.D <= 64 ? 64 : g.D <= 128 ? 128 : 0;
  if (dm == 0 || (sizeof(T) == 8 && dm > 64)) return 0;
  // the backward kernels need the most: 4 operand tiles and a score tile
  const size_t need = sizeof(T) * (4 * size_t(kTile) * (dm + kVec<T>) + size_t(kTile) * kPStride<T>);
  return need <= smem_limit ? dm : 0;
}
template <class T, class F>
void with_dm(int dm, F&& f) {
  if (dm == 32) f(std::integral_constant<int, 32>{});
  else if (dm == 64) f(std::integral_constant<int, 64>{});
  else if constexpr (sizeof(T) == 4) f(std::integral_constant<int, 128>{});
}
inline dim3 tiled_grid(int64_t rows, const Geometry& g) {
  return dim3(static_cast<unsigned>((rows + kTile - 1) / kTile), static_cast<unsigned>(g.B * g.H));
}

inline unsigned blocks(int64_t rows) { return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

template <class Launch>
void forward(const Launch& launch, const Tensor& q, const Tensor& k, const Tensor& v, const cpu::AttentionMasks& m, double scale,
                       const Tensor& out, const Tensor& lse) {
  dispatch_float(q.dtype(), "attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const Geometry g = geometry(q, k, m, scale);
      const int64_t rows = g.B * g.H * g.Tq;
      if (rows == 0) return;
      if (const int dm = tiled_dm<T>(g, launch.smem_limit())) {
        with_dm<T>(dm, [&](auto c) {
          constexpr int DM = decltype(c)::value;
          launch(attn_fwd_tiled<T, DM>, tiled_grid(g.Tq, g), dim3(kTiledThreads), tiled_smem<T, DM>(3, 1), g, ptr<T>(q),
                 view_of(q), ptr<T>(k), view_of(k), ptr<T>(v), view_of(v), ptr<T>(out), view_of(out), ptr<T>(lse));
        });
        return;
      }
      launch(attn_fwd_kernel<T>, dim3(blocks(rows)), dim3(32 * kWarpsPerBlock), 0, g, ptr<T>(q), view_of(q), ptr<T>(k),
             view_of(k), ptr<T>(v), view_of(v), ptr<T>(out), view_of(out), ptr<T>(lse));
    } else {
      STRAND_CHECK(false, "cuda::attention expects f32/f64 (the op layer converts half types)");
    }
  });
}

template <class Launch>
void backward(const Launch& launch, const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const cpu::AttentionMasks& m, double scale, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
  dispatch_float(q.dtype(), "attention_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const Geometry g = geometry(q, k, m, scale);
      const int64_t qrows = g.B * g.H * g.Tq, krows = g.B * g.H * g.Tk;
      Tensor delta = Tensor::empty({std::max<int64_t>(qrows, 1)}, TensorOptions(q.dtype(), q.device()));
      if (const int dm = tiled_dm<T>(g, launch.smem_limit())) {
        with_dm<T>(dm, [&](auto c) {
          constexpr int DM = decltype(c)::value;
          launch(attn_bwd_q_tiled<T, DM>, tiled_grid(g.Tq, g), dim3(kTiledThreads), tiled_smem<T, DM>(4, 1), g,
                 ptr<T>(q), view_of(q), ptr<T>(k), view_of(k), ptr<T>(v), view_of(v), ptr<T>(out), view_of(out),
                 ptr<T>(dout), view_of(dout), ptr<T>(lse), ptr<T>(delta), ptr<T>(dq), view_of(dq));
          launch(attn_bwd_kv_tiled<T, DM>, tiled_grid(g.Tk, g), dim3(kTiledThreads), tiled_smem<T, DM>(4, 1), g,
                 ptr<T>(q), view_of(q), ptr<T>(k), view_of(k), ptr<T>(v), view_of(v), ptr<T>(dout), view_of(dout),
                 ptr<T>(lse), ptr<T>(delta), ptr<T>(dk), view_of(dk), ptr<T>(dv), view_of(dv));
        });
        return;
      }
      if (qrows > 0) {
        launch(attn_bwd_q_kernel<T>, dim3(blocks(qrows)), dim3(32 * kWarpsPerBlock), 0, g, ptr<T>(q), view_of(q),
               ptr<T>(k), view_of(k), ptr<T>(v), view_of(v), ptr<T>(out), view_of(out), ptr<T>(dout), view_of(dout),
               ptr<T>(lse), ptr<T>(delta), ptr<T>(dq), view_of(dq));
      }
      if (krows > 0) {
        launch(attn_bwd_kv_kernel<T>, dim3(blocks(krows)), dim3(32 * kWarpsPerBlock), 0, g, ptr<T>(q), view_of(q),
               ptr<T>(k), view_of(k), ptr<T>(v), view_of(v), ptr<T>(dout), view_of(dout), ptr<T>(lse), ptr<T>(delta),
               ptr<T>(dk), view_of(dk), ptr<T>(dv), view_of(dv));
      }
    } else {
      STRAND_CHECK(false, "cuda::attention_backward expects f32/f64");
    }
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::attn
