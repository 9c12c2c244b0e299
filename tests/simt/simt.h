#pragma once
// A SIMT emulator for CUDA kernels, so that their logic can be tested on a machine without a GPU.
//
// A kernel's source (a .cuh of __device__ / __global__ templates) is compiled by the host compiler
// with this header included first. Each block of the grid runs alone; each of its threads is a
// fiber (ucontext) on the calling OS thread, switched cooperatively at the points where CUDA threads
// communicate:
//   - __syncthreads(): a barrier of the block's live threads;
//   - warp collectives (__shfl_*_sync, mma.sync through simt::mma16816): every lane of the warp
//     posts its operands, waits for the other 31, then reads theirs (checking that all 32 lanes
//     are at the same kind of collective);
//   - shared memory: `__shared__` arrays become function statics (one per kernel instantiation,
//     used by one block at a time); dynamic shared memory (cuda::dynamic_smem()) is one buffer of
//     kSharedBytes (an H100's limit); the bytes the launch asked for are filled with 0xff (NaN in
//     every float type) before each block, so a read of what the block never wrote shows, and a
//     4 KB guard after them is checked after it: a write there is an error.
// The block's threads are resumed in a shuffled order (fixed per block and pass), so a missing
// __syncthreads is less likely to be hidden by one lucky order.
// mma.sync.m16n8k16 (bf16/f16 in, f32 accumulate) follows the PTX ISA's fragment layouts
// ("Matrix Fragments for mma.m16n8k16 with floating point type") and accumulates in f32;
// ldmatrix.x4 (and .trans) its description of which lane receives which elements.
//
// What it does not model: the memory model and timing (a race that happens to be ordered here may
// fail on a GPU), static __shared__ arrays' initial contents (zero here, then the previous
// block's), shuffle widths below 32 (refused), lanes diverging around a collective (every lane
// must reach it, or the warp deadlocks: reported), and the hardware's f32 summation order inside
// an mma. A deadlock (a barrier some threads never reach) fails the test with a message instead
// of hanging.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#include "tensor/error.h"
#include "tensor/half.h"

#define STRAND_SIMT_EMULATOR 1
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

namespace strand::simt {

constexpr size_t kSharedBytes = 227 * 1024;  // what an H100 gives one block
constexpr size_t kSlotBytes = 32;            // what one lane may post to a warp collective

struct ThreadState {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
  int lane() const { return static_cast<int>(linear() % 32); }
  unsigned linear() const { return thread.x + block_dim.x * (thread.y + block_dim.y * thread.z); }
};
const ThreadState& current();  // the running thread's

void syncthreads();
// Posts `bytes` (<= kSlotBytes) for this lane and waits for the other lanes of the warp; returns
// the 32 lanes' posts (lane i's at i * kSlotBytes), valid until this lane's next collective. Every
// lane must post the same `kind` (a string literal naming the collective) and size.
const unsigned char* warp_post(const void* mine, size_t bytes, const char* kind);

// Runs body() as every thread of every block of the grid, one block after another, with `smem`
// bytes of dynamic shared memory. Throws strand::Error on a deadlock, a mismatched collective, a
// write past `smem`, or an exception of a thread.
void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);
// Throws strand::Error when a launch's configuration is outside CUDA's limits (block size, grid
// size, dynamic shared memory).
void check_launch(dim3 grid, dim3 block, size_t smem);
// The number of blocks run_grid has run since the process started (lets a test check coverage).
uint64_t blocks_run();
// The running block's dynamic shared memory (kSharedBytes, 16-byte aligned).
unsigned char* dynamic_shared();
// Throws strand::Error when a launch asks for more dynamic shared memory than the buffer holds.
void check_shared(size_t bytes);

// The launch policy: kernel(args...) on the emulator (the CUDA launch policy calls kernel<<<>>>).
struct Launch {
  template <class K, class... A>
  void operator()(K kernel, dim3 grid, dim3 block, size_t smem, A... args) const;
  size_t smem_limit() const { return kSharedBytes; }
};

// The emulated device (emu_runtime.cpp): the library built against the emulator (the tests'
// strand_emu) gets a CUDA runtime and cuBLAS over host memory, whose streams queue their work and
// run it when the host waits for it. cuda::DeviceLaunch queues its kernels here.
namespace device {
// Queues body (every thread of the grid) on `stream`, after checking the configuration, and that
// dynamic shared memory above 48 KB was granted to `kernel` (cudaFuncSetAttribute). `file`:`line`
// name the launch in errors.
void launch(cudaStream_t stream, const void* kernel, dim3 grid, dim3 block, size_t smem, std::function<void()> body,
            const char* file, unsigned line);
// Throws unless p is null or points into (or just past) memory from cudaMalloc: a kernel given a
// host pointer would fault on a GPU.
void check_pointer_argument(const void* p, const char* file, unsigned line);
// Throws unless [p, p + bytes) lies in memory cudaMalloc gave on `device` (`what` names it).
void check_memory(const void* p, size_t bytes, int device, const char* what);
// Runs the work queued on `stream` (cudaStreamSynchronize without the C interface).
void synchronize(cudaStream_t stream);
// Queues `work` on `stream` (the NCCL stand-in's writes of its results).
void enqueue_work(cudaStream_t stream, std::function<void()> work);
}  // namespace device

// cp.async.cg.shared.global [dst], [src], 16, src_bytes (src_bytes of src, zeros after them),
// cp.async.commit_group and cp.async.wait_group `pending`, for the running thread. The hardware may
// deliver a copy any time from the issue to the wait; here it lands at the wait in even-numbered
// blocks (so a read before the wait, or by another thread before a barrier after it, sees the old
// bytes) and at the issue in odd ones (so a copy into a buffer other threads may still be reading
// shows). A thread that ends with copies it never waited for is an error.
void cp_async16(void* dst, const void* src, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);

