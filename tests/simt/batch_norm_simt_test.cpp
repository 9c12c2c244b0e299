// batch_norm's CUDA kernels (kernels/cuda/batch_norm.cuh: statistics, apply, backward, with the
// column sums of colsum.cuh) on the SIMT emulator against the CPU kernels, in f64/f32/bf16 and bf16
// with f32 parameters (bf16-mixed), with and without weight and bias, in training and eval, and through the SyncBatchNorm branch (a
// reducer standing for two identical processes).
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/batch_norm.cuh"
#include "tests/simt/simt_test_util.h"

namespace strand {
namespace {

using test::allclose;
constexpr simt::Launch kEmu{};

TEST(SimtBatchNorm, StatisticsApplyAndBackwardMatchTheCpuKernels) {
  const int64_t N = 3000, C = 37;  // 47 chunks of 64 rows per column sum
  const cpu::StatsReducer twice = [](std::vector<double>& v) {
    for (double& x : v) x *= 2;  // two processes holding the same rows
  };
  const std::pair<DType, DType> dtypes[] = {
      {DType::f64, DType::f64}, {DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::bf16, DType::f32}};
  for (const auto& [dt, pt] : dtypes)  // input, parameters
    for (const cpu::StatsReducer* reduce : {static_cast<const cpu::StatsReducer*>(nullptr), &twice})
      for (bool affine : {true, false})
        for (bool training : {true, false}) {
          const std::string what = std::string(dtype_name(dt)) + "/" + std::string(dtype_name(pt)) + (reduce ? " sync" : "") + (affine ? " affine" : "") +
                                   (training ? " training" : " eval");
          const DType at = dt == DType::f64 ? DType::f64 : DType::f32;  // the statistics' dtype
          const test::Tol tol = test::tol_for(dt), atol = test::tol_for(at), ptol = test::tol_for(pt);
          const Tensor x = test::uniform({N, C}, -2, 3, 5, dt), g = test::uniform({N, C}, -1, 1, 6, dt);
          const Tensor w = affine ? test::uniform({C}, 0.5, 1.5, 7, pt) : Tensor(),
                       b = affine ? test::uniform({C}, -0.5, 0.5, 8, pt) : Tensor();
          Tensor rm = test::unwritten({C}, at), rv = test::unwritten({C}, at), em = test::unwritten({C}, at),
                 ev = test::unwritten({C}, at);
          EXPECT_EQ(cuda::bn::batch_norm_stats(kEmu, x, em, ev, reduce), cpu::batch_norm_stats(x, rm, rv, reduce))
              << what;
          EXPECT_TRUE(allclose(em, rm, atol.atol, atol.rtol)) << "mean " << what;
          EXPECT_TRUE(allclose(ev, rv, atol.atol, atol.rtol)) << "var " << what;
          const Tensor rstd =
              ops::to(ops::unary(UnaryOp::rsqrt, ops::unary(UnaryOp::add_scalar, ops::to(rv, DType::f64), 1e-5)), at);
          Tensor ry = test::unwritten({N, C}, dt), ey = test::unwritten({N, C}, dt);
          cpu::batch_norm_apply(x, w, b, rm, rstd, ry);
          cuda::bn::batch_norm_apply(kEmu, x, w, b, rm, rstd, ey);
          EXPECT_TRUE(allclose(ey, ry, tol.atol, tol.rtol)) << "apply " << what;
          Tensor rgx = test::unwritten({N, C}, dt), egx = test::unwritten({N, C}, dt);
          Tensor rgw = affine ? test::unwritten({C}, pt) : Tensor(), egw = affine ? test::unwritten({C}, pt) : Tensor();
          Tensor rgb = affine ? test::unwritten({C}, pt) : Tensor(), egb = affine ? test::unwritten({C}, pt) : Tensor();
          cpu::batch_norm_backward(g, x, w, rm, rstd, training, rgx, rgw, rgb, reduce);
          cuda::bn::batch_norm_backward(kEmu, g, x, w, rm, rstd, training, egx, egw, egb, reduce);
          EXPECT_TRUE(allclose(egx, rgx, tol.atol, tol.rtol)) << "grad x " << what;
          if (affine) {
            EXPECT_TRUE(allclose(egw, rgw, ptol.atol, ptol.rtol)) << "grad w " << what;
            EXPECT_TRUE(allclose(egb, rgb, ptol.atol, ptol.rtol)) << "grad b " << what;
          }
        }
}

}  // namespace
}  // namespace strand
