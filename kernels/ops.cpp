#include "kernels/ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <numeric>

#include "kernels/dispatch.h"

namespace strand {

const char* unary_op_name(UnaryOp op) {
  static const char* names[] = {"neg", "exp", "log", "sqrt", "rsqrt", "abs", "sign", "tanh", "sigmoid", "relu",
                                "softplus", "silu", "gelu", "gelu_sigmoid", "clamp", "pow", "add_scalar",
                                "mul_scalar", "div_scalar", "rsub_scalar"};
  return names[static_cast<int>(op)];
}
const char* binary_op_name(BinaryOp op) {
  static const char* names[] = {"add", "sub", "mul", "div", "maximum", "minimum"};
  return names[static_cast<int>(op)];
}

namespace ops {

// ---------------- checks ----------------
void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  STRAND_CHECK(a.device() == b.device(), op, ": tensors are on different devices (", a.device().str(), " and ",
               b.device().str(), ")");
}
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  STRAND_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch (", dtype_name(a.dtype()), " and ",
               dtype_name(b.dtype()), ")");
}
void check_floating(const Tensor& a, const char* op) {
  STRAND_CHECK(is_floating(a.dtype()), op, ": expected a floating tensor, got ", dtype_name(a.dtype()));
}
namespace {
void check_defined(const Tensor& t, const char* op, const char* what) {
  STRAND_CHECK(t.defined(), op, ": ", what, " is undefined");
}
TensorOptions like(const Tensor& t) { return TensorOptions(t.dtype(), t.device()); }
TensorOptions like(const Tensor& t, DType d) { return TensorOptions(d, t.device()); }
}  // namespace

// ---------------- factories ----------------
Tensor empty(const Shape& s, TensorOptions o) { return Tensor::empty(s, o); }
Tensor zeros(const Shape& s, TensorOptions o) { return full(s, 0.0, o); }
Tensor ones(const Shape& s, TensorOptions o) { return full(s, 1.0, o); }
Tensor full(const Shape& s, double value, TensorOptions o) {
  bool rg = o.requires_grad;
  o.requires_grad = false;
  Tensor t = Tensor::empty(s, o);
  fill_(t, value);
  if (rg) t.set_requires_grad(true);
  return t;
}
Tensor scalar_tensor(double value, TensorOptions o) { return full({}, value, o); }
Tensor arange(double start, double end, double step, TensorOptions o) {
  STRAND_CHECK(step != 0, "arange: step must be non-zero");
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<double>(i) * step;
  return to(to(from_vector<double>(v, {n}), o.dtype), o.device);
}
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), like(t)); }
Tensor empty_like(const Tensor& t) { return empty(t.sizes(), like(t)); }

