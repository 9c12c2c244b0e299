#include "train/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tensor/error.h"

namespace strand::train {

std::vector<double> average_ranks(const double* x, int64_t n, int64_t stride) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[a * stride] < x[b * stride]; });
  std::vector<double> ranks(static_cast<size_t>(n));
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j + 1 < n && x[order[j + 1] * stride] == x[order[i] * stride]) ++j;
    const double r = 0.5 * static_cast<double>(i + j) + 1.0;  // mean of 1-based ranks i+1 .. j+1
    for (int64_t t = i; t <= j; ++t) ranks[order[t]] = r;
    i = j + 1;
  }
  return ranks;
}

namespace {
struct Moments {
  double cov, var_p, var_t;  // population (divided by n)
};
Moments moments(const double* p, const double* t, int64_t n, int64_t sp, int64_t st) {
  double mp = 0, mt = 0;
  for (int64_t i = 0; i < n; ++i) {
    mp += p[i * sp];
    mt += t[i * st];
  }
  mp /= static_cast<double>(n);
  mt /= static_cast<double>(n);
  Moments m{0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    const double dp = p[i * sp] - mp, dt = t[i * st] - mt;
    m.cov += dp * dt;
    m.var_p += dp * dp;
    m.var_t += dt * dt;
  }
  m.cov /= static_cast<double>(n);
  m.var_p /= static_cast<double>(n);
  m.var_t /= static_cast<double>(n);
  return m;
}
void check_n(int64_t n, const char* what) {
  STRAND_CHECK(n >= 2, what, ": needs at least 2 samples, got ", n);
}
}  // namespace

double spearman(const double* pred, const double* target, int64_t n, int64_t stride) {
  check_n(n, "spearman");
  const auto rp = average_ranks(pred, n, stride), rt = average_ranks(target, n, stride);
  const Moments m = moments(rp.data(), rt.data(), n, 1, 1);
  const double c = m.cov / (std::sqrt(m.var_p) * std::sqrt(m.var_t) + 1e-6);
  return std::clamp(c, -1.0, 1.0);
}

double pearson(const double* pred, const double* target, int64_t n, int64_t stride) {
  check_n(n, "pearson");
  const Moments m = moments(pred, target, n, stride, stride);
  const double c = m.cov / std::sqrt(m.var_p * m.var_t);
  return std::isnan(c) ? c : std::clamp(c, -1.0, 1.0);
}

double r2_score(const double* pred, const double* target, int64_t n, int64_t stride) {
  check_n(n, "r2_score");
  double mt = 0;
  for (int64_t i = 0; i < n; ++i) mt += target[i * stride];
  mt /= static_cast<double>(n);
  double res = 0, tot = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = target[i * stride] - pred[i * stride], d = target[i * stride] - mt;
    res += e * e;
    tot += d * d;
  }
  return 1.0 - res / tot;
}

double mse(const double* pred, const double* target, int64_t n, int64_t stride) {
  STRAND_CHECK(n >= 1, "mse: no samples");
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = pred[i * stride] - target[i * stride];
    s += e * e;
  }
  return s / static_cast<double>(n);
}

double mae(const double* pred, const double* target, int64_t n, int64_t stride) {
  STRAND_CHECK(n >= 1, "mae: no samples");
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::abs(pred[i * stride] - target[i * stride]);
  return s / static_cast<double>(n);
}

double RegressionMetrics::mean(const std::vector<double>& v) {
  if (v.empty()) return std::nan("");
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

RegressionMetrics regression_metrics(const std::vector<double>& preds, const std::vector<double>& labels, int64_t n,
                                     int64_t k) {
  STRAND_CHECK(k >= 1, "regression_metrics: need at least one output column, got ", k);
  STRAND_CHECK(static_cast<int64_t>(preds.size()) == n * k && static_cast<int64_t>(labels.size()) == n * k,
               "regression_metrics: ", preds.size(), " predictions and ", labels.size(), " labels for ", n, " x ", k);
  check_n(n, "regression_metrics");
  RegressionMetrics m;
  for (int64_t c = 0; c < k; ++c) {
    const double* p = preds.data() + c;
    const double* t = labels.data() + c;
    m.spearman.push_back(spearman(p, t, n, k));
    m.pearson.push_back(pearson(p, t, n, k));
    m.r2.push_back(r2_score(p, t, n, k));
    m.mse.push_back(mse(p, t, n, k));
    m.mae.push_back(mae(p, t, n, k));
  }
  return m;
}

}  // namespace strand::train
