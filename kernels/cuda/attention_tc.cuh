// CUDA fused attention on the tensor cores: bf16/f16 q, k, v (the bf16-mixed attention of ESM-2,
// AIDO.RNA and the fusion heads), head dims up to 128, the same function, masks and dropout as
// attention.cuh (and the CPU kernel), the logsumexp saved in f32.
//
// FlashAttention-2's algorithm with its register layout: a block of 4 warps owns 64 rows, each warp
// 16, and streams 64-row tiles of the other operand through shared memory. Every product is
// mma.sync.m16n8k16 (f32 accumulation): S = Q Kᵀ and dP = dO Vᵀ leave their scores in the
// accumulator layout (thread (g, t) = (lane / 4, lane % 4) holds rows g and g + 8, columns 2t and
// 2t + 1 of each 8-column tile), where the online softmax reduces a row over the 4 threads of a quad;
// the probabilities (and dS) are rounded to bf16/f16 and reused in place as the A operand of the
// next product (P V, dS K, Pᵀ dO, dSᵀ Q), as FlashAttention does. Every tile in shared memory is
// row-major (filled by 16-byte loads where the operand allows); the B fragments come from it by
// ldmatrix.x4 (four 8x8 matrices per instruction), transposed by ldmatrix.trans for the products
// whose reduction runs along the tile's rows (P V, dS K, Pᵀ dO, dSᵀ Q). Rows are padded by 8 halves
// (16 bytes), which puts the 8 row addresses of each matrix in distinct bank groups.
//   forward: one block per 64 queries;
//   dQ:      one block per 64 queries (and delta = rowsum(dO ∘ O) for the next kernel);
//   dK, dV:  one block per 64 keys.
// No atomics: the gradients are deterministic. sm_80 or newer.
//
// The kernels and their launch sequence live here, templated on how a kernel is launched: the CUDA
// policy (attention_tc.cu) or the SIMT emulator of the tests (tests/simt/), which runs these same
// kernels on the CPU.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <type_traits>

#include "kernels/cuda/attention_common.cuh"

namespace strand::cuda::tc {
STRAND_KERNELS_BEGIN

constexpr int kRows = 64, kThreads4 = 128;  // 64 rows per block, 4 warps of 16 rows

template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(STRAND_SIMT_EMULATOR)
  simt::mma16816<T>(c, a, b0, b1);  // tests/simt: the same product on the CPU
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, bf16>) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  __trap();  // the host refuses these kernels below sm_80
#endif
}

// Two values rounded to T, the first in the low half (the lower column of an A fragment pair).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, bf16>) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}
__device__ __forceinline__ uint32_t lds32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: four 8x8 matrices of halves, lanes 8j .. 8j + 7
// giving the addresses of matrix j's rows (16 bytes each); r[j] of lane (g, t) = (lane / 4, lane % 4)
// is row g, columns 2t and 2t + 1 of matrix j, or with kTrans rows 2t and 2t + 1 of column g.
template <bool kTrans>
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t* row) {
#if defined(STRAND_SIMT_EMULATOR)
  simt::ldmatrix_x4<kTrans>(r, row);  // tests/simt: the same load on the CPU
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#else
  __trap();
#endif
}

// Rows [r0, r0 + 64) of a [rows, D] operand (row stride `rs`, unit last stride) into a row-major
// shared-memory tile s[r * stride + d], zero past the last row and feature. Full-width rows (D = DM)
// that start on 16-byte boundaries move 8 halves per load (uint4; the tile's rows, DM + 8 halves
// apart, keep that alignment); other operands go half by half.
template <int DM, class T>
__device__ void load_tile(uint16_t* s, int stride, const T* base, int64_t rs, int64_t r0, int64_t rows, int64_t D) {
  const uint16_t* src = reinterpret_cast<const uint16_t*>(base);
  const bool wide = D == DM && rs % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0;  // same for the block
  if (wide) {
    constexpr int kPerRow = DM / 8;
#pragma unroll 1
    for (int e = threadIdx.x; e < kRows * kPerRow; e += kThreads4) {
      const int r = e / kPerRow, d = (e % kPerRow) * 8;
      const uint4 u = r0 + r < rows ? *reinterpret_cast<const uint4*>(src + (r0 + r) * rs + d) : make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(s + r * stride + d) = u;
    }
    return;
  }
#pragma unroll 1
  for (int e = threadIdx.x; e < kRows * DM; e += kThreads4) {
    const int r = e / DM, d = e % DM;
    const uint16_t x = r0 + r < rows && d < D ? src[(r0 + r) * rs + d] : uint16_t(0);
    s[r * stride + d] = x;
  }
}

