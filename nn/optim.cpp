#include "nn/optim.h"

#include <cmath>
#include <set>

#include "autograd/grad_mode.h"
#include "kernels/ops.h"

namespace strand::nn {

namespace {

const std::string kGroup = "param_groups.0.";

Tensor scalar_f64(double v) { return ops::scalar_tensor(v, TensorOptions(DType::f64)); }

// Reads a one-element tensor of any numeric dtype, naming the key when it is not one.
double scalar_value(const std::string& key, const Tensor& t) {
  STRAND_CHECK(t.defined(), "load_state_dict: \"", key, "\" is an undefined tensor");
  STRAND_CHECK(t.numel() == 1, "load_state_dict: \"", key, "\" must hold one value, got shape ",
               shape_str(t.sizes()));
  return ops::item(t);
}

void check_lr(double lr) { STRAND_CHECK(lr >= 0 && std::isfinite(lr), "invalid learning rate ", lr, " (must be finite and >= 0)"); }

void check_adamw(double b1, double b2, double eps, double wd) {
  STRAND_CHECK(b1 >= 0 && b1 < 1, "AdamW: invalid beta1 ", b1, " (must be in [0, 1))");
  STRAND_CHECK(b2 >= 0 && b2 < 1, "AdamW: invalid beta2 ", b2, " (must be in [0, 1))");
  STRAND_CHECK(eps >= 0 && std::isfinite(eps), "AdamW: invalid eps ", eps, " (must be finite and >= 0)");
  STRAND_CHECK(wd >= 0 && std::isfinite(wd), "AdamW: invalid weight_decay ", wd, " (must be finite and >= 0)");
}

void check_sgd(double momentum, double wd, double dampening, bool nesterov) {
  STRAND_CHECK(momentum >= 0 && std::isfinite(momentum), "SGD: invalid momentum ", momentum, " (must be >= 0)");
  STRAND_CHECK(wd >= 0 && std::isfinite(wd), "SGD: invalid weight_decay ", wd, " (must be >= 0)");
  STRAND_CHECK(std::isfinite(dampening), "SGD: invalid dampening ", dampening);
  STRAND_CHECK(!nesterov || (momentum > 0 && dampening == 0),
               "SGD: Nesterov momentum requires momentum > 0 and dampening 0, got momentum ", momentum,
               " and dampening ", dampening);
}

// In-place x *= s: through a temporary so the rounding is PyTorch's mul_, not x + (s-1)*x.
void scale_(const Tensor& x, double s) { ops::copy_(x, ops::mul(x, s)); }

}  // namespace

// ---------------- Optimizer ----------------

Optimizer::Optimizer(std::vector<Tensor> params, double lr) : lr_(lr), params_(std::move(params)) {
  check_lr(lr);
  STRAND_CHECK(!params_.empty(), "optimizer got an empty parameter list");
  std::set<const TensorImpl*> seen;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    STRAND_CHECK(p.defined(), "optimizer parameter ", i, " is an undefined tensor");
    STRAND_CHECK(is_floating(p.dtype()), "optimizer parameter ", i, " has dtype ", dtype_name(p.dtype()),
                 "; only floating parameters can be optimised");
    STRAND_CHECK(p.requires_grad() && p.is_leaf(), "optimizer parameter ", i, " (", p.str(),
                 ") must be a leaf tensor that requires grad");
    // A duplicate would be updated twice per step with the same gradient.
    STRAND_CHECK(seen.insert(p.impl()).second, "optimizer parameter ", i, " appears more than once in the list");
  }
  state_.resize(params_.size());
}

void Optimizer::set_lr(double lr) {
  check_lr(lr);
  lr_ = lr;
}

int64_t Optimizer::step_count(size_t i) const {
  STRAND_CHECK(i < params_.size(), "step_count: parameter index ", i, " out of range for ", params_.size(),
               " parameters");
  return state_[i].step;
}