template <class T>
Tensor from_vector(const std::vector<T>& v, const Shape& shape, Device device) {
  STRAND_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: ", v.size(),
               " values do not fill shape ", shape_str(shape));
  Tensor t = Tensor::empty(shape, TensorOptions(dtype_of<T>::value));
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return to(t, device);
}
template <class T>
std::vector<T> to_vector(const Tensor& t) {
  Tensor c = contiguous(to(to(t, Device::cpu()), dtype_of<T>::value));
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
#define STRAND_INST(T)                                                              \
  template Tensor from_vector<T>(const std::vector<T>&, const Shape&, Device); \
  template std::vector<T> to_vector<T>(const Tensor&);
STRAND_INST(float)
STRAND_INST(double)
STRAND_INST(int64_t)
STRAND_INST(int32_t)
STRAND_INST(uint8_t)
STRAND_INST(bf16)
STRAND_INST(f16)
#undef STRAND_INST

double item(const Tensor& t) {
  STRAND_CHECK(t.numel() == 1, "item: expected a one-element tensor, got shape ", shape_str(t.sizes()));
  return to_vector<double>(t)[0];
}

namespace {
Generator& gen_or_default(Generator* g) { return g ? *g : default_generator(); }
}  // namespace
Tensor rand(const Shape& s, TensorOptions o, Generator* g) {
  Tensor t = Tensor::empty(s, TensorOptions(o.dtype, o.device));
  Generator& gen = gen_or_default(g);
  STRAND_DISPATCH(t, rand_uniform, t, gen.seed, gen.next_offset());
  if (o.requires_grad) t.set_requires_grad(true);
  return t;
}
Tensor randn(const Shape& s, TensorOptions o, Generator* g) {
  Tensor t = Tensor::empty(s, TensorOptions(o.dtype, Device::cpu()));
  Generator& gen = gen_or_default(g);
  cpu::randn(t, gen.seed, gen.next_offset());
  t = to(t, o.device);  // one definition of the normal stream; the GPU copy is exact
  if (o.requires_grad) t.set_requires_grad(true);
  return t;
}
Tensor bernoulli(const Shape& s, double p, TensorOptions o, Generator* g) {
  STRAND_CHECK(p >= 0 && p <= 1, "bernoulli: probability must be in [0, 1], got ", p);
  Tensor t = Tensor::empty(s, TensorOptions(o.dtype, o.device));
  Generator& gen = gen_or_default(g);
  STRAND_DISPATCH(t, bernoulli, t, p, 1.0, gen.seed, gen.next_offset());
  return t;
}
Tensor dropout_mask(const Shape& s, double p, TensorOptions o, Generator* g) {
  STRAND_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  Tensor t = Tensor::empty(s, TensorOptions(o.dtype, o.device));
  Generator& gen = gen_or_default(g);
  STRAND_DISPATCH(t, bernoulli, t, 1.0 - p, 1.0 / (1.0 - p), gen.seed, gen.next_offset());
  return t;
}

// ---------------- views ----------------
namespace {
Shape infer_shape(Shape shape, int64_t numel, const char* op) {
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      STRAND_CHECK(infer < 0, op, ": only one dimension can be -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      STRAND_CHECK(shape[i] >= 0, op, ": invalid size ", shape[i], " in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    STRAND_CHECK(known > 0 && numel % known == 0, op, ": shape ", shape_str(shape), " is invalid for ", numel,
                 " elements");
    shape[infer] = numel / known;
  }
  STRAND_CHECK(shape_numel(shape) == numel, op, ": shape ", shape_str(shape), " is invalid for ", numel,
               " elements");
  return shape;
}
// Strides for viewing x as `shape` without copying, if possible (PyTorch's computeStride).
std::optional<Shape> view_strides(const Tensor& x, const Shape& shape) {
  const Shape& os = x.sizes();
  const Shape& ost = x.strides();
  Shape st(shape.size());
  if (x.numel() == 0 || os.empty()) return contiguous_strides(shape);
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base = ost.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    if (d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        st[view_d] = view_numel * chunk_base;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base = ost[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return st;
}
}  // namespace

Tensor view(const Tensor& x, Shape shape) {
  shape = infer_shape(std::move(shape), x.numel(), "view");
  auto st = view_strides(x, shape);
  STRAND_CHECK(st.has_value(), "view: cannot view a tensor of shape ", shape_str(x.sizes()), " and strides ",
               shape_str(x.strides()), " as ", shape_str(shape), " without a copy; use reshape");
  return Tensor::make_view(x, shape, *st, x.storage_offset());
}
Tensor reshape(const Tensor& x, Shape shape) {
  shape = infer_shape(std::move(shape), x.numel(), "reshape");
  if (auto st = view_strides(x, shape)) return Tensor::make_view(x, shape, *st, x.storage_offset());
  return view(clone(x), shape);
}
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  STRAND_CHECK(static_cast<int64_t>(dims.size()) == x.dim(), "permute: ", dims.size(),
               " dims given for a tensor of shape ", shape_str(x.sizes()));
  Shape sz(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = x.wrap_dim(dims[i], "permute");
    STRAND_CHECK(!seen[d], "permute: dimension ", dims[i], " repeated in ", shape_str(dims));
    seen[d] = true;
    sz[i] = x.size(d);
    st[i] = x.stride(d);
  }
  return Tensor::make_view(x, sz, st, x.storage_offset());
}
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  if (x.dim() == 0) return Tensor::make_view(x, {}, {}, x.storage_offset());
  d0 = x.wrap_dim(d0, "transpose");
  d1 = x.wrap_dim(d1, "transpose");
  Shape sz = x.sizes(), st = x.strides();
  std::swap(sz[d0], sz[d1]);
  std::swap(st[d0], st[d1]);
  return Tensor::make_view(x, sz, st, x.storage_offset());
}
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  dim = x.wrap_dim(dim, "slice");
  STRAND_CHECK(step > 0, "slice: step must be positive, got ", step);
  const int64_t n = x.size(dim);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape sz = x.sizes(), st = x.strides();
  sz[dim] = (end - start + step - 1) / step;
  st[dim] *= step;
  return Tensor::make_view(x, sz, st, x.storage_offset() + start * x.stride(dim));
}
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  dim = x.wrap_dim(dim, "narrow");
  const int64_t n = x.size(dim);
  if (start < 0) start += n;
  STRAND_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: range [", start, ", ", start + length,
               ") out of bounds for dimension ", dim, " of size ", n);
  return slice(x, dim, start, start + length);
}
Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  dim = x.wrap_dim(dim, "select");
  const int64_t n = x.size(dim);
  STRAND_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dimension ", dim,
               " of size ", n);
  if (index < 0) index += n;
  Shape sz = x.sizes(), st = x.strides();
  const int64_t off = x.storage_offset() + index * st[dim];
  sz.erase(sz.begin() + dim);
  st.erase(st.begin() + dim);
  return Tensor::make_view(x, sz, st, off);
}
Tensor unsqueeze(const Tensor& x, int64_t dim) {
  const int64_t nd = x.dim() + 1;
  STRAND_CHECK(dim >= -nd && dim < nd, "unsqueeze: dimension ", dim, " out of range for a tensor of shape ",
               shape_str(x.sizes()));
  if (dim < 0) dim += nd;
  Shape sz = x.sizes(), st = x.strides();
  const int64_t s = dim < x.dim() ? sz[dim] * st[dim] : 1;
  sz.insert(sz.begin() + dim, 1);
  st.insert(st.begin() + dim, s);
  return Tensor::make_view(x, sz, st, x.storage_offset());
}
Tensor squeeze(const Tensor& x, int64_t dim) {
  if (x.dim() == 0) return x;
  dim = x.wrap_dim(dim, "squeeze");
  if (x.size(dim) != 1) return Tensor::make_view(x, x.sizes(), x.strides(), x.storage_offset());
  Shape sz = x.sizes(), st = x.strides();
  sz.erase(sz.begin() + dim);
  st.erase(st.begin() + dim);
  return Tensor::make_view(x, sz, st, x.storage_offset());
}
Tensor squeeze(const Tensor& x) {
  Shape sz, st;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (x.size(d) != 1) {
      sz.push_back(x.size(d));
      st.push_back(x.stride(d));
    }
  return Tensor::make_view(x, sz, st, x.storage_offset());
}
Tensor expand(const Tensor& x, const Shape& shape) {
  const int64_t nd = static_cast<int64_t>(shape.size()), off = nd - x.dim();
  STRAND_CHECK(off >= 0, "expand: cannot expand shape ", shape_str(x.sizes()), " to fewer dims ",
               shape_str(shape));
  Shape sz(nd), st(nd, 0);
  for (int64_t d = 0; d < nd; ++d) {
    if (d < off) {
      STRAND_CHECK(shape[d] >= 0, "expand: new leading dimension cannot be ", shape[d], " in ", shape_str(shape));
      sz[d] = shape[d];
      continue;
    }
    const int64_t have = x.size(d - off);
    const int64_t want = shape[d] == -1 ? have : shape[d];
    STRAND_CHECK(have == want || have == 1, "expand: cannot expand shape ", shape_str(x.sizes()), " to ",
                 shape_str(shape), " (dimension ", d, ": ", have, " vs ", want, ")");
    sz[d] = want;
    st[d] = have == want ? x.stride(d - off) : 0;
  }
  return Tensor::make_view(x, sz, st, x.storage_offset());
}
Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  start_dim = x.wrap_dim(start_dim, "flatten");
  end_dim = x.wrap_dim(end_dim, "flatten");
  STRAND_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape s;
  for (int64_t d = 0; d < start_dim; ++d) s.push_back(x.size(d));
  int64_t m = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) m *= x.size(d);
  s.push_back(m);
  for (int64_t d = end_dim + 1; d < x.dim(); ++d) s.push_back(x.size(d));
  return reshape(x, s);
}
Tensor detach(const Tensor& x) { return Tensor::make_view(x, x.sizes(), x.strides(), x.storage_offset()); }

// ---------------- copies ----------------
void copy_(const Tensor& dst, const Tensor& src) {
  check_defined(dst, "copy_", "destination");
  check_defined(src, "copy_", "source");
  (void)broadcast_shapes(dst.sizes(), src.sizes(), "copy_");
  STRAND_CHECK(broadcast_shapes(dst.sizes(), src.sizes(), "copy_") == dst.sizes(), "copy_: source shape ",
               shape_str(src.sizes()), " cannot be broadcast to destination shape ", shape_str(dst.sizes()));
  if (dst.numel() == 0) return;
  if (dst.device() == src.device()) {
    STRAND_DISPATCH(dst, copy, src, dst);
  } else {
    // Across devices: bring src to dst's layout and dtype on its own device, then one memcpy.
    Tensor s = contiguous(to(expand(src, dst.sizes()), dst.dtype()));
    Tensor d = dst.is_contiguous() ? dst : empty_like(dst);
    cuda_rt::memcpy(d.raw_data(), s.raw_data(), d.nbytes(),
                    dst.is_cuda() ? cuda_rt::CopyKind::HostToDevice : cuda_rt::CopyKind::DeviceToHost);
    if (!d.is_same(dst)) copy_(dst, d);
  }
  dst.bump_version();
}
Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  return clone(x);
}
Tensor clone(const Tensor& x) {
  Tensor out = empty_like(x);
  if (x.numel()) STRAND_DISPATCH(x, copy, x, out);
  return out;
}
Tensor to(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = empty(x.sizes(), like(x, dtype));
  if (x.numel()) STRAND_DISPATCH(x, copy, x, out);
  return out;
}
Tensor to(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor out = empty(x.sizes(), TensorOptions(x.dtype(), device));
  copy_(out, x);
  return out;
}
void fill_(const Tensor& dst, double value) {
  if (dst.numel()) STRAND_DISPATCH(dst, fill, dst, value);
  dst.bump_version();
}
void zero_(const Tensor& dst) { fill_(dst, 0.0); }

