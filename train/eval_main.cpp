// strand-eval: metrics of a checkpoint on a split (per tissue and averaged), a metrics JSON and a
// predictions TSV; or, with --score, the same metrics for an existing predictions file.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "train/cli.h"
#include "train/metrics.h"
#include "train/task.h"
#include "train/trainer.h"

using namespace strand;
using namespace strand::train;

namespace {
void usage(FILE* f) {
  std::fprintf(f,
               "usage: strand-eval --config FILE --checkpoint CKPT [--split test] [--out DIR] [--set a.b=c ...]\n"
               "       strand-eval --score PREDICTIONS.tsv --data DIR [--split test] [--labels 30]\n"
               "Computes Spearman, Pearson, R2, MSE and MAE per tissue over the whole split and their mean,\n"
               "as ModelGenerator does (z-scored labels, train+validation statistics).\n"
               "  --out DIR   where metrics.json and predictions.tsv go (default: the checkpoint's folder)\n"
               "  --set trainer.device=cuda   evaluate on the GPU (the config's trainer.device; default cpu)\n"
               "  --score F   score an existing predictions TSV (columns transcript_id, pred_z_0..) instead\n");
}

void report(const RegressionMetrics& m, const std::string& split) {
  std::printf("%-8s %9s %9s %9s\n", "tissue", "spearman", "pearson", "r2");
  for (size_t i = 0; i < m.spearman.size(); ++i)
    std::printf("%-8zu %9.4f %9.4f %9.4f\n", i, m.spearman[i], m.pearson[i], m.r2[i]);
  std::printf("%s spearman %.4f | pearson %.4f | r2 %.4f | mse %.4f | mae %.4f\n", split.c_str(), m.mean_spearman(),
              m.mean_pearson(), m.mean_r2(), m.mean_mse(), m.mean_mae());
}

nlohmann::json to_json(const RegressionMetrics& m, const std::string& split, int64_t n) {
  return {{"split", split},
          {"samples", n},
          {"spearman", m.mean_spearman()},
          {"pearson", m.mean_pearson()},
          {"r2", m.mean_r2()},
          {"mse", m.mean_mse()},
          {"mae", m.mean_mae()},
          {"per_tissue", {{"spearman", m.spearman}, {"pearson", m.pearson}, {"r2", m.r2}, {"mse", m.mse}, {"mae", m.mae}}}};
}

void write_atomic(const std::filesystem::path& p, const std::string& text) {
  const auto tmp = p.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    STRAND_CHECK(out.good(), "cannot write '", tmp, "'");
  }
  std::filesystem::rename(tmp, p);
}

