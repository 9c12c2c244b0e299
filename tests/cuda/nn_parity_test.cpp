// CUDA row kernels (softmax over any dim, layer_norm, rms_norm, rotary), cuBLAS matmul/linear,
// reductions and fused attention (every mask variant) with their gradients against
// the CPU kernels, through autograd with the same upstream gradient. Skipped without a usable GPU.
#include <cmath>
#include <functional>
#include <tuple>
#include <iostream>
#include <vector>

#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "nn/clip_grad.h"
#ifdef STRAND_WITH_CUDA
#include "kernels/cuda/conv_cudnn.h"
#include "kernels/cuda/cuda_kernels.h"
#endif
#include "tests/attention_cases.h"
#include "tests/multi_tensor_cases.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
const Device kGpu = Device::cuda(0);

using test::Fn;
using test::run_with_grads;

void expect_parity(const Fn& f, const std::vector<Tensor>& inputs, const Shape& out_shape, double tol) {
  const Tensor up = test::uniform(out_shape, -1, 1, 99, inputs[0].dtype());
  const auto c = run_with_grads(f, inputs, up, Device::cpu()), g = run_with_grads(f, inputs, up, kGpu);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_TRUE(allclose(g[i], c[i], tol, tol)) << (i ? "grad " : "value ") << i;
}

TEST(CudaNnParity, SoftmaxLastAndMiddleDims) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-12 : 2e-6;
    Tensor x = test::uniform({3, 5, 2, 37}, -6, 6, 1, dt);
    for (int64_t dim : {-1, 2, 1}) {
      expect_parity([dim](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, {x}, x.sizes(), tol);
      expect_parity([dim](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); }, {x}, x.sizes(), tol);
    }
    Tensor wide = test::uniform({4, 3000}, -20, 20, 2, dt);  // rows longer than a block
    expect_parity([](const std::vector<Tensor>& in) { return softmax(in[0], -1); }, {wide}, wide.sizes(), tol);
  }
}

TEST(CudaNnParity, LayerNormAndRmsNormWithAndWithoutAffine) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-11 : 1e-5;
    Tensor x = test::uniform({7, 3, 333}, -3, 3, 3, dt), w = test::uniform({333}, 0.5, 1.5, 4, dt),
           b = test::uniform({333}, -1, 1, 5, dt);
    expect_parity([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); }, {x, w, b},
                  x.sizes(), tol);
    expect_parity([](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-5); }, {x},
                  x.sizes(), tol);
    expect_parity([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); }, {x, w}, x.sizes(), tol);
  }
}

TEST(CudaNnParity, RotaryOnATransposedView) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor c = test::uniform({9, 8}, -1, 1, 6, dt), s = test::uniform({9, 8}, -1, 1, 7, dt);
    Tensor x = test::uniform({2, 9, 3, 12}, -1, 1, 8, dt);  // [B, T, H, D]; rotary on the first 8 of 12
    auto f = [&](const std::vector<Tensor>& in) {
      Tensor xt = transpose(in[0], 1, 2);  // [B, H, T, D] view
      return rotary(xt, ops::to(c, in[0].device()), ops::to(s, in[0].device()));
    };
    expect_parity(f, {x}, {2, 3, 9, 12}, dt == DType::f64 ? 1e-14 : 1e-6);
  }
}

TEST(CudaNnParity, SoftmaxPoolForwardAndGradients) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t w : {2, 3}) {
      Tensor x = test::uniform({2, 10 * w, 37}, -1, 1, 11, dt), l = test::uniform({2, 10 * w, 37}, -8, 8, 12, dt);
      expect_parity([w](const std::vector<Tensor>& in) { return softmax_pool(in[0], in[1], w); }, {x, l},
                    {2, 10, 37}, dt == DType::f64 ? 1e-14 : 1e-6);
    }
  }
  // bf16-mixed: bf16 operands read as they are, an f32 result, bf16 gradients (one rounding: a
  // one-ulp difference where the CPU's and the GPU's exp differ)
  for (int64_t w : {2, 5}) {  // 5: past the kernel's cached exps
    Tensor x = test::uniform({2, 10 * w, 37}, -1, 1, 13, DType::bf16), l = test::uniform({2, 10 * w, 37}, -8, 8, 14, DType::bf16);
    expect_parity(
        [w](const std::vector<Tensor>& in) {
          AutocastGuard autocast(true);
          return softmax_pool(in[0], in[1], w);
        },
        {x, l}, {2, 10, 37}, 8e-3);
  }
}