// ---------------- elementwise ----------------
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    STRAND_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                 " cannot be broadcast (dimension ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}
Tensor unary(UnaryOp op, const Tensor& x, double a, double b) {
  check_defined(x, unary_op_name(op), "input");
  check_floating(x, unary_op_name(op));
  if (op == UnaryOp::clamp) STRAND_CHECK(a <= b, "clamp: min ", a, " is greater than max ", b);
  if (op == UnaryOp::softplus) STRAND_CHECK(a != 0, "softplus: beta must be non-zero");
  Tensor out = empty_like(x);
  if (x.numel()) STRAND_DISPATCH(x, unary, op, x, out, a, b);
  return out;
}
Tensor unary_backward(UnaryOp op, const Tensor& grad, const Tensor& v, double a, double b) {
  check_same_device(grad, v, unary_op_name(op));
  check_same_dtype(grad, v, unary_op_name(op));
  Tensor out = empty(broadcast_shapes(grad.sizes(), v.sizes(), unary_op_name(op)), like(v));
  if (out.numel()) STRAND_DISPATCH(v, unary_backward, op, grad, v, out, a, b);
  return out;
}
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_op_name(op);
  check_defined(a, name, "first operand");
  check_defined(b, name, "second operand");
  check_same_device(a, b, name);
  check_same_dtype(a, b, name);
  Tensor out = empty(broadcast_shapes(a.sizes(), b.sizes(), name), like(a));
  if (out.numel()) STRAND_DISPATCH(a, binary, op, a, b, out);
  return out;
}
Tensor compare(CompareOp op, const Tensor& a, const Tensor& b) {
  check_same_device(a, b, "compare");
  check_same_dtype(a, b, "compare");
  Tensor out = empty(broadcast_shapes(a.sizes(), b.sizes(), "compare"), like(a, DType::b8));
  if (out.numel()) STRAND_DISPATCH(a, compare, op, a, b, out);
  return out;
}
Tensor compare(CompareOp op, const Tensor& a, double b) { return compare(op, a, scalar_tensor(b, like(a))); }
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  STRAND_CHECK(cond.dtype() == DType::b8, "where: condition must be bool, got ", dtype_name(cond.dtype()));
  check_same_device(cond, a, "where");
  check_same_device(a, b, "where");
  check_same_dtype(a, b, "where");
  Shape s = broadcast_shapes(broadcast_shapes(cond.sizes(), a.sizes(), "where"), b.sizes(), "where");
  Tensor out = empty(s, like(a));
  if (out.numel()) STRAND_DISPATCH(a, where, cond, a, b, out);
  return out;
}
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  STRAND_CHECK(mask.dtype() == DType::b8, "masked_fill: mask must be bool, got ", dtype_name(mask.dtype()));
  STRAND_CHECK(broadcast_shapes(x.sizes(), mask.sizes(), "masked_fill") == x.sizes(), "masked_fill: mask shape ",
               shape_str(mask.sizes()), " does not broadcast to input shape ", shape_str(x.sizes()));
  return where(mask, scalar_tensor(value, like(x)), x);
}
void add_(const Tensor& dst, const Tensor& src, double alpha) {
  check_same_device(dst, src, "add_");
  check_same_dtype(dst, src, "add_");
  STRAND_CHECK(broadcast_shapes(dst.sizes(), src.sizes(), "add_") == dst.sizes(), "add_: source shape ",
               shape_str(src.sizes()), " does not broadcast to ", shape_str(dst.sizes()));
  if (dst.numel()) STRAND_DISPATCH(dst, add_, dst, src, alpha);
  dst.bump_version();
}