void Optimizer::step(double grad_scale) {
  STRAND_CHECK(!(grad_scale < 0) && !std::isinf(grad_scale), name(), ": grad_scale must be finite and >= 0, got ",
               grad_scale);  // NaN passes: a NaN clipping coefficient poisons the step visibly, as in PyTorch
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    STRAND_CHECK(g.sizes() == p.sizes(), name(), ": gradient of parameter ", i, " has shape ", shape_str(g.sizes()),
                 " but the parameter has shape ", shape_str(p.sizes()));
    STRAND_CHECK(g.dtype() == p.dtype(), name(), ": gradient of parameter ", i, " has dtype ", dtype_name(g.dtype()),
                 " but the parameter has dtype ", dtype_name(p.dtype()));
    STRAND_CHECK(g.device() == p.device(), name(), ": gradient of parameter ", i, " is on ", g.device().str(),
                 " but the parameter is on ", p.device().str());
    for (const auto& [buf_name, buf] : state_[i].buffers)
      STRAND_CHECK(buf.device() == p.device() && buf.dtype() == p.dtype(), name(), ": state \"", buf_name,
                   "\" of parameter ", i, " is ", buf.str(), " but the parameter is ", p.str(),
                   "; create the optimizer (or load its state) after moving the model");
  }
  NoGradGuard no_grad;
  std::vector<Pending> todo;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (g.defined()) todo.push_back({params_[i], std::move(g), &state_[i]});
  }
  update_all(todo, grad_scale);
}

void Optimizer::update_all(const std::vector<Pending>& todo, double grad_scale) {
  for (const Pending& u : todo) {
    if (grad_scale != 1) scale_(u.grad, grad_scale);
    update(u.param, u.grad, *u.state);
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  for (const Tensor& p : params_) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    if (set_to_none) {
      p.set_grad(Tensor());
    } else {
      ops::zero_(g);
    }
  }
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> sd;
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamState& st = state_[i];
    if (!st.initialized) continue;
    const std::string prefix = "state." + std::to_string(i) + ".";
    if (counts_steps()) sd[prefix + "step"] = scalar_f64(static_cast<double>(st.step));
    for (const auto& [buf_name, buf] : st.buffers) sd[prefix + buf_name] = buf;
  }
  sd[kGroup + "lr"] = scalar_f64(lr_);
  for (const auto& [hp, v] : hyperparameters()) sd[kGroup + hp] = scalar_f64(v);
  sd[kGroup + "params"] =
      ops::arange(0, static_cast<double>(params_.size()), 1, TensorOptions(DType::i64));
  return sd;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& sd) {
  const size_t n = params_.size();
  std::set<std::string> used;
  auto find = [&](const std::string& key) -> const Tensor* {
    auto it = sd.find(key);
    if (it == sd.end()) return nullptr;
    used.insert(key);
    return &it->second;
  };
  auto require = [&](const std::string& key) -> const Tensor& {
    const Tensor* t = find(key);
    STRAND_CHECK(t != nullptr, name(), " load_state_dict: missing key \"", key, "\"");
    return *t;
  };

  const Tensor& ids = require(kGroup + "params");
  STRAND_CHECK(ids.defined() && ids.dim() == 1 && static_cast<size_t>(ids.numel()) == n, name(),
               " load_state_dict: the state is for ",
               ids.defined() && ids.dim() == 1 ? std::to_string(ids.numel()) : "a malformed list of",
               " parameters but this optimizer has ", n);

  const double new_lr = scalar_value(kGroup + "lr", require(kGroup + "lr"));
  std::map<std::string, double> hps;
  for (const auto& [hp, v] : hyperparameters()) hps[hp] = scalar_value(kGroup + hp, require(kGroup + hp));

  const std::vector<std::string> buffers = buffer_names();
  std::vector<ParamState> new_state(n);
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params_[i];
    const std::string prefix = "state." + std::to_string(i) + ".";
    std::vector<std::string> present, absent;
    std::vector<std::string> keys = buffers;
    if (counts_steps()) keys.push_back("step");
    for (const auto& k : keys) (sd.count(prefix + k) ? present : absent).push_back(k);
    if (present.empty()) continue;
    STRAND_CHECK(absent.empty(), name(), " load_state_dict: parameter ", i, " has partial state: \"", prefix,
                 present.front(), "\" is present but \"", prefix, absent.front(), "\" is missing");
    ParamState& st = new_state[i];
    st.initialized = true;
    if (counts_steps()) {
      const double s = scalar_value(prefix + "step", require(prefix + "step"));
      STRAND_CHECK(s >= 0 && s == std::floor(s) && s < 9.0e15, name(), " load_state_dict: \"", prefix,
                   "step\" must be a non-negative whole number, got ", s);
      st.step = static_cast<int64_t>(s);
    }
    for (const auto& b : buffers) {
      const Tensor& t = require(prefix + b);
      STRAND_CHECK(t.defined() && t.sizes() == p.sizes(), name(), " load_state_dict: \"", prefix, b, "\" has shape ",
                   t.defined() ? shape_str(t.sizes()) : "(undefined)", " but parameter ", i, " has shape ",
                   shape_str(p.sizes()));
      STRAND_CHECK(is_floating(t.dtype()), name(), " load_state_dict: \"", prefix, b, "\" has dtype ",
                   dtype_name(t.dtype()), "; expected a floating dtype");
      // A fresh copy in the parameter's dtype and on its device, never aliasing the caller's tensor.
      Tensor own = ops::empty(p.sizes(), TensorOptions(p.dtype(), p.device()));
      ops::copy_(own, t);
      st.buffers[b] = own;
    }
  }
  for (const auto& [key, t] : sd)
    STRAND_CHECK(used.count(key), name(), " load_state_dict: unexpected key \"", key, "\"",
                 key.rfind("state.", 0) == 0 ? " (state for a parameter index this optimizer does not have?)" : "");

  check_lr(new_lr);
  set_hyperparameters(hps);  // validates all before assigning any
  lr_ = new_lr;
  state_ = std::move(new_state);
}

