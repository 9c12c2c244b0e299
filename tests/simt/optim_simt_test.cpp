// The multi-tensor AdamW and sum-of-squares kernels (kernels/cuda/optim.cuh) on the SIMT emulator,
// through their launchers (the tensor tables, the launches cut at 36 tensors / 320 chunks), against
// the CPU kernels: the same cases as CudaNnParity.MultiTensorAdamWAndSumOfSquaresMatchTheCpu.
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/optim.cuh"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;

TEST(SimtMultiTensor, AdamWAndSumOfSquaresMatchTheCpuKernels) {
  std::vector<Shape> shapes;
  for (int i = 0; i < 50; ++i) shapes.push_back({1 + (i * 37) % 300, 1 + i % 7});
  shapes.push_back({0});
  shapes.push_back({321 * 65536 + 5});  // 322 chunks: spills into a second launch
  shapes.push_back({65536});            // exactly one chunk
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    std::vector<AdamWParam> ref, emu;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const uint64_t seed = 500 + 10 * i;
      Tensor p = test::uniform(shapes[i], -1, 1, seed, dt), g = test::uniform(shapes[i], -1, 1, seed + 1, dt),
             m = test::uniform(shapes[i], -0.1, 0.1, seed + 2, dt), v = test::uniform(shapes[i], 0, 0.01, seed + 3, dt);
      const double t = 1 + i % 5;  // parameters at different step counts
      const AdamWStep s{1e-3, 0.9, 0.999, 1e-8, 0.01, 1e-3 / (1 - std::pow(0.9, t)),
                        std::sqrt(1 - std::pow(0.999, t)), 0.37};
      ref.push_back({p, g, m, v, s});
      emu.push_back({ops::clone(p), ops::clone(g), ops::clone(m), ops::clone(v), s});
    }
    std::vector<Tensor> rg, eg;  // sum of squares of the gradients, before the step scales them
    for (size_t i = 0; i < shapes.size(); ++i) rg.push_back(ref[i].g), eg.push_back(emu[i].g);
    const std::vector<double> sr = ops::sum_squares(rg), se = cuda::optim::sum_squares(simt::Launch{}, eg);
    ASSERT_EQ(se.size(), sr.size());
    // sums of up to 21M squares in another order: 1e-10 relative (one chunk missing is > 1e-3)
    for (size_t i = 0; i < sr.size(); ++i) EXPECT_NEAR(se[i], sr[i], 1e-10 * (1 + sr[i])) << dtype_name(dt) << " " << i;

    const uint64_t blocks = simt::blocks_run();
    cuda::optim::adamw_multi(simt::Launch{}, emu);
    EXPECT_GE(simt::blocks_run() - blocks, 322u + 50u + 1u);  // at least a block per chunk
    for (const AdamWParam& e : ref) ASSERT_TRUE(ops::adamw_(e.p, e.g, e.m, e.v, e.s));
    // the same arithmetic, up to contractions into FMA (the CPU library is built for x86-64-v3, nvcc
    // contracts too): the GPU test's tolerances
    const double tol = dt == DType::f64 ? 1e-15 : dt == DType::f32 ? 1e-7 : 1e-2;
    for (size_t i = 0; i < shapes.size(); ++i)
      for (auto [r, e] : {std::pair{ref[i].p, emu[i].p}, {ref[i].g, emu[i].g}, {ref[i].m, emu[i].m}, {ref[i].v, emu[i].v}})
        ASSERT_TRUE(allclose(e, r, tol, tol)) << dtype_name(dt) << " tensor " << i;
  }
}

}  // namespace
}  // namespace strand