// ---------------- reductions ----------------
namespace {
// Moves the reduced dims last and returns (x as [rows, n] contiguous, output shape).
struct Reduced {
  Tensor x;
  int64_t rows, n;
  Shape out_shape;
};
std::vector<bool> reduced_dims(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  std::vector<bool> red(static_cast<size_t>(x.dim()), dims.empty());
  for (int64_t d : dims) {
    int64_t w = x.wrap_dim(d, op);
    STRAND_CHECK(!red[w], op, ": dimension ", d, " repeated");
    red[w] = true;
  }
  return red;
}
// The output shape: the kept dims, with a 1 for each reduced one when keepdim.
Shape reduced_shape(const Tensor& x, const std::vector<bool>& red, bool keepdim) {
  Shape s;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!red[d]) s.push_back(x.size(d));
    else if (keepdim) s.push_back(1);
  return s;
}
Reduced prepare_reduce(const Tensor& x, const std::vector<bool>& red, bool keepdim) {
  std::vector<int64_t> perm;
  int64_t rows = 1, n = 1;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!red[d]) {
      perm.push_back(d);
      rows *= x.size(d);
    }
  for (int64_t d = 0; d < x.dim(); ++d)
    if (red[d]) {
      perm.push_back(d);
      n *= x.size(d);
    }
  return {contiguous(permute(x, perm)), rows, n, reduced_shape(x, red, keepdim)};
}
Tensor reduce(cpu::RowReduce r, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, const char* op) {
  check_defined(x, op, "input");
  Tensor src = x;
  if (r == cpu::RowReduce::sum && !is_floating(x.dtype())) src = to(x, DType::i64);
  else check_floating(x, op);
  // A contiguous input whose reduced dims are one block followed by kept dims (a bias gradient
  // summing [rows, C] over rows) is reduced in place as [outer, n, inner], without the transposed
  // copy that moving the reduced dims last would take.
  const std::vector<bool> red = reduced_dims(src, dims, op);
  const int64_t nd = src.dim();
  int64_t a = 0;
  while (a < nd && !red[a]) ++a;
  int64_t b = a;
  while (b < nd && red[b]) ++b;
  bool middle = src.is_contiguous() && a < nd && b < nd;
  for (int64_t d = b; d < nd && middle; ++d) middle = !red[d];
  if (middle) {
    int64_t outer = 1, n = 1, inner = 1;
    for (int64_t d = 0; d < nd; ++d) (d < a ? outer : d < b ? n : inner) *= src.size(d);
    Tensor out = empty(reduced_shape(src, red, keepdim), like(src));
    if (out.numel()) STRAND_DISPATCH(src, reduce_middle, r, src, outer, n, inner, out);
    return out;
  }
  Reduced p = prepare_reduce(src, red, keepdim);
  Tensor out = empty(p.out_shape, like(src));
  if (p.rows) STRAND_DISPATCH(p.x, reduce_rows, r, p.x, p.rows, p.n, out);
  return out;
}
}  // namespace
Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return reduce(cpu::RowReduce::sum, x, dims, keepdim, "sum");
}
Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return reduce(cpu::RowReduce::mean, x, dims, keepdim, "mean");
}
Tensor var(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  return reduce(cpu::RowReduce::var, x, dims, keepdim, "var");
}
std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  const int64_t d = x.wrap_dim(dim, "max");
  STRAND_CHECK(x.dim() == 0 || x.size(d) > 0, "max: reducing over an empty dimension ", dim, " of shape ",
               shape_str(x.sizes()));
  Reduced p = prepare_reduce(x, reduced_dims(x, {d}, "max"), keepdim);
  Tensor v = empty(p.out_shape, like(x)), i = empty(p.out_shape, like(x, DType::i64));
  if (p.rows) STRAND_DISPATCH(x, max_rows, p.x, p.rows, p.n, v, i);
  return {v, i};
}
Tensor amax(const Tensor& x) {
  STRAND_CHECK(x.numel() > 0, "amax: empty tensor of shape ", shape_str(x.sizes()));
  return std::get<0>(max(reshape(x, {-1}), 0, false));
}
Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.sizes() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  STRAND_CHECK(lead >= 0, "sum_to: cannot sum shape ", shape_str(x.sizes()), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
      continue;
    }
    const int64_t want = shape[d - lead];
    STRAND_CHECK(want == x.size(d) || want == 1, "sum_to: cannot sum shape ", shape_str(x.sizes()), " to ",
                 shape_str(shape));
    if (want == 1 && x.size(d) != 1) dims.push_back(d);
  }
  Tensor s = dims.empty() ? x : sum(x, dims, true);
  return reshape(s, shape);
}

// ---------------- matmul ----------------
namespace {
// Describes operand t (batch dims broadcast to `batch`) as a matrix with one unit stride.
cpu::MatDesc describe(Tensor& t, const Shape& batch) {
  const int64_t nd = t.dim(), R = t.size(-2), C = t.size(-1);
  int64_t rs = t.stride(-2), cs = t.stride(-1);
  const int64_t Rm = std::max<int64_t>(R, 1), Cm = std::max<int64_t>(C, 1);
  // A size-1 dim may carry any stride; BLAS only needs the other one to be a valid leading dim.
  if ((cs == 1 || C == 1) && (R == 1 || rs >= Cm)) {
    cs = 1;
    if (R == 1) rs = Cm;
  } else if ((rs == 1 || R == 1) && (C == 1 || cs >= Rm)) {
    rs = 1;
    if (C == 1) cs = Rm;
  } else {
    t = contiguous(t);
    rs = Cm;
    cs = 1;
  }
  cpu::MatDesc d{&t, Shape(batch.size(), 0), rs, cs};
  const int64_t off = static_cast<int64_t>(batch.size()) - (nd - 2);
  for (int64_t i = 0; i < nd - 2; ++i) d.batch_strides[off + i] = t.size(i) == 1 ? 0 : t.stride(i);
  return d;
}
}  // namespace
namespace {
std::atomic<bool>& tf32_flag() {
  static std::atomic<bool> f{false};
  return f;
}
}  // namespace
void set_allow_tf32(bool on) { tf32_flag() = on; }
bool allow_tf32() { return tf32_flag(); }
STRAND_OPT_IN_SWITCH(set_cublaslt_bias, cublaslt_bias, "STRAND_CUBLASLT_BIAS")
STRAND_OPT_IN_SWITCH(set_cudnn_conv, cudnn_conv, "STRAND_CUDNN_CONV")
STRAND_OPT_IN_SWITCH(set_fused_gpu_attention, fused_gpu_attention, "STRAND_FUSED_GPU_ATTENTION")

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  check_defined(a_in, "matmul", "first operand");
  check_defined(b_in, "matmul", "second operand");
  check_same_device(a_in, b_in, "matmul");
  check_same_dtype(a_in, b_in, "matmul");
  check_floating(a_in, "matmul");
  STRAND_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul: both operands must be at least 2-D, got ",
               shape_str(a_in.sizes()), " and ", shape_str(b_in.sizes()));
  const int64_t M = a_in.size(-2), K = a_in.size(-1), N = b_in.size(-1);
  STRAND_CHECK(b_in.size(-2) == K, "matmul: inner dimensions differ: ", shape_str(a_in.sizes()), " @ ",
               shape_str(b_in.sizes()));
  Shape ab(a_in.sizes().begin(), a_in.sizes().end() - 2), bb(b_in.sizes().begin(), b_in.sizes().end() - 2);
  Shape batch = broadcast_shapes(ab, bb, "matmul (batch dims)");
  Shape out_shape = batch;
  out_shape.push_back(M);
  out_shape.push_back(N);
  const DType compute = gemm_dtype(a_in);
  Tensor a = to(a_in, compute), b = to(b_in, compute);
  Tensor out = empty(out_shape, like(a));
  if (out.numel() == 0) return to(out, a_in.dtype());
  cpu::MatDesc da = describe(a, batch), db = describe(b, batch);
  STRAND_DISPATCH(out, matmul, da, db, out, batch, M, N, K, nullptr);
  return to(out, a_in.dtype());
}
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_defined(x, "linear", "input");
  check_defined(w, "linear", "weight");
  STRAND_CHECK(w.dim() == 2, "linear: weight must be 2-D [out, in], got ", shape_str(w.sizes()));
  STRAND_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input shape ", shape_str(x.sizes()),
               " does not match weight shape ", shape_str(w.sizes()), " (in features ", w.size(1), ")");
  check_same_dtype(x, w, "linear");
  check_same_device(x, w, "linear");
  check_floating(x, "linear");
  if (bias.defined()) {
    STRAND_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias shape ", shape_str(bias.sizes()),
                 " does not match out features ", w.size(0));
    check_same_dtype(x, bias, "linear");
    check_same_device(x, bias, "linear");
  }
  const DType compute = gemm_dtype(x);
  // Rows counted explicitly: reshape cannot infer -1 when there are zero input features.
  const int64_t rows = shape_numel(Shape(x.sizes().begin(), x.sizes().end() - 1));
  Tensor x2 = to(reshape(x, {rows, x.size(-1)}), compute), wt = transpose(to(w, compute), 0, 1);
  Tensor bc = bias.defined() ? contiguous(to(bias, compute)) : Tensor();
  const int64_t M = x2.size(0), K = x2.size(1), N = w.size(0);
  Tensor out = empty({M, N}, like(x2));
  if (out.numel()) {
    cpu::MatDesc da = describe(x2, {}), db = describe(wt, {});
    STRAND_DISPATCH(out, matmul, da, db, out, {}, M, N, K, bc.defined() ? &bc : nullptr);
  }
  Shape os = x.sizes();
  os.back() = N;
  return reshape(to(out, x.dtype()), os);
}

