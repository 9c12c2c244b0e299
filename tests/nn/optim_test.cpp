// Optimisers (AdamW, SGD), LR schedules and gradient clipping: parity with PyTorch fixtures
// (tools/make_optim_fixtures.py), hand-checkable steps, skipping, state round trips and errors.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/clip_grad.h"
#include "nn/lr_schedule.h"
#include "nn/optim.h"
#include "tensor/safetensors.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using json = nlohmann::json;
using nn::AdamW;
using nn::LRScheduler;
using nn::Schedule;
using nn::SGD;
using test::allclose;
using test::throws_with;

// ---------------- helpers ----------------

json load_fixture(const std::string& name) {
  const std::string path = std::string(STRAND_FIXTURES) + "/optim/" + name;
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open fixture " + path + " (regenerate with tools/make_optim_fixtures.py)");
  return json::parse(f);
}

DType fixture_dtype(const json& j) { return j.get<std::string>() == "f64" ? DType::f64 : DType::f32; }

Tensor from_json(const json& values, const json& shape, DType dt) {
  return ops::to(ops::from_vector<double>(values.get<std::vector<double>>(), shape.get<Shape>()), dt);
}

Tensor vec(std::vector<double> v, DType dt = DType::f64) {
  const auto n = static_cast<int64_t>(v.size());
  return ops::to(ops::from_vector<double>(v, {n}), dt);
}

Tensor leaf(const Tensor& values) {
  Tensor t = ops::clone(values);
  t.set_requires_grad(true);
  return t;
}

// Tolerances, written down rather than tuned. f64: both sides do the same operations in the same
// order; what remains is FMA contraction and vectorisation differences, a few ulps (~1e-16) per
// operation, well under 1e-12 after 20 steps. f32: the same differences are ~6e-8 relative per
// operation; over 20 steps of ~10 operations each on O(1) values they stay below 1e-6 absolute /
// 1e-5 relative (measured: one f32 ulp). The f64 runs are what pin the formulas: decay applied
// after the update instead of before moves values by ~1e-6, a missed bias correction or a step
// count advanced for a skipped parameter by >= 1e-4; the f32 runs check the f32 arithmetic path.
struct Tol {
  double atol, rtol;
};
Tol tol_for(DType dt) { return dt == DType::f64 ? Tol{1e-12, 1e-12} : Tol{1e-6, 1e-5}; }

// Largest |x - ref| seen in a test, printed for the record.
struct MaxDev {
  double abs = 0;
  void update(const Tensor& x, const Tensor& ref) {
    auto a = ops::to_vector<double>(x), b = ops::to_vector<double>(ref);
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) abs = std::max(abs, std::abs(a[i] - b[i]));
  }
  void print(const char* what) const { std::printf("[ max dev  ] %s: %.3g\n", what, abs); }
};

// Replays one optimiser fixture run: sets each step's gradients (null = no grad), steps, and
// compares every parameter after every step.
template <class MakeOpt>
void replay(const json& run, MakeOpt make_opt, MaxDev& dev) {
  const DType dt = fixture_dtype(run["dtype"]);
  const Tol tol = tol_for(dt);
  const json& shapes = run["shapes"];
  std::vector<Tensor> params;
  for (size_t i = 0; i < shapes.size(); ++i) params.push_back(leaf(from_json(run["init"][i], shapes[i], dt)));
  auto opt = make_opt(params);
  for (size_t s = 0; s < run["grads"].size(); ++s) {
    for (size_t i = 0; i < params.size(); ++i) {
      const json& g = run["grads"][s][i];
      params[i].set_grad(g.is_null() ? Tensor() : from_json(g, shapes[i], dt));
    }
    opt->step();
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor ref = from_json(run["params"][s][i], shapes[i], dt);
      ASSERT_TRUE(allclose(params[i], ref, tol.atol, tol.rtol))
          << dtype_name(dt) << " step " << s << " parameter " << i;
      dev.update(params[i], ref);
    }
  }
  if (run.contains("final_steps"))
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_EQ(opt->step_count(i), run["final_steps"][i].get<int64_t>()) << "parameter " << i;
}

std::map<std::string, Tensor> deep_copy(const std::map<std::string, Tensor>& sd) {
  std::map<std::string, Tensor> out;
  for (const auto& [k, v] : sd) out[k] = ops::clone(v);
  return out;
}

// ---------------- PyTorch parity ----------------

TEST(AdamW, MatchesTorchOverTwentyStepsWithSkippedGradients) {
  const json fx = load_fixture("adamw.json");
  for (const json& run : fx["runs"]) {
    MaxDev dev;
    const json& h = run["hyper"];
    replay(
        run,
        [&](const std::vector<Tensor>& ps) {
          return std::make_unique<AdamW>(ps, h["lr"].get<double>(),
                                         std::pair{h["betas"][0].get<double>(), h["betas"][1].get<double>()},
                                         h["eps"].get<double>(), h["weight_decay"].get<double>());
        },
        dev);
    dev.print(("AdamW vs torch, " + run["dtype"].get<std::string>()).c_str());
  }
}

TEST(SGD, MatchesTorchWithMomentumNesterovAndDampening) {
  const json fx = load_fixture("sgd.json");
  for (const json& run : fx["runs"]) {
    MaxDev dev;
    const json& h = run["hyper"];
    replay(
        run,
        [&](const std::vector<Tensor>& ps) {
          return std::make_unique<SGD>(ps, h["lr"].get<double>(), h["momentum"].get<double>(),
                                       h["weight_decay"].get<double>(), h["dampening"].get<double>(),
                                       h["nesterov"].get<bool>());
        },
        dev);
    dev.print(("SGD vs torch, " + run["dtype"].get<std::string>() + (h["nesterov"].get<bool>() ? " nesterov" : "") +
               (h["dampening"].get<double>() != 0 ? " dampening" : ""))
                  .c_str());
  }
}

