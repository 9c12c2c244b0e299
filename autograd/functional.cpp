#include "autograd/functional.h"

#include <algorithm>

#include "autograd/autocast.h"
#include "autograd/grad_mode.h"
#include "autograd/node.h"

namespace strand {

using autograd::FnNode;
using autograd::record;
using G = std::vector<Tensor>;

namespace {
bool needs(const std::vector<Tensor>& inputs) { return autograd::any_requires_grad(inputs); }

Tensor unary_op(UnaryOp op, const Tensor& x, double a = 0, double b = 0) {
  Tensor y = ops::unary(op, x, a, b);
  if (!needs({x})) return y;
  if (!unary_backward_reads_operand(op)) {  // x + a, x * a, ...: the gradient needs nothing saved
    record(unary_op_name(op), {x}, {y}, {},
           [op, a, b](FnNode&, const G& g) -> G { return {ops::unary_backward(op, g[0], g[0], a, b)}; });
  } else if (unary_backward_uses_output(op)) {
    record(unary_op_name(op), {x}, {y}, {y},
           [op, a, b](FnNode& n, const G& g) -> G { return {ops::unary_backward(op, g[0], n.saved(0), a, b)}; });
  } else {  // the node keeps x, from which y is one elementwise pass: an op saving y need not keep it
    auto node = record(unary_op_name(op), {x}, {y}, {x},
                       [op, a, b](FnNode& n, const G& g) -> G { return {ops::unary_backward(op, g[0], n.saved(0), a, b)}; });
    node->set_recompute(y, [op, a, b](const FnNode& n) { return ops::unary(op, n.saved(0), a, b); });
  }
  return y;
}

// Shape of x reduced over dims with keepdim (dims empty = all).
Shape keepdim_shape(const Tensor& x, const std::vector<int64_t>& dims) {
  Shape s = x.sizes();
  if (dims.empty()) {
    std::fill(s.begin(), s.end(), 1);
  } else {
    for (int64_t d : dims) s[x.wrap_dim(d, "reduce")] = 1;
  }
  return s;
}
int64_t reduced_count(const Tensor& x, const std::vector<int64_t>& dims) {
  return x.numel() / std::max<int64_t>(1, shape_numel(keepdim_shape(x, dims)));
}

// ---- dtype casts at op boundaries (autograd/autocast.h) ----
bool castable_dtype(DType d) { return d == DType::f32 || d == DType::bf16 || d == DType::f16; }
bool castable(const Tensor& t) { return t.defined() && castable_dtype(t.dtype()); }  // never f64 or integers
// The autocast "lower precision" list: operands in bf16.
Tensor as_bf16(const Tensor& t) { return autocast_enabled() && castable(t) ? to(t, DType::bf16) : t; }
// The autocast "fp32" list: operands in f32.
Tensor as_f32(const Tensor& t) { return autocast_enabled() && castable(t) ? to(t, DType::f32) : t; }
// Mixed precision operands promote as PyTorch promotes them: bf16 or f16 with f32 (or with each
// other) gives f32. f64 does not mix: it is the gradient-checking precision, and an f64 operand
// meeting another dtype is left to the op's dtype-mismatch error.
DType wider(DType a, DType b) {
  if (a == b || !castable_dtype(a) || !castable_dtype(b)) return a;
  return DType::f32;
}
std::vector<Tensor> promoted(std::vector<Tensor> xs) {
  auto first = std::find_if(xs.begin(), xs.end(), [](const Tensor& t) { return t.defined(); });
  if (first == xs.end()) return xs;  // the op names the undefined operand
  DType d = first->dtype();
  for (const Tensor& t : xs)
    if (t.defined()) d = wider(d, t.dtype());
  for (Tensor& t : xs)
    if (castable(t) && castable_dtype(d)) t = to(t, d);
  return xs;
}
std::pair<Tensor, Tensor> promoted(const Tensor& a, const Tensor& b) {
  // every elementwise op comes here: operands of one dtype (almost always) need nothing
  if (!a.defined() || !b.defined() || a.dtype() == b.dtype()) return {a, b};
  const DType d = wider(a.dtype(), b.dtype());
  if (!castable_dtype(d)) return {a, b};
  return {castable(a) ? to(a, d) : a, castable(b) ? to(b, d) : b};
}
}  // namespace

// ---------------- views and copies ----------------
Tensor view(const Tensor& x, Shape shape) {
  Tensor y = ops::view(x, std::move(shape));
  if (needs({x})) record("view", {x}, {y}, {}, [s = x.sizes()](FnNode&, const G& g) -> G { return {ops::reshape(g[0], s)}; });
  return y;
}
Tensor reshape(const Tensor& x, Shape shape) {
  Tensor y = ops::reshape(x, std::move(shape));
  if (needs({x}))
    record("reshape", {x}, {y}, {}, [s = x.sizes()](FnNode&, const G& g) -> G { return {ops::reshape(g[0], s)}; });
  return y;
}
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor y = ops::permute(x, dims);
  if (needs({x})) {
    std::vector<int64_t> inv(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) inv[x.wrap_dim(dims[i])] = static_cast<int64_t>(i);
    record("permute", {x}, {y}, {}, [inv](FnNode&, const G& g) -> G { return {ops::permute(g[0], inv)}; });
  }
  return y;
}
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  Tensor y = ops::transpose(x, d0, d1);
  if (needs({x})) record("transpose", {x}, {y}, {}, [d0, d1](FnNode&, const G& g) -> G { return {ops::transpose(g[0], d0, d1)}; });
  return y;
}
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  Tensor y = ops::slice(x, dim, start, end, step);
  if (needs({x})) {
    record("slice", {x}, {y}, {}, [s = x.sizes(), dim, start, end, step](FnNode&, const G& g) -> G {
      Tensor gx = ops::zeros(s, TensorOptions(g[0].dtype(), g[0].device()));
      ops::copy_(ops::slice(gx, dim, start, end, step), g[0]);
      return {gx};
    });
  }
  return y;
}
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  Tensor y = ops::narrow(x, dim, start, length);  // validates; the slice below records the gradient
  (void)y;
  const int64_t d = x.wrap_dim(dim, "narrow");
  const int64_t s = start < 0 ? start + x.size(d) : start;
  return slice(x, d, s, s + length);
}
Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  Tensor y = ops::select(x, dim, index);
  if (needs({x})) {
    record("select", {x}, {y}, {}, [s = x.sizes(), dim, index](FnNode&, const G& g) -> G {
      Tensor gx = ops::zeros(s, TensorOptions(g[0].dtype(), g[0].device()));
      ops::copy_(ops::select(gx, dim, index), g[0]);
      return {gx};
    });
  }
  return y;
}
Tensor unsqueeze(const Tensor& x, int64_t dim) {
  Tensor y = ops::unsqueeze(x, dim);
  if (needs({x})) record("unsqueeze", {x}, {y}, {}, [s = x.sizes()](FnNode&, const G& g) -> G { return {ops::reshape(g[0], s)}; });
  return y;
}
Tensor squeeze(const Tensor& x, int64_t dim) {
  if (x.dim() == 0) return x;
  Tensor y = ops::squeeze(x, dim);
  if (needs({x})) record("squeeze", {x}, {y}, {}, [s = x.sizes()](FnNode&, const G& g) -> G { return {ops::reshape(g[0], s)}; });
  return y;
}
Tensor squeeze(const Tensor& x) {
  Tensor y = ops::squeeze(x);
  if (needs({x})) record("squeeze", {x}, {y}, {}, [s = x.sizes()](FnNode&, const G& g) -> G { return {ops::reshape(g[0], s)}; });
  return y;
}
Tensor expand(const Tensor& x, const Shape& shape) {
  Tensor y = ops::expand(x, shape);
  if (needs({x})) record("expand", {x}, {y}, {}, [s = x.sizes()](FnNode&, const G& g) -> G { return {ops::sum_to(g[0], s)}; });
  return y;
}
Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  Shape target = ops::flatten(ops::detach(x), start_dim, end_dim).sizes();
  return reshape(x, target);
}
Tensor contiguous(const Tensor& x) { return x.is_contiguous() ? x : clone(x); }
Tensor clone(const Tensor& x) {
  Tensor y = ops::clone(x);
  if (needs({x})) record("clone", {x}, {y}, {}, [](FnNode&, const G& g) -> G { return {g[0]}; });
  return y;
}
Tensor to(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor y = ops::to(x, dtype);
  if (!is_floating(dtype) || !grad_enabled()) return y;
  // Autocast's bf16 copy of a recomputable output (a norm's, an activation's) or of a parameter
  // (which the model holds anyway) is recomputable too: an op saving the copy keeps the recipe.
  autograd::SavedTensor sx(x);
  const bool recipe = sx.recomputed() || x.is_parameter();
  auto recast = [dtype](const FnNode& n) { return ops::to(n.saved(0), dtype); };
  if (needs({x})) {
    auto node = record("to_dtype", {x}, {y}, {recipe ? sx : autograd::SavedTensor()},
                       [d = x.dtype()](FnNode&, const G& g) -> G { return {ops::to(g[0], d)}; });
    if (recipe) node->set_recompute(y, recast);
  } else if (recipe) {
    FnNode::set_recipe(y, "the cast of a frozen parameter", {sx}, recast);  // saved by the GEMM using it
  }
  return y;
}
Tensor to(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor y = ops::to(x, device);
  if (needs({x}))
    record("to_device", {x}, {y}, {}, [d = x.device()](FnNode&, const G& g) -> G { return {ops::to(g[0], d)}; });
  return y;
}
Tensor detach(const Tensor& x) { return ops::detach(x); }