void check_width(int width);  // shuffles of the whole warp only

template <class V>
V shfl(V v, int src_lane) {
  static_assert(sizeof(V) <= kSlotBytes && std::is_trivially_copyable_v<V>);
  const unsigned char* all = warp_post(&v, sizeof v, "shfl");
  V r;
  std::memcpy(&r, all + static_cast<size_t>(src_lane & 31) * kSlotBytes, sizeof r);
  return r;
}

// One 16-bit element of a packed pair as f32: the first (lower-indexed) element in the low half.
// T: bf16 (strand's or CUDA's) or f16.
template <class T>
float half_of(uint32_t pair, int which) {
  const uint16_t bits = static_cast<uint16_t>(which ? pair >> 16 : pair & 0xffffu);
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, __nv_bfloat16>) {
    const uint32_t f = static_cast<uint32_t>(bits) << 16;
    float x;
    std::memcpy(&x, &f, sizeof x);
    return x;
  } else {
    static_assert(std::is_same_v<T, f16> || std::is_same_v<T, __half>, "mma operands are bf16 or f16");
    __half_raw r;
    r.x = bits;
    return __half2float(__half(r));
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: c[16 x 8] += A[16 x 16] B[16 x 8], where lane
// (g, t) = (lane / 4, lane % 4) holds
//   A: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..);
//   B: b0 = rows 2t..2t+1 of column g, b1 = rows 2t+8..2t+9;
//   C: c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1).
template <class T>
void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  struct Frag {
    uint32_t a[4], b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  const unsigned char* all = warp_post(&mine, sizeof mine, "mma.m16n8k16");
  auto frag = [&](int lane) {
    Frag f;
    std::memcpy(&f, all + static_cast<size_t>(lane) * kSlotBytes, sizeof f);
    return f;
  };
  auto A = [&](int r, int k) {
    const Frag f = frag(4 * (r % 8) + (k % 8) / 2);
    return half_of<T>(f.a[(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
  };
  auto B = [&](int k, int n) {
    const Frag f = frag(4 * n + (k % 8) / 2);
    return half_of<T>(f.b[k >= 8 ? 1 : 0], k % 2);
  };
  const int lane = current().lane(), g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i >> 1), n = 2 * t + (i & 1);
    float s = c[i];
    for (int k = 0; k < 16; ++k) s += A(r, k) * B(k, n);
    c[i] = s;
  }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8j .. 8j + 7 give the addresses of the
// 8 rows (8 halves each) of matrix j; lane (g, t) = (lane / 4, lane % 4) receives in r[j] row g,
// columns 2t and 2t + 1 of matrix j (the first in the low half), or with kTrans rows 2t and 2t + 1
// of column g (the PTX ISA's "Warp-level matrix load instruction: ldmatrix").
template <bool kTrans>
void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  // as on the GPU: 16-byte rows in shared memory (here: the dynamic buffer)
  const auto* b = reinterpret_cast<const unsigned char*>(row);
  STRAND_CHECK(reinterpret_cast<uintptr_t>(b) % 16 == 0 && b >= dynamic_shared() &&
                   b + 16 <= dynamic_shared() + kSharedBytes,
               "SIMT emulator: ldmatrix row address not 16-byte aligned in shared memory");
  const unsigned char* all = warp_post(&row, sizeof row, kTrans ? "ldmatrix.x4.trans" : "ldmatrix.x4");
  auto row_of = [&](int m, int i) {  // matrix m's row i
    const uint16_t* p;
    std::memcpy(&p, all + static_cast<size_t>(8 * m + i) * kSlotBytes, sizeof p);
    return p;
  };
  const int lane = current().lane(), g = lane / 4, t = lane % 4;
  for (int m = 0; m < 4; ++m) {
    const uint16_t lo = kTrans ? row_of(m, 2 * t)[g] : row_of(m, g)[2 * t];
    const uint16_t hi = kTrans ? row_of(m, 2 * t + 1)[g] : row_of(m, g)[2 * t + 1];
    r[m] = uint32_t(lo) | uint32_t(hi) << 16;
  }
}

template <class K, class... A>
void Launch::operator()(K kernel, dim3 grid, dim3 block, size_t smem, A... args) const {
  run_grid(grid, block, smem, [&] { kernel(args...); });
}

}  // namespace strand::simt

// The CUDA built-ins the kernels use, on the emulator.
#define threadIdx (::strand::simt::current().thread)
#define blockIdx (::strand::simt::current().block)
#define blockDim (::strand::simt::current().block_dim)
#define gridDim (::strand::simt::current().grid_dim)
inline void __syncthreads() { ::strand::simt::syncthreads(); }
template <class V>
V __shfl_xor_sync(unsigned, V v, int lane_mask, int width = 32) {
  ::strand::simt::check_width(width);
  return ::strand::simt::shfl(v, ::strand::simt::current().lane() ^ lane_mask);
}
template <class V>
V __shfl_sync(unsigned, V v, int src_lane, int width = 32) {
  ::strand::simt::check_width(width);
  return ::strand::simt::shfl(v, src_lane);
}
template <class V>
V __shfl_down_sync(unsigned, V v, unsigned delta, int width = 32) {
  ::strand::simt::check_width(width);
  const int lane = ::strand::simt::current().lane(), src = lane + static_cast<int>(delta);
  const V other = ::strand::simt::shfl(v, src < 32 ? src : lane);
  return other;
}
#undef __shared__
#define __shared__ static
using std::isinf;
using std::isnan;
namespace strand::cuda {  // CUDA's min/max overloads (strand's tensor ops would hide global ones)
using std::max;
using std::min;
}  // namespace strand::cuda
