#include "nn/clip_grad.h"

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "kernels/ops.h"

namespace strand::nn {

namespace {

// The reduction runs on the CPU in f64: deterministic, and free of f32 accumulation error.
// CUDA gradients are copied over for it (one device-to-host copy per tensor); a device-side
// norm kernel can replace this when the trainer's step time says it matters.
Tensor as_cpu_f64(const Tensor& g) { return ops::to(ops::to(g, Device::cpu()), DType::f64); }

}  // namespace

double grad_norm(const std::vector<Tensor>& params, double norm_type) {
  STRAND_CHECK(norm_type > 0 && (std::isfinite(norm_type) || norm_type == kInfNorm),
               "grad norm: norm_type ", norm_type, " is not supported (use a positive p or infinity)");
  NoGradGuard no_grad;
  const bool inf = norm_type == kInfNorm;
  double acc = 0;  // max |g| for inf; sum of |g|^p otherwise
  for (const Tensor& p : params) {
    const Tensor g = p.defined() ? p.grad() : Tensor();
    if (!g.defined() || g.numel() == 0) continue;
    const Tensor g64 = as_cpu_f64(g);
    if (inf) {
      // NaN must win, as in torch's max: std::max would drop it.
      const double m = ops::item(ops::amax(ops::unary(UnaryOp::abs, g64)));
      if (std::isnan(m) || m > acc) acc = m;
    } else if (norm_type == 2.0) {
      acc += ops::item(ops::sum(ops::mul(g64, g64)));
    } else {
      acc += ops::item(ops::sum(ops::unary(UnaryOp::pow, ops::unary(UnaryOp::abs, g64), norm_type)));
    }
    if (std::isnan(acc)) break;
  }
  if (inf) return acc;
  return norm_type == 2.0 ? std::sqrt(acc) : std::pow(acc, 1.0 / norm_type);
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  STRAND_CHECK(max_norm > 0 && !std::isnan(max_norm), "clip_grad_norm_: max_norm must be positive, got ", max_norm);
  const double total = grad_norm(params, norm_type);
  STRAND_CHECK(!error_if_nonfinite || std::isfinite(total), "clip_grad_norm_: the total norm of order ", norm_type,
               " of the gradients is ", total, ", so they cannot be clipped");
  const double raw = max_norm / (total + 1e-6);
  // torch.clamp(max=1) keeps NaN, which then poisons the gradients visibly instead of silently.
  const double coef = std::isnan(raw) ? raw : std::min(raw, 1.0);
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