TEST(CudaNnParity, MatmulLinearAndReductions) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-12 : 2e-5;
    // batch broadcast ([2, 1, 5, 7] @ [3, 7, 4]) and a transposed operand
    Tensor a = test::uniform({2, 1, 5, 7}, -1, 1, 21, dt), b = test::uniform({3, 4, 7}, -1, 1, 22, dt);
    expect_parity([](const std::vector<Tensor>& in) { return matmul(in[0], transpose(in[1], -1, -2)); }, {a, b},
                  {2, 3, 5, 4}, tol);
    // linear with bias over [B, T, in]: the bias gradient is a reduction over the leading dims
    Tensor x = test::uniform({3, 11, 9}, -1, 1, 23, dt), w = test::uniform({6, 9}, -1, 1, 24, dt),
           bias = test::uniform({6}, -1, 1, 25, dt);
    expect_parity([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, bias}, {3, 11, 6},
                  tol);
    Tensor r = test::uniform({4, 50, 6}, -2, 2, 26, dt);
    for (const std::vector<int64_t>& dims : std::vector<std::vector<int64_t>>{{}, {0}, {1}, {2}, {0, 1}, {0, 2}}) {
      EXPECT_TRUE(allclose(ops::to(ops::sum(ops::to(r, kGpu), dims), Device::cpu()), ops::sum(r, dims), tol, tol));
      EXPECT_TRUE(allclose(ops::to(ops::mean(ops::to(r, kGpu), dims), Device::cpu()), ops::mean(r, dims), tol, tol));
      EXPECT_TRUE(allclose(ops::to(ops::var(ops::to(r, kGpu), dims, true), Device::cpu()), ops::var(r, dims, true), tol, tol));
    }
  }
  for (DType dt : {DType::f32, DType::f64}) {  // long columns (a bias gradient): the chunked column sums
    const double tol = dt == DType::f64 ? 1e-12 : 2e-6;
    Tensor r = test::uniform({1500, 7}, -2, 2, 27, dt);
    EXPECT_TRUE(allclose(ops::to(ops::sum(ops::to(r, kGpu), {0}), Device::cpu()), ops::sum(r, {0}), tol, tol));
    EXPECT_TRUE(allclose(ops::to(ops::mean(ops::to(r, kGpu), {0}), Device::cpu()), ops::mean(r, {0}), tol, tol));
    EXPECT_TRUE(allclose(ops::to(ops::var(ops::to(r, kGpu), {0}), Device::cpu()), ops::var(r, {0}), tol, tol));
  }
  Tensor ints = ops::from_vector<int64_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(ops::to_vector<int64_t>(ops::sum(ops::to(ints, kGpu), {0})), (std::vector<int64_t>{5, 7, 9}));
}

// bf16/f16 GEMMs run on the tensor cores (cublasGemmEx, f32 accumulation, one rounding); the CPU
// runs the f32 GEMM on the same values and rounds once, so the two differ by the order of the f32
// sums: at most one ulp of the result where a sum lands near a rounding boundary.
TEST(CudaNnParity, HalfGemmsMatchTheCpuToOneUlp) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::bf16, DType::f16}) {
    const double ulp = dt == DType::bf16 ? 1.0 / 128 : 1.0 / 1024;
    Tensor a = test::uniform({2, 1, 5, 7}, -1, 1, 21, dt), b = test::uniform({3, 4, 7}, -1, 1, 22, dt);
    expect_parity([](const std::vector<Tensor>& in) { return matmul(in[0], transpose(in[1], -1, -2)); }, {a, b},
                  {2, 3, 5, 4}, 2 * ulp);
    Tensor x = test::uniform({3, 11, 9}, -1, 1, 23, dt), w = test::uniform({6, 9}, -1, 1, 24, dt),
           bias = test::uniform({6}, -1, 1, 25, dt);
    expect_parity([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, bias}, {3, 11, 6},
                  2 * ulp);
    // Tensor-core sizes: K = 512 sums of O(1) terms (results of magnitude ~10). Both sides round an
    // f32 sum once: one ulp of each value (rtol), plus f32 sum-order noise (atol 1e-5 of the scale).
    Tensor xl = test::uniform({64, 512}, -1, 1, 26, dt), wl = test::uniform({96, 512}, -1, 1, 27, dt);
    Tensor got = ops::to(ops::linear(ops::to(xl, kGpu), ops::to(wl, kGpu), {}), Device::cpu());
    EXPECT_EQ(got.dtype(), dt);
    const Tensor want = ops::linear(xl, wl, {});
    const double scale = item(ops::amax(ops::unary(UnaryOp::abs, ops::to(want, DType::f64))));
    EXPECT_TRUE(allclose(ops::to(got, DType::f64), ops::to(want, DType::f64), 1e-5 * scale, ulp));
  }
}