// ---------------- optimizer ----------------
namespace {
bool adamw_qualifies(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v) {
  for (const Tensor* t : {&g, &m, &v})
    if (t->sizes() != p.sizes() || t->dtype() != p.dtype() || t->device() != p.device() || !t->is_contiguous())
      return false;
  return p.is_contiguous() && is_floating(p.dtype());
}
void bump_adamw(const AdamWParam& e) {
  e.p.bump_version();
  e.m.bump_version();
  e.v.bump_version();
  if (e.s.grad_scale != 1) e.g.bump_version();
}
}  // namespace

bool adamw_(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s) {
  if (!adamw_qualifies(p, g, m, v)) return false;
  if (p.numel()) STRAND_DISPATCH(p, adamw, p, g, m, v, s);
  bump_adamw({p, g, m, v, s});
  return true;
}

bool adamw_multi_(const std::vector<AdamWParam>& params) {
  for (const AdamWParam& e : params)
    if (!adamw_qualifies(e.p, e.g, e.m, e.v)) return false;
#ifdef STRAND_WITH_CUDA
  const bool one_gpu = !params.empty() && params.front().p.is_cuda() &&
                       std::all_of(params.begin(), params.end(),
                                   [&](const AdamWParam& e) { return e.p.device() == params.front().p.device(); });
  if (one_gpu) {
    const prof::Scope scope("adamw_multi", true);
    cuda::adamw_multi(params);
    for (const AdamWParam& e : params) bump_adamw(e);
    return true;
  }
#endif
  for (const AdamWParam& e : params) adamw_(e.p, e.g, e.m, e.v, e.s);
  return true;
}

std::vector<double> sum_squares(const std::vector<Tensor>& xs) {
  std::vector<double> out(xs.size(), 0.0);
  for (const Tensor& x : xs) {
    STRAND_CHECK(x.defined(), "sum_squares: undefined tensor");
    check_floating(x, "sum_squares");
  }
#ifdef STRAND_WITH_CUDA
  std::map<int, std::vector<size_t>> by_gpu;  // CUDA tensors by device index
  for (size_t i = 0; i < xs.size(); ++i)
    if (xs[i].is_cuda()) by_gpu[xs[i].device().index].push_back(i);
  for (const auto& [device, idx] : by_gpu) {
    const prof::Scope scope("sum_squares", true);
    std::vector<Tensor> group;
    for (size_t i : idx) group.push_back(contiguous(xs[i]));
    const std::vector<double> sums = cuda::sum_squares(group);
    for (size_t k = 0; k < idx.size(); ++k) out[idx[k]] = sums[k];
  }
#endif
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i].is_cuda() || xs[i].numel() == 0) continue;
    const Tensor x64 = to(xs[i], DType::f64);
    out[i] = item(sum(mul(x64, x64)));
  }
  return out;
}

// ---------------- softmax / norms ----------------
namespace {
// dim's size n and the product of the dims after it: the kernels' [outer, n, inner] view.
std::pair<int64_t, int64_t> softmax_view(const Tensor& x, int64_t dim, const char* op) {
  if (x.dim() == 0) return {1, 1};
  dim = x.wrap_dim(dim, op);
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
  return {x.size(dim), inner};
}
Tensor softmax_fwd(const Tensor& x_in, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_floating(x_in, op);
  const auto [n, inner] = softmax_view(x_in, dim, op);
  Tensor x = contiguous(x_in), o = empty_like(x);
  if (x.numel()) STRAND_DISPATCH(x, softmax, x, o, n, inner, log);
  return o;
}
Tensor softmax_bwd(const Tensor& grad, const Tensor& y_in, int64_t dim, bool log) {
  check_same_device(grad, y_in, "softmax_backward");
  const auto [n, inner] = softmax_view(y_in, dim, "softmax_backward");
  Tensor y = contiguous(y_in), g = contiguous(grad), o = empty_like(y);
  if (o.numel()) STRAND_DISPATCH(y, softmax_backward, g, y, o, n, inner, log);
  return o;
}
}  // namespace
Tensor softmax(const Tensor& x, int64_t dim) { return softmax_fwd(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_fwd(x, dim, true); }
Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim) { return softmax_bwd(grad, y, dim, false); }
Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim) {
  return softmax_bwd(grad, y, dim, true);
}

