// Enformer's relative-position attention on the GPU path (kernels/cuda/rel_attention.cuh: its row
// kernels and its order of batched GEMMs) on the SIMT emulator, the GEMMs done by plain loops with
// cuBLAS's row-major contract, against the CPU kernel: the cases of the GPU test
// CudaNnParity.RelAttentionOneAndSeveralBlocksWithDropout (one block of queries and two, Dv != Dk,
// the models' transposed views, dropout). The op layer hands the kernels rows that do not overlap
// (ops::unit_last copies an expanded gradient), as cuBLAS requires: EmuBlas checks it too.
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/rel_attention.cuh"
#include "tests/simt/emu_blas.h"
#include "tests/simt/simt_test_util.h"

namespace strand {
namespace {

using simt::EmuBlas;
using test::allclose;

TEST(SimtRelAttention, ForwardAndBackwardMatchTheCpuKernel) {
  struct Case {
    int64_t B, H, T, Dk, Dv;
    double p;
  };
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-11 : 2e-4;  // the GPU test's
    for (Case c : {Case{2, 3, 37, 8, 12, 0}, Case{2, 2, 300, 16, 24, 0}, Case{2, 2, 300, 16, 24, 0.1}}) {
      const std::string what = std::string(dtype_name(dt)) + " T " + std::to_string(c.T) + " p " + std::to_string(c.p);
      auto heads = [](const Tensor& t) { return ops::transpose(t, 1, 2); };  // [B, T, H, D] memory
      const Tensor qc = heads(test::uniform({c.B, c.T, c.H, c.Dk}, -1, 1, 61, dt)),
                   qr = heads(test::uniform({c.B, c.T, c.H, c.Dk}, -1, 1, 62, dt)),
                   k = heads(test::uniform({c.B, c.T, c.H, c.Dk}, -1, 1, 63, dt)),
                   v = heads(test::uniform({c.B, c.T, c.H, c.Dv}, -1, 1, 64, dt)),
                   r = test::uniform({c.H, 2 * c.T - 1, c.Dk}, -1, 1, 65, dt);
      const Tensor dout = heads(test::uniform({c.B, c.T, c.H, c.Dv}, -1, 1, 66, dt));
      const cpu::DropoutMask d{c.p, 77, 3};
      std::vector<Tensor> ref, emu;
      for (std::vector<Tensor>* o : {&ref, &emu})
        *o = {test::unwritten({c.B, c.H, c.T, c.Dv}, dt), test::unwritten({c.B, c.H, c.T}, dt),
              test::unwritten({c.B, c.H, c.T, c.Dk}, dt), test::unwritten({c.B, c.H, c.T, c.Dk}, dt),
              test::unwritten({c.B, c.H, c.T, c.Dk}, dt), test::unwritten(r.sizes(), dt),
              test::unwritten({c.B, c.H, c.T, c.Dv}, dt)};
      cpu::rel_attention_forward(qc, qr, k, r, v, d, ref[0], ref[1]);
      cpu::rel_attention_backward(dout, qc, qr, k, r, v, ref[0], ref[1], d, ref[2], ref[3], ref[4], ref[5], ref[6]);
      cuda::rel::rel_attention_forward(EmuBlas{}, qc, qr, k, r, v, d, emu[0], emu[1]);
      cuda::rel::rel_attention_backward(EmuBlas{}, dout, qc, qr, k, r, v, emu[0], emu[1], d, emu[2], emu[3], emu[4],
                                        emu[5], emu[6]);
      const char* names[] = {"out", "lse", "dqc", "dqr", "dk", "dr", "dv"};
      for (size_t i = 0; i < ref.size(); ++i)
        EXPECT_TRUE(allclose(emu[i], ref[i], tol, tol)) << names[i] << " " << what;
    }
  }
}

}  // namespace
}  // namespace strand
