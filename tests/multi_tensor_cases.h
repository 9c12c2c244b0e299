#pragma once
// The multi-tensor AdamW and sum-of-squares check, shared by the GPU test
// (CudaNnParity.MultiTensorAdamWAndSumOfSquaresMatchTheCpu) and the SIMT emulator's
// (tests/simt/optim_simt_test.cpp): more tensors than one table holds (36), a tensor longer than
// one launch's 320 chunks of 64Ki elements (cut across launches), an empty tensor, per-tensor step
// sizes, the fused gradient scale, and f32/f64/bf16 runs, against the CPU kernel one by one.
#include <cmath>
#include <functional>
#include <vector>

#include "kernels/adamw_step.h"
#include "tests/test_util.h"

namespace strand::test {

// sum_squares(xs) and adamw_multi(params) run the kernels under test on copies placed on `dev`.
inline void check_multi_tensor_adamw(Device dev,
                                     const std::function<std::vector<double>(const std::vector<Tensor>&)>& sum_squares,
                                     const std::function<void(std::vector<AdamWParam>&)>& adamw_multi) {
  std::vector<Shape> shapes;
  for (int i = 0; i < 50; ++i) shapes.push_back({1 + (i * 37) % 300, 1 + i % 7});
  shapes.push_back({0});
  shapes.push_back({321 * 65536 + 5});  // 322 chunks: spills into a second launch
  shapes.push_back({65536});            // exactly one chunk
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    std::vector<AdamWParam> ref, got;
    auto on_dev = [&](const Tensor& t) { return ops::clone(ops::to(t, dev)); };
    for (size_t i = 0; i < shapes.size(); ++i) {
      const uint64_t seed = 500 + 10 * i;
      Tensor p = uniform(shapes[i], -1, 1, seed, dt), g = uniform(shapes[i], -1, 1, seed + 1, dt),
             m = uniform(shapes[i], -0.1, 0.1, seed + 2, dt), v = uniform(shapes[i], 0, 0.01, seed + 3, dt);
      const double t = 1 + i % 5;  // parameters at different step counts
      const AdamWStep s{1e-3, 0.9, 0.999, 1e-8, 0.01, 1e-3 / (1 - std::pow(0.9, t)), std::sqrt(1 - std::pow(0.999, t)),
                        0.37};
      ref.push_back({p, g, m, v, s});
      got.push_back({on_dev(p), on_dev(g), on_dev(m), on_dev(v), s});
    }
    // Σ g² before the step scales g: sums of up to 21M squares in another order, so 1e-10 relative
    // (1e-12 failed by 1.2e-12 on the emulator; a missing chunk is > 1e-3)
    std::vector<Tensor> rg, gg;
    for (size_t i = 0; i < shapes.size(); ++i) rg.push_back(ref[i].g), gg.push_back(got[i].g);
    const std::vector<double> sr = ops::sum_squares(rg), sg = sum_squares(gg);
    ASSERT_EQ(sg.size(), sr.size());
    for (size_t i = 0; i < sr.size(); ++i) EXPECT_NEAR(sg[i], sr[i], 1e-10 * (1 + sr[i])) << dtype_name(dt) << " " << i;
    adamw_multi(got);
    for (const AdamWParam& e : ref) ASSERT_TRUE(ops::adamw_(e.p, e.g, e.m, e.v, e.s));
    // the same arithmetic up to contractions into FMA (nvcc contracts; the CPU library is built
    // for x86-64-v3)
    const double tol = dt == DType::f64 ? 1e-15 : dt == DType::f32 ? 1e-7 : 1e-2;
    for (size_t i = 0; i < shapes.size(); ++i)
      for (auto [r, d] :
           {std::pair{ref[i].p, got[i].p}, {ref[i].g, got[i].g}, {ref[i].m, got[i].m}, {ref[i].v, got[i].v}})
        ASSERT_TRUE(allclose(ops::to(d, Device::cpu()), r, tol, tol)) << dtype_name(dt) << " tensor " << i;
  }
}

}  // namespace strand::test
