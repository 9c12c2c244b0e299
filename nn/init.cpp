#include "nn/init.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "kernels/ops.h"

namespace strand::nn::init {

namespace {
// Draw in the parameter's own floating dtype (f32 for f32/bf16/f16): a large model's init then
// costs one pass per tensor instead of an f64 temporary and a cast.
DType draw_dtype(const Tensor& t) { return t.dtype() == DType::f64 ? DType::f64 : DType::f32; }
}  // namespace

void uniform_(const Tensor& t, double lo, double hi, Generator* g) {
  NoGradGuard ng;
  STRAND_CHECK(lo <= hi, "uniform_: low ", lo, " is above high ", hi);
  Tensor u = ops::rand(t.sizes(), TensorOptions(draw_dtype(t), t.device()), g);
  ops::copy_(t, ops::add(ops::mul(u, hi - lo), lo));
}

void normal_(const Tensor& t, double mean, double std, Generator* g) {
  NoGradGuard ng;
  Tensor n = ops::randn(t.sizes(), TensorOptions(draw_dtype(t), t.device()), g);
  ops::copy_(t, ops::add(ops::mul(n, std), mean));
}

void constant_(const Tensor& t, double value) {
  NoGradGuard ng;
  ops::fill_(t, value);
}

int64_t fan_in(const Tensor& w) {
  STRAND_CHECK(w.dim() >= 2, "fan_in: needs a weight with at least 2 dims, got ", shape_str(w.sizes()));
  int64_t f = w.size(1);
  for (int64_t d = 2; d < w.dim(); ++d) f *= w.size(d);
  return f;
}

void kaiming_uniform_(const Tensor& w, double a, Generator* g) {
  const int64_t f = fan_in(w);
  const double bound = f > 0 ? std::sqrt(2.0 / (1 + a * a)) * std::sqrt(3.0 / static_cast<double>(f)) : 0.0;
  uniform_(w, -bound, bound, g);
}

}  // namespace strand::nn::init