int score(const std::string& path, const std::string& data_dir, const std::string& split_name, int labels) {
  Config cfg;
  cfg.data.dir = data_dir;
  cfg.data.num_labels = labels;
  Splits s = open_splits(cfg);
  SplitData& split = split_by_name(s, split_name);
  std::ifstream in(path);
  STRAND_CHECK(in.good(), "cannot read predictions '", path, "'");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> cols;
  {
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, '\t')) cols.push_back(c);
  }
  std::vector<int> zcol(labels, -1);
  for (size_t i = 0; i < cols.size(); ++i)
    for (int k = 0; k < labels; ++k)
      if (cols[i] == "pred_z_" + std::to_string(k)) zcol[k] = static_cast<int>(i);
  for (int k = 0; k < labels; ++k) STRAND_CHECK(zcol[k] >= 0, "'", path, "' has no column pred_z_", k);
  std::vector<double> preds, ys;
  int64_t row = 0;
  for (int line_no = 2; std::getline(in, line); ++line_no) {
    if (line.empty()) continue;
    STRAND_CHECK(row < split.size(), "'", path, "' has more rows than the ", split_name, " split (", split.size(), ")");
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, '\t')) f.push_back(c);
    STRAND_CHECK(f.size() == cols.size(), path, ":", line_no, ": expected ", cols.size(), " columns, found ", f.size());
    Sample smp = split.get(row++);
    STRAND_CHECK(f[0] == smp.transcript_id, path, ":", line_no, ": transcript '", f[0], "' but the split has '",
                 smp.transcript_id, "' at this row");
    for (int k = 0; k < labels; ++k) preds.push_back(std::stod(f[zcol[k]]));
    ys.insert(ys.end(), smp.labels.begin(), smp.labels.end());
  }
  STRAND_CHECK(row == split.size(), "'", path, "' has ", row, " rows but the ", split_name, " split has ", split.size());
  RegressionMetrics m = regression_metrics(preds, ys, row, labels);
  report(m, split_name);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  return run_tool("strand-eval", [&] {
    std::string config_path, ckpt, split_name = "test", out_dir, score_path, data_dir;
    std::vector<std::string> sets;
    int labels = 30;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        usage(stdout);
        return 0;
      }
      STRAND_CHECK(i + 1 < argc, a, " needs a value (see --help)");
      const std::string v = argv[++i];
      if (a == "--config") config_path = v;
      else if (a == "--checkpoint") ckpt = v;
      else if (a == "--split") split_name = v;
      else if (a == "--out") out_dir = v;
      else if (a == "--set") sets.push_back(v);
      else if (a == "--score") score_path = v;
      else if (a == "--data") data_dir = v;
      else if (a == "--labels") labels = std::stoi(v);
      else STRAND_CHECK(false, "unknown option '", a, "' (see --help)");
    }
    if (!score_path.empty()) {
      STRAND_CHECK(!data_dir.empty(), "--score needs --data DIR");
      return score(score_path, data_dir, split_name, labels);
    }
    STRAND_CHECK(!config_path.empty() && !ckpt.empty(), "--config and --checkpoint are required (see --help)");
    Config cfg = load_config(config_path, sets);
    const Device device = device_from_config(cfg);
    Splits s = open_splits(cfg);
    SplitData& split = split_by_name(s, split_name);
    auto task = std::make_shared<RegressionTask>(cfg);
    std::vector<double> mean, sd;
    load_checkpoint_weights(*task, ckpt, &mean, &sd);
    if (device.is_cuda()) task->to(device);
    Predictions p = predict(*task, split, cfg.data.eval_batch_size, "strand-eval: " + split_name);
    RegressionMetrics m = regression_metrics(p.preds, p.labels, p.n, p.k);
    report(m, split_name);
    if (out_dir.empty()) out_dir = std::filesystem::path(ckpt).parent_path().string();
    if (out_dir.empty()) out_dir = ".";
    std::filesystem::create_directories(out_dir);
    write_atomic(std::filesystem::path(out_dir) / ("metrics_" + split_name + ".json"), to_json(m, split_name, p.n).dump(2));
    std::ostringstream tsv;
    tsv << "transcript_id";
    for (int64_t k = 0; k < p.k; ++k) tsv << "\tpred_z_" << k;
    for (int64_t k = 0; k < p.k; ++k) tsv << "\tpred_" << k;
    tsv << "\n";
    char num[32];
    for (int64_t i = 0; i < p.n; ++i) {
      tsv << p.ids[i];
      for (int64_t k = 0; k < p.k; ++k) {
        std::snprintf(num, sizeof num, "%.9g", p.preds[i * p.k + k]);
        tsv << '\t' << num;
      }
      for (int64_t k = 0; k < p.k; ++k) {
        std::snprintf(num, sizeof num, "%.9g", p.preds[i * p.k + k] * sd[k] + mean[k]);  // back to log2(TPM)
        tsv << '\t' << num;
      }
      tsv << "\n";
    }
    write_atomic(std::filesystem::path(out_dir) / ("predictions_" + split_name + ".tsv"), tsv.str());
    std::printf("strand-eval: wrote %s/metrics_%s.json and predictions_%s.tsv\n", out_dir.c_str(), split_name.c_str(),
                split_name.c_str());
    return 0;
  });
}