namespace {
// mixed: the parameter may also be f32 beside a bf16/f16 input (batch_norm under bf16-mixed).
void check_norm_param(const Tensor& p, const Tensor& x, const char* op, const char* what, bool mixed = false) {
  if (!p.defined()) return;
  STRAND_CHECK(p.dim() == 1 && p.size(0) == x.size(-1), op, ": ", what, " shape ", shape_str(p.sizes()),
               " does not match the normalised size ", x.size(-1), " of input ", shape_str(x.sizes()));
  if (mixed && compute_dtype(x) != x.dtype())
    STRAND_CHECK(p.dtype() == x.dtype() || p.dtype() == compute_dtype(x), op, ": ", what, " dtype ",
                 dtype_name(p.dtype()), " does not fit input dtype ", dtype_name(x.dtype()), " (give ",
                 dtype_name(x.dtype()), " or ", dtype_name(compute_dtype(x)), ")");
  else
    check_same_dtype(p, x, op);
  check_same_device(p, x, op);
}
// batch_norm's weight and bias: each of x's dtype or (x bf16/f16) f32, the two alike.
void check_batch_norm_params(const Tensor& w, const Tensor& b, const Tensor& x, const char* op) {
  check_norm_param(w, x, op, "weight", true);
  check_norm_param(b, x, op, "bias", true);
  STRAND_CHECK(!w.defined() || !b.defined() || w.dtype() == b.dtype(), op, ": weight (", dtype_name(w.dtype()),
               ") and bias (", dtype_name(b.dtype()), ") must have one dtype");
}
Shape lead_shape(const Tensor& x) { return Shape(x.sizes().begin(), x.sizes().end() - 1); }
}  // namespace
NormOut layer_norm(const Tensor& x_in, const Tensor& w, const Tensor& b, double eps) {
  check_floating(x_in, "layer_norm");
  STRAND_CHECK(x_in.dim() >= 1, "layer_norm: input must have at least one dim");
  check_norm_param(w, x_in, "layer_norm", "weight");
  check_norm_param(b, x_in, "layer_norm", "bias");
  Tensor x = contiguous(x_in);
  NormOut o{empty_like(x), empty(lead_shape(x), like(x, compute_dtype(x))), empty(lead_shape(x), like(x, compute_dtype(x)))};
  if (x.numel()) STRAND_DISPATCH(x, layer_norm, x, w.defined() ? contiguous(w) : w, b.defined() ? contiguous(b) : b, eps, o.y,
                                 o.mean, o.rstd);
  return o;
}
std::tuple<Tensor, Tensor, Tensor> layer_norm_backward(const Tensor& grad, const Tensor& x_in, const Tensor& w,
                                                       const Tensor& mean, const Tensor& rstd) {
  Tensor x = contiguous(x_in), g = contiguous(grad);
  // The bias gradient does not depend on w: a bias without a weight still needs it.
  Tensor gx = empty_like(x), gw = w.defined() ? empty_like(w) : Tensor(), gb = empty({x.size(-1)}, like(x));
  if (x.numel() == 0) {
    if (gw.defined()) zero_(gw);
    zero_(gb);
  }
  if (x.numel()) STRAND_DISPATCH(x, layer_norm_backward, g, x, w.defined() ? contiguous(w) : w, mean, rstd, gx, gw, gb);
  return {gx, gw, gb};
}
NormOut rms_norm(const Tensor& x_in, const Tensor& w, double eps) {
  check_floating(x_in, "rms_norm");
  STRAND_CHECK(x_in.dim() >= 1, "rms_norm: input must have at least one dim");
  check_norm_param(w, x_in, "rms_norm", "weight");
  Tensor x = contiguous(x_in);
  NormOut o{empty_like(x), Tensor(), empty(lead_shape(x), like(x, compute_dtype(x)))};
  if (x.numel()) STRAND_DISPATCH(x, rms_norm, x, w.defined() ? contiguous(w) : w, eps, o.y, o.rstd);
  return o;
}
std::tuple<Tensor, Tensor> rms_norm_backward(const Tensor& grad, const Tensor& x_in, const Tensor& w,
                                             const Tensor& rstd) {
  Tensor x = contiguous(x_in), g = contiguous(grad);
  Tensor gx = empty_like(x), gw = w.defined() ? zeros_like(w) : Tensor();
  if (x.numel()) STRAND_DISPATCH(x, rms_norm_backward, g, x, w.defined() ? contiguous(w) : w, rstd, gx, gw);
  return {gx, gw};
}

namespace {
BatchNormReducer& bn_reducer() {
  static BatchNormReducer r;
  return r;
}
}  // namespace
void set_batch_norm_reducer(BatchNormReducer r) { bn_reducer() = std::move(r); }
const BatchNormReducer& batch_norm_reducer() { return bn_reducer(); }

NormOut batch_norm(const Tensor& x_in, const Tensor& w, const Tensor& b, const Tensor& running_mean,
                   const Tensor& running_var, bool training, double momentum, double eps) {
  check_floating(x_in, "batch_norm");
  STRAND_CHECK(x_in.dim() >= 2, "batch_norm: input must be [..., C] with at least 2 dims, got ",
               shape_str(x_in.sizes()));
  check_batch_norm_params(w, b, x_in, "batch_norm");
  const int64_t C = x_in.size(-1);
  const DType sd = compute_dtype(x_in);
  for (const Tensor* r : {&running_mean, &running_var}) {
    if (!r->defined()) continue;
    STRAND_CHECK(r->dim() == 1 && r->size(0) == C && r->dtype() == sd && r->is_contiguous(),
                 "batch_norm: running statistics must be contiguous ", dtype_name(sd), " [", C, "], got ",
                 r->str());
  }
  STRAND_CHECK(running_mean.defined() == running_var.defined(),
               "batch_norm: give both running_mean and running_var, or neither");
  STRAND_CHECK(training || (running_mean.defined() && running_var.defined()),
               "batch_norm: eval mode needs running_mean and running_var");
  Tensor x = contiguous(reshape(x_in, {-1, C}));
  Tensor mean = empty({C}, like(x, sd)), var = empty({C}, like(x, sd));
  if (training) {
    const BatchNormReducer& red = bn_reducer();
    // Under SyncBatchNorm the count is global: one row per process is fine when there are several.
    const prof::Scope prof_scope("batch_norm_stats", x.is_cuda());
#ifdef STRAND_WITH_CUDA
    const double n = x.is_cuda() ? cuda::batch_norm_stats(x, mean, var, red ? &red : nullptr)
                                 : cpu::batch_norm_stats(x, mean, var, red ? &red : nullptr);
#else
    const double n = cpu::batch_norm_stats(x, mean, var, red ? &red : nullptr);
#endif
    STRAND_CHECK(n > 1, "batch_norm: training needs more than one value per channel, got input shape ",
                 shape_str(x_in.sizes()), red ? " (summed over all processes)" : "");
    if (running_mean.defined()) {
      // running = (1 - momentum) * running + momentum * batch; the variance is unbiased, as PyTorch.
      Tensor rm = ops::add(ops::mul(running_mean, 1 - momentum), ops::mul(mean, momentum));
      Tensor unb = ops::mul(var, static_cast<double>(n) / static_cast<double>(n - 1));
      Tensor rv = ops::add(ops::mul(running_var, 1 - momentum), ops::mul(unb, momentum));
      copy_(running_mean, rm);
      copy_(running_var, rv);
    }
  } else {
    copy_(mean, running_mean);
    copy_(var, running_var);
  }
  Tensor rstd = unary(UnaryOp::rsqrt, add(var, eps));
  return {reshape(batch_norm_apply(x, w, b, mean, rstd), x_in.sizes()), mean, rstd};
}
Tensor batch_norm_apply(const Tensor& x_in, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& rstd) {
  check_floating(x_in, "batch_norm_apply");
  STRAND_CHECK(x_in.dim() >= 1, "batch_norm_apply: input must be [..., C], got ", shape_str(x_in.sizes()));
  const int64_t C = x_in.size(-1);
  check_batch_norm_params(w, b, x_in, "batch_norm_apply");
  for (const Tensor* s : {&mean, &rstd})
    STRAND_CHECK(s->defined() && s->dim() == 1 && s->size(0) == C && s->dtype() == compute_dtype(x_in) &&
                     s->is_contiguous() && s->device() == x_in.device(),
                 "batch_norm_apply: statistics must be contiguous ", dtype_name(compute_dtype(x_in)), " [", C,
                 "] on the input's device, got ", s->defined() ? s->str() : std::string("undefined"));
  Tensor x = contiguous(reshape(x_in, {-1, C}));
  Tensor y = empty_like(x);
  if (x.numel())
    STRAND_DISPATCH(x, batch_norm_apply, x, w.defined() ? contiguous(w) : w, b.defined() ? contiguous(b) : b, mean,
                    rstd, y);
  return reshape(y, x_in.sizes());
}
std::tuple<Tensor, Tensor, Tensor> batch_norm_backward(const Tensor& grad, const Tensor& x_in, const Tensor& w,
                                                       const Tensor& mean, const Tensor& rstd, bool training,
                                                       bool sync) {
  const BatchNormReducer& red = bn_reducer();
  STRAND_CHECK(!sync || red, "batch_norm_backward: the forward synchronised its statistics across processes, "
               "but the reducer was removed before backward");
  const int64_t C = x_in.size(-1);
  Tensor x = contiguous(reshape(x_in, {-1, C})), g = contiguous(reshape(grad, {-1, C}));
  // The bias gradient does not depend on w: a bias without a weight still needs it.
  check_batch_norm_params(w, Tensor(), x, "batch_norm_backward");
  STRAND_CHECK(g.dtype() == x.dtype() && g.sizes() == x.sizes(), "batch_norm_backward: gradient ", grad.str(),
               " does not match input ", x_in.str());
  Tensor gx = empty_like(x), gw = w.defined() ? empty_like(w) : Tensor();
  // The bias gradient comes in the weight's dtype (without a weight, the compute dtype: f32 for a
  // half input, for the caller to round once to the bias's dtype).
  Tensor gb = empty({C}, like(x, w.defined() ? w.dtype() : compute_dtype(x)));
  STRAND_DISPATCH(x, batch_norm_backward, g, x, w.defined() ? contiguous(w) : w, mean, rstd, training, gx, gw, gb,
                  sync && training ? &red : nullptr);
  return {reshape(gx, x_in.sizes()), gw, gb};
}

