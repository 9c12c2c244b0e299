#include <array>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec_unary.h"

namespace strand::cpu {

namespace {
template <class T>
T* base(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}
}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b) {
  dispatch_float(x.dtype(), unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    dispatch_unary(op, [&](auto c) {
      const T* xp = base<T>(x);
      T* op_ = base<T>(out);
      const A aa = static_cast<A>(a), bb = static_cast<A>(b);
      strided_loop<2>(out.sizes(), {out.strides(), broadcast_strides(x, out.sizes())},
                      [&](const std::array<int64_t, 2>& o, int64_t n, const std::array<int64_t, 2>& s) {
                        T* po = op_ + o[0];
                        const T* px = xp + o[1];
                        if (s[0] == 1 && s[1] == 1) {
                          if constexpr (std::is_same_v<T, float>)
                            if (vec::unary_run(op, px, po, n)) return;
                          for (int64_t i = 0; i < n; ++i)
                            po[i] = T(math::unary_fwd<decltype(c)::value, A>(A(px[i]), aa, bb));
                        } else {
                          for (int64_t i = 0; i < n; ++i)
                            po[i * s[0]] = T(math::unary_fwd<decltype(c)::value, A>(A(px[i * s[1]]), aa, bb));
                        }
                      });
    });
  });
}

void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& v, const Tensor& out, double a, double b) {
  dispatch_float(v.dtype(), unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    dispatch_unary(op, [&](auto c) {
      const T* gp = base<T>(grad);
      const T* vp = base<T>(v);
      T* op_ = base<T>(out);
      const A aa = static_cast<A>(a), bb = static_cast<A>(b);
      strided_loop<3>(out.sizes(),
                      {out.strides(), broadcast_strides(grad, out.sizes()), broadcast_strides(v, out.sizes())},
                      [&](const std::array<int64_t, 3>& o, int64_t n, const std::array<int64_t, 3>& s) {
                        if constexpr (std::is_same_v<T, float>)
                          if (s[0] == 1 && s[1] == 1 && s[2] == 1 &&
                              vec::unary_backward_run(op, gp + o[1], vp + o[2], op_ + o[0], n))
                            return;
                        for (int64_t i = 0; i < n; ++i)
                          op_[o[0] + i * s[0]] = T(math::unary_bwd<decltype(c)::value, A>(
                              A(gp[o[1] + i * s[1]]), A(vp[o[2] + i * s[2]]), aa, bb));
                      });
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    if constexpr (std::is_same_v<T, bool>) {
      STRAND_CHECK(false, binary_op_name(op), " is not defined for bool tensors");
    } else {
      dispatch_binary(op, [&](auto c) {
        const T* ap = base<T>(a);
        const T* bp = base<T>(b);
        T* op_ = base<T>(out);
        strided_loop<3>(out.sizes(),
                        {out.strides(), broadcast_strides(a, out.sizes()), broadcast_strides(b, out.sizes())},
                        [&](const std::array<int64_t, 3>& o, int64_t n, const std::array<int64_t, 3>& s) {
                          T* po = op_ + o[0];
                          const T* pa = ap + o[1];
                          const T* pb = bp + o[2];
                          if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
                            for (int64_t i = 0; i < n; ++i)
                              po[i] = T(math::binary_fwd<decltype(c)::value, A>(A(pa[i]), A(pb[i])));
                          } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {
                            const A y = A(pb[0]);
                            for (int64_t i = 0; i < n; ++i)
                              po[i] = T(math::binary_fwd<decltype(c)::value, A>(A(pa[i]), y));
                          } else {
                            for (int64_t i = 0; i < n; ++i)
                              po[i * s[0]] = T(math::binary_fwd<decltype(c)::value, A>(A(pa[i * s[1]]), A(pb[i * s[2]])));
                          }
                        });
      });
    }
  });
}

