// End to end on synthetic data (label "train"): the tiny recipe trained through the real binaries
// with all three modalities beats each single-modality model on test Spearman, and a run with the
// real backbones (Enformer BatchNorm, dropout) killed part-way resumes to the same losses exactly.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "train/cli.h"
#include "train/task.h"
#include "train/trainer.h"

namespace strand::train {
namespace {

namespace fs = std::filesystem;
const std::string kBin = STRAND_BINARY_DIR;
const std::string kConfig = std::string(STRAND_SOURCE_DIR) + "/configs/tiny_cpu.toml";

struct Workspace {
  fs::path dir = fs::temp_directory_path() / ("strand_e2e_" + std::to_string(::getpid()));
  Workspace() {
    fs::remove_all(dir);
    fs::create_directories(dir);
    const std::string cmd = kBin + "/strand-synth --out " + (dir / "data").string() +
                            " --train 192 --valid 48 --test 96 --dna-length 512 --seed 5 > /dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
  }
  ~Workspace() { fs::remove_all(dir); }
  std::vector<std::string> sets(const std::string& run) const {
    return {"data.dir=" + (dir / "data").string(), "trainer.run_dir=" + (dir / run).string(), "trainer.epochs=3",
            "trainer.val_interval=1000", "trainer.log_interval=1000"};
  }
  // Trains and evaluates through the binaries; returns the test Spearman.
  double train_and_eval(const std::string& run, const std::string& order) const {
    std::string args;
    for (const auto& s : sets(run)) args += " --set '" + s + "'";
    args += " --set 'model.backbone_order=" + order + "'";
    const std::string log = (dir / (run + ".log")).string();
    EXPECT_EQ(std::system((kBin + "/strand-train --config " + kConfig + args + " > " + log + " 2>&1").c_str()), 0)
        << "see " << log;
    EXPECT_EQ(std::system((kBin + "/strand-eval --config " + kConfig + args + " --checkpoint " + (dir / run).string() +
                           "/last.safetensors --split test > " + log + ".eval 2>&1")
                              .c_str()),
              0);
    std::ifstream in(log + ".eval");
    std::stringstream ss;
    ss << in.rdbuf();
    std::smatch m;
    const std::string text = ss.str();
    EXPECT_TRUE(std::regex_search(text, m, std::regex("test spearman ([-0-9.]+)"))) << text;
    return m.empty() ? -2 : std::stod(m[1]);
  }
};

TEST(EndToEnd, FusingModalitiesBeatsEachAlone) {
  Workspace w;
  const double fused = w.train_and_eval("fused", "[\"dna_seq\", \"rna_seq\", \"protein_seq\"]");
  const double dna = w.train_and_eval("dna", "[\"dna_seq\"]");
  const double rna = w.train_and_eval("rna", "[\"rna_seq\"]");
  std::printf("test Spearman: fused %.4f, DNA only %.4f, RNA only %.4f\n", fused, dna, rna);
  EXPECT_GT(fused, dna);
  EXPECT_GT(fused, rna);
}

TEST(EndToEnd, KilledRunWithRealBackbonesResumesExactly) {
  Workspace w;
  auto run = [&](const std::string& name, bool resume, int64_t stop) {
    auto sets = w.sets(name);
    sets.push_back("trainer.epochs=1");
    sets.push_back("trainer.val_interval=8");
    Config cfg = load_config(kConfig, sets);
    Splits s = open_splits(cfg);
    manual_seed(cfg.trainer.seed);
    auto task = std::make_shared<RegressionTask>(cfg);
    Trainer t(cfg, task, *s.train, s.validation.get(), s.mean, s.std);
    return t.fit(resume, stop);
  };
  FitResult full = run("full", false, -1);
  ASSERT_EQ(full.losses.size(), 24u);
  FitResult killed = run("killed", false, 11);  // newest checkpoint: the step-8 validation
  FitResult resumed = run("killed", true, -1);
  EXPECT_EQ(killed.losses, std::vector<double>(full.losses.begin(), full.losses.begin() + 11));
  EXPECT_EQ(resumed.losses, std::vector<double>(full.losses.begin() + 8, full.losses.end()));
}

}  // namespace
}  // namespace strand::train