// ---------------- conv1d ----------------
Tensor conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t padding) {
  check_floating(x, "conv1d");
  check_same_dtype(x, w, "conv1d");
  STRAND_CHECK(x.dim() == 3, "conv1d: input must be channels-last [B, L, Cin], got ", shape_str(x.sizes()));
  STRAND_CHECK(w.dim() == 3, "conv1d: weight must be [Cout, Cin, K], got ", shape_str(w.sizes()));
  STRAND_CHECK(w.size(1) == x.size(2), "conv1d: input has ", x.size(2), " channels but weight ",
               shape_str(w.sizes()), " expects ", w.size(1));
  const int64_t K = w.size(2);
  if (padding < 0) {
    STRAND_CHECK(K % 2 == 1, "conv1d: 'same' padding needs an odd kernel size, got ", K);
    padding = K / 2;
  }
  const int64_t Lout = x.size(1) + 2 * padding - K + 1;
  STRAND_CHECK(Lout >= 0, "conv1d: input length ", x.size(1), " is too short for kernel ", K, " with padding ",
               padding);
  if (bias.defined()) {
    STRAND_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "conv1d: bias shape ", shape_str(bias.sizes()),
                 " does not match ", w.size(0), " output channels");
    check_same_dtype(x, bias, "conv1d");
  }
  const DType cd = gemm_dtype(x);
  Tensor xc = contiguous(to(x, cd)), wc = contiguous(to(w, cd));
  Tensor bc = bias.defined() ? contiguous(to(bias, cd)) : Tensor();
  Tensor out = empty({x.size(0), Lout, w.size(0)}, like(xc));
  if (out.numel()) STRAND_DISPATCH(xc, conv1d, xc, wc, bc, padding, out);
  return to(out, x.dtype());
}
std::tuple<Tensor, Tensor, Tensor> conv1d_backward(const Tensor& grad, const Tensor& x, const Tensor& w,
                                                   int64_t padding, bool need_bias) {
  if (padding < 0) padding = w.size(2) / 2;
  const DType cd = gemm_dtype(x);
  Tensor g = contiguous(to(grad, cd)), xc = contiguous(to(x, cd)), wc = contiguous(to(w, cd));
  Tensor gx = empty_like(xc), gw = empty_like(wc), gb = need_bias ? empty({w.size(0)}, like(xc)) : Tensor();
  STRAND_DISPATCH(xc, conv1d_backward, g, xc, wc, padding, gx, gw, gb);
  return {to(gx, x.dtype()), to(gw, w.dtype()), gb.defined() ? to(gb, w.dtype()) : gb};
}