// cp.async (sm_80+): 16 bytes from global to shared memory without a register round trip, zeros
// when `valid` is false (gmem is then not read); it lands when the thread's group is waited for
// (cp_async_wait<N>: all but the newest N committed groups), and other threads see it after a
// barrier that follows that wait.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
#if defined(STRAND_SIMT_EMULATOR)
  simt::cp_async16(smem, gmem, valid ? 16 : 0);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0) : "memory");
#else
  __trap();  // the host refuses these kernels below sm_80
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(STRAND_SIMT_EMULATOR)
  simt::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  __trap();
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(STRAND_SIMT_EMULATOR)
  simt::cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
  __trap();
#endif
}

// load_tile by cp.async into the thread's open group, when the rows can go 16 bytes at a time
// (load_tile's wide case; the same for the whole block); false, having issued nothing, otherwise.
template <int DM, class T>
__device__ bool load_tile_async(uint16_t* s, int stride, const T* base, int64_t rs, int64_t r0, int64_t rows,
                                int64_t D) {
  const uint16_t* src = reinterpret_cast<const uint16_t*>(base);
  if (!(D == DM && rs % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0)) return false;
  constexpr int kPerRow = DM / 8;
#pragma unroll 1
  for (int e = threadIdx.x; e < kRows * kPerRow; e += kThreads4) {
    const int r = e / kPerRow, d = (e % kPerRow) * 8;
    const bool in = r0 + r < rows;
    cp_async16(s + r * stride + d, in ? src + (r0 + r) * rs + d : src, in);
  }
  return true;
}

// The A fragments of a warp's 16 rows (rows w0 .. w0 + 15 of a row-major tile), all DM features.
template <int DM>
__device__ void load_a(uint32_t (&a)[DM / 16][4], const uint16_t* s, int stride, int w0, int g, int t) {
#pragma unroll
  for (int kk = 0; kk < DM / 16; ++kk) {
    const uint16_t* p = s + (w0 + g) * stride + kk * 16 + 2 * t;
    a[kk][0] = lds32(p);
    a[kk][1] = lds32(p + 8 * stride);
    a[kk][2] = lds32(p + 8);
    a[kk][3] = lds32(p + 8 * stride + 8);
  }
}

// A block's own 64 rows of two operands (x, y: [rows, D] views at row stride xs, ys) staged through
// shared memory into each warp's A fragments of its 16 rows.
template <int DM, class T>
__device__ void own_rows(uint32_t (&xa)[DM / 16][4], uint32_t (&ya)[DM / 16][4], uint16_t* xs_tile, uint16_t* ys_tile,
                         const T* x, int64_t xs, const T* y, int64_t ys, int64_t r0, int64_t rows, int64_t D, int w0,
                         int g, int t) {
  constexpr int RS = DM + 8;
  load_tile<DM>(xs_tile, RS, x, xs, r0, rows, D);
  load_tile<DM>(ys_tile, RS, y, ys, r0, rows, D);
  __syncthreads();
  load_a<DM>(xa, xs_tile, RS, w0, g, t);
  load_a<DM>(ya, ys_tile, RS, w0, g, t);
}

// c[nt] = A · B where B's column n (of 64) is row n of the row-major tile `s` (all DM features):
// the [16 x 64] scores of a warp's rows against a streamed tile. One ldmatrix.x4 gives the B
// fragments of two 8-column tiles for one 16-feature chunk: matrix j covers rows (2 nt2 + j / 2) · 8
// and features kk · 16 + (j % 2) · 8, so r = {b0, b1} of tile 2 nt2, then of tile 2 nt2 + 1.
template <class T, int DM>
__device__ void scores(float (&c)[8][4], const uint32_t (&a)[DM / 16][4], const uint16_t* s, int stride, int lane) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0;
  const int j = lane / 8;