// ---------------- AdamW ----------------

AdamW::AdamW(std::vector<Tensor> params, double lr, std::pair<double, double> betas, double eps, double weight_decay)
    : Optimizer(std::move(params), lr), beta1_(betas.first), beta2_(betas.second), eps_(eps), weight_decay_(weight_decay) {
  check_adamw(beta1_, beta2_, eps_, weight_decay_);
}

std::vector<std::pair<std::string, double>> AdamW::hyperparameters() const {
  // Flattened as PyTorch's param_group would be ("betas" is a tuple there).
  return {{"betas.0", beta1_}, {"betas.1", beta2_}, {"eps", eps_}, {"weight_decay", weight_decay_}};
}

void AdamW::set_hyperparameters(const std::map<std::string, double>& h) {
  const double b1 = h.at("betas.0"), b2 = h.at("betas.1"), eps = h.at("eps"), wd = h.at("weight_decay");
  check_adamw(b1, b2, eps, wd);
  beta1_ = b1, beta2_ = b2, eps_ = eps, weight_decay_ = wd;
}

void AdamW::update(const Tensor& p, const Tensor& g, ParamState& st) { update_all({{p, g, &st}}, 1.0); }

void AdamW::update_all(const std::vector<Pending>& todo, double grad_scale) {
  std::vector<AdamWParam> fused;
  fused.reserve(todo.size());
  for (const Pending& u : todo) {
    ParamState& st = *u.state;
    if (!st.initialized) {
      st.buffers["exp_avg"] = ops::zeros_like(u.param);
      st.buffers["exp_avg_sq"] = ops::zeros_like(u.param);
      st.initialized = true;
    }
    st.step += 1;
    // Every expression below follows torch.optim.adam._single_tensor_adam term by term (scalars in
    // double, cast to the tensor's compute type by the op, as PyTorch's CPU kernels do), so the
    // rounding is the same: lerp_ is m + w*(g - m) for w < 0.5, addcdiv_ is p + value*(m/denom).
    const double t = static_cast<double>(st.step);
    const double bias_correction1 = 1 - std::pow(beta1_, t);
    const double bias_correction2 = 1 - std::pow(beta2_, t);
    fused.push_back({u.param, u.grad, st.buffers.at("exp_avg"), st.buffers.at("exp_avg_sq"),
                     {lr_, beta1_, beta2_, eps_, weight_decay_, lr_ / bias_correction1,
                      std::pow(bias_correction2, 0.5), grad_scale}});
  }
  // One fused pass when the tensors allow it (contiguous, one dtype and device; on a GPU a few
  // multi-tensor launches for all parameters), with the same rounding as the op sequence below,
  // which remains for the rest.
  if (ops::adamw_multi_(fused)) return;
  for (AdamWParam& e : fused) {
    if (grad_scale != 1) scale_(e.g, grad_scale);
    e.s.grad_scale = 1;
    if (ops::adamw_(e.p, e.g, e.m, e.v, e.s)) continue;
    if (weight_decay_ != 0) scale_(e.p, 1 - lr_ * weight_decay_);
    ops::add_(e.m, ops::sub(e.g, e.m), 1 - beta1_);
    scale_(e.v, beta2_);
    ops::add_(e.v, ops::mul(e.g, e.g), 1 - beta2_);
    const Tensor denom = ops::add(ops::unary(UnaryOp::div_scalar, ops::sqrt(e.v), e.s.bias_correction2_sqrt), eps_);
    ops::add_(e.p, ops::div(e.m, denom), -e.s.step_size);
  }
}