void compare(CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    dispatch_compare(op, [&](auto c) {
      const T* ap = base<T>(a);
      const T* bp = base<T>(b);
      bool* op_ = base<bool>(out);
      strided_loop<3>(out.sizes(),
                      {out.strides(), broadcast_strides(a, out.sizes()), broadcast_strides(b, out.sizes())},
                      [&](const std::array<int64_t, 3>& o, int64_t n, const std::array<int64_t, 3>& s) {
                        for (int64_t i = 0; i < n; ++i)
                          op_[o[0] + i * s[0]] =
                              math::compare<decltype(c)::value, A>(A(ap[o[1] + i * s[1]]), A(bp[o[2] + i * s[2]]));
                      });
    });
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const bool* cp = base<bool>(cond);
    const T* ap = base<T>(a);
    const T* bp = base<T>(b);
    T* op_ = base<T>(out);
    const Shape& sh = out.sizes();
    strided_loop<4>(sh, {out.strides(), broadcast_strides(cond, sh), broadcast_strides(a, sh), broadcast_strides(b, sh)},
                    [&](const std::array<int64_t, 4>& o, int64_t n, const std::array<int64_t, 4>& s) {
                      for (int64_t i = 0; i < n; ++i)
                        op_[o[0] + i * s[0]] = cp[o[1] + i * s[1]] ? ap[o[2] + i * s[2]] : bp[o[3] + i * s[3]];
                    });
  });
}

void copy(const Tensor& src, const Tensor& dst) {
  dispatch_all(dst.dtype(), [&](auto dtag) {
    using D = typename decltype(dtag)::type;
    dispatch_all(src.dtype(), [&](auto stag) {
      using S = typename decltype(stag)::type;
      const S* sp = base<S>(src);
      D* dp = base<D>(dst);
      strided_loop<2>(dst.sizes(), {dst.strides(), broadcast_strides(src, dst.sizes())},
                      [&](const std::array<int64_t, 2>& o, int64_t n, const std::array<int64_t, 2>& s) {
                        for (int64_t i = 0; i < n; ++i) {
                          if constexpr (std::is_same_v<S, D>) {
                            dp[o[0] + i * s[0]] = sp[o[1] + i * s[1]];
                          } else if constexpr (std::is_same_v<D, bool>) {
                            dp[o[0] + i * s[0]] = static_cast<acc_t<S>>(sp[o[1] + i * s[1]]) != acc_t<S>(0);
                          } else {
                            // through the source's compute type: bf16 -> f16 goes via f32 exactly once
                            dp[o[0] + i * s[0]] = D(static_cast<acc_t<D>>(static_cast<acc_t<S>>(sp[o[1] + i * s[1]])));
                          }
                        }
                      });
    });
  });
}

void fill(const Tensor& dst, double value) {
  dispatch_all(dst.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = T(static_cast<acc_t<T>>(value));
    T* dp = base<T>(dst);
    strided_loop<1>(dst.sizes(), {dst.strides()},
                    [&](const std::array<int64_t, 1>& o, int64_t n, const std::array<int64_t, 1>& s) {
                      for (int64_t i = 0; i < n; ++i) dp[o[0] + i * s[0]] = v;
                    });
  });
}

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  dispatch_all(dst.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    if constexpr (std::is_same_v<T, bool>) {
      STRAND_CHECK(false, "add_ is not defined for bool tensors");
    } else {
      const A al = static_cast<A>(alpha);
      const T* sp = base<T>(src);
      T* dp = base<T>(dst);
      strided_loop<2>(dst.sizes(), {dst.strides(), broadcast_strides(src, dst.sizes())},
                      [&](const std::array<int64_t, 2>& o, int64_t n, const std::array<int64_t, 2>& s) {
                        for (int64_t i = 0; i < n; ++i) {
                          T& d = dp[o[0] + i * s[0]];
                          d = T(A(d) + al * A(sp[o[1] + i * s[1]]));
                        }
                      });
    }
  });
}

}  // namespace strand::cpu
