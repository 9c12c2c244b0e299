// The SIMT emulator itself (tests/simt/simt.h): barriers, shuffles, mma.sync against a plain
// product, and the errors it must raise instead of passing or hanging.
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/cuda_common.cuh"
#include "tests/test_util.h"

namespace strand {
namespace {

constexpr simt::Launch kEmu{};

// Each thread writes its slot, waits, then reads its neighbour's: only a working barrier (in any
// resumption order) gives every thread the neighbour's value.
void neighbour_kernel(int* out) {
  int* s = reinterpret_cast<int*>(cuda::dynamic_smem());
  const unsigned n = blockDim.x, i = threadIdx.x;
  s[i] = int(i * 3 + blockIdx.x);
  __syncthreads();
  out[blockIdx.x * n + i] = s[(i + 1) % n];
}

TEST(SimtEmulator, SyncthreadsOrdersSharedMemoryAcrossTheBlock) {
  std::vector<int> out(3 * 96, -1);
  kEmu(neighbour_kernel, dim3(3), dim3(96), 96 * sizeof(int), out.data());
  for (unsigned b = 0; b < 3; ++b)
    for (unsigned i = 0; i < 96; ++i) EXPECT_EQ(out[b * 96 + i], int(((i + 1) % 96) * 3 + b)) << b << " " << i;
}

void shuffle_kernel(float* out) {
  const int lane = threadIdx.x % 32;
  const float v = float(threadIdx.x);
  out[4 * threadIdx.x + 0] = __shfl_xor_sync(0xffffffffu, v, 5);
  out[4 * threadIdx.x + 1] = __shfl_down_sync(0xffffffffu, v, 3);  // lanes 29-31 keep their own
  out[4 * threadIdx.x + 2] = __shfl_sync(0xffffffffu, v, 7);
  out[4 * threadIdx.x + 3] = float(lane);
}

TEST(SimtEmulator, ShufflesWithinEachWarp) {
  std::vector<float> out(4 * 64);
  kEmu(shuffle_kernel, dim3(1), dim3(64), 0, out.data());
  for (int t = 0; t < 64; ++t) {
    const int warp0 = t / 32 * 32, lane = t % 32;
    EXPECT_EQ(out[4 * t + 0], float(warp0 + (lane ^ 5)));
    EXPECT_EQ(out[4 * t + 1], float(lane + 3 < 32 ? t + 3 : t));
    EXPECT_EQ(out[4 * t + 2], float(warp0 + 7));
  }
}

// One m16n8k16 product: A [16 x 16] row-major, B [16 x 8] (column n = B[.][n]), C [16 x 8] in f32,
// each lane loading its fragments as the PTX ISA lays them out.
template <class T>
void mma_kernel(const T* A, const T* B, float* C) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  auto pair = [](T lo, T hi) {
    uint16_t l, h;
    std::memcpy(&l, &lo, 2);
    std::memcpy(&h, &hi, 2);
    return uint32_t(l) | uint32_t(h) << 16;
  };
  auto a = [&](int r, int k) { return pair(A[r * 16 + k], A[r * 16 + k + 1]); };
  auto b = [&](int k, int n) { return pair(B[k * 8 + n], B[(k + 1) * 8 + n]); };
  const uint32_t af[4] = {a(g, 2 * t), a(g + 8, 2 * t), a(g, 2 * t + 8), a(g + 8, 2 * t + 8)};
  float c[4] = {1, 2, 3, 4};  // accumulated onto
  simt::mma16816<T>(c, af, b(2 * t, g), b(2 * t + 8, g));
  for (int i = 0; i < 4; ++i) C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = c[i];
}

template <class T>
void check_mma() {
  std::vector<T> A(256), B(128);
  std::vector<float> a(256), b(128), C(128);
  for (int i = 0; i < 256; ++i) a[i] = float(T(float((i * 37) % 23 - 11) / 8));
  for (int i = 0; i < 128; ++i) b[i] = float(T(float((i * 29) % 19 - 9) / 4));
  for (int i = 0; i < 256; ++i) A[i] = T(a[i]);
  for (int i = 0; i < 128; ++i) B[i] = T(b[i]);
  kEmu(mma_kernel<T>, dim3(1), dim3(32), 0, static_cast<const T*>(A.data()), static_cast<const T*>(B.data()), C.data());
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double want = 1 + (r >= 8 ? 2 : 0) + (n % 2);  // the initial c of that element
      for (int k = 0; k < 16; ++k) want += double(a[r * 16 + k]) * b[k * 8 + n];
      EXPECT_EQ(C[r * 8 + n], want) << r << " " << n;  // small integers over 32: exact in f32
    }
}

TEST(SimtEmulator, MmaM16n8k16IsTheProductOfTheFragments) {
  check_mma<bf16>();
  check_mma<f16>();
}

// Four 8x8 matrices of halves in shared memory, element (m, i, j) = 1000 m + 10 i + j (exact in f16
// bits as integers), loaded by ldmatrix.x4 and .trans; each lane writes the 8 halves it received.
template <bool kTrans>
void ldmatrix_kernel(uint16_t* out) {
  uint16_t* s = reinterpret_cast<uint16_t*>(cuda::dynamic_smem());
  const int lane = threadIdx.x;
  for (int e = lane; e < 4 * 64; e += 32) s[e] = uint16_t(1000 * (e / 64) + 10 * (e % 64 / 8) + e % 8);
  __syncthreads();
  uint32_t r[4];
  simt::ldmatrix_x4<kTrans>(r, s + (lane / 8) * 64 + (lane % 8) * 8);  // matrix lane / 8, row lane % 8
  for (int m = 0; m < 4; ++m) {
    out[lane * 8 + 2 * m] = uint16_t(r[m] & 0xffff);
    out[lane * 8 + 2 * m + 1] = uint16_t(r[m] >> 16);
  }
}