TEST(LRSchedule, MatchesTorchLambdaLRWithHFLambdas) {
  const json fx = load_fixture("schedules.json");
  for (const json& run : fx["runs"]) {
    const std::string kind = run["kind"];
    const int64_t warmup = run["warmup_steps"], total = run["total_steps"];
    Schedule s = kind == "cosine"   ? Schedule::cosine_with_warmup_ratio(run["warmup_ratio"].get<double>(), total)
                 : kind == "linear" ? Schedule::linear(warmup, total)
                                    : Schedule::constant_with_warmup(warmup);
    EXPECT_EQ(s.warmup_steps, warmup) << kind;
    AdamW opt({leaf(vec({0}))}, run["base_lr"].get<double>());
    LRScheduler sched(opt, s);
    const auto lrs = run["lrs"].get<std::vector<double>>();
    double worst = 0;
    for (size_t k = 0; k < lrs.size(); ++k) {
      if (k > 0) sched.step();
      ASSERT_NEAR(opt.lr(), lrs[k], 1e-12 * std::abs(lrs[k])) << kind << " after " << k << " steps";
      ASSERT_EQ(sched.lr_at(static_cast<int64_t>(k)), opt.lr());
      worst = std::max(worst, std::abs(opt.lr() - lrs[k]));
    }
    std::printf("[ max dev  ] %s schedule vs torch: %.3g over %zu steps\n", kind.c_str(), worst, lrs.size());
  }
}

TEST(ClipGradNorm, MatchesTorch) {
  const json fx = load_fixture("clip_grad.json");
  MaxDev dev64, dev32;
  double norm_dev = 0;
  for (const json& c : fx["cases"]) {
    const std::string name = c["name"];
    const DType dt = fixture_dtype(c["dtype"]);
    const Tol tol = tol_for(dt);
    std::vector<Tensor> params;
    for (size_t i = 0; i < c["shapes"].size(); ++i) {
      Tensor p = leaf(ops::zeros(c["shapes"][i].get<Shape>(), dt));
      if (!c["grads"][i].is_null()) p.set_grad(from_json(c["grads"][i], c["shapes"][i], dt));
      params.push_back(p);
    }
    const double norm_type = c["norm_type"].is_string() ? nn::kInfNorm : c["norm_type"].get<double>();
    const double total = nn::clip_grad_norm_(params, c["max_norm"].get<double>(), norm_type);
    const double ref_total = c["total_norm"];
    // Our norm is accumulated in f64 for every dtype; torch's f32 norm is accumulated in f32.
    EXPECT_NEAR(total, ref_total, tol.atol + tol.rtol * ref_total) << name;
    norm_dev = std::max(norm_dev, std::abs(total - ref_total) / ref_total);
    for (size_t i = 0; i < params.size(); ++i) {
      if (c["clipped"][i].is_null()) {
        EXPECT_FALSE(params[i].grad().defined()) << name;
        continue;
      }
      const Tensor ref = from_json(c["clipped"][i], c["shapes"][i], dt);
      EXPECT_TRUE(allclose(params[i].grad(), ref, tol.atol, tol.rtol)) << name << " parameter " << i;
      (dt == DType::f64 ? dev64 : dev32).update(params[i].grad(), ref);
    }
  }
  dev64.print("clip_grad_norm_ grads vs torch, f64");
  dev32.print("clip_grad_norm_ grads vs torch, f32");
  std::printf("[ max dev  ] clip_grad_norm_ total norm vs torch (relative): %.3g\n", norm_dev);
}

// ---------------- AdamW by hand ----------------

TEST(AdamW, FirstStepMovesByLrTimesSignAfterDecay) {
  // Step 1: m/bc1 = g and sqrt(v/bc2) = |g|, so the update is lr * g / (|g| + eps) ~ lr * sign(g),
  // after the decoupled decay p *= 1 - lr*wd. A zero gradient moves the parameter by decay only.
  const double lr = 0.1, wd = 0.5;
  Tensor p = leaf(vec({1, -2, 0.5, 3}));
  AdamW opt({p}, lr, {0.9, 0.999}, 1e-8, wd);
  p.set_grad(vec({0.3, -4, 1e-2, 0}));
  opt.step();
  const double d = 1 - lr * wd;
  // lr * eps/|g| <= 1e-7 separates the move from lr * sign(g) here.
  EXPECT_TRUE(allclose(p, vec({1 * d - lr, -2 * d + lr, 0.5 * d - lr, 3 * d}), 1.01e-7, 0));
  EXPECT_EQ(opt.step_count(0), 1);
  // Without decay, the same gradient moves it by exactly lr * g/(|g| + eps).
  Tensor q = leaf(vec({1}));
  AdamW plain({q}, lr, {0.9, 0.999}, 1e-8, 0.0);
  q.set_grad(vec({0.25}));
  plain.step();
  EXPECT_NEAR(ops::item(q), 1 - lr * 0.25 / (0.25 + 1e-8), 1e-15);
}

TEST(AdamW, SkipsParametersWithoutGradAndKeepsTheirStepCount) {
  Tensor a = leaf(vec({1, 2})), b = leaf(vec({3}));
  AdamW opt({a, b}, 0.1, {0.9, 0.999}, 1e-8, 0.01);
  const auto b_before = ops::to_vector<double>(b);
  for (int i = 0; i < 3; ++i) {
    a.set_grad(vec({1, -1}));
    opt.step();
  }
  EXPECT_EQ(ops::to_vector<double>(b), b_before);  // not even decayed
  EXPECT_EQ(opt.step_count(0), 3);
  EXPECT_EQ(opt.step_count(1), 0);
  EXPECT_EQ(opt.state_dict().count("state.1.step"), 0u);
  // b's first step is a first step (bias correction with t = 1), not the optimizer's fourth.
  b.set_grad(vec({-2}));
  opt.step();
  EXPECT_EQ(opt.step_count(1), 1);
  EXPECT_NEAR(ops::item(b), 3 * (1 - 0.1 * 0.01) + 0.1, 1e-8);
}

