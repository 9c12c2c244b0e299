#pragma once
// STRAND_DISPATCH(t, fn, args...): cuda::fn(args...) when t lives on a GPU (CUDA builds), else
// cpu::fn(args...). Used by the op layer files (kernels/*.cpp).
#include "kernels/cpu/cpu_kernels.h"
#ifdef STRAND_WITH_CUDA
#include "kernels/cuda/cuda_kernels.h"
#define STRAND_DISPATCH(dev_tensor, fn, ...)           \
  do {                                                 \
    if ((dev_tensor).is_cuda()) cuda::fn(__VA_ARGS__); \
    else cpu::fn(__VA_ARGS__);                         \
  } while (0)
#else
#define STRAND_DISPATCH(dev_tensor, fn, ...) cpu::fn(__VA_ARGS__)
#endif
