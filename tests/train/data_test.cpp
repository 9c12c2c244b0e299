// Streaming TSV data, the index cache, split discovery, label normalisation, synthetic data.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tensor/error.h"
#include "tests/test_util.h"
#include "train/data.h"
#include "train/metrics.h"
#include "train/synth.h"

namespace strand::train {
namespace {

namespace fs = std::filesystem;
using test::throws_with;

using test::TempDir;

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(Tsv, ReadsRowsByColumnNameAndCachesTheIndex) {
  TempDir d("tsv");
  const std::string f = d.str("a.tsv");
  write(f, "transcript_id\tlabels_0\tlabels_1\trna_seq\tprotein_seq\tdna_seq\n"
           "T1\t1.5\t-2\tACGU\tMK\tACGTACGT\n"
           "T2\t0\t3e-1\tGG\t\tTTTT\r\n"
           "\n");
  TsvFile t(f, {"labels_0", "labels_1"});
  EXPECT_FALSE(t.index_was_cached());
  EXPECT_EQ(t.num_rows(), 2);
  EXPECT_EQ(t.row(1), (std::vector<std::string>{"T2", "0", "3e-1", "GG", "", "TTTT"}));
  EXPECT_EQ(t.labels(1)[1], 0.3);
  EXPECT_EQ(t.column("dna_seq"), 5);
  EXPECT_TRUE(throws_with([&] { t.column("labels_7"); }, {"no column 'labels_7'", "a.tsv", "transcript_id"}));
  EXPECT_TRUE(fs::exists(f + ".strand-index"));
  TsvFile again(f, {"labels_0", "labels_1"});
  EXPECT_TRUE(again.index_was_cached());
  EXPECT_EQ(again.row(0)[5], "ACGTACGT");
  EXPECT_EQ(again.labels(0)[0], 1.5);
  // A changed file is re-indexed, not read through a stale index.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write(f, "transcript_id\tlabels_0\tlabels_1\trna_seq\tprotein_seq\tdna_seq\nT9\t7\t8\tA\tM\tC\n");
  TsvFile changed(f, {"labels_0", "labels_1"});
  EXPECT_FALSE(changed.index_was_cached());
  EXPECT_EQ(changed.num_rows(), 1);
  EXPECT_EQ(changed.labels(0)[1], 8.0);
  // A different label set does not reuse the index either.
  TsvFile other(f, {"labels_1"});
  EXPECT_FALSE(other.index_was_cached());
  EXPECT_EQ(other.labels(0)[0], 8.0);
}

TEST(Tsv, MalformedRowsNameFileLineAndColumn) {
  TempDir d("tsvbad");
  write(d.str("short.tsv"), "id\tlabels_0\tdna_seq\nA\t1\tACGT\nB\t2\n");
  EXPECT_TRUE(throws_with([&] { TsvFile(d.str("short.tsv"), {"labels_0"}); }, {"short.tsv:3", "expected 3", "found 2"}));
  write(d.str("nan.tsv"), "id\tlabels_0\tdna_seq\nA\tabc\tACGT\n");
  EXPECT_TRUE(throws_with([&] { TsvFile(d.str("nan.tsv"), {"labels_0"}); },
                          {"nan.tsv:2", "'labels_0'", "column 2", "'abc'"}));
  write(d.str("empty.tsv"), "");
  EXPECT_TRUE(throws_with([&] { TsvFile(d.str("empty.tsv"), {}); }, {"empty.tsv", "empty"}));
  EXPECT_TRUE(throws_with([&] { TsvFile(d.str("missing.tsv"), {}); }, {"cannot open", "missing.tsv"}));
}

TEST(Synth, DeterministicSchemaAndPlantedSignal) {
  TempDir a("synth_a"), b("synth_b");
  SynthConfig cfg;
  cfg.n_train = 120;
  cfg.n_valid = 30;
  cfg.n_test = 30;
  cfg.train_files = 3;
  cfg.dna_length = 512;
  cfg.seed = 7;
  write_synthetic_dataset(a.path.string(), cfg);
  write_synthetic_dataset(b.path.string(), cfg);
  auto slurp = [](const std::string& p) {
    std::ostringstream s;
    s << std::ifstream(p).rdbuf();
    return s.str();
  };
  EXPECT_EQ(slurp(a.str("train_2.tsv")), slurp(b.str("train_2.tsv")));
  SplitFiles files = find_split_files(a.path.string());
  ASSERT_EQ(files.train.size(), 3u);
  EXPECT_NE(files.train[0].find("train_1.tsv"), std::string::npos);
  SplitData train(files.train), valid(files.validation);
  EXPECT_EQ(train.size(), 120);
  Sample s = train.get(77);
  EXPECT_EQ(s.dna.size(), 512u);
  EXPECT_EQ(s.labels.size(), 30u);
  EXPECT_EQ(s.transcript_id.rfind("ENST", 0), 0u);
  // Ties at the zero-TPM floor, and empty proteins, as in the real data.
  auto y = train.raw_labels();
  int64_t floor = 0, noncoding = 0;
  for (double v : y) floor += v == kZeroTpmLabel;
  for (int64_t i = 0; i < train.size(); ++i) noncoding += train.get(i).protein.empty();
  EXPECT_GT(floor, static_cast<int64_t>(y.size()) / 10);
  EXPECT_LT(floor, static_cast<int64_t>(y.size()) * 7 / 10);
  EXPECT_GT(noncoding, 5);
  // The planted features explain the labels: an oracle linear score ranks them well.
  std::vector<double> pred, lab;
  for (int64_t i = 0; i < train.size(); ++i) {
    Sample t = train.get(i);
    auto f = synth_features(t.dna, t.rna, t.protein);
    double score = 0;
    for (double v : f) score += v;
    pred.push_back(score);
    lab.push_back(t.labels[0]);
  }
  EXPECT_GT(spearman(pred.data(), lab.data(), train.size()), 0.6);
  // z-scoring with train + validation statistics (population std)
  std::vector<double> mean, sd;
  label_statistics({&train, &valid}, mean, sd);
  train.set_normalisation(mean, sd);
  valid.set_normalisation(mean, sd);
  double m = 0, v = 0;
  int64_t n = 0;
  for (const SplitData* split : {&train, &valid})
    for (int64_t i = 0; i < split->size(); ++i) {
      const double z = split->get(i).labels[3];
      m += z;
      v += z * z;
      ++n;
    }
  EXPECT_NEAR(m / static_cast<double>(n), 0.0, 1e-12);
  EXPECT_NEAR(v / static_cast<double>(n), 1.0, 1e-12);
}

TEST(Synth, BadConfigAndMissingSplits) {
  TempDir d("synth_bad");
  SynthConfig cfg;
  cfg.dna_length = 100;
  EXPECT_TRUE(throws_with([&] { write_synthetic_dataset(d.path.string(), cfg); }, {"dna_length", "100"}));
  EXPECT_TRUE(throws_with([&] { find_split_files(d.path.string()); }, {"no train_*.tsv"}));
  EXPECT_TRUE(throws_with([&] { find_split_files(d.str("nope")); }, {"does not exist"}));
}

TEST(Synth, BinaryWritesADatasetAndRejectsBadFlags) {
  TempDir d("synth_bin");
  const std::string bin = std::string(STRAND_BINARY_DIR) + "/strand-synth";
  const std::string cmd = bin + " --out " + d.path.string() + " --train 8 --valid 4 --test 4 --dna-length 300 > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_TRUE(fs::exists(d.str("test.tsv")));
  EXPECT_EQ(SplitData({d.str("test.tsv")}).size(), 4);
  EXPECT_NE(std::system((bin + " --train x 2> /dev/null").c_str()), 0);
  EXPECT_EQ(std::system((bin + " --help > /dev/null").c_str()), 0);
}

}  // namespace
}  // namespace strand::train