TEST(AdamW, UpdatesInPlaceVisibleThroughEveryHandleWithoutRecordingAGraph) {
  Tensor p = leaf(vec({1, 2, 3}, DType::f32));
  Tensor held = p;  // e.g. a module's member
  const void* data = p.raw_data();
  const uint64_t version = p.version();
  AdamW opt({p}, 0.01);
  p.set_grad(vec({1, 1, 1}, DType::f32));
  opt.step();
  EXPECT_EQ(held.raw_data(), data);
  EXPECT_GT(p.version(), version);
  EXPECT_TRUE(allclose(held, vec({1 * (1 - 1e-4) - 0.01, 2 * (1 - 1e-4) - 0.01, 3 * (1 - 1e-4) - 0.01}, DType::f32),
                       1e-6, 1e-6));
  EXPECT_TRUE(p.is_leaf());
  EXPECT_TRUE(p.requires_grad());
  EXPECT_EQ(p.grad_fn(), nullptr);
  EXPECT_TRUE(grad_enabled());
  // The gradient itself is left untouched.
  EXPECT_TRUE(allclose(p.grad(), vec({1, 1, 1}, DType::f32), 0, 0));
}

TEST(AdamW, FusedStepEqualsTheUnfusedOpsInEveryDtype) {
  // `a` (contiguous parameter and gradient) takes the fused kernel; `bt` holds the same values
  // transposed and gets its gradient as a non-contiguous view, which sends it down the op
  // sequence. Five steps with weight decay must agree (up to a contracted multiply-add's rounding).
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    Tensor base = ops::to(test::uniform({37, 5}, -1, 1, 61), dt);
    Tensor a = ops::clone(base), bt = ops::contiguous(ops::transpose(base, 0, 1));
    a.set_requires_grad(true);
    bt.set_requires_grad(true);
    AdamW oa({a}, 0.01, {0.9, 0.99}, 1e-8, 0.05), ob({bt}, 0.01, {0.9, 0.99}, 1e-8, 0.05);
    for (int step = 0; step < 5; ++step) {
      Tensor g = ops::to(test::uniform({37, 5}, -1, 1, 70 + step), dt);
      a.set_grad(g);
      bt.set_grad(ops::transpose(g, 0, 1));
      ASSERT_FALSE(bt.grad().is_contiguous());
      oa.step();
      ob.step();
    }
    const double tol = dt == DType::f64 ? 1e-15 : dt == DType::f32 ? 1e-6 : 1e-2;
    EXPECT_TRUE(allclose(ops::to(a, DType::f64), ops::to(ops::transpose(bt, 0, 1), DType::f64), tol, tol)) << dtype_name(dt);
  }
}

TEST(AdamW, StateDictHoldsPyTorchKeysAndValues) {
  Tensor a = leaf(vec({1, 2})), b = leaf(ops::zeros({2, 2}, DType::f64));
  AdamW opt({a, b}, 0.002, {0.8, 0.99}, 1e-6, 0.1);
  a.set_grad(vec({0.5, -0.5}));
  opt.step();
  opt.step();
  const auto sd = opt.state_dict();
  std::vector<std::string> keys;
  for (const auto& [k, v] : sd) keys.push_back(k);
  const std::vector<std::string> expected = {"param_groups.0.betas.0", "param_groups.0.betas.1", "param_groups.0.eps",
                                             "param_groups.0.lr",      "param_groups.0.params",  "param_groups.0.weight_decay",
                                             "state.0.exp_avg",        "state.0.exp_avg_sq",     "state.0.step"};
  EXPECT_EQ(keys, expected);
  EXPECT_EQ(sd.at("state.0.step").dim(), 0);
  EXPECT_EQ(sd.at("state.0.step").dtype(), DType::f64);
  EXPECT_EQ(ops::item(sd.at("state.0.step")), 2.0);
  EXPECT_EQ(ops::item(sd.at("param_groups.0.lr")), 0.002);
  EXPECT_EQ(ops::item(sd.at("param_groups.0.betas.1")), 0.99);
  EXPECT_EQ(ops::to_vector<int64_t>(sd.at("param_groups.0.params")), (std::vector<int64_t>{0, 1}));
  // m after two equal gradients: 0.2g then 0.8*0.2g + 0.2g = 0.36g.
  EXPECT_TRUE(allclose(sd.at("state.0.exp_avg"), vec({0.18, -0.18}), 1e-15, 0));
}

// Runs `steps` steps with gradients that depend on the step and the parameter.
void run_steps(nn::Optimizer& opt, const std::vector<Tensor>& ps, int first, int steps) {
  for (int s = first; s < first + steps; ++s) {
    for (size_t i = 0; i < ps.size(); ++i) {
      if ((s + static_cast<int>(i)) % 4 == 3) {
        ps[i].set_grad(Tensor());  // some steps skip some parameters
        continue;
      }
      ps[i].set_grad(test::uniform(ps[i].sizes(), -2, 2, 100 * s + i, ps[i].dtype()));
    }
    opt.step();
  }
}

std::vector<Tensor> clone_params(const std::vector<Tensor>& ps) {
  std::vector<Tensor> out;
  for (const auto& p : ps) out.push_back(leaf(ops::detach(p)));
  return out;
}