#pragma unroll
  for (int nt2 = 0; nt2 < 4; ++nt2)
#pragma unroll
    for (int kk = 0; kk < DM / 16; ++kk) {
      uint32_t r[4];
      ldsm_x4<false>(r, s + ((2 * nt2 + j / 2) * 8 + lane % 8) * stride + kk * 16 + (j % 2) * 8);
      mma16816<T>(c[2 * nt2], a[kk], r[0], r[1]);
      mma16816<T>(c[2 * nt2 + 1], a[kk], r[2], r[3]);
    }
}

// A warp's [16 x 64] accumulator tile (scores, P or dS) rounded to T as the A fragments of the next
// product: the 16-column k-chunk kk is made of 8-column tiles 2kk and 2kk + 1.
template <class T>
__device__ void pack_tile(uint32_t (&a)[4][4], const float (&p)[8][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    a[kk][0] = pack2<T>(p[2 * kk][0], p[2 * kk][1]);
    a[kk][1] = pack2<T>(p[2 * kk][2], p[2 * kk][3]);
    a[kk][2] = pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[kk][3] = pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
  }
}

// acc += P · X where P [16 x 64] is given as packed A fragments and X [64 x DM] is the row-major
// tile `s`. The B fragments (two rows of X, one column) come transposed by ldmatrix.x4.trans: matrix j
// covers rows kk · 16 + (j % 2) · 8 and columns (2 dt2 + j / 2) · 8, so r = {b0, b1} of the 8-column
// tile 2 dt2, then of 2 dt2 + 1.
template <class T, int DM>
__device__ void accumulate(float (&acc)[DM / 8][4], const uint32_t (&a)[4][4], const uint16_t* s, int stride,
                           int lane) {
  const int j = lane / 8;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int dt2 = 0; dt2 < DM / 16; ++dt2) {
      uint32_t r[4];
      ldsm_x4<true>(r, s + (kk * 16 + (j % 2) * 8 + lane % 8) * stride + (2 * dt2 + j / 2) * 8);
      mma16816<T>(acc[2 * dt2], a[kk], r[0], r[1]);
      mma16816<T>(acc[2 * dt2 + 1], a[kk], r[2], r[3]);
    }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// A warp's [16 x DM] accumulator rows (rows r0 + g and r0 + g + 8) into out, times each row's factor;
// a factor of 0 writes zeros (selected, so an inf or NaN in a zeroed row's sum cannot leak).
template <class T, int DM>
__device__ void store_acc(const float (&acc)[DM / 8][4], const float (&f)[2], T* base, View4 w, int64_t b, int64_t h,
                          int64_t r0, int64_t rows, int64_t D, int g, int t) {
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int64_t r = r0 + g + 8 * hr;
    if (r >= rows) continue;
    T* row = base + w.at(b, h, r);
#pragma unroll
    for (int dt = 0; dt < DM / 8; ++dt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t d = dt * 8 + 2 * t + e;
        if (d < D) row[d] = f[hr] == 0.f ? T(0.f) : T(acc[dt][2 * hr + e] * f[hr]);
      }
  }
}

