#pragma once
// bf16 and f16 storage types. Arithmetic is never done in these types: kernels load them, compute
// in float and round back (round-to-nearest-even), on the CPU and on the GPU alike, so one header
// serves both (STRAND_HD marks functions callable from device code).
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define STRAND_HD __host__ __device__ __forceinline__
#else
#define STRAND_HD inline
#endif

namespace strand {

namespace detail {
STRAND_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
STRAND_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
}  // namespace detail

struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  STRAND_HD bf16(float f) {  // NOLINT(google-explicit-constructor): mirrors float conversions
    uint32_t u = detail::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it a quiet NaN
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  STRAND_HD operator float() const { return detail::bits_float(static_cast<uint32_t>(bits) << 16); }
};

struct f16 {
  uint16_t bits = 0;
  f16() = default;
  STRAND_HD f16(float f) {  // NOLINT(google-explicit-constructor)
    uint32_t x = detail::float_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {  // inf or NaN
      bits = static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
      return;
    }
    if (ax >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
      bits = static_cast<uint16_t>(sign | 0x7c00u);
      return;
    }
    if (ax < 0x38800000u) {  // subnormal or zero in f16: exact add-trick rounding
      float af = detail::bits_float(ax) + 0.5f;  // 0.5 = 2^-1, ulp of f16 subnormals is 2^-24
      bits = static_cast<uint16_t>(sign | (detail::float_bits(af) - 0x3f000000u));
      return;
    }
    uint32_t mant_odd = (ax >> 13) & 1u;
    ax += 0xc8000fffu + mant_odd;  // re-bias exponent (-112 << 23) and round to nearest even
    bits = static_cast<uint16_t>(sign | (ax >> 13));
  }
  STRAND_HD operator float() const {
    uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
    uint32_t exp = (bits >> 10) & 0x1fu;
    uint32_t mant = bits & 0x3ffu;
    if (exp == 0x1f) return detail::bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
      // subnormal: mant * 2^-24
      float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
      return sign ? -v : v;
    }
    return detail::bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  }
};

}  // namespace strand