// linear with a bias through cuBLASLt's bias epilogue (ops::set_cublaslt_bias): against the CPU in
// f32 (TF32 off) and within one ulp in bf16/f16 (both sides add the bias to the f32 sum and round
// once); batched input, odd sizes, a weight that is a transposed view, tensor-core sizes, and the
// gradients (which do not use the epilogue) through autograd.
TEST(CudaNnParity, CublasLtBiasEpilogueLinearMatchesTheCpu) {
  STRAND_SKIP_WITHOUT_GPU();
  const ops::SwitchScope on(ops::set_cublaslt_bias, ops::cublaslt_bias, true);
#ifdef STRAND_WITH_CUDA
  const int64_t lt_before = cuda::gemm_bias_lt_calls();
#endif
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    const double ulp = dt == DType::bf16 ? 1.0 / 128 : dt == DType::f16 ? 1.0 / 1024 : 1e-6;
    for (auto [rows, in, out] : {std::tuple<int64_t, int64_t, int64_t>{33, 9, 6}, {64, 512, 96}, {130, 64, 40}}) {
      Tensor x = test::uniform({2, rows, in}, -1, 1, 31, dt), w = test::uniform({out, in}, -1, 1, 32, dt),
             bias = test::uniform({out}, -1, 1, 33, dt);
      const Tensor want = ops::linear(x, w, bias);
      const Tensor got = ops::to(ops::linear(ops::to(x, kGpu), ops::to(w, kGpu), ops::to(bias, kGpu)), Device::cpu());
      const double scale = item(ops::amax(ops::unary(UnaryOp::abs, ops::to(want, DType::f64))));
      EXPECT_TRUE(allclose(ops::to(got, DType::f64), ops::to(want, DType::f64), 1e-5 * scale, ulp))
          << dtype_name(dt) << " " << rows << "x" << in << "->" << out;
      // the weight as a transposed view of a [in, out] tensor
      const Tensor wt = test::uniform({in, out}, -1, 1, 34, dt);
      const Tensor want_t = ops::linear(x, ops::transpose(wt, 0, 1), bias);
      const Tensor got_t = ops::to(
          ops::linear(ops::to(x, kGpu), ops::transpose(ops::to(wt, kGpu), 0, 1), ops::to(bias, kGpu)), Device::cpu());
      EXPECT_TRUE(allclose(ops::to(got_t, DType::f64), ops::to(want_t, DType::f64), 1e-5 * scale, ulp))
          << dtype_name(dt) << " transposed weight";
    }
    Tensor x = test::uniform({3, 11, 9}, -1, 1, 23, dt), w = test::uniform({6, 9}, -1, 1, 24, dt),
           bias = test::uniform({6}, -1, 1, 25, dt);
    expect_parity([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, bias}, {3, 11, 6},
                  dt == DType::f32 ? 1e-5 : 2 * ulp);
  }
#ifdef STRAND_WITH_CUDA
  EXPECT_GT(cuda::gemm_bias_lt_calls(), lt_before) << "every linear fell back to the cuBLAS path";
#endif
}

// bf16 conv1d gradients are sums over taps and batch items: accumulated in f32 and rounded once
// they stay within one ulp of the CPU's (f32 sum, rounded once); summed in bf16 they would not.
TEST(CudaNnParity, Bf16Conv1dGradientsAccumulateInF32) {
  STRAND_SKIP_WITHOUT_GPU();
  const DType dt = DType::bf16;
  Tensor x = test::uniform({6, 300, 32}, -1, 1, 51, dt), w = test::uniform({24, 32, 9}, -1, 1, 52, dt);
  Tensor up = test::uniform({6, 300, 24}, -1, 1, 53, dt);
  const auto c = run_with_grads([](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], Tensor(), -1); }, {x, w}, up,
                     Device::cpu());
  const auto g = run_with_grads([](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], Tensor(), -1); }, {x, w}, up, kGpu);
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_EQ(g[i].dtype(), dt);
    const double scale = item(ops::amax(ops::unary(UnaryOp::abs, ops::to(c[i], DType::f64))));
    EXPECT_TRUE(allclose(ops::to(g[i], DType::f64), ops::to(c[i], DType::f64), 1e-5 * scale, 1.0 / 128))
        << (i ? "grad " : "value ") << i;
  }
}

