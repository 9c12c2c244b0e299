#include "tests/test_util.h"

#include <cmath>
#include <sstream>

namespace strand::test {

::testing::AssertionResult allclose(const Tensor& a, const Tensor& b, double atol, double rtol) {
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.sizes()) << " vs " << shape_str(b.sizes());
  auto va = ops::to_vector<double>(a), vb = ops::to_vector<double>(b);
  double worst = 0;
  int64_t worst_i = -1;
  for (size_t i = 0; i < va.size(); ++i) {
    const bool both_nan = std::isnan(va[i]) && std::isnan(vb[i]);
    const double err = std::abs(va[i] - vb[i]);
    const double excess = err - (atol + rtol * std::abs(vb[i]));
    if (!both_nan && (excess > worst || std::isnan(err) != std::isnan(vb[i]))) {
      worst = std::isnan(excess) ? INFINITY : excess;
      worst_i = static_cast<int64_t>(i);
    }
  }
  if (worst_i < 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "element " << worst_i << ": " << va[worst_i] << " vs reference "
                                       << vb[worst_i] << " (atol " << atol << ", rtol " << rtol << ")";
}

Tensor uniform(const Shape& s, double lo, double hi, uint64_t seed, DType dt) {
  Generator g{seed, 0};
  Tensor u = ops::rand(s, TensorOptions(DType::f64), &g);
  return ops::to(ops::add(ops::mul(u, hi - lo), lo), dt);
}

Tensor pad_mask(int64_t B, int64_t T, const std::vector<int64_t>& lengths) {
  Tensor m = ops::zeros({B, T}, TensorOptions(DType::b8));
  auto* p = static_cast<uint8_t*>(m.raw_data());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = lengths[b]; t < T; ++t) p[b * T + t] = 1;
  return m;
}

Tensor param(const Shape& s, double lo, double hi, uint64_t seed) {
  Tensor t = uniform(s, lo, hi, seed);
  t.set_requires_grad(true);
  return t;
}

::testing::AssertionResult grad_ok(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                   const std::vector<Tensor>& inputs, double atol, double rtol) {
  GradcheckResult r = gradcheck(f, inputs, 1e-6, atol, rtol);
  if (r.ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << r.message;
}

Tol tol_for(DType d) {
  switch (d) {
    case DType::f64: return {1e-12, 1e-12};
    case DType::f32: return {1e-5, 1e-5};
    case DType::bf16: return {1e-3, 1.0 / 128};
    case DType::f16: return {1e-4, 1.0 / 1024};
    default: return {0, 0};
  }
}

void expect_dtypes(const OpFn& op, const OpFn& ref, const std::vector<Tensor>& inputs, bool exact,
                   const std::vector<DType>& dtypes) {
  for (DType dt : dtypes) {
    SCOPED_TRACE(std::string("dtype ") + std::string(dtype_name(dt)));
    std::vector<Tensor> cast, back;
    for (const Tensor& t : inputs) {
      if (!t.defined() || !is_floating(t.dtype())) {
        cast.push_back(t);
        back.push_back(t);
        continue;
      }
      Tensor c = ops::to(t, dt);
      cast.push_back(c);
      back.push_back(ops::to(c, DType::f64));
    }
    Tensor out = op(cast);
    EXPECT_EQ(out.dtype(), dt);
    const Tol tl = exact ? Tol{0, 0} : tol_for(dt);
    EXPECT_TRUE(allclose(out, ref(back), tl.atol, tl.rtol));
  }
}

::testing::AssertionResult throws_with(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& n : needles)
      if (msg.find(n) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << n << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-strand exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace strand::test
