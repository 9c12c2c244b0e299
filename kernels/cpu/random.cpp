#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"
#include "tensor/philox.h"

namespace strand::cpu {

void rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "rand", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(out.raw_data());
    parallel_for(out.numel(), 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        auto r = philox::philox4x32_10(seed, static_cast<uint64_t>(i), offset);
        if constexpr (std::is_same_v<T, double>) p[i] = philox::uniform_f64(r.x, r.y);
        else p[i] = T(philox::uniform_f32(r.x));
      }
    });
  });
}

void randn(const Tensor& out, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "randn", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(out.raw_data());
    parallel_for(out.numel(), 32, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        auto r = philox::philox4x32_10(seed, static_cast<uint64_t>(i), offset);
        // Box-Muller in double: u1 in (0, 1] so the log is finite.
        double u1 = (static_cast<double>(r.x) + 1.0) * 2.3283064365386963e-10;
        double u2 = static_cast<double>(r.y) * 2.3283064365386963e-10;
        double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
        p[i] = T(static_cast<acc_t<T>>(z));
      }
    });
  });
}

void bernoulli(const Tensor& out, double p, double value, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "bernoulli", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.raw_data());
    const float pf = static_cast<float>(p);
    const T v = T(static_cast<acc_t<T>>(value)), zero = T(0.0f);
    parallel_for(out.numel(), 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        auto r = philox::philox4x32_10(seed, static_cast<uint64_t>(i), offset);
        o[i] = philox::uniform_f32(r.x) < pf ? v : zero;
      }
    });
  });
}

}  // namespace strand::cpu
