// CUDA elementwise family: unary (+ derivative), binary, compare, where, copy/cast, fill, add_,
// and the Philox random fills. Each op is a per-element functor run by one of two kernels: a strided
// one, where each thread maps a linear output index to per-operand offsets (up to kMaxDims dims,
// broadcast strides 0), and a vectorised one for operands that are one contiguous, aligned run
// (16-byte loads and stores), as PyTorch's vectorized elementwise loop.
// The scalar math is kernels/elementwise_math.h, shared with the CPU, so parity is by construction.
//
// The kernels and the entry points' bodies live here, templated on the launch policy
// (cuda_common.cuh: DeviceLaunch on the GPU; the SIMT emulator's in tests/simt/).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_kernels.h"  // the op enums and math
#include "tensor/philox.h"

namespace strand::cuda::ew {
STRAND_KERNELS_BEGIN


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

// The per-element functions (kernels/elementwise_math.h does the arithmetic, shared with the CPU).
template <UnaryOp op, class T>
struct UnaryF {
  acc_t<T> a, b;
  __device__ T operator()(T x) const { return T(math::unary_fwd<op, acc_t<T>>(acc_t<T>(x), a, b)); }
};
template <UnaryOp op, class T>
struct UnaryBwdF {
  acc_t<T> a, b;
  __device__ T operator()(T g, T v) const {
    return T(math::unary_bwd<op, acc_t<T>>(acc_t<T>(g), acc_t<T>(v), a, b));
  }
};
template <BinaryOp op, class T>
struct BinaryF {
  __device__ T operator()(T x, T y) const { return T(math::binary_fwd<op, acc_t<T>>(acc_t<T>(x), acc_t<T>(y))); }
};
template <CompareOp op, class T>
struct CompareF {
  __device__ bool operator()(T x, T y) const { return math::compare<op, acc_t<T>>(acc_t<T>(x), acc_t<T>(y)); }
};
template <class T>
struct WhereF {
  __device__ T operator()(bool c, T x, T y) const { return c ? x : y; }
};
template <class D, class S>
struct CastF {
  __device__ D operator()(S x) const {
    if constexpr (std::is_same_v<S, D>) return x;
    else if constexpr (std::is_same_v<D, bool>) return static_cast<acc_t<S>>(x) != acc_t<S>(0);
    else return D(static_cast<acc_t<D>>(static_cast<acc_t<S>>(x)));
  }
};
template <class T>
struct FillF {
  T v;
  __device__ T operator()() const { return v; }
};
template <class T>
struct AddF {  // dst + alpha * src
  acc_t<T> alpha;
  __device__ T operator()(T d, T s) const { return T(acc_t<T>(d) + alpha * acc_t<T>(s)); }
};

// Any layout: each output index mapped to per-operand offsets.
template <class F, class O, class... I, size_t... k>
__device__ __forceinline__ void strided_one(const F& f, O* out, const int64_t* off, std::index_sequence<k...>,
                                            const I*... in) {
  out[off[0]] = f(in[off[k + 1]]...);
}
template <class F, class O, class... I>
__global__ void strided_kernel(Offsets<1 + sizeof...(I)> o, int64_t n, F f, O* out, const I*... in) {
  STRAND_GRID_LOOP(i, n) {
    int64_t off[1 + sizeof...(I)];
    o.at(i, off);
    strided_one(f, out, off, std::index_sequence_for<I...>{}, in...);
  }
}

// Every operand contiguous and 16-byte aligned: V elements per thread and operand through one
// 16-byte (or narrower, for the smaller types of a mixed-width op) load and store, the tail
// element by element.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
template <int V, class F, class O, class... P>
__device__ __forceinline__ void pack_one(const F& f, Pack<O, V>& r, const P&... p) {
#pragma unroll
  for (int j = 0; j < V; ++j) r.v[j] = f(p.v[j]...);
}
template <int V, class F, class O, class... I>
__global__ void flat_kernel(int64_t n, F f, O* out, const I*... in) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x, first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t packs = n / V;
  for (int64_t i = first; i < packs; i += stride) {
    Pack<O, V> r;
    pack_one<V>(f, r, reinterpret_cast<const Pack<I, V>*>(in)[i]...);
    reinterpret_cast<Pack<O, V>*>(out)[i] = r;
  }
  for (int64_t i = packs * V + first; i < n; i += stride) out[i] = f(in[i]...);
}

