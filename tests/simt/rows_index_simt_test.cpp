// The CUDA row kernels (kernels/cuda/nn_rows.cuh: softmax and log_softmax over rows short and long
// and over a middle dim, layer_norm and rms_norm forward and backward, rotary) and index kernels
// (index.cuh: index_select, index_add, gather, scatter_add) and reductions (reduce.cuh: sum, mean,
// var over rows and middle dims, max with its index) on the SIMT emulator against the CPU kernels,
// in f64, f32 and (where the op takes them) bf16 and i64.
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/index.cuh"
#include "kernels/cuda/nn_rows.cuh"
#include "kernels/cuda/reduce.cuh"
#include "tests/simt/simt_test_util.h"

namespace strand {
namespace {

using test::allclose;
constexpr simt::Launch kEmu{};

::testing::AssertionResult close(const Tensor& emu, const Tensor& ref) {
  const test::Tol t = test::tol_for(ref.dtype());
  return allclose(emu, ref, t.atol, t.rtol);
}

TEST(SimtRows, SoftmaxShortLongAndStridedRowsWithGradients) {
  struct Case {
    Shape shape;
    int64_t n, inner;
  };
  // rows of 300 (cached in registers), 3000 (two passes over memory), and softmax over a middle dim
  const Case cases[] = {{{5, 300}, 300, 1}, {{3, 3000}, 3000, 1}, {{4, 33, 7}, 33, 7}};
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (const Case& c : cases)
      for (bool log : {false, true}) {
        const Tensor x = test::uniform(c.shape, -4, 4, 3, dt), g = test::uniform(c.shape, -1, 1, 4, dt);
        Tensor ry = test::unwritten(c.shape, dt), ey = test::unwritten(c.shape, dt), rg = test::unwritten(c.shape, dt),
               eg = test::unwritten(c.shape, dt);
        cpu::softmax(x, ry, c.n, c.inner, log);
        cuda::rows::softmax(kEmu, x, ey, c.n, c.inner, log);
        EXPECT_TRUE(close(ey, ry)) << dtype_name(dt) << " n " << c.n << " log " << log;
        cpu::softmax_backward(g, ry, rg, c.n, c.inner, log);
        cuda::rows::softmax_backward(kEmu, g, ry, eg, c.n, c.inner, log);
        EXPECT_TRUE(close(eg, rg)) << "backward " << dtype_name(dt) << " n " << c.n << " log " << log;
      }
}

TEST(SimtRows, LayerNormAndRmsNormWithGradients) {
  const int64_t rows = 37, n = 300;
  for (DType dt : {DType::f64, DType::f32, DType::bf16})
    for (bool affine : {true, false}) {
      const DType at = dt == DType::f64 ? DType::f64 : DType::f32;
      const Tensor x = test::uniform({rows, n}, -2, 3, 5, dt), g = test::uniform({rows, n}, -1, 1, 6, dt);
      const Tensor w = affine ? test::uniform({n}, 0.5, 1.5, 7, dt) : Tensor(),
                   b = affine ? test::uniform({n}, -0.5, 0.5, 8, dt) : Tensor();
      for (bool rms : {false, true}) {
        const std::string what = std::string(dtype_name(dt)) + (affine ? " affine" : "") + (rms ? " rms" : " layer");
        Tensor ry = test::unwritten({rows, n}, dt), ey = test::unwritten({rows, n}, dt),
               rm = test::unwritten({rows}, at), em = test::unwritten({rows}, at), rr = test::unwritten({rows}, at),
               er = test::unwritten({rows}, at);
        if (rms) {
          cpu::rms_norm(x, w, 1e-5, ry, rr);
          cuda::rows::rms_norm(kEmu, x, w, 1e-5, ey, er);
        } else {
          cpu::layer_norm(x, w, b, 1e-5, ry, rm, rr);
          cuda::rows::layer_norm(kEmu, x, w, b, 1e-5, ey, em, er);
          EXPECT_TRUE(close(em, rm)) << "mean " << what;
        }
        EXPECT_TRUE(close(ey, ry)) << "y " << what;
        EXPECT_TRUE(close(er, rr)) << "rstd " << what;
        Tensor rgx = test::unwritten({rows, n}, dt), egx = test::unwritten({rows, n}, dt);
        Tensor rgw = affine ? test::unwritten({n}, dt) : Tensor(), egw = affine ? test::unwritten({n}, dt) : Tensor();
        Tensor rgb = affine && !rms ? test::unwritten({n}, dt) : Tensor(),
               egb = affine && !rms ? test::unwritten({n}, dt) : Tensor();
        if (rms) {
          cpu::rms_norm_backward(g, x, w, rr, rgx, rgw);
          cuda::rows::rms_norm_backward(kEmu, g, x, w, rr, egx, egw);
        } else {
          cpu::layer_norm_backward(g, x, w, rm, rr, rgx, rgw, rgb);
          cuda::rows::layer_norm_backward(kEmu, g, x, w, rm, rr, egx, egw, egb);
        }
        EXPECT_TRUE(close(egx, rgx)) << "grad x " << what;
        if (affine) EXPECT_TRUE(close(egw, rgw)) << "grad w " << what;
        if (affine && !rms) EXPECT_TRUE(close(egb, rgb)) << "grad b " << what;
      }
    }
}

TEST(SimtRows, RotaryForwardAndBackwardOnATransposedView) {
  for (DType dt : {DType::f64, DType::f32})
    for (bool backward : {false, true}) {
      // [B, H, T, hd] as a view of [B, T, H, hd] memory, rotating the first 16 of 24 features
      const Tensor x = ops::transpose(test::uniform({2, 9, 3, 24}, -1, 1, 9, dt), 1, 2);
      const Tensor cos = test::uniform({9, 16}, -1, 1, 10, dt), sin = test::uniform({9, 16}, -1, 1, 11, dt);
      Tensor ro = test::unwritten({2, 3, 9, 24}, dt), eo = test::unwritten({2, 3, 9, 24}, dt);
      cpu::rotary(x, cos, sin, ro, backward);
      cuda::rows::rotary(kEmu, x, cos, sin, eo, backward);
      EXPECT_TRUE(close(eo, ro)) << dtype_name(dt) << " backward " << backward;
    }
}

TEST(SimtIndex, SelectAddGatherAndScatterAdd) {
  const Tensor index = ops::to(ops::from_vector<double>({3, 0, 3, 5, 1, 1, 0}, {7}), DType::i64);
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    const Tensor x = test::uniform({4, 6, 5}, -1, 1, 12, dt);
    Tensor rs = test::unwritten({4, 7, 5}, dt), es = test::unwritten({4, 7, 5}, dt);  // rows of dim 1 by index
    cpu::index_select(x, 1, index, rs);
    cuda::idx::index_select(kEmu, x, 1, index, es);
    EXPECT_TRUE(allclose(es, rs, 0, 0)) << "index_select " << dtype_name(dt);
    const Tensor src = test::uniform({4, 7, 5}, -1, 1, 13, dt);  // its gradient: repeated indices add up
    Tensor ra = ops::clone(x), ea = ops::clone(x);
    cpu::index_add(ra, 1, index, src);
    cuda::idx::index_add(kEmu, ea, 1, index, src);
    EXPECT_TRUE(allclose(ea, ra, 0, 0)) << "index_add " << dtype_name(dt);  // the same roundings in the same order
    // gather along dim 2 with an index of x's shape but 3 columns; scatter_add its gradient back
    const Tensor gi = ops::to(ops::mul(test::uniform({4, 6, 3}, 0, 4.99, 14), 1.0), DType::i64);
    Tensor rg = test::unwritten({4, 6, 3}, dt), eg = test::unwritten({4, 6, 3}, dt);
    cpu::gather(x, 2, gi, rg);
    cuda::idx::gather(kEmu, x, 2, gi, eg);
    EXPECT_TRUE(allclose(eg, rg, 0, 0)) << "gather " << dtype_name(dt);
    const Tensor up = test::uniform({4, 6, 3}, -1, 1, 15, dt);
    Tensor rsa = ops::clone(x), esa = ops::clone(x);
    cpu::scatter_add(rsa, 2, gi, up);
    cuda::idx::scatter_add(kEmu, esa, 2, gi, up);
    EXPECT_TRUE(close(esa, rsa)) << "scatter_add " << dtype_name(dt);
  }
}

TEST(SimtReduce, SumMeanVarOverRowsAndMiddleDimsAndMaxWithIndex) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::i64}) {
    // [outer, n, inner]: one output per thread (short columns), and outer 1 with n >= 512 (the
    // chunked column sums)
    struct Case {
      int64_t outer, n, inner;
    };
    for (Case c : {Case{5, 37, 3}, Case{7, 300, 1}, Case{1, 700, 6}})
      for (cpu::RowReduce r : {cpu::RowReduce::sum, cpu::RowReduce::mean, cpu::RowReduce::var}) {
        if (dt == DType::i64 && r != cpu::RowReduce::sum) continue;  // the op layer sends integers to sum only
        const Tensor x = ops::to(test::uniform({c.outer, c.n, c.inner}, -3, 3, 21, DType::f64), dt);
        Tensor ref = test::unwritten({c.outer, c.inner}, dt), emu = test::unwritten({c.outer, c.inner}, dt);
        cpu::reduce_middle(r, x, c.outer, c.n, c.inner, ref);
        cuda::red::reduce_middle(kEmu, r, x, c.outer, c.n, c.inner, emu);
        EXPECT_TRUE(close(emu, ref)) << dtype_name(dt) << " reduce " << int(r) << " n " << c.n;
      }
    // max over rows of 40 (a warp) and 700 (a block), with ties and a NaN in one row
    for (int64_t n : {40, 700}) {
      Tensor x = ops::to(ops::mul(test::uniform({6, n}, -3, 3, 22, DType::f64), 1.0), dt);
      if (is_floating(dt)) {
        std::vector<double> v = ops::to_vector<double>(x);
        v[2 * n + 5] = NAN;
        v[3 * n + 7] = v[3 * n + 20] = 100;  // a tie: the smaller index wins
        x = ops::to(ops::from_vector<double>(v, {6, n}), dt);
      }
      Tensor rv = test::unwritten({6}, dt), ev = test::unwritten({6}, dt);
      Tensor ri = test::unwritten({6}, DType::i64), ei = test::unwritten({6}, DType::i64);
      cpu::max_rows(x, 6, n, rv, ri);
      cuda::red::max_rows(kEmu, x, 6, n, ev, ei);
      EXPECT_TRUE(allclose(ei, ri, 0, 0)) << "max index " << dtype_name(dt) << " n " << n;
      EXPECT_TRUE(allclose(ev, rv, 0, 0)) << "max value " << dtype_name(dt) << " n " << n;
    }
  }
}

}  // namespace
}  // namespace strand
