#include "nn/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <set>

#include "kernels/ops.h"

namespace strand::nn {

std::string_view schedule_kind_name(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::constant: return "constant";
    case ScheduleKind::constant_with_warmup: return "constant_with_warmup";
    case ScheduleKind::linear: return "linear";
    case ScheduleKind::cosine: return "cosine";
  }
  return "?";
}

Schedule Schedule::constant() { return Schedule{}; }

Schedule Schedule::constant_with_warmup(int64_t warmup_steps) {
  Schedule s{ScheduleKind::constant_with_warmup, warmup_steps, 0};
  s.validate();
  return s;
}

Schedule Schedule::linear(int64_t warmup_steps, int64_t total_steps) {
  Schedule s{ScheduleKind::linear, warmup_steps, total_steps};
  s.validate();
  return s;
}

Schedule Schedule::cosine(int64_t warmup_steps, int64_t total_steps) {
  Schedule s{ScheduleKind::cosine, warmup_steps, total_steps};
  s.validate();
  return s;
}

Schedule Schedule::cosine_with_warmup_ratio(double warmup_ratio, int64_t total_steps) {
  STRAND_CHECK(warmup_ratio >= 0 && warmup_ratio <= 1, "cosine schedule: warmup_ratio ", warmup_ratio,
               " is outside [0, 1]");
  STRAND_CHECK(total_steps >= 0, "cosine schedule: total_steps ", total_steps, " is negative");
  return cosine(static_cast<int64_t>(warmup_ratio * static_cast<double>(total_steps)), total_steps);
}

void Schedule::validate() const {
  const auto kind_name = schedule_kind_name(kind);
  STRAND_CHECK(warmup_steps >= 0, kind_name, " schedule: warmup_steps ", warmup_steps, " is negative");
  STRAND_CHECK(total_steps >= 0, kind_name, " schedule: total_steps ", total_steps, " is negative");
  if (kind == ScheduleKind::linear || kind == ScheduleKind::cosine)
    STRAND_CHECK(warmup_steps <= total_steps, kind_name, " schedule: warmup_steps ", warmup_steps,
                 " exceeds total_steps ", total_steps);
  STRAND_CHECK(kind != ScheduleKind::constant || warmup_steps == 0, "constant schedule: warmup_steps ", warmup_steps,
               " given; use constant_with_warmup");
}

double Schedule::multiplier(int64_t step) const {
  STRAND_CHECK(step >= 0, schedule_kind_name(kind), " schedule: step ", step, " is negative");
  // Written as HF's lambdas are, operation for operation, so the doubles agree bit for bit.
  const auto s = static_cast<double>(step);
  if (kind == ScheduleKind::constant) return 1.0;
  if (step < warmup_steps) return s / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  switch (kind) {
    case ScheduleKind::constant_with_warmup: return 1.0;
    case ScheduleKind::linear:
      return std::max(0.0, static_cast<double>(total_steps - step) /
                               static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)));
    case ScheduleKind::cosine: {
      const double progress = static_cast<double>(step - warmup_steps) /
                              static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
      const double num_cycles = 0.5;
      return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * num_cycles * 2.0 * progress)));
    }
    case ScheduleKind::constant: break;
  }
  return 1.0;
}

LRScheduler::LRScheduler(Optimizer& optimizer, Schedule schedule)
    : optimizer_(&optimizer), schedule_(schedule), base_lr_(optimizer.lr()) {
  schedule_.validate();
  optimizer_->set_lr(lr_at(0));
}

double LRScheduler::lr_at(int64_t step) const { return base_lr_ * schedule_.multiplier(step); }

void LRScheduler::step() {
  ++last_step_;
  optimizer_->set_lr(lr_at(last_step_));
}

std::map<std::string, Tensor> LRScheduler::state_dict() const {
  auto f64 = [](double v) { return ops::scalar_tensor(v, TensorOptions(DType::f64)); };
  return {{"last_epoch", f64(static_cast<double>(last_step_))},
          {"base_lrs.0", f64(base_lr_)},
          {"num_warmup_steps", f64(static_cast<double>(schedule_.warmup_steps))},
          {"num_training_steps", f64(static_cast<double>(schedule_.total_steps))}};
}

void LRScheduler::load_state_dict(const std::map<std::string, Tensor>& sd) {
  static const std::set<std::string> kKeys = {"last_epoch", "base_lrs.0", "num_warmup_steps", "num_training_steps"};
  for (const auto& [key, t] : sd)
    STRAND_CHECK(kKeys.count(key), "LRScheduler load_state_dict: unexpected key \"", key, "\"");
  auto value = [&](const std::string& key) {
    auto it = sd.find(key);
    STRAND_CHECK(it != sd.end(), "LRScheduler load_state_dict: missing key \"", key, "\"");
    STRAND_CHECK(it->second.defined() && it->second.numel() == 1, "LRScheduler load_state_dict: \"", key,
                 "\" must hold one value");
    return ops::item(it->second);
  };
  const double last = value("last_epoch"), base = value("base_lrs.0");
  const double warmup = value("num_warmup_steps"), total = value("num_training_steps");
  STRAND_CHECK(last >= 0 && last == std::floor(last) && last < 9.0e15,
               "LRScheduler load_state_dict: last_epoch must be a non-negative whole number, got ", last);
  STRAND_CHECK(base >= 0 && std::isfinite(base), "LRScheduler load_state_dict: invalid base lr ", base);
  STRAND_CHECK(warmup == static_cast<double>(schedule_.warmup_steps) &&
                   total == static_cast<double>(schedule_.total_steps),
               "LRScheduler load_state_dict: the state was saved with warmup ", warmup, " and total ", total,
               " steps, but this ", schedule_kind_name(schedule_.kind), " schedule has warmup ", schedule_.warmup_steps,
               " and total ", schedule_.total_steps);
  base_lr_ = base;
  last_step_ = static_cast<int64_t>(last);
  optimizer_->set_lr(lr_at(last_step_));
}

}  // namespace strand::nn