template <int DM>
constexpr int row_stride() {
  return DM + 8;  // halves: a row-major tile's row
}
template <class T, int DM>
__global__ void __launch_bounds__(kThreads4) attn_fwd_tc(Geometry g, const T* q, View4 qv, const T* k, View4 kv,
                                                         const T* v, View4 vv, T* o, View4 ov, float* lse) {
  unsigned char* const tc_smem = dynamic_smem();
  constexpr int RS = row_stride<DM>();
  // Two buffers of a K and a V tile ([64][RS] each): while one is read, the next tiles arrive in the
  // other by cp.async (FlashAttention-2's pipelining). Buffer 1's K tile holds the Q tile at first.
  uint16_t* const tiles = reinterpret_cast<uint16_t*>(tc_smem);
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, q0 = int64_t(blockIdx.x) * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, t = lane % 4, w0 = warp * 16;
  const float scale = static_cast<float>(g.scale);
  auto Ks = [&](int buf) { return tiles + (2 * buf) * kRows * RS; };
  auto Vs = [&](int buf) { return tiles + (2 * buf + 1) * kRows * RS; };

  load_tile<DM>(Ks(1), RS, q + qv.at(b, h, 0), qv.t, q0, g.Tq, g.D);
  __syncthreads();
  uint32_t qa[DM / 16][4];
  load_a<DM>(qa, Ks(1), RS, w0, gr, t);
  __syncthreads();  // every warp has its Q fragments before buffer 1 is refilled
  const T* const kbase = k + kv.at(b, h, 0);
  const T* const vbase = v + vv.at(b, h, 0);
  auto fetch = [&](int buf, int64_t k0) {  // the K and V tiles of keys k0 .. into `buf`, as one group
    if (!load_tile_async<DM>(Ks(buf), RS, kbase, kv.t, k0, g.Tk, g.D))
      load_tile<DM>(Ks(buf), RS, kbase, kv.t, k0, g.Tk, g.D);
    if (!load_tile_async<DM>(Vs(buf), RS, vbase, vv.t, k0, g.Tk, g.D))
      load_tile<DM>(Vs(buf), RS, vbase, vv.t, k0, g.Tk, g.D);
    cp_async_commit();
  };
  fetch(0, 0);

  int64_t row[2];
  bool qpad[2];
  float m[2], l[2], acc[DM / 8][4];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    row[hr] = q0 + w0 + gr + 8 * hr;
    qpad[hr] = g.query_pad && row[hr] < g.Tq && g.query_pad[b * g.Tq + row[hr]];
    m[hr] = -INFINITY;
    l[hr] = 0;
  }
#pragma unroll
  for (int dt = 0; dt < DM / 8; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0;

  for (int64_t k0 = 0, tile = 0; k0 < g.Tk; k0 += kRows, ++tile) {
    const int buf = static_cast<int>(tile & 1);
    if (k0 + kRows < g.Tk) {
      fetch(buf ^ 1, k0 + kRows);  // the next tiles, into the buffer the previous pass read
      cp_async_wait<1>();          // this pass's tiles (all groups but the newest) have landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // ... every thread's copies of them
    float s[8][4];
    scores<T, DM>(s, qa, Ks(buf), RS, lane);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t c = k0 + nt * 8 + 2 * t + (i & 1);
        const int hr = i >> 1;
        float x = s[nt][i];
        if (c >= g.Tk) x = -INFINITY;  // past the last key: no weight at all
        else if (qpad[hr] || (g.key_pad && g.key_pad[b * g.Tk + c])) x = -FLT_MAX;
        else x *= scale;
        s[nt][i] = x;
        mx[hr] = fmaxf(mx[hr], x);
      }
    float corr[2], rs[2] = {0, 0};
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const float mn = fmaxf(m[hr], quad_max(mx[hr]));  // finite: every tile holds a real key
      corr[hr] = expf(m[hr] - mn);
      m[hr] = mn;
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int hr = i >> 1;
        const float p = expf(s[nt][i] - m[hr]);
        rs[hr] += p;
        const int64_t c = k0 + nt * 8 + 2 * t + (i & 1);
        // P V takes the dropped probabilities; the normaliser l does not
        s[nt][i] = g.drop.on && c < g.Tk && row[hr] < g.Tq ? p * drop_factor<float>(g, b, h, row[hr], c) : p;
      }
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) l[hr] = l[hr] * corr[hr] + quad_sum(rs[hr]);
#pragma unroll
    for (int dt = 0; dt < DM / 8; ++dt) {
      acc[dt][0] *= corr[0];
      acc[dt][1] *= corr[0];
      acc[dt][2] *= corr[1];
      acc[dt][3] *= corr[1];
    }
    uint32_t pa[4][4];
    pack_tile<T>(pa, s);
    accumulate<T, DM>(acc, pa, Vs(buf), RS, lane);
    __syncthreads();  // buffer `buf` is read before the next pass fetches into it
  }
  cp_async_wait<0>();  // nothing in flight at exit (the first fetch, when there are no keys)
  float f[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const bool zero = qpad[hr] && g.zero_padded_queries;
    f[hr] = zero ? 0.f : 1.f / l[hr];
    if (t == 0 && row[hr] < g.Tq)
      lse[bh * g.Tq + row[hr]] = zero ? INFINITY : (m[hr] == -FLT_MAX ? -INFINITY : m[hr] + logf(l[hr]));
  }
  store_acc<T, DM>(acc, f, o, ov, b, h, q0 + w0, g.Tq, g.D, gr, t);
}