// ---------------- elementwise ----------------
Tensor add(const Tensor& a_in, const Tensor& b_in) {
  const auto [a, b] = promoted(a_in, b_in);
  Tensor y = ops::add(a, b);
  if (needs({a, b})) {
    record("add", {a, b}, {y}, {}, [sa = a.sizes(), sb = b.sizes()](FnNode& n, const G& g) -> G {
      return {n.needs_grad(0) ? ops::sum_to(g[0], sa) : Tensor(), n.needs_grad(1) ? ops::sum_to(g[0], sb) : Tensor()};
    });
  }
  return y;
}
Tensor sub(const Tensor& a_in, const Tensor& b_in) {
  const auto [a, b] = promoted(a_in, b_in);
  Tensor y = ops::sub(a, b);
  if (needs({a, b})) {
    record("sub", {a, b}, {y}, {}, [sa = a.sizes(), sb = b.sizes()](FnNode& n, const G& g) -> G {
      return {n.needs_grad(0) ? ops::sum_to(g[0], sa) : Tensor(),
              n.needs_grad(1) ? ops::sum_to(ops::neg(g[0]), sb) : Tensor()};
    });
  }
  return y;
}
Tensor mul(const Tensor& a_in, const Tensor& b_in) {
  const auto [a, b] = promoted(a_in, b_in);
  Tensor y = ops::mul(a, b);
  if (needs({a, b})) {
    // Each gradient needs the other operand only.
    auto node = record("mul", {a, b}, {y}, {b.requires_grad() ? a : Tensor(), a.requires_grad() ? b : Tensor()},
                       [sa = a.sizes(), sb = b.sizes()](FnNode& n, const G& g) -> G {
                         return {n.needs_grad(0) ? ops::sum_to(ops::mul(g[0], n.saved(1)), sa) : Tensor(),
                                 n.needs_grad(1) ? ops::sum_to(ops::mul(g[0], n.saved(0)), sb) : Tensor()};
                       });
    // Both operands kept (both need gradients): the product is one pass away.
    if (a.requires_grad() && b.requires_grad())
      node->set_recompute(y, [](const FnNode& n) { return ops::mul(n.saved(0), n.saved(1)); });
  }
  return y;
}
Tensor div(const Tensor& a_in, const Tensor& b_in) {
  const auto [a, b] = promoted(a_in, b_in);
  Tensor y = ops::div(a, b);
  if (needs({a, b})) {
    record("div", {a, b}, {y}, {b, b.requires_grad() ? y : Tensor()},
           [sa = a.sizes(), sb = b.sizes()](FnNode& n, const G& g) -> G {
             Tensor bb = n.saved(0);
             Tensor ga = n.needs_grad(0) ? ops::sum_to(ops::div(g[0], bb), sa) : Tensor();
             Tensor gb = n.needs_grad(1) ? ops::sum_to(ops::neg(ops::div(ops::mul(g[0], n.saved(1)), bb)), sb) : Tensor();
             return {ga, gb};
           });
  }
  return y;
}
Tensor add(const Tensor& a, double s) { return unary_op(UnaryOp::add_scalar, a, s); }
Tensor sub(const Tensor& a, double s) { return unary_op(UnaryOp::add_scalar, a, -s); }
Tensor mul(const Tensor& a, double s) { return unary_op(UnaryOp::mul_scalar, a, s); }
Tensor div(const Tensor& a, double s) { return unary_op(UnaryOp::div_scalar, a, s); }
Tensor rsub(double s, const Tensor& a) { return unary_op(UnaryOp::rsub_scalar, a, s); }
Tensor neg(const Tensor& x) { return unary_op(UnaryOp::neg, x); }
// exp, log, rsqrt, pow and softplus are on the autocast fp32 list (their bf16 results lose too much).
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::exp, as_f32(x)); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::log, as_f32(x)); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op(UnaryOp::rsqrt, as_f32(x)); }
Tensor pow(const Tensor& x, double e) { return unary_op(UnaryOp::pow, as_f32(x), e); }
Tensor abs(const Tensor& x) { return unary_op(UnaryOp::abs, x); }
Tensor sign(const Tensor& x) { return unary_op(UnaryOp::sign, x); }
Tensor clamp(const Tensor& x, double lo, double hi) { return unary_op(UnaryOp::clamp, x, lo, hi); }
Tensor tanh(const Tensor& x) { return unary_op(UnaryOp::tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary_op(UnaryOp::sigmoid, x); }
Tensor relu(const Tensor& x) { return unary_op(UnaryOp::relu, x); }
Tensor softplus(const Tensor& x, double beta, double threshold) {
  return unary_op(UnaryOp::softplus, as_f32(x), beta, threshold);
}
Tensor silu(const Tensor& x) { return unary_op(UnaryOp::silu, x); }
Tensor gelu(const Tensor& x) { return unary_op(UnaryOp::gelu, x); }
Tensor gelu_sigmoid(const Tensor& x) { return unary_op(UnaryOp::gelu_sigmoid, x); }

Tensor where(const Tensor& cond, const Tensor& a_in, const Tensor& b_in) {
  const auto [a, b] = promoted(a_in, b_in);
  Tensor y = ops::where(cond, a, b);
  if (needs({a, b})) {
    record("where", {a, b}, {y}, {cond}, [sa = a.sizes(), sb = b.sizes()](FnNode& n, const G& g) -> G {
      Tensor c = n.saved(0), z = ops::scalar_tensor(0, TensorOptions(g[0].dtype(), g[0].device()));
      return {n.needs_grad(0) ? ops::sum_to(ops::where(c, g[0], z), sa) : Tensor(),
              n.needs_grad(1) ? ops::sum_to(ops::where(c, z, g[0]), sb) : Tensor()};
    });
  }
  return y;
}
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  Tensor y = ops::masked_fill(x, mask, value);
  if (needs({x}))
    record("masked_fill", {x}, {y}, {mask}, [](FnNode& n, const G& g) -> G { return {ops::masked_fill(g[0], n.saved(0), 0)}; });
  return y;
}
Tensor eq(const Tensor& a, const Tensor& b) { return ops::compare(CompareOp::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return ops::compare(CompareOp::ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return ops::compare(CompareOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return ops::compare(CompareOp::le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return ops::compare(CompareOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return ops::compare(CompareOp::ge, a, b); }

// ---------------- reductions ----------------
Tensor sum(const Tensor& x_in, std::vector<int64_t> dims, bool keepdim) {
  const Tensor x = as_f32(x_in);  // autocast: sums of bf16 values in f32 (counts above 256 stay exact)
  Tensor y = ops::sum(x, dims, keepdim);
  if (needs({x})) {
    record("sum", {x}, {y}, {}, [s = x.sizes(), k = keepdim_shape(x, dims)](FnNode&, const G& g) -> G {
      return {ops::expand(ops::reshape(g[0], k), s)};
    });
  }
  return y;
}
Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  Tensor y = ops::mean(x, dims, keepdim);
  if (needs({x})) {
    const double n = static_cast<double>(reduced_count(x, dims));
    record("mean", {x}, {y}, {}, [s = x.sizes(), k = keepdim_shape(x, dims), n](FnNode&, const G& g) -> G {
      return {ops::expand(ops::mul(ops::reshape(g[0], k), 1.0 / n), s)};
    });
  }
  return y;
}
Tensor var(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  Tensor y = ops::var(x, dims, keepdim);
  if (needs({x})) {
    const double n = static_cast<double>(reduced_count(x, dims));
    record("var", {x}, {y}, {x}, [dims, k = keepdim_shape(x, dims), n](FnNode& node, const G& g) -> G {
      Tensor xx = node.saved(0);
      Tensor centred = ops::sub(xx, ops::mean(xx, dims, true));
      return {ops::mul(ops::mul(centred, ops::reshape(g[0], k)), 2.0 / n)};
    });
  }
  return y;
}
std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  auto [v, i] = ops::max(x, dim, keepdim);
  if (needs({x})) {
    const int64_t d = x.wrap_dim(dim, "max");
    record("max", {x}, {v, i}, {i}, [s = x.sizes(), d, keepdim](FnNode& n, const G& g) -> G {
      Tensor idx = n.saved(0), gv = g[0];
      if (!keepdim && !s.empty()) {
        idx = ops::unsqueeze(idx, d);
        gv = ops::unsqueeze(gv, d);
      }
      if (s.empty()) return {gv};
      return {ops::scatter_add(s, d, idx, gv)};
    });
  }
  return {v, i};
}

// ---------------- linear algebra ----------------
Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = as_bf16(a_in), b = as_bf16(b_in);
  Tensor y = ops::matmul(a, b);
  if (needs({a, b})) {
    record("matmul", {a, b}, {y}, {b.requires_grad() ? a : Tensor(), a.requires_grad() ? b : Tensor()},
           [sa = a.sizes(), sb = b.sizes()](FnNode& n, const G& g) -> G {
             Tensor ga, gb;
             if (n.needs_grad(0)) ga = ops::sum_to(ops::matmul(g[0], ops::transpose(n.saved(1), -1, -2)), sa);
             if (n.needs_grad(1)) gb = ops::sum_to(ops::matmul(ops::transpose(n.saved(0), -1, -2), g[0]), sb);
             return {ga, gb};
           });
  }
  return y;
}
Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in) {
  const Tensor x = as_bf16(x_in), w = as_bf16(w_in), bias = as_bf16(bias_in);
  Tensor y = ops::linear(x, w, bias);
  if (needs({x, w, bias})) {
    record("linear", {x, w, bias}, {y}, {w.requires_grad() ? x : Tensor(), x.requires_grad() ? w : Tensor()},
           [sx = x.sizes()](FnNode& n, const G& g) -> G {
             // Rows counted explicitly: reshape cannot infer -1 when a feature dim is 0.
             const int64_t out = g[0].size(-1), rows = shape_numel(Shape(sx.begin(), sx.end() - 1));
             Tensor g2 = ops::reshape(g[0], {rows, out});
             Tensor gx, gw, gb;
             if (n.needs_grad(0)) gx = ops::reshape(ops::matmul(g2, n.saved(1)), sx);
             if (n.needs_grad(1)) {
               Tensor x2 = n.saved(0);
               gw = ops::matmul(ops::transpose(g2, 0, 1), ops::reshape(x2, {rows, x2.size(-1)}));
             }
             if (n.needs_grad(2)) gb = ops::sum(g2, {0});
             return {gx, gw, gb};
           });
  }
  return y;
}

// ---------------- nn functions ----------------
Tensor softmax(const Tensor& x_in, int64_t dim) {
  const Tensor x = as_f32(x_in);
  Tensor y = ops::softmax(x, dim);
  if (needs({x}))
    record("softmax", {x}, {y}, {y}, [dim](FnNode& n, const G& g) -> G { return {ops::softmax_backward(g[0], n.saved(0), dim)}; });
  return y;
}
Tensor softmax_pool(const Tensor& x, const Tensor& l, int64_t window) {
  // autocast: the softmax and the weighted sum in f32 with an f32 result, as the composed softmax
  // and product would be. The op computes half types in f32 itself, so the node keeps the operands
  // as they are, not f32 copies, and their gradients come back rounded once, as through a cast node.
  const bool f32_out = autocast_enabled() && castable(x) && castable(l);
  Tensor y = ops::softmax_pool(x, l, window, f32_out ? std::optional<DType>(DType::f32) : std::nullopt);
  if (needs({x, l})) {
    record("softmax_pool", {x, l}, {y}, {x, l}, [window](FnNode& n, const G& g) -> G {
      auto [gx, gl] = ops::softmax_pool_backward(g[0], n.saved(0), n.saved(1), window);
      return {n.needs_grad(0) ? gx : Tensor(), n.needs_grad(1) ? gl : Tensor()};
    });
  }
  return y;
}
Tensor log_softmax(const Tensor& x_in, int64_t dim) {
  const Tensor x = as_f32(x_in);
  Tensor y = ops::log_softmax(x, dim);
  if (needs({x}))
    record("log_softmax", {x}, {y}, {y},
           [dim](FnNode& n, const G& g) -> G { return {ops::log_softmax_backward(g[0], n.saved(0), dim)}; });
  return y;
}
Tensor layer_norm(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, double eps) {
  const Tensor x = as_f32(x_in), w = as_f32(w_in), b = as_f32(b_in);
  ops::NormOut o = ops::layer_norm(x, w, b, eps);
  if (needs({x, w, b})) {
    auto node = record("layer_norm", {x, w, b}, {o.y}, {x, w, o.mean, o.rstd, b}, [](FnNode& n, const G& g) -> G {
      auto [gx, gw, gb] = ops::layer_norm_backward(g[0], n.saved(0), n.saved(1), n.saved(2), n.saved(3));
      return {n.needs_grad(0) ? gx : Tensor(), n.needs_grad(1) ? gw : Tensor(), n.needs_grad(2) ? gb : Tensor()};
    });
    // The normalised output is the forward again over the saved input (the statistics it also
    // returns are dropped): an op that saves it (the next linear) keeps no copy.
    node->set_recompute(o.y, [eps](const FnNode& n) { return ops::layer_norm(n.saved(0), n.saved(1), n.saved(4), eps).y; });
  }
  return o.y;
}
Tensor rotary(const Tensor& x_in, const Tensor& cos_in, const Tensor& sin_in) {
  // PyTorch's x * cos + rotate_half(x) * sin promotes: a bf16 x with f32 tables gives f32.
  const auto p = promoted({x_in, cos_in, sin_in});
  const Tensor &x = p[0], &cos = p[1], &sin = p[2];
  Tensor y = ops::rotary(x, cos, sin);
  if (needs({x}))
    record("rotary", {x}, {y}, {cos, sin},
           [](FnNode& n, const G& g) -> G { return {ops::rotary_backward(g[0], n.saved(0), n.saved(1))}; });
  return y;
}
Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const ops::AttentionParams& p) {
  const Tensor q = as_bf16(q_in), k = as_bf16(k_in), v = as_bf16(v_in);
  ops::AttentionOut o = ops::fused_attention(q, k, v, p);
  if (needs({q, k, v})) {
    record("attention", {q, k, v}, {o.out}, {q, k, v, o.out, o.lse},
           [p, seed = o.seed, offset = o.offset](FnNode& n, const G& g) -> G {
      const ops::AttentionOut fwd{n.saved(3), n.saved(4), seed, offset};
      auto [dq, dk, dv] = ops::fused_attention_backward(g[0], n.saved(0), n.saved(1), n.saved(2), fwd, p);
      return {n.needs_grad(0) ? dq : Tensor(), n.needs_grad(1) ? dk : Tensor(), n.needs_grad(2) ? dv : Tensor()};
    });
  }
  return o.out;
}
Tensor rel_attention(const Tensor& qc_in, const Tensor& qr_in, const Tensor& k_in, const Tensor& r_in,
                     const Tensor& v_in, double dropout, Generator* g) {
  const Tensor qc = as_bf16(qc_in), qr = as_bf16(qr_in), k = as_bf16(k_in), r = as_bf16(r_in), v = as_bf16(v_in);
  ops::RelAttentionOut o = ops::rel_attention(qc, qr, k, r, v, dropout, g);
  if (needs({qc, qr, k, r, v})) {
    record("rel_attention", {qc, qr, k, r, v}, {o.out}, {qc, qr, k, r, v, o.out, o.lse},
           [dropout, seed = o.seed, offset = o.offset](FnNode& n, const G& g) -> G {
             ops::RelAttentionOut fwd{n.saved(5), n.saved(6), seed, offset};
             G d = ops::rel_attention_backward(g[0], n.saved(0), n.saved(1), n.saved(2), n.saved(3), n.saved(4), fwd,
                                               dropout);
             for (size_t i = 0; i < d.size(); ++i)
               if (!n.needs_grad(i)) d[i] = Tensor();
             return d;
           });
  }
  return o.out;
}
Tensor rms_norm(const Tensor& x_in, const Tensor& w_in, double eps) {
  const Tensor x = as_f32(x_in), w = as_f32(w_in);
  ops::NormOut o = ops::rms_norm(x, w, eps);
  if (needs({x, w})) {
    auto node = record("rms_norm", {x, w}, {o.y}, {x, w, o.rstd}, [](FnNode& n, const G& g) -> G {
      auto [gx, gw] = ops::rms_norm_backward(g[0], n.saved(0), n.saved(1), n.saved(2));
      return {n.needs_grad(0) ? gx : Tensor(), n.needs_grad(1) ? gw : Tensor()};
    });
    node->set_recompute(o.y, [eps](const FnNode& n) { return ops::rms_norm(n.saved(0), n.saved(1), eps).y; });
  }
  return o.y;
}
Tensor batch_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps) {
  // A bf16/f16 input with f32 parameters (bf16-mixed: a convolution's output) is normalised in f32
  // and the result rounded to the input's dtype, as PyTorch's batch_norm does on a GPU. The kernels
  // read the half-precision input and gradient as they are and write the input gradient in their
  // dtype, so neither the node nor its backward holds an f32 copy.
  ops::NormOut o = ops::batch_norm(x, w, b, running_mean, running_var, training, momentum, eps);
  // SyncBatchNorm: a forward over the global batch needs a backward over it too.
  const bool sync = training && static_cast<bool>(ops::batch_norm_reducer());
  if (needs({x, w, b})) {
    auto node = record("batch_norm", {x, w, b}, {o.y}, {x, w, o.mean, o.rstd, b}, [training, sync](FnNode& n, const G& g) -> G {
      const Tensor xs = n.saved(0), bias = n.saved(4);
      auto [gx, gw, gb] = ops::batch_norm_backward(ops::to(g[0], xs.dtype()), xs, n.saved(1), n.saved(2), n.saved(3),
                                                   training, sync);
      if (n.needs_grad(2)) gb = ops::to(gb, bias.dtype());  // (no weight: gb came in the compute dtype)
      return {n.needs_grad(0) ? gx : Tensor(), n.needs_grad(1) ? gw : Tensor(), n.needs_grad(2) ? gb : Tensor()};
    });
    // The output is one pass over the saved input with the saved statistics (no statistics, so no
    // collective and no running-statistics update, are recomputed).
    node->set_recompute(o.y, [](const FnNode& n) {
      return ops::batch_norm_apply(n.saved(0), n.saved(1), n.saved(4), n.saved(2), n.saved(3));
    });
  }
  return o.y;
}
Tensor conv1d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, int64_t padding) {
  const Tensor x = as_bf16(x_in), w = as_bf16(w_in), bias = as_bf16(bias_in);
  Tensor y = ops::conv1d(x, w, bias, padding);
  if (needs({x, w, bias})) {
    record("conv1d", {x, w, bias}, {y}, {x, w}, [padding](FnNode& n, const G& g) -> G {
      auto [gx, gw, gb] = ops::conv1d_backward(g[0], n.saved(0), n.saved(1), padding, n.needs_grad(2));
      return {n.needs_grad(0) ? gx : Tensor(), n.needs_grad(1) ? gw : Tensor(), gb};
    });
  }
  return y;
}
Tensor embedding(const Tensor& weight, const Tensor& indices, int64_t padding_idx) {
  STRAND_CHECK(padding_idx < 0 || (weight.dim() == 2 && padding_idx < weight.size(0)),
               "embedding: padding_idx ", padding_idx, " out of range for ", weight.str());
  Tensor y = ops::embedding(weight, indices);
  if (needs({weight})) {
    record("embedding", {weight}, {y}, {indices}, [v = weight.size(0), padding_idx](FnNode& n, const G& g) -> G {
      return {ops::embedding_backward(g[0], n.saved(0), v, padding_idx)};
    });
  }
  return y;
}
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  STRAND_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  if (!training || p == 0) return x;
  // As PyTorch's dropout: on half types the mask and the product are f32 (the scale 1/(1-p) is not
  // rounded to bf16) with one rounding of the product; a 1-byte keep mask is saved for backward.
  // Rebuilt as keep * 1/(1-p), the mask has the values the kernel wrote, so g * mask and x * mask
  // come out bit for bit as in the forward.
  const DType xd = x.dtype();
  const bool half = xd == DType::bf16 || xd == DType::f16;
  const DType md = half ? DType::f32 : xd;
  auto apply = [half, xd](const Tensor& v, const Tensor& m) {
    return half ? ops::to(ops::mul(ops::to(v, DType::f32), m), xd) : ops::mul(v, m);
  };
  Tensor mask = ops::dropout_mask(x.sizes(), p, TensorOptions(md, x.device()), gen);
  Tensor y = apply(x, mask);
  if (needs({x})) {
    auto mask_of = [p, md](const FnNode& n) { return ops::mul(ops::to(n.saved(0), md), 1.0 / (1.0 - p)); };
    autograd::SavedTensor sx(x);  // kept only when it holds no memory (x is itself recomputable)
    auto node = record("dropout", {x}, {y}, {ops::compare(CompareOp::ne, mask, 0.0), sx.recomputed() ? sx : autograd::SavedTensor()},
                       [apply, mask_of](FnNode& n, const G& g) -> G { return {apply(g[0], mask_of(n))}; });
    if (sx.recomputed())
      node->set_recompute(y, [apply, mask_of](const FnNode& n) { return apply(n.saved(1), mask_of(n)); });
  }
  return y;
}
Tensor concat(const std::vector<Tensor>& xs_in, int64_t dim) {
  const std::vector<Tensor> xs = promoted(xs_in);
  Tensor y = ops::concat(xs, dim);
  if (needs(xs)) {
    std::vector<int64_t> sizes;
    const int64_t d = xs[0].wrap_dim(dim, "concat");
    for (const Tensor& t : xs) sizes.push_back(t.size(d));
    record("concat", xs, {y}, {}, [sizes, d](FnNode& n, const G& g) -> G {
      G out;
      int64_t at = 0;
      for (size_t i = 0; i < sizes.size(); ++i) {
        out.push_back(n.needs_grad(i) ? ops::narrow(g[0], d, at, sizes[i]) : Tensor());
        at += sizes[i];
      }
      return out;
    });
  }
  return y;
}
Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  ops::check_stack_shapes(xs);
  std::vector<Tensor> u;
  for (const Tensor& t : xs) u.push_back(unsqueeze(t, dim));
  return concat(u, dim);
}
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor y = ops::index_select(x, dim, index);
  if (needs({x})) {
    record("index_select", {x}, {y}, {index}, [s = x.sizes(), d = x.wrap_dim(dim)](FnNode& n, const G& g) -> G {
      return {ops::index_add(s, d, n.saved(0), ops::contiguous(g[0]))};
    });
  }
  return y;
}
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor y = ops::gather(x, dim, index);
  if (needs({x})) {
    record("gather", {x}, {y}, {index}, [s = x.sizes(), d = x.wrap_dim(dim)](FnNode& n, const G& g) -> G {
      return {ops::scatter_add(s, d, n.saved(0), g[0])};
    });
  }
  return y;
}
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  Tensor y = ops::pad(x, pads, value);
  if (needs({x})) {
    std::vector<int64_t> inv(pads.size());
    for (size_t i = 0; i < pads.size(); ++i) inv[i] = -pads[i];
    record("pad", {x}, {y}, {}, [inv](FnNode&, const G& g) -> G { return {ops::pad(g[0], inv, 0)}; });
  }
  return y;
}
Tensor mse_loss(const Tensor& pred_in, const Tensor& target_in, Reduction r) {
  const Tensor pred = as_f32(pred_in), target = as_f32(target_in);
  STRAND_CHECK(pred.sizes() == target.sizes(), "mse_loss: prediction shape ", shape_str(pred.sizes()),
               " differs from target shape ", shape_str(target.sizes()));
  Tensor d = sub(pred, target);
  Tensor sq = mul(d, d);
  if (r == Reduction::none) return sq;
  return r == Reduction::sum ? sum(sq) : mean(sq);
}

// ---- Enformer relative shift ----
Tensor rel_shift(const Tensor& x) {
  Tensor y = ops::rel_shift(x);
  if (needs({x})) {
    record("rel_shift", {x}, {y}, {}, [s = x.sizes()](FnNode&, const G& g) -> G {
      Tensor gx = ops::zeros(s, TensorOptions(g[0].dtype(), g[0].device()));
      if (gx.numel()) ops::copy_(ops::rel_shift(gx), g[0]);
      return {gx};
    });
  }
  return y;
}

}  // namespace strand