// ---------------- indexing ----------------
namespace {
void check_index_tensor(const Tensor& index, int64_t bound, const char* op) {
  STRAND_CHECK(index.dtype() == DType::i64 || index.dtype() == DType::i32, op,
               ": indices must be i64 or i32, got ", dtype_name(index.dtype()));
  Tensor i64 = to(index, DType::i64);
  for (int64_t v : to_vector<int64_t>(i64))  // (from the device if it lives there)
    STRAND_CHECK(v >= 0 && v < bound, op, ": index ", v, " out of range [0, ", bound, ")");
}
}  // namespace
Tensor embedding(const Tensor& weight, const Tensor& indices) {
  STRAND_CHECK(weight.dim() == 2, "embedding: weight must be [num_embeddings, dim], got ",
               shape_str(weight.sizes()));
  Tensor flat = contiguous(reshape(indices, {-1}));
  Tensor rows = index_select(weight, 0, flat);
  Shape s = indices.sizes();
  s.push_back(weight.size(1));
  return reshape(rows, s);
}
Tensor embedding_backward(const Tensor& grad, const Tensor& indices, int64_t num_weights, int64_t padding_idx) {
  const int64_t D = grad.size(-1);
  Tensor flat = contiguous(reshape(indices, {-1}));
  Tensor g = contiguous(reshape(grad, {flat.size(0), D}));  // not -1: D may be 0
  Tensor out = index_add({num_weights, D}, 0, flat, g);
  if (padding_idx >= 0) zero_(select(out, 0, padding_idx));
  return out;
}
Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  STRAND_CHECK(!xs.empty(), "concat: no tensors given");
  for (size_t i = 0; i < xs.size(); ++i) STRAND_CHECK(xs[i].defined(), "concat: tensor ", i, " is undefined");
  const Tensor& f = xs[0];
  dim = f.wrap_dim(dim, "concat");
  Shape s = f.sizes();
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    check_same_dtype(f, t, "concat");
    check_same_device(f, t, "concat");
    STRAND_CHECK(t.dim() == f.dim(), "concat: tensor ", i, " has shape ", shape_str(t.sizes()),
                 ", expected rank ", f.dim());
    for (int64_t d = 0; d < f.dim(); ++d)
      STRAND_CHECK(d == dim || t.size(d) == f.size(d), "concat: tensor ", i, " has shape ", shape_str(t.sizes()),
                   " but tensor 0 has ", shape_str(f.sizes()), " (they may differ only in dimension ", dim, ")");
    total += t.size(dim);
  }
  s[dim] = total;
  Tensor out = empty(s, like(f));
  int64_t at = 0;
  for (const Tensor& t : xs) {
    if (t.size(dim)) copy_(narrow(out, dim, at, t.size(dim)), t);
    at += t.size(dim);
  }
  return out;
}
void check_stack_shapes(const std::vector<Tensor>& xs) {
  STRAND_CHECK(!xs.empty(), "stack: no tensors given");
  for (size_t i = 0; i < xs.size(); ++i)
    STRAND_CHECK(xs[i].sizes() == xs[0].sizes(), "stack: tensor ", i, " has shape ", shape_str(xs[i].sizes()),
                 " but tensor 0 has ", shape_str(xs[0].sizes()));
}
Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  check_stack_shapes(xs);
  std::vector<Tensor> u;
  for (const Tensor& t : xs) u.push_back(unsqueeze(t, dim));
  return concat(u, dim);
}
namespace {
// The index as the kernels want it: on the data's device; i64 and contiguous for CUDA.
Tensor kernel_index(const Tensor& index, const Tensor& like_t) {
  Tensor i = to(index, like_t.device());
  return like_t.is_cuda() ? contiguous(to(i, DType::i64)) : contiguous(i);
}
}  // namespace
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  dim = x.wrap_dim(dim, "index_select");
  STRAND_CHECK(index.dim() == 1, "index_select: index must be 1-D, got ", shape_str(index.sizes()));
  check_index_tensor(index, x.size(dim), "index_select");
  Tensor xc = contiguous(x);
  Shape s = x.sizes();
  s[dim] = index.size(0);
  Tensor out = empty(s, like(x));
  if (out.numel()) STRAND_DISPATCH(x, index_select, xc, dim, kernel_index(index, x), out);
  return out;
}
Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src) {
  Tensor out = zeros(shape, like(src));
  dim = out.wrap_dim(dim, "index_add");
  STRAND_CHECK(index.dim() == 1, "index_add: index must be 1-D, got ", shape_str(index.sizes()));
  check_index_tensor(index, shape[dim], "index_add");
  Shape want = shape;
  want[dim] = index.size(0);
  STRAND_CHECK(src.sizes() == want, "index_add: source shape ", shape_str(src.sizes()), " should be ",
               shape_str(want));
  if (src.numel()) STRAND_DISPATCH(src, index_add, out, dim, kernel_index(index, src), contiguous(src));
  return out;
}
namespace {
void check_gather_shapes(const Tensor& t, int64_t dim, const Tensor& index, const char* op) {
  STRAND_CHECK(index.dim() == t.dim(), op, ": index rank ", index.dim(), " differs from input rank ", t.dim());
  for (int64_t d = 0; d < t.dim(); ++d)
    STRAND_CHECK(d == dim || index.size(d) <= t.size(d), op, ": index shape ", shape_str(index.sizes()),
                 " exceeds input shape ", shape_str(t.sizes()), " in dimension ", d);
}
}  // namespace
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  dim = x.wrap_dim(dim, "gather");
  check_gather_shapes(x, dim, index, "gather");
  check_index_tensor(index, x.size(dim), "gather");
  Tensor out = empty(index.sizes(), like(x));
  if (out.numel()) STRAND_DISPATCH(x, gather, contiguous(x), dim, kernel_index(index, x), out);
  return out;
}
Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src) {
  Tensor out = zeros(shape, like(src));
  dim = out.wrap_dim(dim, "scatter_add");
  check_gather_shapes(out, dim, index, "scatter_add");
  check_index_tensor(index, shape[dim], "scatter_add");
  STRAND_CHECK(src.dim() == index.dim(), "scatter_add: source rank differs from index rank");
  Tensor s = src;
  for (int64_t d = 0; d < index.dim(); ++d) {
    STRAND_CHECK(index.size(d) <= src.size(d), "scatter_add: index shape ", shape_str(index.sizes()),
                 " exceeds source shape ", shape_str(src.sizes()));
    s = narrow(s, d, 0, index.size(d));
  }
  if (index.numel()) STRAND_DISPATCH(out, scatter_add, out, dim, kernel_index(index, out), contiguous(s));
  return out;
}
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  STRAND_CHECK(pads.size() % 2 == 0 && static_cast<int64_t>(pads.size()) <= 2 * x.dim(), "pad: ", pads.size(),
               " pad values for a tensor of shape ", shape_str(x.sizes()), " (need pairs, at most 2 per dim)");
  Shape s = x.sizes();
  Tensor src = x;
  std::vector<int64_t> left(static_cast<size_t>(x.dim()), 0);
  for (size_t i = 0; i < pads.size() / 2; ++i) {
    const int64_t d = x.dim() - 1 - static_cast<int64_t>(i), l = pads[2 * i], r = pads[2 * i + 1];
    STRAND_CHECK(s[d] + l + r >= 0, "pad: padding (", l, ", ", r, ") makes dimension ", d, " of size ", s[d],
                 " negative");
    // Negative pads crop the source; positive pads place it at an offset.
    const int64_t crop_l = l < 0 ? -l : 0, crop_r = r < 0 ? -r : 0;
    src = narrow(src, d, crop_l, std::max<int64_t>(0, s[d] - crop_l - crop_r));
    left[d] = l > 0 ? l : 0;
    s[d] += l + r;
  }
  Tensor out = full(s, value, like(x));
  Tensor dst = out;
  for (int64_t d = 0; d < x.dim(); ++d) dst = narrow(dst, d, left[d], src.size(d));
  if (src.numel()) copy_(dst, src);
  return out;
}

// ---------------- losses ----------------
Tensor mse_loss(const Tensor& pred, const Tensor& target, Reduction r) {
  STRAND_CHECK(pred.sizes() == target.sizes(), "mse_loss: prediction shape ", shape_str(pred.sizes()),
               " differs from target shape ", shape_str(target.sizes()));
  Tensor d = sub(pred, target);
  Tensor sq = mul(d, d);
  if (r == Reduction::none) return sq;
  return r == Reduction::sum ? sum(sq) : mean(sq);
}

// ---------------- Enformer relative shift ----------------
Tensor rel_shift(const Tensor& x) {
  STRAND_CHECK(x.dim() >= 2, "rel_shift: expected a tensor [..., T, 2T-1] of at least 2 dims, got ",
               shape_str(x.sizes()));
  const int64_t T = x.size(-2), W = x.size(-1);
  STRAND_CHECK(T >= 1 && W == 2 * T - 1, "rel_shift: last dim must be 2T-1 = ", 2 * T - 1, " for T = ", T,
               " rows, got shape ", shape_str(x.sizes()));
  const Tensor c = (x.stride(-1) == 1 && x.stride(-2) == W) ? x : contiguous(x);
  Shape sz = c.sizes(), st = c.strides();
  sz.back() = T;
  st[st.size() - 2] = W - 1;
  return Tensor::make_view(c, sz, st, c.storage_offset() + (T - 1));
}

}  // namespace ops
}  // namespace strand
