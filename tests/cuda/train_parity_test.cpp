// The trainer on the GPU: the tiny recipe (Enformer with BatchNorm and dropout, AIDO.RNA, ESM-2,
// concat fusion) trained on synthetic data follows the CPU run's losses step for step (dropout
// masks are the same Philox streams on both devices), and a GPU run killed part-way resumes to the
// uninterrupted GPU run's losses exactly (every CUDA kernel is deterministic); its checkpoint
// predicts the same on either device; the same in bf16-mixed, to bf16 precision. Skipped without
// a GPU.
#include <cmath>
#include <filesystem>

#include "tests/test_util.h"
#include "train/cli.h"
#include "train/synth.h"
#include "train/task.h"
#include "train/trainer.h"

namespace strand::train {
namespace {

namespace fs = std::filesystem;

// The tiny recipe on synthetic data in a scratch folder; run(name, device, resume, stop) trains it.
struct TinyRun {
  fs::path dir = fs::temp_directory_path() / ("strand_cuda_train_" + std::to_string(::getpid()));
  std::string precision;
  explicit TinyRun(std::string p = "fp32") : precision(std::move(p)) {
    fs::remove_all(dir);
    SynthConfig sc;
    sc.n_train = 96;
    sc.n_valid = 32;
    sc.n_test = 32;
    sc.dna_length = 512;
    sc.seed = 7;
    write_synthetic_dataset((dir / "data").string(), sc);
  }
  ~TinyRun() { fs::remove_all(dir); }
  FitResult operator()(const std::string& name, const std::string& device, bool resume, int64_t stop) const {
    Config cfg = load_config(std::string(STRAND_SOURCE_DIR) + "/configs/tiny_cpu.toml",
                             {"data.dir=" + (dir / "data").string(), "trainer.run_dir=" + (dir / name).string(),
                              "trainer.epochs=1", "trainer.val_interval=4", "trainer.log_interval=1000",
                              "trainer.device=" + device, "trainer.precision=\"" + precision + "\""});
    const Device d = device_from_config(cfg);
    Splits s = open_splits(cfg);
    manual_seed(cfg.trainer.seed);
    auto task = std::make_shared<RegressionTask>(cfg);
    task->to(d);
    Trainer t(cfg, task, *s.train, s.validation.get(), s.mean, s.std);
    return t.fit(resume, stop);
  }
};

TEST(CudaTraining, FollowsTheCpuRunAndResumesExactly) {
  STRAND_SKIP_WITHOUT_GPU();
  const TinyRun run;
  const fs::path& dir = run.dir;
  const FitResult cpu = run("cpu", "cpu", false, -1), gpu = run("gpu", "cuda", false, -1);
  ASSERT_EQ(cpu.losses.size(), 12u);  // 96 rows / batch 8
  ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
  for (size_t i = 0; i < cpu.losses.size(); ++i)
    EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 1e-4 + 2e-3 * std::abs(cpu.losses[i])) << "step " << i + 1;
  EXPECT_NEAR(gpu.best_val_spearman, cpu.best_val_spearman, 0.02);
  const FitResult killed = run("killed", "cuda", false, 7);  // newest checkpoint: the step-4 validation
  const FitResult resumed = run("killed", "cuda", true, -1);
  EXPECT_EQ(killed.losses, std::vector<double>(gpu.losses.begin(), gpu.losses.begin() + 7));
  EXPECT_EQ(resumed.losses, std::vector<double>(gpu.losses.begin() + 4, gpu.losses.end()));

  // strand-eval's path: the GPU checkpoint predicts the test split the same on either device
  Config cfg = load_config(std::string(STRAND_SOURCE_DIR) + "/configs/tiny_cpu.toml",
                           {"data.dir=" + (dir / "data").string()});
  Splits s = open_splits(cfg);
  std::vector<Predictions> p;
  for (const Device d : {Device::cpu(), Device::cuda(0)}) {
    auto task = std::make_shared<RegressionTask>(cfg);
    load_checkpoint_weights(*task, (dir / "gpu" / "best.safetensors").string());
    task->to(d);
    p.push_back(predict(*task, *s.test, 16));
  }
  ASSERT_EQ(p[0].preds.size(), p[1].preds.size());
  for (size_t i = 0; i < p[0].preds.size(); ++i) EXPECT_NEAR(p[1].preds[i], p[0].preds[i], 1e-4) << "prediction " << i;
}

// bf16-mixed on the GPU (tensor-core GEMMs and convolutions) against bf16-mixed on the CPU (f32
// GEMMs on the same bf16 values, rounded once): the roundings differ where the f32 sums' orders do,
// so the losses agree to bf16 precision over the first steps; the GPU run still resumes exactly.
TEST(CudaTraining, Bf16MixedFollowsTheCpuRunAndResumesExactly) {
  STRAND_SKIP_WITHOUT_GPU();
  const TinyRun run("bf16-mixed");
  const FitResult cpu = run("cpu", "cpu", false, -1), gpu = run("gpu", "cuda", false, -1);
  ASSERT_EQ(gpu.losses.size(), cpu.losses.size());
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    ASSERT_TRUE(std::isfinite(gpu.losses[i])) << "step " << i + 1;
    if (i < 4) EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 3e-2 * std::abs(cpu.losses[i])) << "step " << i + 1;
  }
  EXPECT_NEAR(gpu.best_val_spearman, cpu.best_val_spearman, 0.05);
  const FitResult killed = run("killed", "cuda", false, 7);
  const FitResult resumed = run("killed", "cuda", true, -1);
  EXPECT_EQ(killed.losses, std::vector<double>(gpu.losses.begin(), gpu.losses.begin() + 7));
  EXPECT_EQ(resumed.losses, std::vector<double>(gpu.losses.begin() + 4, gpu.losses.end()));
}

}  // namespace
}  // namespace strand::train
