#pragma once
// AVX2 versions of the f32 unary ops whose scalar forms call libm per element (exp, sigmoid, SiLU,
// GELU, Enformer's sigmoid GELU) and of their derivatives, for contiguous runs. They return false
// for other ops (or without AVX2), and the caller then runs the scalar loop.
//
// GELU's Φ(x) = erfc(-x/√2)/2 uses Numerical Recipes' erfc (Chebyshev fit, fractional error below
// 1.2e-7 in exact arithmetic) on top of vec::exp8; evaluated in f32, GELU is within 1.2e-6 relative
// (where |GELU| > 1e-3; below that within 3e-9 absolute). Every other op is built from exp8 and
// exact IEEE divides (within 1e-6 relative). tests/kernels/vec_math_test.cpp measures these.
#include <cstdint>

#include "kernels/cpu/vec.h"
#include "kernels/elementwise_math.h"

namespace strand::cpu::vec {

#if STRAND_VEC_AVX2
namespace detail {
inline __m256 set(float v) { return _mm256_set1_ps(v); }
inline __m256 sigmoid8(__m256 x) {  // 1 / (1 + e^-x): exp overflow to inf gives exactly 0
  return _mm256_div_ps(set(1.0f), _mm256_add_ps(set(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
// erfc(z), Numerical Recipes erfcc
inline __m256 erfc8(__m256 z) {
  const __m256 az = _mm256_andnot_ps(set(-0.0f), z);
  const __m256 t = _mm256_div_ps(set(1.0f), _mm256_fmadd_ps(set(0.5f), az, set(1.0f)));
  __m256 p = set(0.17087277f);
  for (float c : {-0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f, 0.09678418f, 0.37409196f,
                  1.00002368f, -1.26551223f})
    p = _mm256_fmadd_ps(p, t, set(c));
  // exp(p - z^2) with z^2 = zz + err exactly (FMA): exp(p - zz) (1 - err), so the rounding of z^2
  // does not cost relative precision in the tail.
  const __m256 zz = _mm256_mul_ps(az, az), err = _mm256_fmsub_ps(az, az, zz);
  const __m256 r = _mm256_mul_ps(_mm256_mul_ps(t, exp8(_mm256_sub_ps(p, zz))), _mm256_sub_ps(set(1.0f), err));
  return _mm256_blendv_ps(r, _mm256_sub_ps(set(2.0f), r), _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ));
}
inline __m256 phi_cdf8(__m256 x) { return _mm256_mul_ps(set(0.5f), erfc8(_mm256_mul_ps(x, set(-0.70710678118654752f)))); }
inline __m256 phi_pdf8(__m256 x) {
  return _mm256_mul_ps(exp8(_mm256_mul_ps(set(-0.5f), _mm256_mul_ps(x, x))), set(0.39894228040143267794f));
}

template <UnaryOp op>
inline __m256 fwd8(__m256 x) {
  if constexpr (op == UnaryOp::exp) return exp8(x);
  else if constexpr (op == UnaryOp::sigmoid) return sigmoid8(x);
  else if constexpr (op == UnaryOp::silu) return _mm256_mul_ps(x, sigmoid8(x));
  else if constexpr (op == UnaryOp::gelu) return _mm256_mul_ps(x, phi_cdf8(x));
  else return _mm256_mul_ps(x, sigmoid8(_mm256_mul_ps(set(1.702f), x)));  // gelu_sigmoid
}
// g · d/dx, with v as unary_backward_uses_output says (y for exp and sigmoid, x otherwise)
template <UnaryOp op>
inline __m256 bwd8(__m256 g, __m256 v) {
  if constexpr (op == UnaryOp::exp) {
    return _mm256_mul_ps(g, v);
  } else if constexpr (op == UnaryOp::sigmoid) {
    return _mm256_mul_ps(_mm256_mul_ps(g, v), _mm256_sub_ps(set(1.0f), v));
  } else if constexpr (op == UnaryOp::silu) {
    const __m256 s = sigmoid8(v);
    return _mm256_mul_ps(_mm256_mul_ps(g, s), _mm256_fmadd_ps(v, _mm256_sub_ps(set(1.0f), s), set(1.0f)));
  } else if constexpr (op == UnaryOp::gelu) {
    return _mm256_mul_ps(g, _mm256_fmadd_ps(v, phi_pdf8(v), phi_cdf8(v)));
  } else {  // gelu_sigmoid
    const __m256 s = sigmoid8(_mm256_mul_ps(set(1.702f), v));
    const __m256 ds = _mm256_mul_ps(_mm256_mul_ps(set(1.702f), v), _mm256_mul_ps(s, _mm256_sub_ps(set(1.0f), s)));
    return _mm256_mul_ps(g, _mm256_add_ps(s, ds));
  }
}

// Runs f over [0, n) in blocks of 8; the tail goes through a zero-padded block.
template <int K, class F>
inline void blocks8(const float* const (&in)[K], float* out, int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 a[K];
    for (int k = 0; k < K; ++k) a[k] = _mm256_loadu_ps(in[k] + i);
    _mm256_storeu_ps(out + i, f(a));
  }
  if (i < n) {
    alignas(32) float buf[K][8] = {};
    alignas(32) float res[8];
    for (int k = 0; k < K; ++k)
      for (int64_t j = i; j < n; ++j) buf[k][j - i] = in[k][j];
    __m256 a[K];
    for (int k = 0; k < K; ++k) a[k] = _mm256_load_ps(buf[k]);
    _mm256_store_ps(res, f(a));
    for (int64_t j = i; j < n; ++j) out[j] = res[j - i];
  }
}
}  // namespace detail

template <class F>
inline bool dispatch_vec_unary(UnaryOp op, F&& f) {
  switch (op) {
    case UnaryOp::exp: f(std::integral_constant<UnaryOp, UnaryOp::exp>{}); return true;
    case UnaryOp::sigmoid: f(std::integral_constant<UnaryOp, UnaryOp::sigmoid>{}); return true;
    case UnaryOp::silu: f(std::integral_constant<UnaryOp, UnaryOp::silu>{}); return true;
    case UnaryOp::gelu: f(std::integral_constant<UnaryOp, UnaryOp::gelu>{}); return true;
    case UnaryOp::gelu_sigmoid: f(std::integral_constant<UnaryOp, UnaryOp::gelu_sigmoid>{}); return true;
    default: return false;
  }
}

// y = op(x) over a contiguous run; false when op has no vector form here.
inline bool unary_run(UnaryOp op, const float* x, float* y, int64_t n) {
  return dispatch_vec_unary(op, [&](auto c) {
    const float* const in[1] = {x};
    detail::blocks8<1>(in, y, n, [](const __m256* a) { return detail::fwd8<decltype(c)::value>(a[0]); });
  });
}
// out = g · op'(v) over contiguous runs.
inline bool unary_backward_run(UnaryOp op, const float* g, const float* v, float* out, int64_t n) {
  return dispatch_vec_unary(op, [&](auto c) {
    const float* const in[2] = {g, v};
    detail::blocks8<2>(in, out, n, [](const __m256* a) { return detail::bwd8<decltype(c)::value>(a[0], a[1]); });
  });
}
#else
inline bool unary_run(UnaryOp, const float*, float*, int64_t) { return false; }
inline bool unary_backward_run(UnaryOp, const float*, const float*, float*, int64_t) { return false; }
#endif

}  // namespace strand::cpu::vec
