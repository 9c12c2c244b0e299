// Index kernels. Indices are validated by the op layer before these run, so no kernel throws from
// inside a parallel region. Accumulating kernels (index_add, scatter_add) run serially in index
// order, which makes gradients bitwise deterministic.
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/loops.h"

namespace strand::cpu {

namespace {
// [outer, size(dim), inner] view of a contiguous tensor
void split(const Tensor& t, int64_t dim, int64_t& outer, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
}
template <class I>
std::vector<int64_t> indices_of(const Tensor& index) {
  const I* p = index.data<I>();
  return std::vector<int64_t>(p, p + index.numel());
}
std::vector<int64_t> read_indices(const Tensor& index) {
  return dispatch_index(index.dtype(), "index", [&](auto tag) { return indices_of<typename decltype(tag)::type>(index); });
}
}  // namespace

void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const auto idx = read_indices(index);
  int64_t outer, inner;
  split(x, dim, outer, inner);
  const int64_t n = x.size(dim), m = static_cast<int64_t>(idx.size());
  const size_t es = x.element_size();
  const char* xp = static_cast<const char*>(x.raw_data());
  char* op = static_cast<char*>(out.raw_data());
  parallel_for(outer * m, inner, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t o = r / m, i = r % m;
      std::memcpy(op + r * inner * es, xp + ((o * n + idx[i]) * inner) * es, inner * es);
    }
  });
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const auto idx = read_indices(index);
  dispatch_float(out.dtype(), "index_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    int64_t outer, inner;
    split(out, dim, outer, inner);
    const int64_t n = out.size(dim), m = static_cast<int64_t>(idx.size());
    T* op = out.data<T>();
    const T* sp = src.data<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < m; ++i) {
        T* d = op + (o * n + idx[i]) * inner;
        const T* s = sp + (o * m + i) * inner;
        for (int64_t j = 0; j < inner; ++j) d[j] = T(A(d[j]) + A(s[j]));
      }
  });
}

namespace {
// Visits every element of `index` (contiguous) with the offsets it addresses in `t` (contiguous,
// possibly larger in the non-indexed dims): off = sum_{d != dim} i_d * stride_d + index * stride_dim.
template <class F>
void for_each_indexed(const Tensor& index, const Tensor& t, int64_t dim, const std::vector<int64_t>& idx, F&& f) {
  const int64_t nd = index.dim();
  std::vector<int64_t> pos(static_cast<size_t>(nd), 0);
  const Shape tst = t.strides();
  for (int64_t e = 0; e < index.numel(); ++e) {
    int64_t off = idx[e] * tst[dim];
    for (int64_t d = 0; d < nd; ++d)
      if (d != dim) off += pos[d] * tst[d];
    f(e, off);
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++pos[d] < index.size(d)) break;
      pos[d] = 0;
    }
  }
}
}  // namespace

void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  const auto idx = read_indices(index);
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data<T>();
    T* op = out.data<T>();
    for_each_indexed(index, x, dim, idx, [&](int64_t e, int64_t off) { op[e] = xp[off]; });
  });
}

void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  const auto idx = read_indices(index);
  dispatch_float(out.dtype(), "scatter_add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    T* op = out.data<T>();
    const T* sp = src.data<T>();
    for_each_indexed(index, out, dim, idx, [&](int64_t e, int64_t off) { op[off] = T(A(op[off]) + A(sp[e])); });
  });
}

}  // namespace strand::cpu