TEST(AdamW, StateDictRoundTripReproducesTheSameStepsExactly) {
  std::vector<Tensor> ps = {leaf(test::uniform({3, 4}, -1, 1, 1)), leaf(test::uniform({5}, -1, 1, 2)),
                            leaf(test::uniform({2, 3}, -1, 1, 3))};
  AdamW a(ps, 0.01, {0.9, 0.999}, 1e-8, 0.01);
  run_steps(a, ps, 0, 5);
  const auto saved = deep_copy(a.state_dict());

  std::vector<Tensor> qs = clone_params(ps);
  AdamW b(qs, 0.5, {0.5, 0.5}, 1e-3, 0.0);  // hyperparameters come from the state dict
  b.load_state_dict(saved);
  EXPECT_EQ(b.lr(), 0.01);
  EXPECT_EQ(b.betas(), std::make_pair(0.9, 0.999));
  EXPECT_EQ(b.eps(), 1e-8);
  EXPECT_EQ(b.weight_decay(), 0.01);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(b.step_count(i), a.step_count(i));

  run_steps(a, ps, 5, 7);
  run_steps(b, qs, 5, 7);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_TRUE(allclose(qs[i], ps[i], 0, 0)) << "parameter " << i;
  // The loaded state is the optimizer's own copy: changing the dictionary afterwards is harmless.
  ops::fill_(saved.at("state.0.exp_avg"), 123);
  EXPECT_TRUE(allclose(b.state_dict().at("state.0.exp_avg"), a.state_dict().at("state.0.exp_avg"), 0, 0));
}

TEST(AdamW, StateSurvivesASafetensorsFile) {
  std::vector<Tensor> ps = {leaf(test::uniform({3, 4}, -1, 1, 4)), leaf(test::uniform({5}, -1, 1, 5))};
  AdamW a(ps, 0.01, {0.9, 0.999}, 1e-8, 0.01);
  run_steps(a, ps, 0, 4);
  const std::string path = (std::filesystem::temp_directory_path() / "strand_adamw_state.safetensors").string();
  safetensors::save(path, a.state_dict());
  std::vector<Tensor> qs = clone_params(ps);
  AdamW b(qs, 0.5);
  b.load_state_dict(safetensors::load(path).tensors);
  std::filesystem::remove(path);
  run_steps(a, ps, 4, 7);
  run_steps(b, qs, 4, 7);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_TRUE(allclose(qs[i], ps[i], 0, 0)) << "parameter " << i;
}

TEST(AdamW, LoadCastsStateToTheParameterDtype) {
  Tensor p64 = leaf(vec({1, 2}));
  AdamW a({p64}, 0.01);
  p64.set_grad(vec({0.3, 0.1}));
  a.step();
  Tensor p32 = leaf(vec({1, 2}, DType::f32));
  AdamW b({p32}, 0.01);
  b.load_state_dict(a.state_dict());
  const auto sd = b.state_dict();
  EXPECT_EQ(sd.at("state.0.exp_avg").dtype(), DType::f32);
  EXPECT_TRUE(allclose(sd.at("state.0.exp_avg_sq"), vec({0.3 * 0.3 * 1e-3, 0.1 * 0.1 * 1e-3}, DType::f32), 1e-12, 1e-6));
  p32.set_grad(vec({0.3, 0.1}, DType::f32));
  b.step();  // f32 state with an f32 parameter: no dtype complaint
  EXPECT_EQ(b.step_count(0), 2);
}

TEST(AdamW, LoadStateDictRejectsMismatchesAndChangesNothing) {
  Tensor a = leaf(vec({1, 2})), b = leaf(vec({3}));
  AdamW src({a, b}, 0.01);
  a.set_grad(vec({1, 1}));
  b.set_grad(vec({1}));
  src.step();
  const auto good = src.state_dict();

  Tensor c = leaf(vec({1, 2}));
  AdamW one({c}, 0.5);
  EXPECT_TRUE(throws_with([&] { one.load_state_dict(good); }, {"state is for 2 parameters", "has 1"}));

  Tensor d = leaf(vec({1, 2, 3})), e = leaf(vec({3}));
  AdamW wrong_shape({d, e}, 0.5);
  EXPECT_TRUE(throws_with([&] { wrong_shape.load_state_dict(good); }, {"state.0.exp_avg", "[2]", "[3]"}));

  Tensor f = leaf(vec({1, 2})), g = leaf(vec({3}));
  AdamW dst({f, g}, 0.5);
  auto extra = good;
  extra["state.7.exp_avg"] = vec({0});
  EXPECT_TRUE(throws_with([&] { dst.load_state_dict(extra); }, {"unexpected key", "state.7.exp_avg"}));
  auto missing = good;
  missing.erase("param_groups.0.eps");
  EXPECT_TRUE(throws_with([&] { dst.load_state_dict(missing); }, {"missing key", "param_groups.0.eps"}));
  auto partial = good;
  partial.erase("state.1.exp_avg_sq");
  EXPECT_TRUE(throws_with([&] { dst.load_state_dict(partial); }, {"partial state", "state.1.exp_avg_sq"}));
  auto bad_beta = good;
  bad_beta["param_groups.0.betas.0"] = ops::scalar_tensor(1.5, DType::f64);
  EXPECT_TRUE(throws_with([&] { dst.load_state_dict(bad_beta); }, {"beta1", "1.5"}));
  auto bad_step = good;
  bad_step["state.0.step"] = ops::scalar_tensor(2.5, DType::f64);
  EXPECT_TRUE(throws_with([&] { dst.load_state_dict(bad_step); }, {"state.0.step", "2.5"}));
  // None of the failed loads touched dst.
  EXPECT_EQ(dst.lr(), 0.5);
  EXPECT_EQ(dst.state_dict().count("state.0.step"), 0u);
  dst.load_state_dict(good);
  EXPECT_EQ(dst.lr(), 0.01);
  EXPECT_EQ(dst.step_count(1), 1);
}

