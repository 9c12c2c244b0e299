// The CUDA-core fused attention (kernels/cuda/attention.cuh: the tiled kernels for head dims up to
// 128, the row kernels above) on the SIMT emulator against the CPU kernel, f32 and f64, every mask
// variant of the GPU test CudaNnParity.FusedAttentionEveryVariant, with and without dropout (the
// same Philox mask as the CPU), contiguous and on the models' transposed [B, T, H, D] views.
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/attention.cuh"
#include "tests/attention_cases.h"
#include "tests/simt/simt_test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::AttentionCase;
constexpr simt::Launch kEmu{};

TEST(SimtAttention, TiledAndRowKernelsMatchTheCpuKernel) {
  const std::vector<AttentionCase> cases = test::attention_cases();
  for (double dropout : {0.0, 0.15})
    for (DType dt : {DType::f32, DType::f64})
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        const AttentionCase& c = cases[ci];
        const bool transposed = (ci + (dropout > 0)) % 2 == 1;
        const std::string what = "case " + std::to_string(ci) + " " + std::string(dtype_name(dt)) + " dropout " +
                                 std::to_string(dropout) + (transposed ? " transposed" : "");
        auto bytes = [](const Tensor& m) { return m.defined() ? static_cast<const uint8_t*>(m.raw_data()) : nullptr; };
        const Tensor kp = c.p.key_pad.defined() ? contiguous(c.p.key_pad) : Tensor(),
                     qp = c.p.query_pad.defined() ? contiguous(c.p.query_pad) : Tensor();
        const cpu::AttentionMasks m{bytes(kp), bytes(qp), c.p.zero_padded_queries, {dropout, 1234, 5 + ci}};
        const Tensor q = test::heads_view(test::uniform({c.B, c.H, c.Tq, c.D}, -1, 1, 11, dt), transposed),
                     k = test::heads_view(test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 12, dt), transposed),
                     v = test::heads_view(test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 13, dt), transposed),
                     up = test::heads_view(test::uniform(q.sizes(), -1, 1, 99, dt), transposed);
        std::vector<Tensor> ref, emu;
        for (std::vector<Tensor>* r : {&ref, &emu})
          *r = {test::heads_view(test::unwritten(q.sizes(), dt), transposed), test::unwritten({c.B, c.H, c.Tq}, dt),
                test::heads_view(test::unwritten(q.sizes(), dt), transposed),
                test::heads_view(test::unwritten(k.sizes(), dt), transposed),
                test::heads_view(test::unwritten(v.sizes(), dt), transposed)};
        cpu::attention_forward(q, k, v, m, c.p.scale, ref[0], ref[1]);
        cpu::attention_backward(up, q, k, v, ref[0], ref[1], m, c.p.scale, ref[2], ref[3], ref[4]);
        cuda::attn::forward(kEmu, q, k, v, m, c.p.scale, emu[0], emu[1]);
        cuda::attn::backward(kEmu, up, q, k, v, emu[0], emu[1], m, c.p.scale, emu[2], emu[3], emu[4]);
        const double tol = dt == DType::f64 ? 1e-12 : 2e-5;  // the GPU test's
        const char* names[] = {"out", "lse", "dq", "dk", "dv"};
        for (size_t i = 0; i < ref.size(); ++i) {
          if (i == 1) {  // lse: +-inf rows must agree exactly (allclose takes inf - inf as a mismatch)
            const auto a = ops::to_vector<double>(emu[1]), b = ops::to_vector<double>(ref[1]);
            for (size_t j = 0; j < b.size(); ++j)
              if (std::isinf(b[j]))
                ASSERT_EQ(a[j], b[j]) << "lse " << j << " " << what;
              else
                ASSERT_NEAR(a[j], b[j], tol * (1 + std::abs(b[j]))) << "lse " << j << " " << what;
            continue;
          }
          EXPECT_TRUE(allclose(emu[i], ref[i], tol, tol)) << names[i] << " " << what;
        }
      }
}

TEST(SimtAttention, TiledKernelsFitTheSharedMemoryOfAnA100AndAnH100) {
  // The largest tiles (f32 at head dim 128, f64 at 64) against the per-block opt-in limits:
  // 166,912 B on an A100, 232,448 B on an H100; past the limit the row kernels take over.
  constexpr size_t kA100 = 166912, kH100 = 232448;
  cuda::Geometry g{2, 4, 1024, 1024, 128, 0.1, nullptr, nullptr, false, {}};
  EXPECT_EQ(cuda::attn::tiled_dm<float>(g, kA100), 128);
  EXPECT_EQ(cuda::attn::tiled_dm<float>(g, kH100), 128);
  g.D = 64;
  EXPECT_EQ(cuda::attn::tiled_dm<float>(g, kA100), 64);
  EXPECT_EQ(cuda::attn::tiled_dm<double>(g, kH100), 64);
  EXPECT_EQ(cuda::attn::tiled_dm<double>(g, kA100), 0);
  EXPECT_EQ((cuda::attn::tiled_smem<float, 128>(4, 1)), size_t{152576});
}

}  // namespace
}  // namespace strand
