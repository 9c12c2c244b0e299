#include "models/enformer/positional.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tensor/safetensors.h"

namespace strand::models::enformer {

namespace {
// Rounds a product to float before it meets an addition: the library builds with FMA
// (x86-64-v3) and GNU mode, where the compiler may fuse a*b - c, which torch's CPU kernels do not;
// in the gamma features that difference is amplified to ~1e-3.
inline float rn(float x) {
  volatile float v = x;
  return v;
}

// torch.linspace on CPU for float: step = (end - start) / (n - 1) in float, the first half counted
// up from start and the second half down from end.
std::vector<float> linspace_f32(float start, float end, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  if (n == 1) {
    v[0] = start;
    return v;
  }
  const float step = (end - start) / static_cast<float>(n - 1);
  const int64_t half = n / 2;
  for (int64_t i = 0; i < n; ++i)
    v[i] = i < half ? start + rn(step * static_cast<float>(i)) : end - rn(step * static_cast<float>(n - i - 1));
  return v;
}
}  // namespace

Tensor positional_features(int64_t T, int64_t feature_size, const Tensor& tf_gamma) {
  STRAND_CHECK(T >= 1, "Enformer positional features: sequence length must be positive, got ", T);
  STRAND_CHECK(feature_size > 0 && feature_size % 6 == 0, "Enformer positional features: feature size ", feature_size,
               " is not divisible by the number of components (6)");
  const int64_t F = feature_size / 6, R = 2 * T - 1;
  if (tf_gamma.defined())
    STRAND_CHECK(tf_gamma.dim() == 2 && tf_gamma.size(0) == R && tf_gamma.size(1) == F,
                 "Enformer positional features: gamma table has shape ", shape_str(tf_gamma.sizes()), ", expected [",
                 R, ", ", F, "] for T = ", T, " (the published TF table fits T = 1536 only)");
  const double seq_len = static_cast<double>(T);

  // exponential: half_life = 2 ** linspace(3, log2(T), F); exp(-ln2 / half_life * |d|)
  const auto lin = linspace_f32(3.0f, static_cast<float>(std::log(seq_len) / std::log(2.0)), F);
  std::vector<float> inv_neg(F);  // (-ln 2) / half_life, computed as reciprocal(half_life) * (-ln 2)
  for (int64_t i = 0; i < F; ++i) {
    const float hl = std::pow(2.0f, lin[i]);
    inv_neg[i] = (1.0f / hl) * static_cast<float>(-std::log(2.0));
  }
  // central mask: (2 ** arange(1, F+1) - 1) > |d|
  std::vector<float> widths(F);
  for (int64_t i = 0; i < F; ++i) widths[i] = static_cast<float>(std::ldexp(1.0, static_cast<int>(i + 1))) - 1.0f;
  // gamma: mean = linspace(T/F, T, F); concentration = (mean/stddev)^2; rate = mean/stddev^2
  const double stddev = seq_len / (2.0 * static_cast<double>(F));
  const auto mean = linspace_f32(static_cast<float>(seq_len / static_cast<double>(F)), static_cast<float>(seq_len), F);
  std::vector<float> conc(F), rate(F), cm1(F), lognorm(F);
  for (int64_t i = 0; i < F; ++i) {
    const float q = mean[i] / static_cast<float>(stddev);
    conc[i] = q * q;
    rate[i] = mean[i] / static_cast<float>(stddev * stddev);
    cm1[i] = conc[i] - 1.0f;
    // torch's float lgamma is the correctly rounded value (double lgamma rounded to float); glibc's
    // lgammaf is 1 ulp off for some arguments, which at c ~ 4096 (lgamma ~ 3e4) moves the features by 0.2%.
    const float lg = static_cast<float>(std::lgamma(static_cast<double>(conc[i])));
    lognorm[i] = lg - rn(conc[i] * std::log(rate[i]));
  }

  Tensor out = ops::empty({R, 6 * F}, DType::f32);
  float* o = out.data<float>();
  Tensor gt = tf_gamma.defined() ? ops::contiguous(ops::to(tf_gamma, DType::f32)) : Tensor();
  const float* g = gt.defined() ? gt.data<float>() : nullptr;
  std::vector<float> gam(F);
  for (int64_t m = 0; m < R; ++m) {
    const int64_t d = m - (T - 1);
    const float ad = static_cast<float>(d < 0 ? -d : d);
    const float sg = static_cast<float>((d > 0) - (d < 0));
    float* row = o + m * 6 * F;
    for (int64_t i = 0; i < F; ++i) {
      row[i] = std::exp(inv_neg[i] * ad);
      row[F + i] = widths[i] > ad ? 1.0f : 0.0f;
    }
    if (g) {
      for (int64_t i = 0; i < F; ++i) gam[i] = g[m * F + i];
    } else {
      float mx = -INFINITY;
      for (int64_t i = 0; i < F; ++i) {
        // xlogy(c-1, |d|): 0 when c-1 == 0, (c-1)·log|d| otherwise (-inf at d = 0)
        const float xl = cm1[i] == 0.0f ? 0.0f : rn(cm1[i] * std::log(ad));
        const float lu = xl - rn(rate[i] * ad);
        gam[i] = std::exp(lu - lognorm[i]) + 1e-8f;
        mx = std::max(mx, gam[i]);
      }
      for (int64_t i = 0; i < F; ++i) gam[i] = gam[i] / mx;
    }
    for (int64_t i = 0; i < F; ++i) row[2 * F + i] = gam[i];
    for (int64_t i = 0; i < 3 * F; ++i) row[3 * F + i] = sg * row[i];
  }
  return out;
}

Tensor load_gamma_table(const std::string& path) {
  auto file = safetensors::load(path);
  STRAND_CHECK(file.tensors.size() == 1, "Enformer gamma table '", path, "': expected exactly one tensor, found ",
               file.tensors.size());
  const Tensor& t = file.tensors.begin()->second;
  STRAND_CHECK(t.dim() == 2 && (t.dtype() == DType::f32 || t.dtype() == DType::f64),
               "Enformer gamma table '", path, "': expected a 2-D f32/f64 tensor, got ", t.str());
  return ops::contiguous(ops::to(t, DType::f32));
}

}  // namespace strand::models::enformer