TEST(AdamW, ConstructorAndStepErrorsNameTheValues) {
  EXPECT_TRUE(throws_with([] { AdamW({}, 0.1); }, {"empty parameter list"}));
  EXPECT_TRUE(throws_with([] { AdamW({vec({1})}, 0.1); }, {"parameter 0", "requires grad"}));
  Tensor p = leaf(vec({1}));
  EXPECT_TRUE(throws_with([&] { AdamW({p, p}, 0.1); }, {"parameter 1", "more than once"}));
  EXPECT_TRUE(throws_with([&] { AdamW({p * 2.0}, 0.1); }, {"leaf"}));
  EXPECT_TRUE(throws_with([&] { AdamW({p}, -0.1); }, {"learning rate", "-0.1"}));
  EXPECT_TRUE(throws_with([&] { AdamW({p}, 0.1, {1.0, 0.999}); }, {"beta1", "1"}));
  EXPECT_TRUE(throws_with([&] { AdamW({p}, 0.1, {0.9, -0.5}); }, {"beta2", "-0.5"}));
  EXPECT_TRUE(throws_with([&] { AdamW({p}, 0.1, {0.9, 0.999}, -1e-8); }, {"eps", "-1e-08"}));
  EXPECT_TRUE(throws_with([&] { AdamW({p}, 0.1, {0.9, 0.999}, 1e-8, -0.01); }, {"weight_decay", "-0.01"}));
  AdamW opt({p}, 0.1);
  EXPECT_TRUE(throws_with([&] { opt.set_lr(-1); }, {"learning rate", "-1"}));

  // A bad gradient is reported before any parameter moves.
  Tensor a = leaf(vec({1, 2})), b = leaf(vec({3}));
  AdamW two({a, b}, 0.1);
  a.set_grad(vec({1, 1}));
  b.set_grad(vec({1}, DType::f32));
  EXPECT_TRUE(throws_with([&] { two.step(); }, {"AdamW", "parameter 1", "f32", "f64"}));
  EXPECT_EQ(ops::to_vector<double>(a), (std::vector<double>{1, 2}));
  EXPECT_EQ(two.step_count(0), 0);
}

// ---------------- SGD and zero_grad ----------------

TEST(SGD, MomentumByHandAndGradientLeftUntouched) {
  // buf1 = g1 + wd*p0; buf2 = 0.9*buf1 + (g2 + wd*p1); p -= lr*buf.
  Tensor p = leaf(vec({1}));
  SGD opt({p}, 0.1, 0.9, 0.5);
  p.set_grad(vec({2}));
  opt.step();
  const double buf1 = 2 + 0.5 * 1, p1 = 1 - 0.1 * buf1;
  EXPECT_NEAR(ops::item(p), p1, 1e-15);
  EXPECT_EQ(ops::item(p.grad()), 2.0);  // weight decay used a copy
  p.set_grad(vec({-1}));
  opt.step();
  const double buf2 = 0.9 * buf1 + (-1 + 0.5 * p1);
  EXPECT_NEAR(ops::item(p), p1 - 0.1 * buf2, 1e-15);
  EXPECT_TRUE(allclose(opt.state_dict().at("state.0.momentum_buffer"), vec({buf2}), 1e-15, 0));
  EXPECT_EQ(opt.state_dict().count("state.0.step"), 0u);

  // Nesterov without weight decay: the update uses g + momentum*buf, on a copy of g.
  Tensor q = leaf(vec({0}));
  SGD nest({q}, 1.0, 0.5, 0.0, 0.0, true);
  q.set_grad(vec({1}));
  nest.step();
  EXPECT_EQ(ops::item(q), -1.5);
  EXPECT_EQ(ops::item(q.grad()), 1.0);

  // Plain SGD keeps no state at all.
  Tensor r = leaf(vec({1}));
  SGD plain({r}, 0.25);
  r.set_grad(vec({2}));
  plain.step();
  EXPECT_EQ(ops::item(r), 0.5);
  EXPECT_EQ(plain.state_dict().count("state.0.momentum_buffer"), 0u);
}

TEST(SGD, StateRoundTripAndErrors) {
  std::vector<Tensor> ps = {leaf(test::uniform({4}, -1, 1, 7)), leaf(test::uniform({2, 2}, -1, 1, 8))};
  SGD a(ps, 0.05, 0.9, 0.01);
  run_steps(a, ps, 0, 4);
  std::vector<Tensor> qs = clone_params(ps);
  SGD b(qs, 1.0);
  b.load_state_dict(deep_copy(a.state_dict()));
  EXPECT_EQ(b.momentum(), 0.9);
  EXPECT_FALSE(b.nesterov());
  run_steps(a, ps, 4, 5);
  run_steps(b, qs, 4, 5);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_TRUE(allclose(qs[i], ps[i], 0, 0));

  Tensor p = leaf(vec({1}));
  EXPECT_TRUE(throws_with([&] { SGD({p}, 0.1, 0.0, 0.0, 0.0, true); }, {"Nesterov", "momentum 0"}));
  EXPECT_TRUE(throws_with([&] { SGD({p}, 0.1, 0.9, 0.0, 0.1, true); }, {"Nesterov", "dampening 0.1"}));
  EXPECT_TRUE(throws_with([&] { SGD({p}, 0.1, -0.9); }, {"momentum", "-0.9"}));
  auto sd = a.state_dict();
  sd["param_groups.0.nesterov"] = ops::scalar_tensor(0.5, DType::f64);
  EXPECT_TRUE(throws_with([&] { b.load_state_dict(sd); }, {"nesterov", "0.5"}));
}