TEST(CudaNnParity, Conv1dEveryPaddingKernelSizeAndDtype) {
  STRAND_SKIP_WITHOUT_GPU();
  // bf16/f16 (bf16-mixed): tensor-core GEMMs; gradients summed over taps and row blocks in f32 and
  // rounded once, as the CPU rounds its f32 result: two ulps of the result (values of order 1-10).
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 2e-5 : dt == DType::bf16 ? 1.0 / 64 : 1.0 / 512;
    // stem-like (Cin 4, K 15, same padding), tower-like (K 5), pointwise (K 1: x is the im2col),
    // explicit padding 0 and 2 (shorter and longer outputs)
    struct Case { int64_t cin, cout, k, pad; };
    for (Case c : {Case{4, 6, 15, -1}, Case{8, 5, 5, -1}, Case{7, 9, 1, 0}, Case{5, 3, 3, 0}, Case{3, 4, 3, 2}}) {
      Tensor x = test::uniform({2, 23, c.cin}, -1, 1, 41, dt), w = test::uniform({c.cout, c.cin, c.k}, -1, 1, 42, dt),
             b = test::uniform({c.cout}, -1, 1, 43, dt);
      const int64_t pad = c.pad < 0 ? c.k / 2 : c.pad, lout = 23 + 2 * pad - c.k + 1;
      expect_parity([&](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], in[2], c.pad); }, {x, w, b},
                    {2, lout, c.cout}, tol);
      expect_parity([&](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], Tensor(), c.pad); }, {x, w},
                    {2, lout, c.cout}, tol);
    }
  }
}

// The cuDNN conv1d (ops::set_cudnn_conv; only where the build found cuDNN): every case and dtype of
// the test above plus a longer sequence, with the same tolerances (f32 with TF32 off stays off the
// tensor cores; bf16/f16 accumulate in f32), values and the three gradients.
TEST(CudaNnParity, CudnnConv1dMatchesTheCpu) {
  STRAND_SKIP_WITHOUT_GPU();
#ifdef STRAND_WITH_CUDA
  if (!cuda::cudnn_conv_available()) GTEST_SKIP() << "this build has no cuDNN";
#endif
  const ops::SwitchScope on(ops::set_cudnn_conv, ops::cudnn_conv, true);
#ifdef STRAND_WITH_CUDA
  const int64_t dnn_before = cuda::cudnn_conv_calls();
#endif
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    const double tol = dt == DType::f32 ? 2e-5 : dt == DType::bf16 ? 1.0 / 64 : 1.0 / 512;
    struct Case { int64_t L, cin, cout, k, pad; };
    for (Case c : {Case{23, 4, 6, 15, -1}, Case{23, 8, 5, 5, -1}, Case{23, 7, 9, 1, 0}, Case{23, 5, 3, 3, 0},
                   Case{23, 3, 4, 3, 2}, Case{300, 32, 24, 5, -1}}) {
      Tensor x = test::uniform({2, c.L, c.cin}, -1, 1, 41, dt), w = test::uniform({c.cout, c.cin, c.k}, -1, 1, 42, dt),
             b = test::uniform({c.cout}, -1, 1, 43, dt);
      const int64_t pad = c.pad < 0 ? c.k / 2 : c.pad, lout = c.L + 2 * pad - c.k + 1;
      expect_parity([&](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], in[2], c.pad); }, {x, w, b},
                    {2, lout, c.cout}, tol);
      expect_parity([&](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], Tensor(), c.pad); }, {x, w},
                    {2, lout, c.cout}, tol);
    }
  }
#ifdef STRAND_WITH_CUDA
  EXPECT_GT(cuda::cudnn_conv_calls(), dnn_before) << "every pass fell back to im2col";
#endif
}

TEST(CudaNnParity, Conv1dWithoutChannels) {  // K·Cin = 0 or Cout = 0: no GEMM (cuBLAS rejects ld 0)
  STRAND_SKIP_WITHOUT_GPU();
  Tensor x = test::uniform({2, 5, 0}, -1, 1, 44, DType::f32), w = test::uniform({3, 0, 1}, -1, 1, 45, DType::f32),
         b = test::uniform({3}, -1, 1, 46, DType::f32);
  expect_parity([](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], in[2], 0); }, {x, w, b}, {2, 5, 3}, 0);
  Tensor x2 = test::uniform({2, 5, 4}, -1, 1, 47, DType::f32), w2 = test::uniform({0, 4, 3}, -1, 1, 48, DType::f32);
  expect_parity([](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], Tensor(), -1); }, {x2, w2}, {2, 5, 0}, 0);
}