TEST(SimtEmulator, LdmatrixGivesEachLaneItsRowPairOrColumnPair) {
  for (bool trans : {false, true}) {
    std::vector<uint16_t> out(32 * 8);
    if (trans)
      kEmu(ldmatrix_kernel<true>, dim3(1), dim3(32), 4 * 64 * 2, out.data());
    else
      kEmu(ldmatrix_kernel<false>, dim3(1), dim3(32), 4 * 64 * 2, out.data());
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, t = lane % 4;
      for (int m = 0; m < 4; ++m)
        for (int h = 0; h < 2; ++h) {
          const int row = trans ? 2 * t + h : g, col = trans ? g : 2 * t + h;
          EXPECT_EQ(out[lane * 8 + 2 * m + h], 1000 * m + 10 * row + col) << trans << " lane " << lane << " m " << m;
        }
    }
  }
}

void early_exit_kernel(float* out) {
  if (threadIdx.x == 0) return;  // lane 0 never reaches the shuffle the others wait at
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}
void mixed_kernel(float* out) {
  if (threadIdx.x == 3)
    out[0] = float(__shfl_xor_sync(0xffffffffu, 1.0, 1));  // 8 bytes, not 4
  else
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}
void overrun_kernel(unsigned char* out) {
  if (threadIdx.x == 0) cuda::dynamic_smem()[100] = out[0];  // asked for 100 bytes
}
void throwing_kernel(float*) { STRAND_CHECK(threadIdx.x != 17, "thread ", threadIdx.x, " refuses"); }

TEST(SimtEmulator, DeadlocksMismatchesOverrunsAndThrowsAreErrors) {
  std::vector<float> out(64);
  unsigned char byte = 1;
  EXPECT_TRUE(test::throws_with([&] { kEmu(early_exit_kernel, dim3(1), dim3(32), 0, out.data()); }, {"deadlock"}));
  EXPECT_TRUE(test::throws_with([&] { kEmu(mixed_kernel, dim3(1), dim3(32), 0, out.data()); },
                                {"is at a shfl of", "bytes while lane"}));
  EXPECT_TRUE(test::throws_with([&] { kEmu(overrun_kernel, dim3(1), dim3(32), 100, &byte); },
                                {"wrote byte 100", "asked for 100"}));
  EXPECT_TRUE(
      test::throws_with([&] { kEmu(throwing_kernel, dim3(2), dim3(32), 0, out.data()); }, {"thread 17 refuses"}));
  EXPECT_TRUE(test::throws_with([] { __syncthreads(); }, {"outside a kernel"}));
  EXPECT_TRUE(test::throws_with([&] { kEmu(throwing_kernel, dim3(1), dim3(32), simt::kSharedBytes + 1, out.data()); },
                                {"dynamic shared memory"}));
  // after all that, a launch still works
  std::vector<int> ok(96, -1);
  kEmu(neighbour_kernel, dim3(1), dim3(96), 96 * sizeof(int), ok.data());
  EXPECT_EQ(ok[95], 0);
}

// cp.async: each thread copies 16 bytes of its own and reads them before its wait (the old bytes in
// block 0, where copies land at the wait; the new ones in block 1, where they land at the issue),
// after it, and, after a barrier, its neighbour's; zero-fill when src_bytes is 0.
void cp_async_kernel(const int* src, int* out, bool wait) {
  int* s = reinterpret_cast<int*>(cuda::dynamic_smem());
  const unsigned n = blockDim.x, i = threadIdx.x;
  out += 3 * n * blockIdx.x;
  for (int j = 0; j < 4; ++j) s[4 * i + j] = -1;
  simt::cp_async16(s + 4 * i, src + 4 * i, i % 2 == 0 ? 16 : 0);
  simt::cp_async_commit();
  out[3 * i] = s[4 * i];
  if (!wait) return;  // the copy never waited for
  simt::cp_async_wait(0);
  out[3 * i + 1] = s[4 * i];
  __syncthreads();
  out[3 * i + 2] = s[4 * ((i + 1) % n)];
}

TEST(SimtEmulator, CpAsyncLandsAtTheWaitOrTheIssueAndZeroFills) {
  alignas(16) int src[4 * 64];
  for (int i = 0; i < 4 * 64; ++i) src[i] = 1000 + i;
  std::vector<int> out(2 * 3 * 64, 7);
  kEmu(cp_async_kernel, dim3(2), dim3(64), 64 * 16, static_cast<const int*>(src), out.data(), true);
  auto copied = [](int i) { return i % 2 == 0 ? 1000 + 4 * i : 0; };  // odd threads: zero-filled
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 64; ++i) {
      const int* o = out.data() + 3 * 64 * b + 3 * i;
      EXPECT_EQ(o[0], b == 0 ? -1 : copied(i)) << b << " " << i;  // before the wait: old bytes, or landed
      EXPECT_EQ(o[1], copied(i)) << b << " " << i;                // after it
      EXPECT_EQ(o[2], copied((i + 1) % 64)) << b << " " << i;     // the neighbour's, after a barrier
    }
  EXPECT_TRUE(test::throws_with(
      [&] { kEmu(cp_async_kernel, dim3(2), dim3(64), 64 * 16, static_cast<const int*>(src), out.data(), false); },
      {"never waited for"}));
}

}  // namespace
}  // namespace strand