// dQ for 64 queries, and delta = rowsum(dO ∘ O) of those rows for the dK/dV kernel.
template <class T, int DM>
__global__ void __launch_bounds__(kThreads4) attn_bwd_q_tc(Geometry g, const T* q, View4 qv, const T* k, View4 kv,
                                                           const T* v, View4 vv, const T* o, View4 ov, const T* dout,
                                                           View4 gv, const float* lse, float* delta, T* dq, View4 dqv) {
  unsigned char* const tc_smem = dynamic_smem();
  constexpr int RS = row_stride<DM>();
  uint16_t* Ks = reinterpret_cast<uint16_t*>(tc_smem);  // [64][RS]; the Q tile at first
  uint16_t* Vs = Ks + kRows * RS;                        // [64][RS]; the dO tile at first
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, q0 = int64_t(blockIdx.x) * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, t = lane % 4, w0 = warp * 16;
  const float scale = static_cast<float>(g.scale);

  uint32_t qa[DM / 16][4], ga[DM / 16][4];
  own_rows<DM>(qa, ga, Ks, Vs, q + qv.at(b, h, 0), qv.t, dout + gv.at(b, h, 0), gv.t, q0, g.Tq, g.D, w0, gr, t);

  // delta of the warp's 16 rows, one warp-wide sum per row; each thread keeps its rows' two.
  float dl[2] = {0, 0}, l[2];
  for (int rr = 0; rr < 16; ++rr) {
    const int64_t r = q0 + w0 + rr;
    float part = 0;
    if (r < g.Tq)
      for (int64_t d = lane; d < g.D; d += 32) part += float(dout[gv.at(b, h, r) + d]) * float(o[ov.at(b, h, r) + d]);
    part = warp_sum(part);
    if (rr == gr) dl[0] = part;
    if (rr == gr + 8) dl[1] = part;
    if (lane == 0 && r < g.Tq) delta[bh * g.Tq + r] = part;
  }
  int64_t row[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    row[hr] = q0 + w0 + gr + 8 * hr;
    l[hr] = row[hr] < g.Tq ? lse[bh * g.Tq + row[hr]] : INFINITY;
  }
  float acc[DM / 8][4];
#pragma unroll
  for (int dt = 0; dt < DM / 8; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0;

  for (int64_t k0 = 0; k0 < g.Tk; k0 += kRows) {
    __syncthreads();
    load_tile<DM>(Ks, RS, k + kv.at(b, h, 0), kv.t, k0, g.Tk, g.D);
    load_tile<DM>(Vs, RS, v + vv.at(b, h, 0), vv.t, k0, g.Tk, g.D);
    __syncthreads();
    float s[8][4], dp[8][4];
    scores<T, DM>(s, qa, Ks, RS, lane);
    scores<T, DM>(dp, ga, Vs, RS, lane);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t c = k0 + nt * 8 + 2 * t + (i & 1);
        const int hr = i >> 1;
        float ds = 0;
        if (c < g.Tk && !isinf(l[hr])) {  // zeroed or uniform rows pass no gradient to the logits
          const float sv = g.key_pad && g.key_pad[b * g.Tk + c] ? -FLT_MAX : s[nt][i] * scale;
          const float dpk = g.drop.on ? dp[nt][i] * drop_factor<float>(g, b, h, row[hr], c) : dp[nt][i];
          ds = prob(sv, l[hr], g.Tk) * (dpk - dl[hr]) * scale;
        }
        s[nt][i] = ds;
      }
    uint32_t da[4][4];
    pack_tile<T>(da, s);
    accumulate<T, DM>(acc, da, Ks, RS, lane);
  }
  const float one[2] = {1.f, 1.f};
  store_acc<T, DM>(acc, one, dq, dqv, b, h, q0 + w0, g.Tq, g.D, gr, t);
}