TEST(Optimizer, ZeroGradDropsOrZeroesInPlace) {
  Tensor a = leaf(vec({1, 2})), b = leaf(vec({3}));
  SGD opt({a, b}, 0.1);
  a.set_grad(vec({5, 6}));
  const Tensor ga = a.grad();
  opt.zero_grad(false);
  EXPECT_TRUE(a.grad().is_same(ga));
  EXPECT_EQ(ops::to_vector<double>(a.grad()), (std::vector<double>{0, 0}));
  EXPECT_FALSE(b.grad().defined());  // no grad stays no grad
  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  opt.step();  // nothing has a gradient: nothing moves
  EXPECT_EQ(ops::to_vector<double>(a), (std::vector<double>{1, 2}));
}

// ---------------- schedules by hand ----------------

TEST(LRSchedule, ShapesAtTheirCorners) {
  const Schedule cos = Schedule::cosine(10, 110);
  EXPECT_EQ(cos.multiplier(0), 0.0);
  EXPECT_EQ(cos.multiplier(5), 0.5);
  EXPECT_EQ(cos.multiplier(10), 1.0);
  EXPECT_NEAR(cos.multiplier(60), 0.5, 1e-15);
  EXPECT_EQ(cos.multiplier(110), 0.0);
  // HF does not clamp progress: past the end the cosine rises again (1.0 after a full period).
  EXPECT_EQ(cos.multiplier(210), 1.0);

  const Schedule lin = Schedule::linear(4, 12);
  EXPECT_EQ(lin.multiplier(2), 0.5);
  EXPECT_EQ(lin.multiplier(4), 1.0);
  EXPECT_EQ(lin.multiplier(8), 0.5);
  EXPECT_EQ(lin.multiplier(12), 0.0);
  EXPECT_EQ(lin.multiplier(50), 0.0);  // clamped at 0

  // No warmup: full lr from step 0. Warmup == total: ramp, then 1 at the last step (progress 0/1).
  EXPECT_EQ(Schedule::cosine(0, 100).multiplier(0), 1.0);
  EXPECT_EQ(Schedule::linear(0, 100).multiplier(0), 1.0);
  EXPECT_EQ(Schedule::cosine(5, 5).multiplier(5), 1.0);
  EXPECT_EQ(Schedule::constant_with_warmup(0).multiplier(0), 1.0);
  EXPECT_EQ(Schedule::constant_with_warmup(4).multiplier(3), 0.75);
  EXPECT_EQ(Schedule::constant().multiplier(1000000), 1.0);
}

TEST(LRSchedule, WarmupRatioTruncatesLikePythonInt) {
  EXPECT_EQ(Schedule::cosine_with_warmup_ratio(0.01, 1000).warmup_steps, 10);
  EXPECT_EQ(Schedule::cosine_with_warmup_ratio(0.01, 150).warmup_steps, 1);   // int(1.5)
  EXPECT_EQ(Schedule::cosine_with_warmup_ratio(0.29, 100).warmup_steps, 28);  // 0.29*100 = 28.999999999999996
  EXPECT_EQ(Schedule::cosine_with_warmup_ratio(0.07, 100).warmup_steps, 7);   // 7.000000000000001
  EXPECT_EQ(Schedule::cosine_with_warmup_ratio(0.0, 100).warmup_steps, 0);
  EXPECT_EQ(Schedule::cosine_with_warmup_ratio(1.0, 100).warmup_steps, 100);
}

TEST(LRSchedule, SchedulerFollowsLambdaLRAndSetsTheOptimizerLr) {
  AdamW opt({leaf(vec({0}))}, 4e-4);
  LRScheduler sched(opt, Schedule::linear(2, 6));
  EXPECT_EQ(opt.lr(), 0.0);  // base * lambda(0) at construction
  EXPECT_EQ(sched.base_lr(), 4e-4);
  const std::vector<double> mult = {0.5, 1.0, 0.75, 0.5, 0.25, 0.0};
  for (size_t k = 0; k < mult.size(); ++k) {
    sched.step();
    EXPECT_EQ(sched.last_step(), static_cast<int64_t>(k + 1));
    EXPECT_EQ(opt.lr(), 4e-4 * mult[k]);
    EXPECT_EQ(sched.last_lr(), opt.lr());
  }
}

TEST(LRSchedule, StateRoundTripResumesTheSameLrs) {
  AdamW a_opt({leaf(vec({0}))}, 1e-4);
  LRScheduler a(a_opt, Schedule::cosine_with_warmup_ratio(0.01, 500));
  for (int k = 0; k < 37; ++k) a.step();
  const auto sd = a.state_dict();
  EXPECT_EQ(ops::item(sd.at("last_epoch")), 37.0);

  AdamW b_opt({leaf(vec({0}))}, 1e-4);
  LRScheduler b(b_opt, Schedule::cosine_with_warmup_ratio(0.01, 500));
  b.load_state_dict(sd);
  EXPECT_EQ(b.last_step(), 37);
  EXPECT_EQ(b_opt.lr(), a_opt.lr());
  for (int k = 0; k < 20; ++k) {
    a.step();
    b.step();
    EXPECT_EQ(b_opt.lr(), a_opt.lr());
  }

  AdamW c_opt({leaf(vec({0}))}, 1e-4);
  LRScheduler c(c_opt, Schedule::cosine_with_warmup_ratio(0.01, 800));
  EXPECT_TRUE(throws_with([&] { c.load_state_dict(sd); }, {"warmup 5", "total 500", "warmup 8", "total 800"}));
  auto bad = sd;
  bad["last_epoch"] = ops::scalar_tensor(-3, DType::f64);
  EXPECT_TRUE(throws_with([&] { b.load_state_dict(bad); }, {"last_epoch", "-3"}));
  bad = sd;
  bad["step_count"] = ops::scalar_tensor(1, DType::f64);
  EXPECT_TRUE(throws_with([&] { b.load_state_dict(bad); }, {"unexpected key", "step_count"}));
}

