#pragma once
// Scalar forward and derivative formulas of every elementwise op, written once for the CPU and the
// GPU (STRAND_HD). The op is a template parameter so each kernel instantiation is a tight loop.
// `A` is the compute type: float (for f32/bf16/f16) or double (for f64).
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "tensor/half.h"

namespace strand {

enum class UnaryOp : uint8_t {
  neg, exp, log, sqrt, rsqrt, abs, sign, tanh, sigmoid, relu,
  softplus,      // a = beta, b = threshold (PyTorch: linear above x*beta > threshold)
  silu, gelu,    // gelu: exact erf form x*Phi(x)
  gelu_sigmoid,  // x * sigmoid(1.702 x), Enformer's GELU
  clamp,         // a = min, b = max
  pow,           // a = exponent
  add_scalar,    // x + a
  mul_scalar,    // x * a
  div_scalar,    // x / a
  rsub_scalar,   // a - x
};
enum class BinaryOp : uint8_t { add, sub, mul, div, maximum, minimum };
enum class CompareOp : uint8_t { eq, ne, lt, le, gt, ge };

const char* unary_op_name(UnaryOp op);
const char* binary_op_name(BinaryOp op);

// Whether the derivative is computed from the op's output (y) rather than its input (x); the
// autograd node saves only that one tensor.
constexpr bool unary_backward_uses_output(UnaryOp op) {
  return op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::rsqrt || op == UnaryOp::tanh ||
         op == UnaryOp::sigmoid || op == UnaryOp::relu;  // relu: y > 0 exactly where x > 0
}
// Whether the derivative reads x or y at all (x + a, x * a, ... need only the incoming gradient).
constexpr bool unary_backward_reads_operand(UnaryOp op) {
  return !(op == UnaryOp::neg || op == UnaryOp::sign || op == UnaryOp::add_scalar || op == UnaryOp::mul_scalar ||
           op == UnaryOp::div_scalar || op == UnaryOp::rsub_scalar);
}

namespace math {

template <class A> STRAND_HD A sigmoid(A x) { return A(1) / (A(1) + std::exp(-x)); }

template <UnaryOp op, class A>
STRAND_HD A unary_fwd(A x, A a, A b) {
  using std::exp; using std::log; using std::sqrt; using std::tanh; using std::erf; using std::log1p;
  if constexpr (op == UnaryOp::neg) return -x;
  else if constexpr (op == UnaryOp::exp) return exp(x);
  else if constexpr (op == UnaryOp::log) return log(x);
  else if constexpr (op == UnaryOp::sqrt) return sqrt(x);
  else if constexpr (op == UnaryOp::rsqrt) return A(1) / sqrt(x);
  else if constexpr (op == UnaryOp::abs) return x < A(0) ? -x : x;
  else if constexpr (op == UnaryOp::sign) return x > A(0) ? A(1) : (x < A(0) ? A(-1) : A(0));
  else if constexpr (op == UnaryOp::tanh) return tanh(x);
  else if constexpr (op == UnaryOp::sigmoid) return sigmoid(x);
  else if constexpr (op == UnaryOp::relu) return x > A(0) ? x : A(0);
  else if constexpr (op == UnaryOp::softplus) return x * a > b ? x : log1p(exp(x * a)) / a;
  else if constexpr (op == UnaryOp::silu) return x * sigmoid(x);
  else if constexpr (op == UnaryOp::gelu) return A(0.5) * x * (A(1) + erf(x * A(0.70710678118654752440)));
  else if constexpr (op == UnaryOp::gelu_sigmoid) return x * sigmoid(A(1.702) * x);
  else if constexpr (op == UnaryOp::clamp) return x < a ? a : (x > b ? b : x);
  else if constexpr (op == UnaryOp::pow) return std::pow(x, a);
  else if constexpr (op == UnaryOp::add_scalar) return x + a;
  else if constexpr (op == UnaryOp::mul_scalar) return x * a;
  else if constexpr (op == UnaryOp::div_scalar) return x / a;
  else if constexpr (op == UnaryOp::rsub_scalar) return a - x;
}

// d(out)/d(x) * g, where `v` is x, or y for ops with unary_backward_uses_output(op).
template <UnaryOp op, class A>
STRAND_HD A unary_bwd(A g, A v, A a, A b) {
  using std::exp; using std::erf;
  if constexpr (op == UnaryOp::neg) return -g;
  else if constexpr (op == UnaryOp::exp) return g * v;
  else if constexpr (op == UnaryOp::log) return g / v;
  else if constexpr (op == UnaryOp::sqrt) return g / (A(2) * v);
  else if constexpr (op == UnaryOp::rsqrt) return A(-0.5) * g * v * v * v;
  else if constexpr (op == UnaryOp::abs) return v > A(0) ? g : (v < A(0) ? -g : A(0));
  else if constexpr (op == UnaryOp::sign) return A(0);
  else if constexpr (op == UnaryOp::tanh) return g * (A(1) - v * v);
  else if constexpr (op == UnaryOp::sigmoid) return g * v * (A(1) - v);
  else if constexpr (op == UnaryOp::relu) return v > A(0) ? g : A(0);
  else if constexpr (op == UnaryOp::softplus) return v * a > b ? g : g * sigmoid(v * a);
  else if constexpr (op == UnaryOp::silu) {
    A s = sigmoid(v);
    return g * s * (A(1) + v * (A(1) - s));
  } else if constexpr (op == UnaryOp::gelu) {
    A cdf = A(0.5) * (A(1) + erf(v * A(0.70710678118654752440)));
    A pdf = exp(A(-0.5) * v * v) * A(0.39894228040143267794);
    return g * (cdf + v * pdf);
  } else if constexpr (op == UnaryOp::gelu_sigmoid) {
    A s = sigmoid(A(1.702) * v);
    return g * (s + A(1.702) * v * s * (A(1) - s));
  } else if constexpr (op == UnaryOp::clamp) return (v >= a && v <= b) ? g : A(0);
  else if constexpr (op == UnaryOp::pow) return a == A(0) ? A(0) : g * a * std::pow(v, a - A(1));
  else if constexpr (op == UnaryOp::add_scalar) return g;
  else if constexpr (op == UnaryOp::mul_scalar) return g * a;
  else if constexpr (op == UnaryOp::div_scalar) return g / a;
  else if constexpr (op == UnaryOp::rsub_scalar) return -g;
}

template <BinaryOp op, class A>
STRAND_HD A binary_fwd(A x, A y) {
  if constexpr (op == BinaryOp::add) return x + y;
  else if constexpr (op == BinaryOp::sub) return x - y;
  else if constexpr (op == BinaryOp::mul) return x * y;
  else if constexpr (op == BinaryOp::div) return x / y;
  else if constexpr (op == BinaryOp::maximum) return x != x ? x : (x > y ? x : y);  // NaN propagates
  else if constexpr (op == BinaryOp::minimum) return x != x ? x : (x < y ? x : y);
}

template <CompareOp op, class A>
STRAND_HD bool compare(A x, A y) {
  if constexpr (op == CompareOp::eq) return x == y;
  else if constexpr (op == CompareOp::ne) return x != y;
  else if constexpr (op == CompareOp::lt) return x < y;
  else if constexpr (op == CompareOp::le) return x <= y;
  else if constexpr (op == CompareOp::gt) return x > y;
  else if constexpr (op == CompareOp::ge) return x >= y;
}

}  // namespace math

// Turns a runtime op into a compile-time one: dispatch_unary(op, [&](auto c) { f<c.value>(...); })
template <class F>
decltype(auto) dispatch_unary(UnaryOp op, F&& f) {
#define STRAND_U(name) case UnaryOp::name: return f(std::integral_constant<UnaryOp, UnaryOp::name>{});
  switch (op) {
    STRAND_U(neg) STRAND_U(exp) STRAND_U(log) STRAND_U(sqrt) STRAND_U(rsqrt) STRAND_U(abs)
    STRAND_U(sign) STRAND_U(tanh) STRAND_U(sigmoid) STRAND_U(relu) STRAND_U(softplus) STRAND_U(silu)
    STRAND_U(gelu) STRAND_U(gelu_sigmoid) STRAND_U(clamp) STRAND_U(pow) STRAND_U(add_scalar)
    STRAND_U(mul_scalar) STRAND_U(div_scalar) STRAND_U(rsub_scalar)
  }
#undef STRAND_U
  return f(std::integral_constant<UnaryOp, UnaryOp::neg>{});
}

template <class F>
decltype(auto) dispatch_binary(BinaryOp op, F&& f) {
#define STRAND_B(name) case BinaryOp::name: return f(std::integral_constant<BinaryOp, BinaryOp::name>{});
  switch (op) { STRAND_B(add) STRAND_B(sub) STRAND_B(mul) STRAND_B(div) STRAND_B(maximum) STRAND_B(minimum) }
#undef STRAND_B
  return f(std::integral_constant<BinaryOp, BinaryOp::add>{});
}

template <class F>
decltype(auto) dispatch_compare(CompareOp op, F&& f) {
#define STRAND_C(name) case CompareOp::name: return f(std::integral_constant<CompareOp, CompareOp::name>{});
  switch (op) { STRAND_C(eq) STRAND_C(ne) STRAND_C(lt) STRAND_C(le) STRAND_C(gt) STRAND_C(ge) }
#undef STRAND_C
  return f(std::integral_constant<CompareOp, CompareOp::eq>{});
}

}  // namespace strand
