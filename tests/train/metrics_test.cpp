// Regression metrics against torchmetrics (fixtures from tools/make_metrics_fixtures.py, with many
// ties) and hand-computed cases.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "train/metrics.h"

namespace strand::train {
namespace {

TEST(Metrics, AverageRanksForTies) {
  std::vector<double> x = {10, 20, 10, 30, 20, 10};
  EXPECT_EQ(average_ranks(x.data(), 6), (std::vector<double>{2, 4.5, 2, 6, 4.5, 2}));
  std::vector<double> strided = {3, 0, 1, 0, 2, 0};
  EXPECT_EQ(average_ranks(strided.data(), 3, 2), (std::vector<double>{3, 1, 2}));
}

TEST(Metrics, HandComputedCases) {
  std::vector<double> p = {1, 2, 3, 4}, t = {2, 4, 6, 8}, r = {8, 6, 4, 2};
  // perfect rank agreement: cov/std² with the 1e-6 in the denominator
  EXPECT_NEAR(spearman(p.data(), t.data(), 4), 1.25 / (1.25 + 1e-6), 1e-15);
  EXPECT_NEAR(spearman(p.data(), r.data(), 4), -1.25 / (1.25 + 1e-6), 1e-15);
  EXPECT_NEAR(pearson(p.data(), t.data(), 4), 1.0, 1e-15);
  EXPECT_NEAR(mse(p.data(), t.data(), 4), (1 + 4 + 9 + 16) / 4.0, 1e-15);
  EXPECT_NEAR(mae(p.data(), t.data(), 4), 2.5, 1e-15);
  EXPECT_NEAR(r2_score(t.data(), t.data(), 4), 1.0, 1e-15);
  EXPECT_NEAR(r2_score(p.data(), t.data(), 4), 1 - 30.0 / 20.0, 1e-15);
  std::vector<double> c = {1, 1, 1, 1};
  EXPECT_TRUE(std::isnan(pearson(p.data(), c.data(), 4)));
  EXPECT_EQ(spearman(p.data(), c.data(), 4), 0.0);  // constant ranks: cov 0
  EXPECT_THROW(spearman(p.data(), t.data(), 1), Error);
  EXPECT_THROW(regression_metrics({1, 2}, {1, 2, 3}, 2, 1), Error);
}

TEST(Metrics, MatchTorchmetricsWithTies) {
  std::ifstream f(STRAND_FIXTURES "/metrics/torchmetrics.json");
  ASSERT_TRUE(f) << "missing fixture";
  auto j = nlohmann::json::parse(f);
  for (auto& c : j["cases"]) {
    const int64_t n = c["n"], k = c["k"];
    auto m = regression_metrics(c["preds"].get<std::vector<double>>(), c["labels"].get<std::vector<double>>(), n, k);
    auto check = [&](const char* key, const std::vector<double>& got) {
      auto want = c["per_output"][key].get<std::vector<double>>();
      ASSERT_EQ(got.size(), want.size()) << key;
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_NEAR(got[i], want[i], 1e-12 + 1e-12 * std::abs(want[i])) << c["name"] << " " << key << "[" << i << "]";
    };
    check("spearman", m.spearman);
    check("pearson", m.pearson);
    check("r2", m.r2);
    check("mse", m.mse);
    check("mae", m.mae);
    EXPECT_NEAR(m.mean_r2(), c["r2_uniform_average"].get<double>(), 1e-12);
  }
}

}  // namespace
}  // namespace strand::train
