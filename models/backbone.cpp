#include "models/backbone.h"

#include <cmath>

namespace strand::models {

Tensor mask_as(const Tensor& mask, const Tensor& like) {
  Tensor m = mask.dtype() == DType::b8 ? ops::to(mask, DType::i64) : mask;
  return ops::to(ops::to(m, like.device()), like.dtype());
}

Tensor masked_mean(const Tensor& h, const Tensor& mask) {
  STRAND_CHECK(h.dim() == 3 && mask.dim() == 2 && mask.size(0) == h.size(0) && mask.size(1) == h.size(1),
               "masked_mean: expected hidden [B, L, D] and mask [B, L], got ", shape_str(h.sizes()), " and ",
               shape_str(mask.sizes()));
  Tensor m = mask_as(mask, h);
  Tensor num = sum(mul(h, unsqueeze(m, -1)), {1});  // [B, D]
  // clamp(min=1e-9) as ModelGenerator: an all-padding row pools to 0, not NaN
  Tensor den = ops::unary(UnaryOp::clamp, ops::sum(m, {1}, true), 1e-9, INFINITY);  // [B, 1]
  return div(num, den);
}

Tensor rotary_inv_freq(int64_t dim, double base) {
  STRAND_CHECK(dim > 0 && dim % 2 == 0, "rotary: dimension must be positive and even, got ", dim);
  std::vector<float> v;
  const float b = static_cast<float>(base);
  for (int64_t i = 0; i < dim; i += 2) v.push_back(1.0f / std::pow(b, static_cast<float>(i) / static_cast<float>(dim)));
  return ops::from_vector<float>(v, {dim / 2});
}

RotaryTables rotary_tables(const Tensor& inv_freq, int64_t T, DType dtype, Device device) {
  STRAND_CHECK(inv_freq.dim() == 1 && inv_freq.size(0) > 0, "rotary: inv_freq must be 1-D and non-empty, got ",
               shape_str(inv_freq.sizes()));
  auto f = ops::to_vector<float>(inv_freq);
  const int64_t h = static_cast<int64_t>(f.size());
  std::vector<float> c(static_cast<size_t>(T * 2 * h)), s(c.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < h; ++i) {
      const float a = static_cast<float>(t) * f[static_cast<size_t>(i)];  // fp32 product, as torch.outer
      const float ca = std::cos(a), sa = std::sin(a);
      c[static_cast<size_t>(t * 2 * h + i)] = c[static_cast<size_t>(t * 2 * h + h + i)] = ca;
      s[static_cast<size_t>(t * 2 * h + i)] = s[static_cast<size_t>(t * 2 * h + h + i)] = sa;
    }
  RotaryTables r;
  r.cos = ops::to(ops::to(ops::from_vector<float>(c, {T, 2 * h}), dtype), device);
  r.sin = ops::to(ops::to(ops::from_vector<float>(s, {T, 2 * h}), dtype), device);
  return r;
}

Tensor apply_rotary(const Tensor& x, const RotaryTables& t) {
  const int64_t rd = t.cos.size(-1), hd = x.size(-1), T = x.size(-2);
  STRAND_CHECK(rd <= hd && t.cos.size(0) == T, "rotary: tables ", shape_str(t.cos.sizes()), " do not fit input ",
               shape_str(x.sizes()));
  return rotary(x, t.cos, t.sin);  // fused: x * cos + rotate_half(x) * sin on the first rd features
}

}  // namespace strand::models
