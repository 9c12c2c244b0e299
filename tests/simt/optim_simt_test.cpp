// The multi-tensor AdamW and sum-of-squares kernels (kernels/cuda/optim.cuh) on the SIMT emulator,
// through their launchers (the tensor tables, the launches cut at 36 tensors / 320 chunks), against
// the CPU kernels: the cases of tests/multi_tensor_cases.h, as the GPU test.
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/optim.cuh"
#include "tests/multi_tensor_cases.h"

namespace strand {
namespace {

constexpr simt::Launch kEmu{};

TEST(SimtMultiTensor, AdamWAndSumOfSquaresMatchTheCpuKernels) {
  test::check_multi_tensor_adamw(
      Device::cpu(), [](const std::vector<Tensor>& xs) { return cuda::optim::sum_squares(kEmu, xs); },
      [](std::vector<AdamWParam>& ps) {
        const uint64_t blocks = simt::blocks_run();
        cuda::optim::adamw_multi(kEmu, ps);
        EXPECT_GE(simt::blocks_run() - blocks, 322u + 50u + 1u);  // at least a block per chunk
      });
}

}  // namespace
}  // namespace strand