inline bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// out = f(in...) elementwise over out's shape; strides[0] are out's, strides[k] those of input k
// (broadcast: 0). Takes the vectorised kernel when the merged layout is one contiguous run for
// every operand and every pointer is aligned to its pack.
template <class Launch, class F, class O, class... I>
void launch_map(const Launch& launch, const Tensor& out, const std::array<Shape, 1 + sizeof...(I)>& strides, F f, O* op, const I*... ip) {
  const int64_t n = out.numel();
  if (n == 0) return;
  constexpr int K = 1 + sizeof...(I);
  const Offsets<K> o = make_offsets<K>(out.sizes(), strides);
  constexpr int V = static_cast<int>(16 / std::max({sizeof(O), sizeof(I)...}));
  bool flat = o.nd == 0;
  if (o.nd == 1) {
    flat = true;
    for (int k = 0; k < K; ++k) flat = flat && o.strides[k][0] == 1;
  }
  flat = flat && V > 1 && aligned_to(op, sizeof(O) * V) && (aligned_to(ip, sizeof(I) * V) && ...);
  if (flat) launch(flat_kernel<V, F, O, I...>, dim3(grid_for((n + V - 1) / V)), dim3(kThreads), 0, n, f, op, ip...);
  else launch(strided_kernel<F, O, I...>, dim3(grid_for(n)), dim3(kThreads), 0, o, n, f, op, ip...);
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

template <class Launch>
void unary(const Launch& launch, UnaryOp op, const Tensor& x, const Tensor& out, double a, double b) {
  dispatch_float(x.dtype(), unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_unary(op, [&](auto c) {
      launch_map(launch, out, {out.strides(), broadcast_strides(x, out.sizes())},
                 UnaryF<decltype(c)::value, T>{acc_t<T>(a), acc_t<T>(b)}, ptr<T>(out), ptr<const T>(x));
    });
  });
}

template <class Launch>
void unary_backward(const Launch& launch, UnaryOp op, const Tensor& grad, const Tensor& v, const Tensor& out, double a, double b) {
  dispatch_float(v.dtype(), unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_unary(op, [&](auto c) {
      launch_map(launch, out, {out.strides(), broadcast_strides(grad, out.sizes()), broadcast_strides(v, out.sizes())},
                 UnaryBwdF<decltype(c)::value, T>{acc_t<T>(a), acc_t<T>(b)}, ptr<T>(out), ptr<const T>(grad),
                 ptr<const T>(v));
    });
  });
}

template <class Launch>
void binary(const Launch& launch, BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, bool>) {
      STRAND_CHECK(false, binary_op_name(op), " is not defined for bool tensors");
    } else {
      dispatch_binary(op, [&](auto c) {
        launch_map(launch, out, {out.strides(), broadcast_strides(a, out.sizes()), broadcast_strides(b, out.sizes())},
                   BinaryF<decltype(c)::value, T>{}, ptr<T>(out), ptr<const T>(a), ptr<const T>(b));
      });
    }
  });
}

template <class Launch>
void compare(const Launch& launch, CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_compare(op, [&](auto c) {
      launch_map(launch, out, {out.strides(), broadcast_strides(a, out.sizes()), broadcast_strides(b, out.sizes())},
                 CompareF<decltype(c)::value, T>{}, ptr<bool>(out), ptr<const T>(a), ptr<const T>(b));
    });
  });
}

template <class Launch>
void where(const Launch& launch, const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Shape& s = out.sizes();
    launch_map(launch, out, {out.strides(), broadcast_strides(cond, s), broadcast_strides(a, s), broadcast_strides(b, s)},
               WhereF<T>{}, ptr<T>(out), ptr<const bool>(cond), ptr<const T>(a), ptr<const T>(b));
  });
}

template <class Launch>
void copy(const Launch& launch, const Tensor& src, const Tensor& dst) {
  dispatch_all(dst.dtype(), [&](auto dtag) {
    using D = typename decltype(dtag)::type;
    dispatch_all(src.dtype(), [&](auto stag) {
      using S = typename decltype(stag)::type;
      launch_map(launch, dst, {dst.strides(), broadcast_strides(src, dst.sizes())}, CastF<D, S>{}, ptr<D>(dst),
                 ptr<const S>(src));
    });
  });
}

template <class Launch>
void fill(const Launch& launch, const Tensor& dst, double value) {
  dispatch_all(dst.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_map(launch, dst, {dst.strides()}, FillF<T>{T(static_cast<acc_t<T>>(value))}, ptr<T>(dst));
  });
}

template <class Launch>
void add_(const Launch& launch, const Tensor& dst, const Tensor& src, double alpha) {
  dispatch_all(dst.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, bool>) {
      STRAND_CHECK(false, "add_ is not defined for bool tensors");
    } else {
      launch_map(launch, dst, {dst.strides(), dst.strides(), broadcast_strides(src, dst.sizes())}, AddF<T>{acc_t<T>(alpha)},
                 ptr<T>(dst), ptr<const T>(dst), ptr<const T>(src));
    }
  });
}

template <class Launch>
void rand_uniform(const Launch& launch, const Tensor& out, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "rand", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t n = out.numel();
    if (n == 0) return;
    launch(rand_kernel<T>, dim3(grid_for(n)), dim3(kThreads), 0, n, ptr<T>(out), seed, offset);
  });
}

template <class Launch>
void bernoulli(const Launch& launch, const Tensor& out, double p, double value, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "bernoulli", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t n = out.numel();
    if (n == 0) return;
    launch(bernoulli_kernel<T>, dim3(grid_for(n)), dim3(kThreads), 0, n, ptr<T>(out), static_cast<float>(p),
           T(static_cast<acc_t<T>>(value)), seed, offset);
  });
}

STRAND_KERNELS_END
}  // namespace strand::cuda::ew
