#pragma once
// Regression metrics exactly as ModelGenerator reports them: each computed per output column
// (tissue) over the whole split with torchmetrics' formulas, then averaged over columns
// ("uniform_average"). Everything in double.
//   Spearman: 1-based ranks with ties given their average rank; cov / (std_p * std_t + 1e-6) with
//             population moments; clamped to [-1, 1] (torchmetrics _spearman_corrcoef_compute).
//   Pearson:  cov / sqrt(var_p * var_t), clamped to [-1, 1]; NaN when a column is constant.
//   R²:       1 - SS_res / SS_tot.
//   MSE, MAE: means over the column.
#include <cstdint>
#include <string>
#include <vector>

namespace strand::train {

// Ranks of x[0], x[stride], ... (n values), 1-based, ties averaged.
std::vector<double> average_ranks(const double* x, int64_t n, int64_t stride = 1);

double spearman(const double* pred, const double* target, int64_t n, int64_t stride = 1);
double pearson(const double* pred, const double* target, int64_t n, int64_t stride = 1);
double r2_score(const double* pred, const double* target, int64_t n, int64_t stride = 1);
double mse(const double* pred, const double* target, int64_t n, int64_t stride = 1);
double mae(const double* pred, const double* target, int64_t n, int64_t stride = 1);

struct RegressionMetrics {
  std::vector<double> spearman, pearson, r2, mse, mae;  // one per output column
  static double mean(const std::vector<double>& v);
  double mean_spearman() const { return mean(spearman); }
  double mean_pearson() const { return mean(pearson); }
  double mean_r2() const { return mean(r2); }
  double mean_mse() const { return mean(mse); }
  double mean_mae() const { return mean(mae); }
};

// preds and labels are row-major [n, k]. At least two rows are needed.
RegressionMetrics regression_metrics(const std::vector<double>& preds, const std::vector<double>& labels, int64_t n,
                                     int64_t k);

}  // namespace strand::train