TEST(CudaNnParity, BatchNormTrainAndEvalWithRunningStats) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-11 : 2e-5;
    Tensor x = test::uniform({3, 41, 6}, -2, 3, 51, dt), w = test::uniform({6}, 0.5, 1.5, 52, dt),
           b = test::uniform({6}, -1, 1, 53, dt);
    for (bool training : {true, false}) {
      const DType sd = dt == DType::f64 ? DType::f64 : DType::f32;
      Tensor rm_c = test::uniform({6}, -1, 1, 54, sd), rv_c = test::uniform({6}, 0.5, 2, 55, sd);
      Tensor rm_g = ops::to(rm_c, kGpu), rv_g = ops::to(rv_c, kGpu);
      int call = 0;  // the CPU run sees the CPU running stats, the GPU run the GPU copies
      auto f = [&](const std::vector<Tensor>& in) {
        const bool gpu = call++ > 0;
        return batch_norm(in[0], in[1], in[2], gpu ? rm_g : rm_c, gpu ? rv_g : rv_c, training, 0.1, 1e-5);
      };
      expect_parity(f, {x, w, b}, x.sizes(), tol);
      EXPECT_TRUE(allclose(ops::to(rm_g, Device::cpu()), rm_c, tol, tol)) << "running mean, training " << training;
      EXPECT_TRUE(allclose(ops::to(rv_g, Device::cpu()), rv_c, tol, tol)) << "running var, training " << training;
    }
    // no affine parameters, no running statistics
    expect_parity([](const std::vector<Tensor>& in) { return batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true); },
                  {x}, x.sizes(), tol);
  }
  // bf16-mixed: a bf16 input with f32 weight and bias (the kernels read bf16, write a bf16 gradient)
  Tensor xb = test::uniform({3, 41, 6}, -2, 3, 56, DType::bf16), w = test::uniform({6}, 0.5, 1.5, 57, DType::f32),
         b = test::uniform({6}, -1, 1, 58, DType::f32);
  expect_parity([](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true); },
                {xb, w, b}, xb.sizes(), 2e-2);
}

TEST(CudaNnParity, MaxGatherAndScatterAdd) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    Tensor x = test::uniform({5, 300, 3}, -4, 4, 61, dt);
    for (int64_t dim : {0, 1, 2}) {
      auto [vc, ic] = ops::max(x, dim);
      auto [vg, ig] = ops::max(ops::to(x, kGpu), dim);
      EXPECT_TRUE(allclose(ops::to(vg, Device::cpu()), vc, 0, 0)) << "max values dim " << dim;
      EXPECT_EQ(ops::to_vector<int64_t>(ig), ops::to_vector<int64_t>(ic)) << "max indices dim " << dim;
    }
    if (dt == DType::bf16) continue;
    // max's gradient goes through scatter_add
    expect_parity([](const std::vector<Tensor>& in) { return std::get<0>(max(in[0], 1)); }, {x}, {5, 3}, 0);
  }
  // ties pick the first index, NaN wins over everything (as the CPU and PyTorch)
  Tensor t = ops::from_vector<float>({1, 3, 3, 2, NAN, 5, 0, 0}, {2, 4});
  auto [tv, ti] = ops::max(ops::to(t, kGpu), 1);
  EXPECT_EQ(ops::to_vector<int64_t>(ti), (std::vector<int64_t>{1, 0}));
  EXPECT_TRUE(std::isnan(ops::to_vector<float>(tv)[1]));
  Tensor ints = ops::from_vector<int64_t>({4, -2, 9, 9, 1, 0}, {3, 2});
  EXPECT_EQ(ops::to_vector<int64_t>(std::get<1>(ops::max(ops::to(ints, kGpu), 0))), (std::vector<int64_t>{1, 1}));
  // gather and scatter_add along each dim, index smaller than the input in the other dims
  Tensor src = test::uniform({4, 6, 5}, -1, 1, 62);
  Tensor idx = ops::from_vector<int64_t>({0, 3, 3, 1, 2, 2, 0, 1, 3, 3, 3, 0, 1, 1, 2, 0, 2, 3}, {3, 2, 3});
  for (int64_t dim : {0, 1, 2}) {
    Tensor ic = ops::clone(idx);
    EXPECT_TRUE(allclose(ops::to(ops::gather(ops::to(src, kGpu), dim, ops::to(ic, kGpu)), Device::cpu()),
                         ops::gather(src, dim, ic), 0, 0)) << "gather dim " << dim;
    Tensor vals = test::uniform({3, 2, 3}, -1, 1, 63 + dim);
    EXPECT_TRUE(allclose(ops::to(ops::scatter_add({4, 6, 5}, dim, ops::to(ic, kGpu), ops::to(vals, kGpu)), Device::cpu()),
                         ops::scatter_add({4, 6, 5}, dim, ic, vals), 0, 0)) << "scatter_add dim " << dim;
  }
}

