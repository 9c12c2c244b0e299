// The training loop with a small stand-in task model (string features -> MLP with dropout):
// the loss falls, checkpoints and the metrics CSV are written, and a run killed part-way and
// resumed reproduces the uninterrupted losses and weights exactly.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "nn/layers.h"
#include "tests/test_util.h"
#include "train/synth.h"
#include "train/trainer.h"

namespace strand::train {
namespace {

namespace fs = std::filesystem;

// Features any modality would give: the planted ones, computed directly.
struct FeatureModel : TaskModel {
  std::shared_ptr<nn::Linear> l1 = std::make_shared<nn::Linear>(kSynthFeatures, 16), l2;
  std::shared_ptr<nn::Dropout> drop = std::make_shared<nn::Dropout>(0.2);
  explicit FeatureModel(int k) : TaskModel("FeatureModel") {
    l2 = std::make_shared<nn::Linear>(16, k);
    register_module("l1", l1);
    register_module("drop", drop);
    register_module("l2", l2);
  }
  Tensor forward(const std::vector<Sample>& batch) override {
    std::vector<float> f;
    for (const Sample& s : batch)
      for (double v : synth_features(s.dna, s.rna, s.protein)) f.push_back(static_cast<float>(v));
    Tensor x = ops::from_vector<float>(f, {static_cast<int64_t>(batch.size()), kSynthFeatures});
    return (*l2)((*drop)(tanh((*l1)(x))));
  }
};

struct Fixture {
  fs::path dir = fs::temp_directory_path() / ("strand_trainer_" + std::to_string(::getpid()));
  Config cfg;
  Fixture() {
    fs::remove_all(dir);
    SynthConfig s;
    s.n_train = 48;
    s.n_valid = 16;
    s.n_test = 16;
    s.num_labels = 3;
    s.dna_length = 300;
    s.seed = 3;
    write_synthetic_dataset((dir / "data").string(), s);
    cfg.data.dir = (dir / "data").string();
    cfg.data.batch_size = 8;
    cfg.data.eval_batch_size = 16;
    cfg.data.num_labels = 3;
    cfg.optim.lr = 3e-2;
    cfg.trainer.epochs = 4;
    cfg.trainer.val_interval = 10;
    cfg.trainer.log_interval = 100;
    cfg.trainer.seed = 11;
  }
  ~Fixture() { fs::remove_all(dir); }
  FitResult run(const std::string& run_dir, bool resume, int64_t stop = -1, std::shared_ptr<FeatureModel>* out = nullptr) {
    cfg.trainer.run_dir = (dir / run_dir).string();
    SplitFiles f = find_split_files(cfg.data.dir);
    SplitData train(f.train, 3), valid(f.validation, 3);
    std::vector<double> m, sd;
    label_statistics({&train, &valid}, m, sd);
    train.set_normalisation(m, sd);
    valid.set_normalisation(m, sd);
    manual_seed(99);  // model init
    auto model = std::make_shared<FeatureModel>(3);
    Trainer t(cfg, model, train, &valid, m, sd);
    FitResult r = t.fit(resume, stop);
    if (out) *out = model;
    return r;
  }
};

TEST(Trainer, LearnsWritesCheckpointsAndMetrics) {
  Fixture fx;
  std::shared_ptr<FeatureModel> model;
  FitResult r = fx.run("a", false, -1, &model);
  EXPECT_EQ(r.steps, 24);  // 48 rows / batch 8 x 4 epochs
  double first = (r.losses[0] + r.losses[1] + r.losses[2]) / 3, last = (r.losses[21] + r.losses[22] + r.losses[23]) / 3;
  EXPECT_LT(last, 0.7 * first);
  EXPECT_GT(r.best_val_spearman, 0.3);
  EXPECT_TRUE(fs::exists(fx.dir / "a" / "last.safetensors"));
  EXPECT_TRUE(fs::exists(fx.dir / "a" / "best.safetensors"));
  std::ifstream csv(fx.dir / "a" / "metrics.csv");
  std::string line;
  int rows = 0;
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, 1 + 2 + 1);  // header, validations at steps 10 and 20, and the final one
  // strand-eval's path: weights and label statistics from the checkpoint
  auto fresh = std::make_shared<FeatureModel>(3);
  std::vector<double> mean, sd;
  load_checkpoint_weights(*fresh, (fx.dir / "a" / "last.safetensors").string(), &mean, &sd);
  EXPECT_EQ(ops::to_vector<float>(fresh->l2->weight), ops::to_vector<float>(model->l2->weight));
  EXPECT_EQ(mean.size(), 3u);
}

TEST(Trainer, ResumeReproducesTheUninterruptedRunExactly) {
  Fixture fx;
  std::shared_ptr<FeatureModel> full_model, resumed_model;
  FitResult full = fx.run("full", false, -1, &full_model);
  // Killed after 13 steps (mid-epoch; 6 steps per epoch): the newest checkpoint is the one written
  // at the step-10 validation, so the resumed run repeats steps 11-13 and must repeat them exactly.
  FitResult killed = fx.run("killed", false, 13);
  FitResult resumed = fx.run("killed", true, -1, &resumed_model);
  ASSERT_EQ(killed.losses.size(), 13u);
  EXPECT_EQ(killed.losses, std::vector<double>(full.losses.begin(), full.losses.begin() + 13));
  EXPECT_EQ(resumed.losses, std::vector<double>(full.losses.begin() + 10, full.losses.end()));
  EXPECT_EQ(ops::to_vector<float>(resumed_model->l1->weight), ops::to_vector<float>(full_model->l1->weight));
  // the metrics CSV has each validation once
  std::ifstream csv(fx.dir / "killed" / "metrics.csv");
  std::string line;
  int rows = 0;
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, 1 + 3);
  EXPECT_TRUE(test::throws_with([&] { fx.run("nothing_here", true); }, {"--resume", "no checkpoint"}));
}

}  // namespace
}  // namespace strand::train
