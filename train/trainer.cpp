#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nn/clip_grad.h"
#include "nn/lr_schedule.h"
#include "nn/optim.h"
#include "tensor/philox.h"
#include "tensor/safetensors.h"
#include "train/dist/ddp.h"

namespace strand::train {

namespace fs = std::filesystem;

namespace {
Tensor labels_tensor(const std::vector<Sample>& batch, int k) {
  std::vector<float> y;
  for (const Sample& s : batch) y.insert(y.end(), s.labels.begin(), s.labels.end());
  return ops::from_vector<float>(y, {static_cast<int64_t>(batch.size()), k});
}
std::string fmt_time(double s) {
  char b[32];
  const int t = static_cast<int>(s);
  std::snprintf(b, sizeof b, "%02d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
  return b;
}
}  // namespace

Predictions predict(TaskModel& model, const SplitData& split, int64_t batch_size, const std::string& label,
                    dist::Communicator* comm) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  Predictions p;
  p.k = split.num_labels();
  std::vector<int64_t> rows(static_cast<size_t>(split.size()));
  for (int64_t i = 0; i < split.size(); ++i) rows[i] = i;
  const int world = comm ? comm->size() : 1;
  if (world > 1) rows = dist::shard(rows, comm->rank(), world);
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  for (int64_t b = 0; b < n_rows; b += batch_size) {
    std::vector<Sample> batch;
    for (int64_t i = b; i < std::min(n_rows, b + batch_size); ++i) batch.push_back(split.get(rows[i]));
    auto out = ops::to_vector<double>(model.forward(batch));
    for (const Sample& s : batch) {
      p.ids.push_back(s.transcript_id);
      p.labels.insert(p.labels.end(), s.labels.begin(), s.labels.end());
    }
    p.preds.insert(p.preds.end(), out.begin(), out.end());
    if (!label.empty())
      std::fprintf(stderr, "\r%s %lld/%lld", label.c_str(), static_cast<long long>(std::min(n_rows, b + batch_size)),
                   static_cast<long long>(n_rows));
  }
  if (!label.empty()) std::fprintf(stderr, "\n");
  p.n = static_cast<int64_t>(p.ids.size());
  model.train(was_training);
  if (world > 1 && split.size() > 0) {
    // Every rank holds shard_size rows; rank r's j-th row is position j * world + r of the padded
    // order, and positions from split.size() on are the padding duplicates.
    const int64_t m = p.n, k = p.k, n = split.size();
    Tensor preds = comm->all_gather(ops::from_vector<double>(p.preds, {m * k}));
    Tensor labels = comm->all_gather(ops::from_vector<double>(p.labels, {m * k}));
    auto ids = dist::all_gather_strings(*comm, p.ids);
    const double* pp = static_cast<const double*>(preds.raw_data());
    const double* lp = static_cast<const double*>(labels.raw_data());
    Predictions all;
    all.k = k;
    all.preds.resize(static_cast<size_t>(n * k));
    all.labels.resize(static_cast<size_t>(n * k));
    all.ids.resize(static_cast<size_t>(n));
    for (int r = 0; r < world; ++r)
      for (int64_t j = 0; j < m; ++j) {
        const int64_t pos = j * world + r;
        if (pos >= n) continue;
        std::copy(pp + (r * m + j) * k, pp + (r * m + j + 1) * k, all.preds.begin() + pos * k);
        std::copy(lp + (r * m + j) * k, lp + (r * m + j + 1) * k, all.labels.begin() + pos * k);
        all.ids[pos] = ids[r][j];
      }
    all.n = n;
    return all;
  }
  return p;
}

Trainer::Trainer(const Config& cfg, std::shared_ptr<TaskModel> model, SplitData& train, SplitData* valid,
                 std::vector<double> mean, std::vector<double> std)
    : cfg_(cfg), model_(std::move(model)), train_(train), valid_(valid), label_mean_(std::move(mean)),
      label_std_(std::move(std)), comm_(dist::world()) {
  STRAND_CHECK(train_.size() > 0, "training split is empty");
  // Each rank steps through its shard; the last batch is kept, as PyTorch.
  const int64_t rows = dist::shard_size(train_.size(), comm_->size());
  steps_per_epoch_ = (rows + cfg_.data.batch_size - 1) / cfg_.data.batch_size;
  total_steps_ = steps_per_epoch_ * cfg_.trainer.epochs;
  if (cfg_.trainer.max_steps > 0) total_steps_ = std::min(total_steps_, cfg_.trainer.max_steps);
}

std::vector<int64_t> Trainer::epoch_order(int64_t epoch) const {
  // Fisher-Yates driven by Philox(seed, epoch): the same order for a given seed and epoch.
  std::vector<int64_t> order(static_cast<size_t>(train_.size()));
  for (int64_t i = 0; i < train_.size(); ++i) order[i] = i;
  for (int64_t i = train_.size() - 1; i > 0; --i) {
    auto r = philox::philox4x32_10(cfg_.trainer.seed, static_cast<uint64_t>(i), 0xDA7A0000ull + epoch);
    const int64_t j = static_cast<int64_t>(philox::uniform_f64(r.x, r.y) * static_cast<double>(i + 1));
    std::swap(order[i], order[std::min(j, i)]);
  }
  return order;
}

void Trainer::save_checkpoint(const std::string& path, int64_t step, int64_t epoch, int64_t batch, double best,
                              const safetensors::TensorMap& extra) const {
  safetensors::TensorMap t = extra;
  for (auto& [k, v] : model_->state_dict()) {
    // Trainable-only checkpoints (save_peft_only) keep buffers and every tensor that trains.
    bool is_param = false, trains = false;
    for (auto& [pk, pv] : model_->named_parameters())
      if (pk == k) {
        is_param = true;
        trains = pv.requires_grad();
      }
    if (cfg_.trainer.save_trainable_only && is_param && !trains) continue;
    t["model." + k] = v;
  }
  t["data.label_mean"] = ops::from_vector<double>(label_mean_, {static_cast<int64_t>(label_mean_.size())});
  t["data.label_std"] = ops::from_vector<double>(label_std_, {static_cast<int64_t>(label_std_.size())});
  nlohmann::json meta = {{"step", step},
                         {"epoch", epoch},
                         {"batch", batch},
                         {"best_val_spearman", best},
                         {"rng_seed", default_generator().seed},
                         {"rng_offset", default_generator().offset},
                         {"trainable_only", cfg_.trainer.save_trainable_only}};
  safetensors::save(path, t, {{"strand", meta.dump()}});
}

void load_checkpoint_weights(nn::Module& model, const std::string& path, std::vector<double>* mean,
                             std::vector<double>* std) {
  auto f = safetensors::load(path);
  nn::StateDict sd;
  for (auto& [k, v] : f.tensors)
    if (k.rfind("model.", 0) == 0) sd[k.substr(6)] = v;
  const bool partial = f.metadata.count("strand") && nlohmann::json::parse(f.metadata.at("strand")).value("trainable_only", false);
  nn::LoadOptions o;
  o.strict = !partial;  // a trainable-only checkpoint needs the base weights already in the model
  nn::LoadReport r = model.load_state_dict(sd, o);
  STRAND_CHECK(r.unexpected.empty() && r.mismatched.empty(), "checkpoint '", path, "' does not fit the model:\n", r.str());
  if (mean) *mean = ops::to_vector<double>(f.tensors.at("data.label_mean"));
  if (std) *std = ops::to_vector<double>(f.tensors.at("data.label_std"));
}

FitResult Trainer::fit(bool resume, int64_t stop_after_steps) {
  fs::create_directories(cfg_.trainer.run_dir);
  const std::string last = (fs::path(cfg_.trainer.run_dir) / "last.safetensors").string();
  const std::string best_path = (fs::path(cfg_.trainer.run_dir) / "best.safetensors").string();
  const std::string csv = (fs::path(cfg_.trainer.run_dir) / "metrics.csv").string();

  manual_seed(cfg_.trainer.seed);
  model_->train();
  std::vector<Tensor> params = model_->trainable_parameters();
  STRAND_CHECK(!params.empty(), "the model has no trainable parameters");
  nn::AdamW opt(params, cfg_.optim.lr, {cfg_.optim.beta1, cfg_.optim.beta2}, cfg_.optim.eps, cfg_.optim.weight_decay);
  nn::Schedule sched = nn::Schedule::constant();
  const int64_t warmup = cfg_.schedule.warmup_steps >= 0
                             ? cfg_.schedule.warmup_steps
                             : static_cast<int64_t>(cfg_.schedule.warmup_ratio * static_cast<double>(total_steps_));
  if (cfg_.schedule.kind == "cosine") sched = nn::Schedule::cosine(warmup, total_steps_);
  else if (cfg_.schedule.kind == "linear") sched = nn::Schedule::linear(warmup, total_steps_);
  nn::LRScheduler scheduler(opt, sched);
  const int world = comm_->size(), rank = comm_->rank();
  const bool lead = rank == 0;  // rank 0 alone prints and writes
  std::unique_ptr<dist::GradReducer> ddp;
  if (world > 1) ddp = std::make_unique<dist::GradReducer>(params, comm_);
  dist::SyncBatchNormScope sync_bn(comm_);

  int64_t step = 0, epoch = 0, batch = 0;
  double best = -2;
  if (resume) {
    STRAND_CHECK(fs::exists(last), "--resume: no checkpoint at '", last, "'");
    auto f = safetensors::load(last);
    load_checkpoint_weights(*model_, last);
    std::map<std::string, Tensor> os, ss;
    for (auto& [k, v] : f.tensors) {
      if (k.rfind("optim.", 0) == 0) os[k.substr(6)] = v;
      if (k.rfind("sched.", 0) == 0) ss[k.substr(6)] = v;
    }
    opt.load_state_dict(os);
    scheduler.load_state_dict(ss);
    auto meta = nlohmann::json::parse(f.metadata.at("strand"));
    step = meta["step"];
    epoch = meta["epoch"];
    batch = meta["batch"];
    best = meta["best_val_spearman"];
    default_generator().seed = meta["rng_seed"];
    default_generator().offset = meta["rng_offset"];
    if (lead) {
      std::printf("strand-train: resumed from %s at step %lld\n", last.c_str(), static_cast<long long>(step));
      // Rows logged after the checkpoint (by the run that was killed) would be logged again: drop them.
      std::ifstream in(csv);
      std::string line, kept;
      for (bool header = true; std::getline(in, line); header = false)
        if (header || std::stoll(line.substr(0, line.find(','))) <= step) kept += line + "\n";
      in.close();
      std::ofstream(csv, std::ios::trunc) << kept;
    }
  } else if (lead) {
    std::ofstream(csv) << "step,epoch,train_loss,lr,val_loss,val_spearman,val_pearson,val_r2\n";
  }
  if (ddp) {
    ddp->broadcast_parameters();
    if (const char* c = std::getenv("STRAND_DDP_CHECK"); c && std::string(c) == "1") ddp->check_parameters_equal();
  }

  auto save_all = [&](const std::string& path) {
    if (!lead) return;
    safetensors::TensorMap extra;  // the optimizer's buffers alias its live state: copy them
    for (auto& [k, v] : opt.state_dict()) extra["optim." + k] = ops::clone(v);
    for (auto& [k, v] : scheduler.state_dict()) extra["sched." + k] = ops::clone(v);
    save_checkpoint(path, step, epoch, batch, best, extra);
  };
  auto validate = [&](double train_loss) {
    double vl = NAN, vs = NAN, vp = NAN, vr = NAN;
    if (valid_ && valid_->size() >= 2) {
      Predictions p = predict(*model_, *valid_, cfg_.data.eval_batch_size, "", comm_.get());
      RegressionMetrics m = regression_metrics(p.preds, p.labels, p.n, p.k);
      vl = RegressionMetrics::mean(m.mse);
      vs = m.mean_spearman();
      vp = m.mean_pearson();
      vr = m.mean_r2();
      if (lead)
        std::printf("validation at step %lld: loss %.5f  spearman %.4f  pearson %.4f  r2 %.4f\n",
                    static_cast<long long>(step), vl, vs, vp, vr);
      if (vs > best) {
        best = vs;
        save_all(best_path);
      }
    }
    if (lead)
      std::ofstream(csv, std::ios::app) << step << ',' << epoch << ',' << train_loss << ',' << opt.lr() << ',' << vl
                                      << ',' << vs << ',' << vp << ',' << vr << '\n';
  };

  FitResult res;
  const auto t0 = std::chrono::steady_clock::now();
  int64_t run_steps = 0;
  std::vector<Tensor> trainable = params;
  double loss_v = NAN;
  while (step < total_steps_) {
    const auto order = dist::shard(epoch_order(epoch), rank, world);
    const int64_t rows = static_cast<int64_t>(order.size());
    for (; batch < steps_per_epoch_ && step < total_steps_; ++batch) {
      if (stop_after_steps >= 0 && run_steps >= stop_after_steps) {  // a simulated kill: nothing is saved
        res.steps = run_steps;
        res.best_val_spearman = best;
        return res;
      }
      std::vector<Sample> samples;
      for (int64_t i = batch * cfg_.data.batch_size; i < std::min(rows, (batch + 1) * cfg_.data.batch_size); ++i)
        samples.push_back(train_.get(order[i]));
      Tensor pred = model_->forward(samples);
      Tensor loss = mse_loss(pred, ops::to(ops::to(labels_tensor(samples, train_.num_labels()), pred.dtype()), pred.device()));
      backward(loss);
      if (ddp) ddp->finish();  // clipping and the optimizer see the same averaged gradients on every rank
      // Clipping as clip_grad_norm_ + step(), with the gradient scaling fused into AdamW's pass.
      const double grad_scale =
          cfg_.trainer.grad_clip > 0 ? nn::clip_coefficient(nn::grad_norm(trainable), cfg_.trainer.grad_clip) : 1.0;
      opt.step(grad_scale);
      opt.zero_grad();
      scheduler.step();
      ++step;
      ++run_steps;
      loss_v = ops::item(loss);
      if (world > 1) {  // the global batch's loss (the mean of equal-sized per-rank means)
        Tensor l = ops::full({1}, loss_v, TensorOptions(DType::f64));
        comm_->all_reduce(l, dist::ReduceOp::avg);
        loss_v = ops::item(l);
      }
      res.losses.push_back(loss_v);
      if (lead && (step % cfg_.trainer.log_interval == 0 || step == total_steps_)) {
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double sps = static_cast<double>(run_steps * cfg_.data.batch_size * world) / std::max(el, 1e-9);
        const double eta = el / static_cast<double>(run_steps) * static_cast<double>(total_steps_ - step);
        // Memory: the peak in use; on a GPU also the peak the caching allocator held from the
        // driver (its cache, and fragmentation, which STRAND_EXPANDABLE_SEGMENTS=1 removes).
        const auto mib = [](int64_t b) { return (b + (int64_t{1} << 19)) >> 20; };
        std::string mem;
        if (pred.is_cuda()) {
          const BlockPoolStats st = cuda_rt::allocator_stats(pred.device().index);
          mem = detail::concat_message(mib(st.peak_allocated_bytes), " MiB (reserved ", mib(st.peak_reserved_bytes),
                                       " MiB)");
        } else {
          mem = detail::concat_message(mib(cpu_allocator_stats().peak_bytes), " MiB");
        }
        std::printf("step %lld/%lld | epoch %lld | loss %.5f | lr %.3e | %.1f samples/s | ETA %s | mem %s\n",
                    static_cast<long long>(step), static_cast<long long>(total_steps_), static_cast<long long>(epoch + 1),
                    loss_v, opt.lr(), sps, fmt_time(eta).c_str(), mem.c_str());
        std::fflush(stdout);
      }
      if (step % cfg_.trainer.val_interval == 0 && step != total_steps_) {
        validate(loss_v);
        model_->train();
        // A killed run resumes from here. The position is the next batch (batch + 1).
        ++batch;
        save_all(last);
        --batch;
      }
    }
    if (batch >= steps_per_epoch_) {
      batch = 0;
      ++epoch;
    }
  }
  validate(loss_v);
  save_all(last);
  res.steps = run_steps;
  res.best_val_spearman = best;
  return res;
}

}  // namespace strand::train