TEST(LRSchedule, BadArgumentsNameTheValue) {
  EXPECT_TRUE(throws_with([] { Schedule::cosine(-1, 10); }, {"warmup_steps -1", "negative"}));
  EXPECT_TRUE(throws_with([] { Schedule::linear(0, -5); }, {"total_steps -5", "negative"}));
  EXPECT_TRUE(throws_with([] { Schedule::cosine(20, 10); }, {"warmup_steps 20", "exceeds total_steps 10"}));
  EXPECT_TRUE(throws_with([] { Schedule::constant_with_warmup(-2); }, {"warmup_steps -2"}));
  EXPECT_TRUE(throws_with([] { Schedule::cosine_with_warmup_ratio(1.5, 100); }, {"warmup_ratio 1.5", "[0, 1]"}));
  EXPECT_TRUE(throws_with([] { Schedule::cosine_with_warmup_ratio(-0.1, 100); }, {"warmup_ratio -0.1"}));
  EXPECT_TRUE(throws_with([] { Schedule::cosine_with_warmup_ratio(std::nan(""), 100); }, {"warmup_ratio nan"}));
  EXPECT_TRUE(throws_with([] { Schedule::cosine_with_warmup_ratio(0.1, -1); }, {"total_steps -1"}));
  EXPECT_TRUE(throws_with([] { Schedule::cosine(0, 10).multiplier(-1); }, {"step -1", "negative"}));
  AdamW opt({leaf(vec({0}))}, 1e-4);
  EXPECT_TRUE(throws_with([&] { LRScheduler(opt, Schedule{nn::ScheduleKind::linear, 9, 3}); },
                          {"warmup_steps 9", "exceeds total_steps 3"}));
}

// ---------------- clipping by hand ----------------

TEST(ClipGradNorm, ScalesByMaxOverTotalAndReturnsTheNormBeforeClipping) {
  Tensor a = leaf(vec({0, 0})), b = leaf(vec({0})), c = leaf(vec({0}));
  a.set_grad(vec({3, 0}));
  b.set_grad(vec({-4}));  // c has no grad: skipped
  const double total = nn::clip_grad_norm_({a, b, c}, 1.0);
  EXPECT_EQ(total, 5.0);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_TRUE(allclose(a.grad(), vec({3 * coef, 0}), 1e-16, 0));
  EXPECT_TRUE(allclose(b.grad(), vec({-4 * coef}), 1e-16, 0));
  EXPECT_FALSE(c.grad().defined());
  EXPECT_NEAR(nn::grad_norm({a, b, c}), 5 * coef, 1e-15);

  // Under the limit the gradients are untouched, bit for bit.
  a.set_grad(vec({0.03, 0.04}));
  b.set_grad(Tensor());
  EXPECT_NEAR(nn::clip_grad_norm_({a, b}, 0.1), 0.05, 1e-17);
  EXPECT_EQ(ops::to_vector<double>(a.grad()), (std::vector<double>{0.03, 0.04}));

  // Infinity norm: max |g|; 1-norm: sum |g|.
  a.set_grad(vec({0.5, -2}));
  b.set_grad(vec({1.5}));
  EXPECT_EQ(nn::grad_norm({a, b}, nn::kInfNorm), 2.0);
  EXPECT_EQ(nn::grad_norm({a, b}, 1.0), 4.0);
  EXPECT_EQ(nn::clip_grad_norm_({a, b}, 1.0, nn::kInfNorm), 2.0);
  EXPECT_TRUE(allclose(a.grad(), vec({0.5 / (2 + 1e-6), -2 / (2 + 1e-6)}), 1e-16, 0));

  // No gradients at all: norm 0, nothing to do.
  EXPECT_EQ(nn::clip_grad_norm_({c}, 1.0), 0.0);
  // Empty gradients count as zero.
  Tensor e = leaf(ops::zeros({0}, DType::f64));
  e.set_grad(ops::zeros({0}, DType::f64));
  EXPECT_EQ(nn::grad_norm({e}, nn::kInfNorm), 0.0);
}

