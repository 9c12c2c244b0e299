#pragma once
// Vectorised row primitives for the CPU kernels (softmax, fused attention). With AVX2+FMA (the
// -march=x86-64-v3 build) they run 8 floats at a time; otherwise they are the plain loops. The
// double versions are always the plain loops (f64 is the gradient-checking precision, not a
// speed path).
//
// exp: Cephes' expf range reduction and degree-5 polynomial (as avx_mathfun): within 2 ulp of
// std::exp where the result is a normal float, gradual underflow to denormals, 0 below -103.97,
// +inf above 88.72, NaN in -> NaN out.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define STRAND_VEC_AVX2 1
#endif

namespace strand::cpu::vec {

#if STRAND_VEC_AVX2
inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.72283905206835f), lo = _mm256_set1_ps(-103.97207708f);
  const __m256 nan_mask = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 inf_mask = _mm256_cmp_ps(x, hi, _CMP_GT_OQ), zero_mask = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  __m256 v = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  // v = n ln2 + r, |r| <= ln2 / 2 (ln2 split in two for an exact n ln2)
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(v, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  v = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), v);
  v = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), v);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(v, v), _mm256_add_ps(v, _mm256_set1_ps(1.0f)));
  // 2^n as 2^h · 2^(n-h), h = n/2: both factors are normal floats for n in [-150, 128], so results
  // near FLT_MAX and denormal results come out right.
  const __m256i ni = _mm256_cvtps_epi32(n), h = _mm256_srai_epi32(ni, 1);
  const __m256i e1 = _mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23);
  const __m256i e2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23);
  __m256 r = _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e1)), _mm256_castsi256_ps(e2));
  r = _mm256_blendv_ps(r, _mm256_set1_ps(std::numeric_limits<float>::infinity()), inf_mask);
  r = _mm256_andnot_ps(zero_mask, r);
  return _mm256_blendv_ps(r, x, nan_mask);
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// Lanes [0, n) of a partial vector, n < 8.
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif

// exp of one float with the same algorithm as the vector path (so a row's tail matches its body).
inline float exp1(float x) {
#if STRAND_VEC_AVX2
  return _mm_cvtss_f32(_mm256_castps256_ps128(exp8(_mm256_set1_ps(x))));
#else
  return std::exp(x);
#endif
}

// max over x[0, n); -inf for n = 0. NaNs are ignored here (they reach the output through exp).
inline float max_of(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if STRAND_VEC_AVX2
  if (n >= 8) {
    __m256 mv = _mm256_set1_ps(m);
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    m = hmax(mv);
  }
#endif
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}
inline double max_of(const double* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

// y = exp(x - shift) over [0, n) (y may alias x); returns the sum of y.
inline float exp_shift_sum(const float* x, float shift, float* y, int64_t n) {
  int64_t i = 0;
  float s = 0;
#if STRAND_VEC_AVX2
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
    _mm256_storeu_ps(y + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), sh));
    _mm256_maskstore_ps(y + i, m, e);
    acc = _mm256_add_ps(acc, _mm256_and_ps(e, _mm256_castsi256_ps(m)));
    i = n;
  }
  s = hsum(acc);
#endif
  for (; i < n; ++i) {
    y[i] = exp1(x[i] - shift);
    s += y[i];
  }
  return s;
}
inline double exp_shift_sum(const double* x, double shift, double* y, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - shift);
    s += y[i];
  }
  return s;
}

// sum of x[0, n) in 8 lanes (f32) or in order (f64).
inline float sum(const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0;
#if STRAND_VEC_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
  }
  s = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) s += x[i];
  return s;
}
inline double sum(const double* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}
// sum of (x[i] - m)^2
inline float sq_dev_sum(const float* x, float m, int64_t n) {
  int64_t i = 0;
  float s = 0;
#if STRAND_VEC_AVX2
  const __m256 mv = _mm256_set1_ps(m);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv), d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mv);
    a0 = _mm256_fmadd_ps(d0, d0, a0);
    a1 = _mm256_fmadd_ps(d1, d1, a1);
  }
  s = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) s += (x[i] - m) * (x[i] - m);
  return s;
}
inline double sq_dev_sum(const double* x, double m, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += (x[i] - m) * (x[i] - m);
  return s;
}

// y = x * a over [0, n) (y may alias x).
template <class T>
inline void scale(const T* x, T a, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a;  // vectorised by the compiler
}

// sum of x[i] * y[i]
template <class T>
inline T dot(const T* x, const T* y, int64_t n) {
  int64_t i = 0;
  T s = 0;
#if STRAND_VEC_AVX2
  if constexpr (std::is_same_v<T, float>) {
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc);
    s = hsum(acc);
  }
#endif
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

}  // namespace strand::cpu::vec
