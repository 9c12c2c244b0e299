// CUDA elementwise family: unary (+ derivative), binary, compare, where, copy/cast, fill, add_,
// and the Philox random fills. One strided kernel shape serves all: each thread maps a linear
// output index to per-operand offsets (up to kMaxDims dims, broadcast strides 0), grid-stride loop.
// The scalar math is kernels/elementwise_math.h, shared with the CPU, so parity is by construction.
#include <cuda_runtime.h>

#include <array>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "tensor/philox.h"

namespace strand::cuda {

namespace {

constexpr int kMaxDims = 8;

template <int K>
struct Offsets {
  int nd;
  int64_t sizes[kMaxDims];
  int64_t strides[K][kMaxDims];

  __device__ void at(int64_t linear, int64_t (&off)[K]) const {
    if (nd == 1) {  // the common case after merging: one strided run per operand
      for (int k = 0; k < K; ++k) off[k] = linear * strides[k][0];
      return;
    }
    for (int k = 0; k < K; ++k) off[k] = 0;
    for (int d = nd - 1; d >= 0; --d) {
      int64_t i = linear % sizes[d];
      linear /= sizes[d];
      for (int k = 0; k < K; ++k) off[k] += i * strides[k][d];
    }
  }
};

// Size-1 dims are dropped and neighbouring dims merged wherever every operand steps through them as
// one run (outer stride = inner stride * inner size), as PyTorch's TensorIterator does: same-shape
// contiguous operands become one dim, so each element costs one multiply instead of a div/mod per dim.
template <int K>
Offsets<K> make_offsets(const Shape& shape, const std::array<Shape, K>& strides) {
  std::vector<int64_t> sz;
  std::array<std::vector<int64_t>, K> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !sz.empty();
    for (int k = 0; k < K && merge; ++k) merge = st[k].back() == strides[k][d] * shape[d];
    if (merge) {
      sz.back() *= shape[d];
      for (int k = 0; k < K; ++k) st[k].back() = strides[k][d];
      continue;
    }
    sz.push_back(shape[d]);
    for (int k = 0; k < K; ++k) st[k].push_back(strides[k][d]);
  }
  STRAND_CHECK(sz.size() <= static_cast<size_t>(kMaxDims), "CUDA elementwise kernels support at most ", kMaxDims,
               " non-mergeable dims, got shape ", shape_str(shape));
  Offsets<K> o{};
  o.nd = static_cast<int>(sz.size());
  for (int d = 0; d < o.nd; ++d) {
    o.sizes[d] = sz[d];
    for (int k = 0; k < K; ++k) o.strides[k][d] = st[k][d];
  }
  return o;
}

#define STRAND_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(blockDim.x) * gridDim.x)

template <UnaryOp op, class T>
__global__ void unary_kernel(Offsets<2> o, int64_t n, T* out, const T* x, acc_t<T> a, acc_t<T> b) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[2];
    o.at(i, off);
    out[off[0]] = T(math::unary_fwd<op, acc_t<T>>(acc_t<T>(x[off[1]]), a, b));
  }
}

template <UnaryOp op, class T>
__global__ void unary_bwd_kernel(Offsets<3> o, int64_t n, T* out, const T* g, const T* v, acc_t<T> a, acc_t<T> b) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[3];
    o.at(i, off);
    out[off[0]] = T(math::unary_bwd<op, acc_t<T>>(acc_t<T>(g[off[1]]), acc_t<T>(v[off[2]]), a, b));
  }
}

template <BinaryOp op, class T>
__global__ void binary_kernel(Offsets<3> o, int64_t n, T* out, const T* x, const T* y) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[3];
    o.at(i, off);
    out[off[0]] = T(math::binary_fwd<op, acc_t<T>>(acc_t<T>(x[off[1]]), acc_t<T>(y[off[2]])));
  }
}

template <CompareOp op, class T>
__global__ void compare_kernel(Offsets<3> o, int64_t n, bool* out, const T* x, const T* y) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[3];
    o.at(i, off);
    out[off[0]] = math::compare<op, acc_t<T>>(acc_t<T>(x[off[1]]), acc_t<T>(y[off[2]]));
  }
}

template <class T>
__global__ void where_kernel(Offsets<4> o, int64_t n, T* out, const bool* c, const T* x, const T* y) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[4];
    o.at(i, off);
    out[off[0]] = c[off[1]] ? x[off[2]] : y[off[3]];
  }
}

template <class D, class S>
__global__ void copy_kernel(Offsets<2> o, int64_t n, D* out, const S* x) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[2];
    o.at(i, off);
    if constexpr (std::is_same_v<S, D>) {
      out[off[0]] = x[off[1]];
    } else if constexpr (std::is_same_v<D, bool>) {
      out[off[0]] = static_cast<acc_t<S>>(x[off[1]]) != acc_t<S>(0);
    } else {
      out[off[0]] = D(static_cast<acc_t<D>>(static_cast<acc_t<S>>(x[off[1]])));
    }
  }
}

template <class T>
__global__ void fill_kernel(Offsets<1> o, int64_t n, T* out, T v) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[1];
    o.at(i, off);
    out[off[0]] = v;
  }
}

template <class T>
__global__ void add_inplace_kernel(Offsets<2> o, int64_t n, T* dst, const T* src, acc_t<T> alpha) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[2];
    o.at(i, off);
    dst[off[0]] = T(acc_t<T>(dst[off[0]]) + alpha * acc_t<T>(src[off[1]]));
  }
}