// ---------------- SGD ----------------

SGD::SGD(std::vector<Tensor> params, double lr, double momentum, double weight_decay, double dampening, bool nesterov)
    : Optimizer(std::move(params), lr),
      momentum_(momentum),
      weight_decay_(weight_decay),
      dampening_(dampening),
      nesterov_(nesterov) {
  check_sgd(momentum_, weight_decay_, dampening_, nesterov_);
}

std::vector<std::pair<std::string, double>> SGD::hyperparameters() const {
  return {{"momentum", momentum_},
          {"dampening", dampening_},
          {"weight_decay", weight_decay_},
          {"nesterov", nesterov_ ? 1.0 : 0.0}};
}

void SGD::set_hyperparameters(const std::map<std::string, double>& h) {
  const double mom = h.at("momentum"), damp = h.at("dampening"), wd = h.at("weight_decay"), nest = h.at("nesterov");
  STRAND_CHECK(nest == 0 || nest == 1, "SGD load_state_dict: \"param_groups.0.nesterov\" must be 0 or 1, got ", nest);
  check_sgd(mom, wd, damp, nest == 1);
  momentum_ = mom, dampening_ = damp, weight_decay_ = wd, nesterov_ = nest == 1;
}

void SGD::update(const Tensor& p, const Tensor& g, ParamState& st) {
  // `d` may alias the parameter's .grad, which must not change: only out-of-place ops touch it.
  Tensor d = g;
  if (weight_decay_ != 0) {
    d = ops::clone(g);
    ops::add_(d, p, weight_decay_);
  }
  if (momentum_ != 0) {
    if (!st.initialized) {
      st.buffers["momentum_buffer"] = ops::clone(d);
      st.initialized = true;
    } else {
      const Tensor& buf = st.buffers.at("momentum_buffer");
      scale_(buf, momentum_);
      ops::add_(buf, d, 1 - dampening_);
    }
    const Tensor& buf = st.buffers.at("momentum_buffer");
    if (nesterov_) {
      Tensor n = ops::clone(d);
      ops::add_(n, buf, momentum_);
      d = n;
    } else {
      d = buf;
    }
  }
  st.step += 1;
  ops::add_(p, d, -lr_);
}

}  // namespace strand::nn
