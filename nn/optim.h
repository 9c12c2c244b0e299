#pragma once
// Optimizers over one flat list of leaf parameters (a single parameter group, which is all the
// ModelGenerator recipes use). Semantics are torch.optim's single-tensor path (foreach and fused
// off), operation for operation, so an f64 run matches PyTorch to rounding.
//
// The step updates each parameter in place through its own handle, so every other handle to it
// (a module's members, a DDP reducer's list) sees the new values without re-binding.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace strand::nn {

class Optimizer {
 public:
  // `params`: distinct leaf tensors of floating dtype that require grad; at least one.
  Optimizer(std::vector<Tensor> params, double lr);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter whose grad is defined. A parameter without a grad is skipped
  // entirely, as in PyTorch: its state is neither created nor advanced (its step count included),
  // which is what frozen-but-trainable heads (Enformer's unused output heads) rely on.
  // All gradients are checked (shape, dtype, device) before any parameter changes.
  // grad_scale != 1 first scales every gradient in place by it (rounded to the gradient's dtype),
  // which is what clip_grad_norm_ does with its coefficient (nn::clip_coefficient): the trainer's
  // clipping, fused into AdamW's pass instead of a pass of its own.
  void step(double grad_scale = 1.0);
  // set_to_none drops the gradients (the default, as PyTorch >= 2.0); otherwise zeroes them in place.
  void zero_grad(bool set_to_none = true);

  double lr() const { return lr_; }
  void set_lr(double lr);
  const std::vector<Tensor>& params() const { return params_; }
  // How many updates parameter i has received (0 before its first gradient). Restored by
  // load_state_dict only for optimizers that save it ("state.<i>.step": AdamW, not SGD).
  int64_t step_count(size_t i) const;

  // Flat, PyTorch-shaped state: "state.<i>.<buffer>" for every parameter that has state (i = index
  // in params()), "state.<i>.step" as a 0-d f64 tensor where the optimizer counts steps,
  // "param_groups.0.<hyperparameter>" as 0-d f64 tensors, and "param_groups.0.params" (i64
  // indices 0..n-1, the parameter count). Buffers alias the live state, as PyTorch's do: write
  // them out (or clone them) before the next step().
  std::map<std::string, Tensor> state_dict() const;
  // Strict: the parameter count, every key and every buffer shape must match; state is cast to its
  // parameter's dtype and device (as PyTorch does). Hyperparameters are restored too. Nothing
  // changes unless the whole dictionary is valid.
  void load_state_dict(const std::map<std::string, Tensor>& sd);

 protected:
  struct ParamState {
    bool initialized = false;
    int64_t step = 0;
    std::map<std::string, Tensor> buffers;
  };
  // One parameter's update, called under NoGradGuard with a validated gradient.
  virtual void update(const Tensor& param, const Tensor& grad, ParamState& state) = 0;
  struct Pending {
    Tensor param, grad;
    ParamState* state;
  };
  // The whole step over the parameters that have a gradient, in order. By default: the gradients
  // scaled (when grad_scale != 1), then update() on each; AdamW overrides it with one multi-tensor pass.
  virtual void update_all(const std::vector<Pending>& todo, double grad_scale);
  // Buffer names an initialised state holds, and whether it counts steps.
  virtual std::vector<std::string> buffer_names() const = 0;
  virtual bool counts_steps() const = 0;
  // Hyperparameters other than lr, in state-dict order (names without the "param_groups.0." prefix).
  virtual std::vector<std::pair<std::string, double>> hyperparameters() const = 0;
  // Validates every value, then assigns them; `h` holds exactly the names hyperparameters() gives.
  virtual void set_hyperparameters(const std::map<std::string, double>& h) = 0;
  virtual const char* name() const = 0;

  double lr_;

 private:
  std::vector<Tensor> params_;
  std::vector<ParamState> state_;
};

// torch.optim.AdamW (amsgrad off): decoupled weight decay p *= 1 - lr*wd applied first, then Adam
// with bias correction. State (exp_avg, exp_avg_sq) is created as zeros at a parameter's first step.
class AdamW : public Optimizer {
 public:
  explicit AdamW(std::vector<Tensor> params, double lr = 1e-3, std::pair<double, double> betas = {0.9, 0.999},
                 double eps = 1e-8, double weight_decay = 1e-2);

  std::pair<double, double> betas() const { return {beta1_, beta2_}; }
  double eps() const { return eps_; }
  double weight_decay() const { return weight_decay_; }

 protected:
  void update(const Tensor& param, const Tensor& grad, ParamState& state) override;
  void update_all(const std::vector<Pending>& todo, double grad_scale) override;
  std::vector<std::string> buffer_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  bool counts_steps() const override { return true; }
  std::vector<std::pair<std::string, double>> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, double>& h) override;
  const char* name() const override { return "AdamW"; }

 private:
  double beta1_, beta2_, eps_, weight_decay_;
};

// torch.optim.SGD: g += wd*p; with momentum, buf = g at the first step, then
// buf = momentum*buf + (1-dampening)*g; Nesterov uses g + momentum*buf. Only momentum keeps state.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, double lr, double momentum = 0, double weight_decay = 0, double dampening = 0,
      bool nesterov = false);

  double momentum() const { return momentum_; }
  double weight_decay() const { return weight_decay_; }
  double dampening() const { return dampening_; }
  bool nesterov() const { return nesterov_; }

 protected:
  void update(const Tensor& param, const Tensor& grad, ParamState& state) override;
  std::vector<std::string> buffer_names() const override { return {"momentum_buffer"}; }
  bool counts_steps() const override { return false; }
  std::vector<std::pair<std::string, double>> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, double>& h) override;
  const char* name() const override { return "SGD"; }

 private:
  double momentum_, weight_decay_, dampening_;
  bool nesterov_;
};

}  // namespace strand::nn
