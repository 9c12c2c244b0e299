#pragma once
#include <algorithm>
#include <atomic>
#include <cstdlib>
// Internals shared by the op-layer files (kernels/*.cpp): STRAND_DISPATCH(t, fn, args...) calls
// cuda::fn(args...) when t lives on a GPU (CUDA builds), else cpu::fn(args...), timed under fn's name
// when the kernel profile is on (kernels/profile.h); compute_dtype and
// unit_last prepare operands for the kernels.
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/ops.h"
#include "kernels/profile.h"
#ifdef STRAND_WITH_CUDA
#include "kernels/cuda/cuda_kernels.h"
#define STRAND_DISPATCH(dev_tensor, fn, ...)                         \
  do {                                                               \
    const bool on_cuda_ = (dev_tensor).is_cuda();                    \
    const ::strand::prof::Scope prof_scope_(#fn, on_cuda_);          \
    if (on_cuda_) cuda::fn(__VA_ARGS__);                             \
    else cpu::fn(__VA_ARGS__);                                       \
  } while (0)
#else
#define STRAND_DISPATCH(dev_tensor, fn, ...)                \
  do {                                                      \
    const ::strand::prof::Scope prof_scope_(#fn, false);    \
    cpu::fn(__VA_ARGS__);                                   \
  } while (0)
#endif

namespace strand::ops {
// The starting value of an opt-in switch: whether the environment variable `name` is "1".
inline bool env_switch(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr && e[0] == '1' && e[1] == '\0';
}
// Defines `bool get()` and `void set(bool)` for an opt-in switch that starts as env_switch(env).
#define STRAND_OPT_IN_SWITCH(set, get, env)                   \
  namespace {                                                 \
  std::atomic<bool>& get##_flag() {                           \
    static std::atomic<bool> on{env_switch(env)};             \
    return on;                                                \
  }                                                           \
  }                                                           \
  void set(bool on) { get##_flag() = on; }                    \
  bool get() { return get##_flag(); }
// The dtype kernels compute in: f64 stays f64, every other floating type goes through f32.
inline DType compute_dtype(const Tensor& t) { return t.dtype() == DType::f64 ? DType::f64 : DType::f32; }
// The dtype a GEMM runs in: on a GPU, bf16 and f16 stay as they are (tensor cores, f32
// accumulation, split-K partial sums too, one rounding of the result); elsewhere as compute_dtype:
// the f32 GEMM on the same values, rounded once.
inline DType gemm_dtype(const Tensor& t) {
  const bool half = t.dtype() == DType::bf16 || t.dtype() == DType::f16;
  return half && t.device().is_cuda() ? t.dtype() : compute_dtype(t);
}
// t itself when its rows can go to BLAS as they are — unit last stride, and a row stride of at
// least the row length (so no expanded or overlapping rows: BLAS rejects a leading dimension below
// the row length) — else a contiguous copy; the other strides are read in place.
inline Tensor unit_last(const Tensor& t) {
  const bool unit = t.size(-1) <= 1 || t.stride(-1) == 1;
  const bool rows = t.dim() < 2 || t.stride(-2) >= std::max<int64_t>(1, t.size(-1));
  return unit && rows ? t : contiguous(t);
}
}  // namespace strand::ops
