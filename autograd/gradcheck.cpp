#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/functional.h"

namespace strand {

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          double eps, double atol, double rtol) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined()) continue;  // an absent optional input (e.g. no bias)
    STRAND_CHECK(!t.requires_grad() || (t.dtype() == DType::f64 && t.device().is_cpu() && t.is_leaf()),
                 "gradcheck: input ", i, " must be a CPU f64 leaf, got ", t.str());
    if (t.requires_grad()) t.set_grad(Tensor());
  }
  Tensor out = f(inputs);
  STRAND_CHECK(out.requires_grad(), "gradcheck: the output does not require grad");
  Generator g{0xC0FFEE, 0};
  Tensor v = ops::rand(out.sizes(), TensorOptions(DType::f64), &g);
  v = ops::add(v, 0.5);  // in [0.5, 1.5): no component is near zero
  backward(out, v);

  auto dot = [&](const std::vector<Tensor>& in) {
    NoGradGuard ng;
    Tensor o = ops::contiguous(f(in));
    return ops::item(ops::sum(ops::mul(o, v)));
  };
  GradcheckResult res;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    Tensor analytic = t.grad();
    std::vector<double> an = analytic.defined() ? ops::to_vector<double>(analytic)
                                                : std::vector<double>(static_cast<size_t>(t.numel()), 0.0);
    // Perturb through a contiguous element index over t's own layout.
    std::vector<int64_t> idx(static_cast<size_t>(t.dim()), 0);
    for (int64_t e = 0; e < t.numel(); ++e) {
      int64_t off = 0;
      for (int64_t d = 0; d < t.dim(); ++d) off += idx[d] * t.stride(d);
      double* p = static_cast<double*>(t.raw_data()) + off;
      const double orig = *p;
      *p = orig + eps;
      const double fp = dot(inputs);
      *p = orig - eps;
      const double fm = dot(inputs);
      *p = orig;
      const double num = (fp - fm) / (2 * eps);
      const double err = std::abs(an[e] - num);
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (res.ok && err > atol + rtol * std::abs(num)) {
        std::ostringstream os;
        os << "input " << i << " " << t.str() << ", element " << e << ": analytic " << an[e] << " vs numeric " << num
           << " (error " << err << ")";
        res.ok = false;
        res.message = os.str();
      }
      for (int64_t d = t.dim() - 1; d >= 0; --d) {
        if (++idx[d] < t.size(d)) break;
        idx[d] = 0;
      }
    }
  }
  return res;
}

}  // namespace strand