template <class T>
__global__ void rand_kernel(int64_t n, T* out, uint64_t seed, uint64_t offset) {
  STRAND_GRID_LOOP(i, n) {
    philox::U4 r = philox::philox4x32_10(seed, static_cast<uint64_t>(i), offset);
    if constexpr (std::is_same_v<T, double>) out[i] = philox::uniform_f64(r.x, r.y);
    else out[i] = T(philox::uniform_f32(r.x));
  }
}

template <class T>
__global__ void bernoulli_kernel(int64_t n, T* out, float p, T value, uint64_t seed, uint64_t offset) {
  STRAND_GRID_LOOP(i, n) {
    philox::U4 r = philox::philox4x32_10(seed, static_cast<uint64_t>(i), offset);
    out[i] = philox::uniform_f32(r.x) < p ? value : T(0.0f);
  }
}


}  // namespace

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b) {
  dispatch_float(x.dtype(), unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_unary(op, [&](auto c) {
      const int64_t n = out.numel();
      auto o = make_offsets<2>(out.sizes(), {out.strides(), broadcast_strides(x, out.sizes())});
      unary_kernel<decltype(c)::value, T><<<grid_for(n), kThreads, 0, stream()>>>(o, n, ptr<T>(out), ptr<T>(x),
                                                                       acc_t<T>(a), acc_t<T>(b));
      STRAND_CUDA_LAUNCH_CHECK();
    });
  });
}

void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& v, const Tensor& out, double a, double b) {
  dispatch_float(v.dtype(), unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_unary(op, [&](auto c) {
      const int64_t n = out.numel();
      auto o = make_offsets<3>(out.sizes(), {out.strides(), broadcast_strides(grad, out.sizes()), broadcast_strides(v, out.sizes())});
      unary_bwd_kernel<decltype(c)::value, T><<<grid_for(n), kThreads, 0, stream()>>>(o, n, ptr<T>(out), ptr<T>(grad),
                                                                           ptr<T>(v), acc_t<T>(a), acc_t<T>(b));
      STRAND_CUDA_LAUNCH_CHECK();
    });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, bool>) {
      STRAND_CHECK(false, binary_op_name(op), " is not defined for bool tensors");
    } else {
      dispatch_binary(op, [&](auto c) {
        const int64_t n = out.numel();
        auto o = make_offsets<3>(out.sizes(), {out.strides(), broadcast_strides(a, out.sizes()), broadcast_strides(b, out.sizes())});
        binary_kernel<decltype(c)::value, T><<<grid_for(n), kThreads, 0, stream()>>>(o, n, ptr<T>(out), ptr<T>(a), ptr<T>(b));
        STRAND_CUDA_LAUNCH_CHECK();
      });
    }
  });
}

void compare(CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_compare(op, [&](auto c) {
      const int64_t n = out.numel();
      auto o = make_offsets<3>(out.sizes(), {out.strides(), broadcast_strides(a, out.sizes()), broadcast_strides(b, out.sizes())});
      compare_kernel<decltype(c)::value, T><<<grid_for(n), kThreads, 0, stream()>>>(o, n, ptr<bool>(out), ptr<T>(a), ptr<T>(b));
      STRAND_CUDA_LAUNCH_CHECK();
    });
  });
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t n = out.numel();
    const Shape& s = out.sizes();
    auto o = make_offsets<4>(s, {out.strides(), broadcast_strides(cond, s), broadcast_strides(a, s), broadcast_strides(b, s)});
    where_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(o, n, ptr<T>(out), ptr<bool>(cond), ptr<T>(a), ptr<T>(b));
    STRAND_CUDA_LAUNCH_CHECK();
  });
}

void copy(const Tensor& src, const Tensor& dst) {
  dispatch_all(dst.dtype(), [&](auto dtag) {
    using D = typename decltype(dtag)::type;
    dispatch_all(src.dtype(), [&](auto stag) {
      using S = typename decltype(stag)::type;
      const int64_t n = dst.numel();
      auto o = make_offsets<2>(dst.sizes(), {dst.strides(), broadcast_strides(src, dst.sizes())});
      copy_kernel<D, S><<<grid_for(n), kThreads, 0, stream()>>>(o, n, ptr<D>(dst), ptr<S>(src));
      STRAND_CUDA_LAUNCH_CHECK();
    });
  });
}

void fill(const Tensor& dst, double value) {
  dispatch_all(dst.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t n = dst.numel();
    auto o = make_offsets<1>(dst.sizes(), {dst.strides()});
    fill_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(o, n, ptr<T>(dst), T(static_cast<acc_t<T>>(value)));
    STRAND_CUDA_LAUNCH_CHECK();
  });
}

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  dispatch_all(dst.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, bool>) {
      STRAND_CHECK(false, "add_ is not defined for bool tensors");
    } else {
      const int64_t n = dst.numel();
      auto o = make_offsets<2>(dst.sizes(), {dst.strides(), broadcast_strides(src, dst.sizes())});
      add_inplace_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(o, n, ptr<T>(dst), ptr<T>(src), acc_t<T>(alpha));
      STRAND_CUDA_LAUNCH_CHECK();
    }
  });
}

void rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "rand", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t n = out.numel();
    if (n == 0) return;
    rand_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(n, ptr<T>(out), seed, offset);
    STRAND_CUDA_LAUNCH_CHECK();
  });
}

void bernoulli(const Tensor& out, double p, double value, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "bernoulli", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t n = out.numel();
    if (n == 0) return;
    bernoulli_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(n, ptr<T>(out), static_cast<float>(p),
                                                     T(static_cast<acc_t<T>>(value)), seed, offset);
    STRAND_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace strand::cuda