// dK and dV for 64 keys (the warp's rows are keys; the streamed tiles hold queries).
template <class T, int DM>
__global__ void __launch_bounds__(kThreads4) attn_bwd_kv_tc(Geometry g, const T* q, View4 qv, const T* k, View4 kv,
                                                            const T* v, View4 vv, const T* dout, View4 gv,
                                                            const float* lse, const float* delta, T* dk, View4 dkv,
                                                            T* dv, View4 dvv) {
  unsigned char* const tc_smem = dynamic_smem();
  constexpr int RS = row_stride<DM>();
  uint16_t* Qs = reinterpret_cast<uint16_t*>(tc_smem);  // [64][RS]; the K tile at first
  uint16_t* Gs = Qs + kRows * RS;                        // [64][RS]; the V tile at first
  float* ls = reinterpret_cast<float*>(Gs + kRows * RS);  // [64] lse of the query tile
  float* dls = ls + kRows;                                    // [64] delta
  const int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, k0 = int64_t(blockIdx.x) * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane / 4, t = lane % 4, w0 = warp * 16;
  const float scale = static_cast<float>(g.scale);

  uint32_t ka[DM / 16][4], va[DM / 16][4];
  own_rows<DM>(ka, va, Qs, Gs, k + kv.at(b, h, 0), kv.t, v + vv.at(b, h, 0), vv.t, k0, g.Tk, g.D, w0, gr, t);
  int64_t key[2];
  bool kpad[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    key[hr] = k0 + w0 + gr + 8 * hr;
    kpad[hr] = g.key_pad && key[hr] < g.Tk && g.key_pad[b * g.Tk + key[hr]];
  }
  float ak[DM / 8][4], av[DM / 8][4];
#pragma unroll
  for (int dt = 0; dt < DM / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) ak[dt][e] = av[dt][e] = 0;

  for (int64_t q0 = 0; q0 < g.Tq; q0 += kRows) {
    __syncthreads();
    load_tile<DM>(Qs, RS, q + qv.at(b, h, 0), qv.t, q0, g.Tq, g.D);
    load_tile<DM>(Gs, RS, dout + gv.at(b, h, 0), gv.t, q0, g.Tq, g.D);
    for (int j = threadIdx.x; j < kRows; j += kThreads4) {
      const bool in = q0 + j < g.Tq;
      ls[j] = in ? lse[bh * g.Tq + q0 + j] : INFINITY;  // past the last query: p = 0
      dls[j] = in ? delta[bh * g.Tq + q0 + j] : 0.f;
    }
    __syncthreads();
    float p[8][4], ds[8][4];
    scores<T, DM>(p, ka, Qs, RS, lane);   // Sᵀ: keys x queries
    scores<T, DM>(ds, va, Gs, RS, lane);  // dPᵀ
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int j = nt * 8 + 2 * t + (i & 1);
        const int hr = i >> 1;
        const float l = ls[j];
        float pv = 0, dsv = 0;
        // a zeroed query row (or one past the last query) has p = 0, as has a key past the last
        if (key[hr] < g.Tk && !(isinf(l) && l > 0)) {
          pv = prob(kpad[hr] ? -FLT_MAX : p[nt][i] * scale, l, g.Tk);
          const float keep = g.drop.on ? drop_factor<float>(g, b, h, q0 + j, key[hr]) : 1.f;
          dsv = isinf(l) ? 0.f : pv * (ds[nt][i] * keep - dls[j]) * scale;
          pv *= keep;  // dV takes the dropped probabilities
        }
        p[nt][i] = pv;
        ds[nt][i] = dsv;
      }
    uint32_t pa[4][4], da[4][4];  // packed at once: 32 registers instead of 64 floats stay live
    pack_tile<T>(pa, p);
    pack_tile<T>(da, ds);
    accumulate<T, DM>(av, pa, Gs, RS, lane);
    accumulate<T, DM>(ak, da, Qs, RS, lane);
  }
  const float one[2] = {1.f, 1.f};
  store_acc<T, DM>(ak, one, dk, dkv, b, h, k0 + w0, g.Tk, g.D, gr, t);
  store_acc<T, DM>(av, one, dv, dvv, b, h, k0 + w0, g.Tk, g.D, gr, t);
}

