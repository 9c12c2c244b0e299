#pragma once
#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string_view>
#include <type_traits>

#include "tensor/error.h"
#include "tensor/half.h"

namespace strand {

enum class DType : uint8_t { f32, f64, bf16, f16, i64, i32, u8, b8 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i64: return 8;
    case DType::i32: return 4;
    case DType::u8: return 1;
    case DType::b8: return 1;
  }
  return 0;
}
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i64: return "i64";
    case DType::i32: return "i32";
    case DType::u8: return "u8";
    case DType::b8: return "bool";
  }
  return "?";
}
constexpr bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::b8; };

// The type arithmetic happens in: f64 stays f64, every other floating type computes in f32.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double,
                                 std::conditional_t<std::is_integral_v<T>, T, float>>;

template <class T> struct type_tag { using type = T; };

// dispatch_float(dt, [&](auto tag) { using T = typename decltype(tag)::type; ... });
template <class F>
decltype(auto) dispatch_float(DType t, std::string_view what, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::f64: return f(type_tag<double>{});
    case DType::bf16: return f(type_tag<bf16>{});
    case DType::f16: return f(type_tag<f16>{});
    default: break;
  }
  STRAND_CHECK(false, what, ": expected a floating dtype (f32, f64, bf16, f16), got ", dtype_name(t));
  return f(type_tag<float>{});  // unreachable
}

// A normalisation over an input of dtype xt with parameters of dtype pt: pt is xt itself or, for a
// bf16/f16 input (bf16-mixed: weights kept in f32), the f32 it computes in.
// dispatch_float_param(xt, pt, what, [&](auto tag, auto ptag) { using T = typename decltype(tag)::type;
//                                                              using P = typename decltype(ptag)::type; ... });
template <class F>
void dispatch_float_param(DType xt, DType pt, std::string_view what, F&& f) {
  dispatch_float(xt, what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<acc_t<T>, T>)
      if (pt == dtype_of<acc_t<T>>::value) return f(tag, type_tag<acc_t<T>>{});
    STRAND_CHECK(pt == dtype_of<T>::value, what, ": parameters of dtype ", dtype_name(pt),
                 " do not fit an input of dtype ", dtype_name(xt));
    f(tag, tag);
  });
}

template <class F>
decltype(auto) dispatch_all(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::f64: return f(type_tag<double>{});
    case DType::bf16: return f(type_tag<bf16>{});
    case DType::f16: return f(type_tag<f16>{});
    case DType::i64: return f(type_tag<int64_t>{});
    case DType::i32: return f(type_tag<int32_t>{});
    case DType::u8: return f(type_tag<uint8_t>{});
    case DType::b8: return f(type_tag<bool>{});
  }
  return f(type_tag<float>{});
}

template <class F>
decltype(auto) dispatch_index(DType t, std::string_view what, F&& f) {
  switch (t) {
    case DType::i64: return f(type_tag<int64_t>{});
    case DType::i32: return f(type_tag<int32_t>{});
    default: break;
  }
  STRAND_CHECK(false, what, ": expected an index dtype (i64 or i32), got ", dtype_name(t));
  return f(type_tag<int64_t>{});
}

}  // namespace strand
