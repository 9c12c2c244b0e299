#pragma once
// The attention dropout factor on the GPU (cpu::DropoutMask): 0 or 1/(1-p) for the element at
// `index` of the probabilities, from the same Philox number ops::dropout_mask and the CPU's
// keep_factors (kernels/cpu/attention_common.h) use, so the masks agree across devices.
#include <cuda_runtime.h>

#include "kernels/cpu/cpu_kernels.h"
#include "tensor/philox.h"

namespace strand::cuda {

struct DropFactor {
  bool on = false;
  float keep = 1;
  double scale = 1;
  uint64_t seed = 0, offset = 0;
  static DropFactor of(const cpu::DropoutMask& d) {
    DropFactor f;
    if (d.p > 0) f = {true, static_cast<float>(1.0 - d.p), 1.0 / (1.0 - d.p), d.seed, d.offset};
    return f;
  }
  __device__ double operator()(int64_t index) const {
    const philox::U4 u = philox::philox4x32_10(seed, static_cast<uint64_t>(index), offset);
    return philox::uniform_f32(u.x) < keep ? scale : 0.0;
  }
};

}  // namespace strand::cuda