TEST(CudaNnParity, Tf32IsOffByDefaultAndCloseWhenOn) {
  STRAND_SKIP_WITHOUT_GPU();
  ASSERT_FALSE(ops::allow_tf32());
  Tensor a = test::uniform({256, 512}, -1, 1, 71, DType::f32), b = test::uniform({512, 192}, -1, 1, 72, DType::f32);
  const Tensor ref = ops::matmul(ops::to(a, DType::f64), ops::to(b, DType::f64));
  auto rel = [&](const Tensor& c) {
    const Tensor d = ops::sub(ops::to(ops::to(c, Device::cpu()), DType::f64), ref);
    return std::sqrt(ops::item(ops::sum(ops::mul(d, d))) / ops::item(ops::sum(ops::mul(ref, ref))));
  };
  const double fp32 = rel(ops::matmul(ops::to(a, kGpu), ops::to(b, kGpu)));
  ops::set_allow_tf32(true);
  const double tf32 = rel(ops::matmul(ops::to(a, kGpu), ops::to(b, kGpu)));
  const double conv = rel(ops::reshape(conv1d(ops::to(ops::reshape(a, {1, 256, 512}), kGpu),
                                              ops::to(ops::unsqueeze(ops::transpose(b, 0, 1), -1), kGpu), Tensor(), 0),
                                       {256, 192}));
  ops::set_allow_tf32(false);
  const double back = rel(ops::matmul(ops::to(a, kGpu), ops::to(b, kGpu)));
  std::cout << "[ tf32 ] relative error vs f64: fp32 " << fp32 << ", tf32 " << tf32 << ", tf32 conv1d " << conv
            << ", fp32 again " << back << "\n";
  EXPECT_LT(fp32, 1e-6);
  EXPECT_GT(tf32, 1e-5);  // the tensor cores were used: 10-bit mantissas
  EXPECT_LT(tf32, 3e-3);
  EXPECT_GT(conv, 1e-5);
  EXPECT_LT(conv, 3e-3);
  EXPECT_EQ(back, fp32);  // switching back restores the fp32 result exactly
}

TEST(CudaNnParity, GradNormAndClippingMatchTheCpu) {
  STRAND_SKIP_WITHOUT_GPU();
  for (double norm_type : {2.0, 1.5, nn::kInfNorm}) {
    std::vector<Tensor> cpu_params, gpu_params;
    for (int i = 0; i < 3; ++i) {
      Tensor p = test::uniform({7 + i, 5}, -1, 1, 80 + i, DType::f32), g = test::uniform({7 + i, 5}, -3, 3, 90 + i, DType::f32);
      cpu_params.push_back(ops::clone(p));
      cpu_params.back().set_grad(ops::clone(g));
      gpu_params.push_back(ops::to(p, kGpu));
      gpu_params.back().set_grad(ops::to(g, kGpu));
    }
    const double c = nn::clip_grad_norm_(cpu_params, 0.5, norm_type), g = nn::clip_grad_norm_(gpu_params, 0.5, norm_type);
    EXPECT_NEAR(g, c, 1e-12 * c) << "norm type " << norm_type;
    for (size_t i = 0; i < cpu_params.size(); ++i)
      EXPECT_TRUE(allclose(ops::to(gpu_params[i].grad(), Device::cpu()), cpu_params[i].grad(), 1e-7, 1e-7));
  }
}

TEST(CudaNnParity, EmbeddingForwardAndDeterministicBackward) {
  STRAND_SKIP_WITHOUT_GPU();
  Tensor ids = ops::from_vector<int64_t>({3, 0, 3, 7, 1, 3, 0, 9, 2, 3, 3, 5}, {3, 4});
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor w = test::uniform({10, 6}, -1, 1, 31, dt);
    auto f = [&](const std::vector<Tensor>& in) { return embedding(in[0], ops::to(ids, in[0].device()), 1); };
    expect_parity(f, {w}, {3, 4, 6}, dt == DType::f64 ? 1e-14 : 1e-6);
  }
  Tensor x = test::uniform({4, 5, 3}, -1, 1, 32);  // index_select along a middle dim, bool too
  Tensor idx = ops::from_vector<int64_t>({4, 0, 0, 2}, {4});
  EXPECT_TRUE(allclose(ops::to(ops::index_select(ops::to(x, kGpu), 1, ops::to(idx, kGpu)), Device::cpu()),
                       ops::index_select(x, 1, idx), 0, 0));
  Tensor xb = ops::compare(CompareOp::gt, x, 0.0);
  EXPECT_EQ(ops::to_vector<double>(ops::index_select(ops::to(xb, kGpu), 1, ops::to(idx, kGpu))),
            ops::to_vector<double>(ops::index_select(xb, 1, idx)));
}

