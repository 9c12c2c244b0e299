#pragma once
// The training loop of strand-train, independent of which backbones the task uses: seeded
// per-epoch shuffling, AdamW + LR schedule + grad-norm clipping as the ModelGenerator recipe,
// a progress line, validation every val_interval steps, the best (by validation Spearman) and the
// last checkpoint, a metrics CSV, and exact resumption. A checkpoint (one safetensors file, written
// atomically) holds the weights (all, or only the trainable ones), the optimizer and scheduler
// state, the random state, the step and data position, the best score and the label statistics,
// so a resumed run reproduces the losses of an uninterrupted one bit for bit.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"
#include "tensor/safetensors.h"
#include "train/config.h"
#include "train/data.h"
#include "train/dist/communicator.h"
#include "train/metrics.h"

namespace strand::train {

// A regression model over raw samples: predictions in z-space, [B, num_labels].
class TaskModel : public nn::Module {
 public:
  using nn::Module::Module;
  virtual Tensor forward(const std::vector<Sample>& batch) = 0;
};

struct Predictions {
  std::vector<std::string> ids;
  std::vector<double> preds, labels;  // row-major [n, k], z-space
  int64_t n = 0, k = 0;
};
// Runs the model in eval mode, no grad, over a whole split in order. With a communicator of more
// than one rank, each rank predicts its shard (DistributedSampler order, no shuffle) and every rank
// returns the whole split in order, gathered, with the sampler's padding duplicates dropped, so
// metrics equal a single process's exactly.
Predictions predict(TaskModel& model, const SplitData& split, int64_t batch_size, const std::string& progress_label = "",
                    dist::Communicator* comm = nullptr);

struct FitResult {
  int64_t steps = 0;
  std::vector<double> losses;  // the training loss of every step this call ran
  double best_val_spearman = -2;
};

// Data parallel under mpirun (the world communicator has more than one rank): each rank trains on
// its shard of every epoch's order with data.batch_size rows per step (the global batch is
// batch_size x world size, as DDP), gradients are all-reduced during backward, BatchNorm statistics
// are synchronised, validation gathers every rank's predictions, and rank 0 alone prints, writes
// the metrics CSV and the checkpoints. STRAND_DDP_CHECK=1 checks parameters equal across ranks
// after the start-up broadcast.
class Trainer {
 public:
  Trainer(const Config& cfg, std::shared_ptr<TaskModel> model, SplitData& train, SplitData* valid,
          std::vector<double> label_mean, std::vector<double> label_std);
  // Trains to the end. With resume, continues from run_dir/last.safetensors, which is rewritten at
  // every validation and at the end. stop_after_steps >= 0 simulates a kill (for tests): the loop
  // returns after that many steps without saving anything.
  FitResult fit(bool resume, int64_t stop_after_steps = -1);
  int64_t total_steps() const { return total_steps_; }

 private:
  // extra: optimizer and scheduler state ("optim.*", "sched.*") saved beside the weights.
  void save_checkpoint(const std::string& path, int64_t step, int64_t epoch, int64_t batch, double best,
                       const safetensors::TensorMap& extra) const;
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  Config cfg_;
  std::shared_ptr<TaskModel> model_;
  SplitData& train_;
  SplitData* valid_;
  std::vector<double> label_mean_, label_std_;
  std::shared_ptr<dist::Communicator> comm_;
  int64_t steps_per_epoch_ = 0, total_steps_ = 0;
};

// Loads a checkpoint's weights (and label statistics, if wanted) into a model: what strand-eval does.
void load_checkpoint_weights(nn::Module& model, const std::string& path, std::vector<double>* label_mean = nullptr,
                             std::vector<double>* label_std = nullptr);

}  // namespace strand::train