// Shared memory of each kernel: row-major [64][DM + 8] tiles, four in the forward (two buffers of K
// and V), two in the backward ones (and the dK/dV kernel's lse and delta of its query tile). At
// DM = 128 the forward's 68 KB allow two blocks per SM on an A100 or H100 (registers allow two as
// well), one on sm_86/89: to be measured against single buffering there.
template <int DM>
size_t fwd_smem() {
  return sizeof(uint16_t) * 4 * size_t(kRows) * row_stride<DM>();
}
template <int DM>
size_t bwd_q_smem() {
  return sizeof(uint16_t) * 2 * size_t(kRows) * row_stride<DM>();
}
template <int DM>
size_t bwd_kv_smem() {
  return sizeof(uint16_t) * 2 * size_t(kRows) * row_stride<DM>() + 2 * kRows * sizeof(float);
}

inline int rounded_dm(int64_t D) { return D <= 16 ? 16 : D <= 32 ? 32 : D <= 64 ? 64 : D <= 128 ? 128 : 0; }

template <class F>
void with_tc_dm(int64_t D, F&& f) {
  switch (rounded_dm(D)) {
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: f(std::integral_constant<int, 128>{}); break;
  }
}
inline dim3 tc_grid(int64_t rows, const Geometry& g) {
  return dim3(static_cast<unsigned>((rows + kRows - 1) / kRows), static_cast<unsigned>(g.B * g.H));
}
template <class F>
void with_half(DType dt, F&& f) {
  if (dt == DType::bf16) f(bf16{});
  else f(f16{});
}


// The forward: out and lse (f32) of bf16/f16 q, k, v ([B, H, T, D] views, unit last stride).
// launch(kernel, grid, threads, dynamic shared bytes, args...) runs one kernel.
template <class Launch>
void forward(const Launch& launch, const Tensor& q, const Tensor& k, const Tensor& v, const cpu::AttentionMasks& m,
             double scale, const Tensor& out, const Tensor& lse) {
  const Geometry g = geometry(q, k, m, scale);
  with_half(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    with_tc_dm(g.D, [&](auto c) {
      constexpr int DM = decltype(c)::value;
      launch(attn_fwd_tc<T, DM>, tc_grid(g.Tq, g), kThreads4, fwd_smem<DM>(), g, ptr<T>(q), view_of(q), ptr<T>(k),
             view_of(k), ptr<T>(v), view_of(v), ptr<T>(out), view_of(out), ptr<float>(lse));
    });
  });
}

// The backward: dq, dk, dv (delta = rowsum(dO o O) on the way, in f32 on q's device).
template <class Launch>
void backward(const Launch& launch, const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& out, const Tensor& lse, const cpu::AttentionMasks& m, double scale, const Tensor& dq,
              const Tensor& dk, const Tensor& dv) {
  const Geometry g = geometry(q, k, m, scale);
  const Tensor delta = Tensor::empty({g.B * g.H * g.Tq}, TensorOptions(DType::f32, q.device()));
  with_half(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    with_tc_dm(g.D, [&](auto c) {
      constexpr int DM = decltype(c)::value;
      launch(attn_bwd_q_tc<T, DM>, tc_grid(g.Tq, g), kThreads4, bwd_q_smem<DM>(), g, ptr<T>(q), view_of(q), ptr<T>(k),
             view_of(k), ptr<T>(v), view_of(v), ptr<T>(out), view_of(out), ptr<T>(dout), view_of(dout),
             ptr<float>(lse), ptr<float>(delta), ptr<T>(dq), view_of(dq));
      launch(attn_bwd_kv_tc<T, DM>, tc_grid(g.Tk, g), kThreads4, bwd_kv_smem<DM>(), g, ptr<T>(q), view_of(q),
             ptr<T>(k), view_of(k), ptr<T>(v), view_of(v), ptr<T>(dout), view_of(dout), ptr<float>(lse),
             ptr<float>(delta), ptr<T>(dk), view_of(dk), ptr<T>(dv), view_of(dv));
    });
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::tc