// The trainer's clipping: step(clip_coefficient(grad_norm)) is clip_grad_norm_ followed by step(),
// bit for bit, for AdamW (the fused kernel, and the op sequence for a non-contiguous gradient) and
// for SGD (the base class's scaling), gradients included.
TEST(ClipGradNorm, FusedIntoTheStepEqualsClippingThenStepping) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    for (int kind = 0; kind < 3; ++kind) {  // 0: AdamW fused, 1: AdamW op sequence, 2: SGD
      auto make = [&](std::vector<Tensor>& ps) -> std::unique_ptr<nn::Optimizer> {
        ps = {ops::to(test::uniform({7, 3}, -1, 1, 81), dt), ops::to(test::uniform({5}, -1, 1, 82), dt),
              ops::to(test::uniform({2, 2}, -1, 1, 83), dt)};
        for (Tensor& p : ps) p.set_requires_grad(true);
        if (kind == 2) return std::make_unique<SGD>(ps, 0.1, 0.9, 0.01);
        return std::make_unique<AdamW>(ps, 0.01, std::pair<double, double>{0.9, 0.99}, 1e-8, 0.05);
      };
      std::vector<Tensor> pa, pb;
      auto oa = make(pa), ob = make(pb);
      for (int step = 0; step < 4; ++step) {
        for (size_t i = 0; i < pa.size(); ++i) {
          if (i == 1 && step == 2) {  // a parameter without a gradient this step
            pa[i].set_grad(Tensor());
            pb[i].set_grad(Tensor());
            continue;
          }
          const Tensor g = ops::to(test::uniform(pa[i].sizes(), -3, 3, 90 + 10 * step + static_cast<int>(i)), dt);
          if (kind == 1 && pa[i].dim() == 2) {  // the same values as a non-contiguous view
            pa[i].set_grad(ops::transpose(ops::contiguous(ops::transpose(g, 0, 1)), 0, 1));
            pb[i].set_grad(ops::transpose(ops::contiguous(ops::transpose(g, 0, 1)), 0, 1));
            ASSERT_FALSE(pa[i].grad().is_contiguous());
          } else {
            pa[i].set_grad(ops::clone(g));
            pb[i].set_grad(ops::clone(g));
          }
        }
        const double max_norm = step == 3 ? 1e3 : 0.5;  // the last step is under the limit: scale 1
        const double total = nn::clip_grad_norm_(pa, max_norm);
        oa->step();
        const double coef = nn::clip_coefficient(nn::grad_norm(pb), max_norm);
        EXPECT_EQ(coef, std::min(1.0, max_norm / (total + 1e-6)));
        ob->step(coef);
        for (size_t i = 0; i < pa.size(); ++i) {
          EXPECT_EQ(ops::to_vector<double>(pa[i]), ops::to_vector<double>(pb[i]))
              << dtype_name(dt) << " kind " << kind << " step " << step << " param " << i;
          if (pa[i].grad().defined())
            EXPECT_EQ(ops::to_vector<double>(pa[i].grad()), ops::to_vector<double>(pb[i].grad()))
                << "the scaled gradients, " << dtype_name(dt) << " kind " << kind;
        }
      }
    }
  }
  Tensor a = leaf(vec({1, 2}));
  a.set_grad(vec({1, 1}));
  AdamW opt({a});
  EXPECT_TRUE(throws_with([&] { opt.step(-1); }, {"grad_scale", "-1"}));
  EXPECT_TRUE(throws_with([&] { opt.step(INFINITY); }, {"grad_scale", "inf"}));
  EXPECT_EQ(ops::to_vector<double>(a), (std::vector<double>{1, 2}));
}

TEST(AdamW, MultiTensorOpIsAllOrNothing) {
  std::vector<AdamWParam> ps;
  for (int i = 0; i < 3; ++i)
    ps.push_back({test::uniform({4}, -1, 1, 100 + i, DType::f32), test::uniform({4}, -1, 1, 110 + i, DType::f32), ops::zeros({4}),
                  ops::zeros({4}), {0.1, 0.9, 0.99, 1e-8, 0.01, 0.1 / 0.1, std::sqrt(1 - 0.99), 0.5}});
  const std::vector<double> p0 = ops::to_vector<double>(ps[0].p);
  ps[2].v = ops::zeros({4}, DType::f64);  // a dtype mismatch: nothing may change
  EXPECT_FALSE(ops::adamw_multi_(ps));
  EXPECT_EQ(ops::to_vector<double>(ps[0].p), p0);
  ps[2].v = ops::zeros({4});
  std::vector<AdamWParam> one_by_one;
  for (const AdamWParam& e : ps)
    one_by_one.push_back({ops::clone(e.p), ops::clone(e.g), ops::clone(e.m), ops::clone(e.v), e.s});
  EXPECT_TRUE(ops::adamw_multi_(ps));
  for (size_t i = 0; i < ps.size(); ++i) {
    const AdamWParam& e = one_by_one[i];
    ASSERT_TRUE(ops::adamw_(e.p, e.g, e.m, e.v, e.s));
    for (auto [x, y] : {std::pair{ps[i].p, e.p}, {ps[i].g, e.g}, {ps[i].m, e.m}, {ps[i].v, e.v}})
      EXPECT_EQ(ops::to_vector<double>(x), ops::to_vector<double>(y));
  }
  EXPECT_NE(ops::to_vector<double>(ps[0].p), p0);
}

TEST(ClipGradNorm, NonFiniteNormsAndBadArguments) {
  Tensor a = leaf(vec({0, 0}));
  a.set_grad(vec({1, std::nan("")}));
  EXPECT_TRUE(throws_with([&] { nn::clip_grad_norm_({a}, 1.0, 2.0, true); }, {"nan"}));
  EXPECT_EQ(ops::to_vector<double>(a.grad())[0], 1.0);  // the error left the gradients alone
  EXPECT_TRUE(std::isnan(nn::clip_grad_norm_({a}, 1.0)));
  EXPECT_TRUE(std::isnan(ops::to_vector<double>(a.grad())[0]));  // as torch: NaN spreads, visibly
  a.set_grad(vec({1, std::nan("")}));
  EXPECT_TRUE(std::isnan(nn::grad_norm({a}, nn::kInfNorm)));

  a.set_grad(vec({1, 1}));
  EXPECT_TRUE(throws_with([&] { nn::clip_grad_norm_({a}, 0.0); }, {"max_norm", "positive", "0"}));
  EXPECT_TRUE(throws_with([&] { nn::clip_grad_norm_({a}, -1.0); }, {"max_norm", "-1"}));
  EXPECT_TRUE(throws_with([&] { nn::clip_grad_norm_({a}, 1.0, 0.0); }, {"norm_type 0"}));
  EXPECT_TRUE(throws_with([&] { nn::clip_grad_norm_({a}, 1.0, -2.0); }, {"norm_type -2"}));
  EXPECT_EQ(ops::to_vector<double>(a.grad()), (std::vector<double>{1, 1}));
}

}  // namespace
}  // namespace strand
