// SIMD helpers shared by the compiled CPU kernels (su_gru_kernels.cpp, dense.cpp): GCC
// vector types of 256 bits (8 floats / 4 doubles; AVX2+FMA when the build enables them),
// loads, stores, broadcast, horizontal sum and a vectorised float exp (Cephes polynomial,
// ~1 ulp). Header-only, no torch headers; each translation unit gets its own copies.
#pragma once
#ifdef __AVX__
#include <immintrin.h>
#endif

#include <cstring>

namespace {

template <typename T> struct V;
template <> struct V<float> {
  typedef float type __attribute__((vector_size(32)));
  static constexpr int N = 8;
};
template <> struct V<double> {
  typedef double type __attribute__((vector_size(32)));
  static constexpr int N = 4;
};

template <typename T>
inline typename V<T>::type vload(const T* p) {
  typename V<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void vstore(T* p, typename V<T>::type v) {
  std::memcpy(p, &v, sizeof(v));
}
// Scalar broadcast (one vbroadcastss/sd).
template <typename T>
inline typename V<T>::type vset(T s);
template <>
inline V<float>::type vset<float>(float s) {
  return V<float>::type{s, s, s, s, s, s, s, s};
}
template <>
inline V<double>::type vset<double>(double s) {
  return V<double>::type{s, s, s, s};
}
template <typename T>
inline T hsum(typename V<T>::type v) {
  T s = 0;
  for (int i = 0; i < V<T>::N; ++i) s += v[i];
  return s;
}
#ifdef __AVX__
// Horizontal sum in 5 instructions (the generic loop extracts lane by lane).
template <>
inline float hsum<float>(V<float>::type v) {
  __m256 a = (__m256)v;
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

typedef float vf8 __attribute__((vector_size(32)));
// y = exp(v), lane by lane, for v in [-87.33, 88.37] (exp8 clamps first).
inline vf8 exp8_in_range(vf8 v) {
  typedef int vi __attribute__((vector_size(32)));
  // n = round(v / ln2) by the 1.5 * 2^23 trick; r = v - n ln2 (ln2 split in two).
  vf8 t = v * 1.44269504088896341f + 12582912.0f;
  vf8 fn = t - 12582912.0f;
  vf8 r = v - fn * 0.693359375f + fn * 2.12194440e-4f;
  vf8 p = vset<float>(1.9875691500E-4f);
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  vi e = (__builtin_convertvector(fn, vi) + 127) << 23;  // 2^n as float bits
  vf8 s;
  std::memcpy(&s, &e, sizeof(s));
  return p * s;
}
// y = exp(v), lane by lane (inputs clamped to float's range).
inline vf8 exp8(vf8 v) {
  v = v < 88.3762626647949f ? v : 88.3762626647949f;
  v = v > -87.3365478515625f ? v : -87.3365478515625f;
  return exp8_in_range(v);
}

}  // namespace
