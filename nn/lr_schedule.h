#pragma once
// Learning-rate schedules as HF transformers defines them (optimization.py lambdas), driven with
// PyTorch LambdaLR semantics: lr(step) = base_lr * multiplier(step), where step counts scheduler
// step() calls. ModelGenerator's CosineWithWarmup is `Schedule::cosine_with_warmup_ratio`.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "nn/optim.h"

namespace strand::nn {

enum class ScheduleKind {
  constant,              // 1
  constant_with_warmup,  // s/warmup, then 1
  linear,                // s/warmup, then linear decay to 0 at total_steps
  cosine,                // s/warmup, then half a cosine down to 0 at total_steps (num_cycles 0.5)
};
std::string_view schedule_kind_name(ScheduleKind k);

// The multiplier as a pure function of the step; values are bit-identical to HF's Python lambdas
// (same operations in double). Past total_steps they follow HF too: linear stays at 0, cosine
// rises again (HF does not clamp progress); training loops stop at total_steps.
struct Schedule {
  ScheduleKind kind = ScheduleKind::constant;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // only linear and cosine use it

  static Schedule constant();
  static Schedule constant_with_warmup(int64_t warmup_steps);
  static Schedule linear(int64_t warmup_steps, int64_t total_steps);
  static Schedule cosine(int64_t warmup_steps, int64_t total_steps);
  // ModelGenerator's CosineWithWarmup(warmup_ratio): warmup = int(warmup_ratio * total_steps),
  // truncated like Python's int().
  static Schedule cosine_with_warmup_ratio(double warmup_ratio, int64_t total_steps);

  double multiplier(int64_t step) const;
  // Negative counts, or a warmup longer than total_steps for the decaying kinds, are errors.
  void validate() const;
};

class LRScheduler {
 public:
  // Takes the optimizer's current lr as the base and sets it to base * multiplier(0), as LambdaLR
  // does at construction. The optimizer must outlive the scheduler.
  LRScheduler(Optimizer& optimizer, Schedule schedule);

  // base_lr * multiplier(step); step >= 0.
  double lr_at(int64_t step) const;
  // Advances to the next step and sets the optimizer's lr for it (call after optimizer.step()).
  void step();
  int64_t last_step() const { return last_step_; }
  double base_lr() const { return base_lr_; }
  double last_lr() const { return lr_at(last_step_); }
  const Schedule& schedule() const { return schedule_; }

  // {"last_epoch", "base_lrs.0", "num_warmup_steps", "num_training_steps"} as 0-d f64 tensors
  // (PyTorch's names for the first two). Loading checks the schedule's warmup and total match:
  // resuming a run under a different schedule would silently change its learning rates. It also
  // sets the optimizer's lr for the restored step, so the pair is consistent even when the
  // optimizer's own state was not restored.
  std::map<std::string, Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, Tensor>& sd);

 private:
  Optimizer* optimizer_;
  Schedule schedule_;
  double base_lr_;
  int64_t last_step_ = 0;
};

}  // namespace strand::nn
