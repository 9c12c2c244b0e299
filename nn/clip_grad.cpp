#include "nn/clip_grad.h"

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "kernels/ops.h"

namespace strand::nn {

double grad_norm(const std::vector<Tensor>& params, double norm_type) {
  STRAND_CHECK(norm_type > 0 && (std::isfinite(norm_type) || norm_type == kInfNorm),
               "grad norm: norm_type ", norm_type, " is not supported (use a positive p or infinity)");
  NoGradGuard no_grad;
  const bool inf = norm_type == kInfNorm;
  // One f64 partial per gradient, reduced where the gradient lives (deterministic on both devices,
  // in double), brought to the host and combined there in parameter order. The 2-norm takes all
  // of a GPU's gradients in one multi-tensor pass (ops::sum_squares).
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    const Tensor g = p.defined() ? p.grad() : Tensor();
    if (g.defined() && g.numel() > 0) grads.push_back(g);
  }
  std::vector<double> vals;
  if (norm_type == 2.0) {
    vals = ops::sum_squares(grads);
  } else {
    std::vector<Tensor> parts;
    for (const Tensor& g : grads) {
      const Tensor g64 = ops::to(g, DType::f64);
      const Tensor part = inf ? ops::amax(ops::unary(UnaryOp::abs, g64))
                              : ops::sum(ops::unary(UnaryOp::pow, ops::unary(UnaryOp::abs, g64), norm_type));
      parts.push_back(ops::reshape(part, {1}));
    }
    const bool one_device = std::all_of(parts.begin(), parts.end(),
                                        [&](const Tensor& t) { return t.device() == parts.front().device(); });
    if (one_device && !parts.empty()) {
      vals = ops::to_vector<double>(ops::stack(parts, 0));
    } else {
      for (const Tensor& t : parts) vals.push_back(ops::item(t));
    }
  }
  double acc = 0;  // max |g| for inf; sum of |g|^p otherwise
  for (double v : vals) {
    if (inf) {
      if (std::isnan(v) || v > acc) acc = v;  // NaN must win, as in torch's max: std::max would drop it
    } else {
      acc += v;
    }
    if (std::isnan(acc)) break;
  }
  if (inf) return acc;
  return norm_type == 2.0 ? std::sqrt(acc) : std::pow(acc, 1.0 / norm_type);
}

double clip_coefficient(double total_norm, double max_norm) {
  const double raw = max_norm / (total_norm + 1e-6);
  // torch.clamp(max=1) keeps NaN, which then poisons the gradients visibly instead of silently.
  return std::isnan(raw) ? raw : std::min(raw, 1.0);
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  STRAND_CHECK(max_norm > 0 && !std::isnan(max_norm), "clip_grad_norm_: max_norm must be positive, got ", max_norm);
  const double total = grad_norm(params, norm_type);
  STRAND_CHECK(!error_if_nonfinite || std::isfinite(total), "clip_grad_norm_: the total norm of order ", norm_type,
               " of the gradients is ", total, ", so they cannot be clipped");
  const double coef = clip_coefficient(total, max_norm);
  if (coef == 1.0) return total;  // multiplying by exactly 1 is an identity; skip the pass
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    const Tensor g = p.defined() ? p.grad() : Tensor();
    if (!g.defined() || g.numel() == 0) continue;
    ops::copy_(g, ops::mul(g, coef));
  }
  return total;
}

}  // namespace strand::nn