TEST(CudaNnParity, FusedAdamWMatchesTheCpu) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor p = test::uniform({1000, 3}, -1, 1, 41, dt), m = test::uniform({1000, 3}, -0.1, 0.1, 42, dt),
           v = test::uniform({1000, 3}, 0, 0.01, 43, dt), g = test::uniform({1000, 3}, -1, 1, 44, dt);
    Tensor pg = ops::to(p, kGpu), mg = ops::to(m, kGpu), vg = ops::to(v, kGpu);
    const AdamWStep s{1e-3, 0.9, 0.999, 1e-8, 0.01, 1e-3 / (1 - 0.9 * 0.9), std::sqrt(1 - 0.999 * 0.999)};
    ASSERT_TRUE(ops::adamw_(p, g, m, v, s));
    ASSERT_TRUE(ops::adamw_(pg, ops::to(g, kGpu), mg, vg, s));
    const double tol = dt == DType::f64 ? 1e-15 : 1e-7;
    EXPECT_TRUE(allclose(ops::to(pg, Device::cpu()), p, tol, tol));
    EXPECT_TRUE(allclose(ops::to(mg, Device::cpu()), m, tol, tol));
    EXPECT_TRUE(allclose(ops::to(vg, Device::cpu()), v, tol, tol));
  }
}

// The multi-tensor launches (tests/multi_tensor_cases.h says which cases) against the CPU kernel.
TEST(CudaNnParity, MultiTensorAdamWAndSumOfSquaresMatchTheCpu) {
  STRAND_SKIP_WITHOUT_GPU();
  test::check_multi_tensor_adamw(kGpu, ops::sum_squares, [](std::vector<AdamWParam>& ps) {
    ASSERT_TRUE(ops::adamw_multi_(ps));
  });
  // One call over mixed dtypes runs each dtype's stretch in its own launches.
  std::vector<AdamWParam> mixed;
  for (DType dt : {DType::f32, DType::f64, DType::f32}) {
    Tensor p = ops::to(test::uniform({100}, -1, 1, 7, dt), kGpu);
    mixed.push_back({p, ops::ones({100}, TensorOptions(dt, kGpu)), ops::zeros_like(p), ops::zeros_like(p),
                     {0.1, 0.9, 0.99, 1e-8, 0, 1, 1, 1}});  // step 1 with unit corrections: p - 1
  }
  ASSERT_TRUE(ops::adamw_multi_(mixed));
  const double p0 = ops::to_vector<double>(test::uniform({100}, -1, 1, 7, DType::f64))[0];
  for (const AdamWParam& e : mixed) EXPECT_NEAR(ops::to_vector<double>(e.p)[0], p0 - 1, 1e-6);
}

using test::pad_mask;  // key_pad[b][j], query_pad[b][i] (true = padding)

// Enformer's relative-position attention: values and all five gradients, one block of queries and
// several (256 per block on the GPU), Dv != Dk, transposed [B, T, H, D] views as the model passes
// them, with and without dropout (the same Philox mask on both devices).
TEST(CudaNnParity, RelAttentionOneAndSeveralBlocksWithDropout) {
  STRAND_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t B, H, T, Dk, Dv;
    double p;
  };
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-11 : 2e-4;
    for (Case c : {Case{2, 3, 37, 8, 12, 0}, Case{2, 2, 300, 16, 24, 0}, Case{2, 2, 300, 16, 24, 0.1},
                   Case{1, 2, 9, 0, 4, 0}}) {  // Dk = 0: computed on the CPU for a GPU call
      Tensor qc = test::uniform({c.B, c.T, c.H, c.Dk}, -1, 1, 61, dt), qr = test::uniform({c.B, c.T, c.H, c.Dk}, -1, 1, 62, dt);
      Tensor k = test::uniform({c.B, c.T, c.H, c.Dk}, -1, 1, 63, dt), v = test::uniform({c.B, c.T, c.H, c.Dv}, -1, 1, 64, dt);
      Tensor r = test::uniform({c.H, 2 * c.T - 1, c.Dk}, -1, 1, 65, dt);
      const Generator start = default_generator();
      auto f = [&](const std::vector<Tensor>& in) {
        default_generator() = start;  // the same dropout mask on both devices
        auto heads = [](const Tensor& t) { return transpose(t, 1, 2); };
        return rel_attention(heads(in[0]), heads(in[1]), heads(in[2]), in[3], heads(in[4]), c.p);
      };
      expect_parity(f, {qc, qr, k, r, v}, {c.B, c.H, c.T, c.Dv}, tol);
      // contiguous [B, H, T, D] operands, and an expanded upstream gradient (a sum over T: row stride 0)
      auto g2 = [&](const std::vector<Tensor>& in) {
        default_generator() = start;
        auto heads = [](const Tensor& t) { return contiguous(transpose(t, 1, 2)); };
        return sum(rel_attention(heads(in[0]), heads(in[1]), heads(in[2]), in[3], heads(in[4]), c.p), {2});
      };
      expect_parity(g2, {qc, qr, k, r, v}, {c.B, c.H, c.Dv}, tol);
    }
  }
}

