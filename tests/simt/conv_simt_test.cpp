// conv1d's GPU path (kernels/cuda/conv.cuh: im2col, weight reorders, bias rows, the GEMMs in their
// order, f32 accumulation of bf16/f16 gradients) on the SIMT emulator with EmuBlas's GEMMs, against
// the CPU kernel: the cases and tolerances of the GPU test CudaNnParity.Conv1dEveryPaddingKernelSizeAndDtype
// (stem-like, tower-like, pointwise, explicit paddings; f32, f64, bf16, f16), with and without bias,
// values and the three gradients. (Several im2col blocks need 2^26-element blocks: not here.)
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/conv.cuh"
#include "tests/simt/emu_blas.h"
#include "tests/simt/simt_test_util.h"

namespace strand {
namespace {

using simt::EmuBlas;
using test::allclose;

TEST(SimtConv1d, EveryPaddingKernelSizeAndDtypeWithGradients) {
  struct Case {
    int64_t cin, cout, k, pad;
  };
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 2e-5 : dt == DType::bf16 ? 1.0 / 64 : 1.0 / 512;
    for (Case c : {Case{4, 6, 15, -1}, Case{8, 5, 5, -1}, Case{7, 9, 1, 0}, Case{5, 3, 3, 0}, Case{3, 4, 3, 2}})
      for (bool with_bias : {true, false}) {
        const std::string what = std::string(dtype_name(dt)) + " k " + std::to_string(c.k) + " pad " +
                                 std::to_string(c.pad) + (with_bias ? " bias" : "");
        const int64_t pad = c.pad < 0 ? c.k / 2 : c.pad, L = 23, lout = L + 2 * pad - c.k + 1;
        const Tensor x = test::uniform({2, L, c.cin}, -1, 1, 41, dt),
                     w = test::uniform({c.cout, c.cin, c.k}, -1, 1, 42, dt),
                     b = with_bias ? test::uniform({c.cout}, -1, 1, 43, dt) : Tensor(),
                     g = test::uniform({2, lout, c.cout}, -1, 1, 44, dt);
        // the CPU kernel computes in f32 for bf16/f16 (as the op layer has it do), rounded once at the end
        const DType ct = dt == DType::f64 ? DType::f64 : DType::f32;
        auto c32 = [&](const Tensor& t) { return t.defined() ? ops::to(t, ct) : t; };
        std::vector<Tensor> ref, emu;
        ref = {test::unwritten({2, lout, c.cout}, ct), test::unwritten(x.sizes(), ct), test::unwritten(w.sizes(), ct),
               with_bias ? test::unwritten({c.cout}, ct) : Tensor()};
        emu = {test::unwritten({2, lout, c.cout}, dt), test::unwritten(x.sizes(), dt), test::unwritten(w.sizes(), dt),
               with_bias ? test::unwritten({c.cout}, dt) : Tensor()};
        cpu::conv1d(c32(x), c32(w), c32(b), pad, ref[0]);
        cuda::conv::conv1d(EmuBlas{}, x, w, b, pad, emu[0]);
        cpu::conv1d_backward(c32(g), c32(x), c32(w), pad, ref[1], ref[2], ref[3]);
        cuda::conv::conv1d_backward(EmuBlas{}, g, x, w, pad, emu[1], emu[2], emu[3]);
        for (Tensor& t : ref)
          if (t.defined()) t = ops::to(ops::to(t, dt), DType::f64);
        for (Tensor& t : emu)
          if (t.defined()) t = ops::to(t, DType::f64);
        const char* names[] = {"out", "gx", "gw", "gb"};
        for (size_t i = 0; i < 4; ++i)
          if (ref[i].defined()) EXPECT_TRUE(allclose(emu[i], ref[i], tol, tol)) << names[i] << " " << what;
      }
  }
}

}  // namespace
}  // namespace strand