using test::AttentionCase;
using test::attention_cases;

// attention(q, k, v) with p (and dropout) on whichever device the inputs are, the default generator
// set back to where it is now at every call, so both devices draw the same dropout mask.
Fn attention_on_both(ops::AttentionParams p, double dropout) {
  p.dropout = dropout;
  ops::AttentionParams gp = p;
  if (gp.key_pad.defined()) gp.key_pad = ops::to(gp.key_pad, kGpu);
  if (gp.query_pad.defined()) gp.query_pad = ops::to(gp.query_pad, kGpu);
  const Generator start = default_generator();
  return [p, gp, start](const std::vector<Tensor>& in) {
    default_generator() = start;
    return attention(in[0], in[1], in[2], in[0].is_cuda() ? gp : p);
  };
}

TEST(CudaNnParity, FusedAttentionEveryVariant) {
  STRAND_SKIP_WITHOUT_GPU();
  const std::vector<AttentionCase> cases = attention_cases();
  // every case also with dropout 0.15: the same Philox mask on both devices (the row and the
  // tiled kernels both)
  for (double dropout : {0.0, 0.15})
    for (DType dt : {DType::f32, DType::f64}) {
      for (const AttentionCase& c : cases) {
        const Fn f = attention_on_both(c.p, dropout);
        Tensor q = test::uniform({c.B, c.H, c.Tq, c.D}, -1, 1, 11, dt), k = test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 12, dt),
               v = test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 13, dt);
        expect_parity(f, {q, k, v}, q.sizes(), dt == DType::f64 ? 1e-12 : 2e-5);
      }
    }
}

// The tensor-core kernels (bf16/f16 operands, ops::set_tensor_core_attention): the variants above
// that they serve (head dims 8-128, masks of every kind, several and ragged 64-row tiles, dropout),
// values and the three gradients, against the f64 computation on the same rounded inputs.
// FlashAttention's criterion: at most 2x the error (relative L2, against f64) of the same attention
// composed of ops in the same precision on the CPU (matmul, scale, masked_fill, softmax, dropout,
// matmul, each rounded to bf16/f16).
TEST(CudaNnParity, TensorCoreAttentionWithinTwiceTheComposedHalfPrecisionError) {
  STRAND_SKIP_WITHOUT_GPU();
  const ops::SwitchScope on(ops::set_tensor_core_attention, ops::tensor_core_attention, true);
  std::vector<AttentionCase> cases;  // the head dims the tensor-core kernels serve (up to 128)
  for (const AttentionCase& c : attention_cases())
    if (c.D <= 128) cases.push_back(c);
  cases.push_back({1, 2, 256, 256, 64, {0.125, {}, {}}});  // four full tiles
  for (double dropout : {0.0, 0.15})
    for (DType dt : {DType::bf16, DType::f16})
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        const AttentionCase& c = cases[ci];
        const Generator start = default_generator();
        const Fn fused = attention_on_both(c.p, dropout);
        auto composed = [&](const std::vector<Tensor>& in) { return test::composed_attention(c, dropout, start, in); };
        const Tensor q = test::uniform({c.B, c.H, c.Tq, c.D}, -1, 1, 11, dt),
                     k = test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 12, dt),
                     v = test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 13, dt), up = test::uniform(q.sizes(), -1, 1, 99, dt);
        auto f64 = [](const Tensor& t) { return ops::to(t, DType::f64); };
        const auto ref = run_with_grads(fused, {f64(q), f64(k), f64(v)}, f64(up), Device::cpu());
        const auto tc = run_with_grads(fused, {q, k, v}, up, kGpu);
        const auto base = run_with_grads(composed, {q, k, v}, up, Device::cpu());
        test::expect_within_twice_composed(tc, base, ref,
                                           "case " + std::to_string(ci) + " " + std::string(dtype_name(dt)) + " dropout " +
                                               std::to_string(dropout));
      }
}

}  // namespace
}  // namespace strand
