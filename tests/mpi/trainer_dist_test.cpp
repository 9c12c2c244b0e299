// Data-parallel training through the Trainer (the strand-train path): the distributed sampler,
// prediction gathering without the padding duplicates, a W-rank run with per-rank batch 1 equal to
// a 1-process run with batch W (losses, final parameters, best validation Spearman), rank 0 alone
// writing, every rank resuming; an Enformer with BatchNorm in training mode under DDP + SyncBatchNorm;
// and a failing rank bringing the job down.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "autograd/engine.h"
#include "models/enformer/enformer.h"
#include "nn/clip_grad.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "tests/test_util.h"
#include "train/dist/ddp.h"
#include "train/synth.h"
#include "train/trainer.h"

extern bool g_run_failure_test;

namespace strand::train {
namespace {

namespace fs = std::filesystem;
using dist::world;

struct FeatureModel : TaskModel {
  std::shared_ptr<nn::Linear> l1 = std::make_shared<nn::Linear>(kSynthFeatures, 16), l2;
  explicit FeatureModel(int k) : TaskModel("FeatureModel") {
    l2 = std::make_shared<nn::Linear>(16, k);
    register_module("l1", l1);
    register_module("l2", l2);
  }
  Tensor forward(const std::vector<Sample>& batch) override {
    std::vector<float> f;
    for (const Sample& s : batch)
      for (double v : synth_features(s.dna, s.rna, s.protein)) f.push_back(static_cast<float>(v));
    Tensor x = ops::from_vector<float>(f, {static_cast<int64_t>(batch.size()), kSynthFeatures});
    return (*l2)(tanh((*l1)(x)));
  }
};

// One data directory per world size, written by rank 0 while the others wait.
struct Data {
  fs::path dir;
  Config cfg;
  explicit Data(const std::string& name) {
    auto comm = world();
    dir = fs::path(STRAND_BINARY_DIR) / ("mpi_" + name + "_np" + std::to_string(comm->size()));
    // A failure on rank 0 must not leave the others waiting: the verdict is broadcast.
    std::string err;
    if (comm->rank() == 0) try {
      fs::remove_all(dir);
      SynthConfig s;
      s.n_train = 12;
      s.n_valid = 7;  // odd: the sampler pads, gathering must drop the duplicate
      s.n_test = 4;
      s.num_labels = 3;
      s.dna_length = 256;
      s.seed = 3;
      write_synthetic_dataset((dir / "data").string(), s);
    } catch (const std::exception& e) {
      err = e.what();
    }
    Tensor ok = ops::full({1}, err.empty() ? 1.0 : 0.0, TensorOptions(DType::i64));
    comm->broadcast(ok, 0);
    STRAND_CHECK(ops::item(ok) == 1, "rank 0 could not write the test data: ", err);
    cfg.data.dir = (dir / "data").string();
    cfg.data.eval_batch_size = 3;
    cfg.data.num_labels = 3;
    cfg.optim.lr = 3e-2;
    cfg.trainer.epochs = 2;
    cfg.trainer.val_interval = 4;
    cfg.trainer.log_interval = 1000;
    cfg.trainer.grad_clip = 0.5;
    cfg.trainer.seed = 11;
  }
  struct Opened {
    std::unique_ptr<SplitData> train, valid;
    std::vector<double> mean, sd;
  };
  Opened open() const {
    Opened o;
    SplitFiles f = find_split_files(cfg.data.dir);
    o.train = std::make_unique<SplitData>(f.train, 3);
    o.valid = std::make_unique<SplitData>(f.validation, 3);
    label_statistics({o.train.get(), o.valid.get()}, o.mean, o.sd);
    o.train->set_normalisation(o.mean, o.sd);
    o.valid->set_normalisation(o.mean, o.sd);
    return o;
  }
  // comm: the world the Trainer sees (the process-wide one, swapped for the call).
  FitResult run(std::shared_ptr<dist::Communicator> comm, int64_t batch, const std::string& run_dir, bool resume,
                int64_t stop, std::shared_ptr<FeatureModel>* out) {
    auto saved = world();
    dist::set_world(comm);
    Config c = cfg;
    c.data.batch_size = batch;
    c.trainer.run_dir = (dir / run_dir).string();
    Opened o = open();
    manual_seed(99);
    auto model = std::make_shared<FeatureModel>(3);
    FitResult r;
    try {
      Trainer t(c, model, *o.train, o.valid.get(), o.mean, o.sd);
      r = t.fit(resume, stop);
    } catch (...) {
      dist::set_world(saved);
      throw;
    }
    dist::set_world(saved);
    if (out) *out = model;
    return r;
  }
};

TEST(Sampler, ShardsPadByWrappingAndCoverEveryRow) {
  std::vector<int64_t> order = {4, 0, 3, 1, 2};
  EXPECT_EQ(dist::shard(order, 0, 2), (std::vector<int64_t>{4, 3, 2}));
  EXPECT_EQ(dist::shard(order, 1, 2), (std::vector<int64_t>{0, 1, 4}));  // padded with the first row
  EXPECT_EQ(dist::shard(order, 0, 1), order);
  EXPECT_EQ(dist::shard(order, 2, 3), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(dist::shard_size(5, 3), 2);
  EXPECT_TRUE(test::throws_with([&] { dist::shard(order, 2, 2); }, {"rank 2", "size 2"}));
}

TEST(Sampler, GatheredPredictionsEqualOneProcessExactly) {
  Data d("gather");
  auto o = d.open();
  manual_seed(99);
  FeatureModel m(3);
  Predictions local = predict(m, *o.valid, 3);
  Predictions all = predict(m, *o.valid, 3, "", world().get());
  EXPECT_EQ(all.n, 7);
  EXPECT_EQ(all.ids, local.ids);
  EXPECT_EQ(all.labels, local.labels);
  ASSERT_EQ(all.preds.size(), local.preds.size());
  // Same rows through the same model; batches differ in size, so allow float rounding only.
  for (size_t i = 0; i < all.preds.size(); ++i) EXPECT_NEAR(all.preds[i], local.preds[i], 1e-6);
  EXPECT_EQ(std::set<std::string>(all.ids.begin(), all.ids.end()).size(), 7u) << "a padding duplicate was kept";
}

TEST(Sampler, TrainerPerRankBatch1EqualsOneProcessBatchW) {
  auto comm = world();
  const int W = comm->size();
  Data d("trainer");
  std::shared_ptr<FeatureModel> ref_model, ddp_model;
  FitResult ref = d.run(dist::make_local_communicator(), W, "ref_rank" + std::to_string(comm->rank()), false, -1,
                        &ref_model);
  FitResult got = d.run(comm, 1, "ddp", false, -1, &ddp_model);
  ASSERT_EQ(got.losses.size(), ref.losses.size());
  EXPECT_EQ(got.steps, 12 / W * 2);
  for (size_t i = 0; i < got.losses.size(); ++i) EXPECT_NEAR(got.losses[i], ref.losses[i], 1e-5) << "step " << i;
  EXPECT_NEAR(got.best_val_spearman, ref.best_val_spearman, 1e-5);
  auto a = ddp_model->parameters(), b = ref_model->parameters();
  for (size_t p = 0; p < a.size(); ++p)
    EXPECT_TRUE(test::allclose(a[p], b[p], 1e-5, 0)) << "parameter " << p;
  // Rank 0 alone writes; every rank can resume from what it wrote (a shared run directory).
  comm->barrier();
  EXPECT_TRUE(fs::exists(d.dir / "ddp" / "last.safetensors"));
  std::shared_ptr<FeatureModel> resumed;
  FitResult killed = d.run(comm, 1, "killed", false, 5, nullptr);
  comm->barrier();
  FitResult rest = d.run(comm, 1, "killed", true, -1, &resumed);
  ASSERT_EQ(rest.losses.size(), got.losses.size() - 4);  // resumes from the step-4 checkpoint
  for (size_t i = 0; i < rest.losses.size(); ++i) EXPECT_NEAR(rest.losses[i], got.losses[i + 4], 1e-6);
  EXPECT_EQ(ops::to_vector<float>(resumed->l1->weight), ops::to_vector<float>(ddp_model->l1->weight));
  (void)killed;
}

TEST(SyncBatchNorm, EnformerTrainModeDdpEqualsGlobalBatch) {
  // A tiny Enformer (BatchNorm in every conv block), dropout off, train mode: W ranks with one
  // sequence each equal one process with all W sequences, over three AdamW steps.
  auto comm = world();
  const int W = comm->size();
  models::enformer::EnformerConfig c;
  c.dim = 24;  // dim / heads divisible by 6 (relative-position features)
  c.depth = 1;
  c.heads = 2;
  c.attn_dim_key = 4;
  c.num_downsamples = 3;
  c.dim_divisible_by = 4;
  c.target_length = -1;
  c.output_heads = {{"human", 3}};
  const int64_t L = 64;
  std::vector<std::string> seqs;
  for (int i = 0; i < 3 * W; ++i) {
    std::string s;
    for (int64_t j = 0; j < L; ++j) s += "ACGT"[(i * 7 + j * j * 3 + j) % 4];
    seqs.push_back(s);
  }
  auto run = [&](std::shared_ptr<dist::Communicator> cm) {
    manual_seed(21);
    models::enformer::Enformer m(c);
    m.set_dropout(0, 0, 0);
    m.train();
    auto params = m.trainable_parameters();
    std::unique_ptr<dist::GradReducer> ddp;
    dist::SyncBatchNormScope sync(cm);
    if (cm->size() > 1) {
      ddp = std::make_unique<dist::GradReducer>(params, cm, 4096);
      ddp->broadcast_parameters();
    }
    // SGD: Adam would turn gradients of pure rounding noise (biases that a following BatchNorm
    // cancels) into lr-sized steps and hide what is compared; gradients are compared directly too.
    nn::SGD opt(params, 0.05);
    std::vector<double> losses;
    std::vector<Tensor> first_grads;
    for (int s = 0; s < 3; ++s) {
      std::vector<std::string> batch;
      const int per = W / cm->size();
      for (int i = 0; i < per; ++i) batch.push_back(seqs[s * W + cm->rank() * per + i]);
      Tensor emb = m.embed(batch);
      Tensor loss = mean(mul(emb, emb));
      backward(loss);
      if (ddp) ddp->finish();  // _heads.* get no gradient: excluded without deadlock
      if (s == 0)
        for (const Tensor& p : params) first_grads.push_back(p.grad().defined() ? ops::clone(p.grad()) : Tensor());
      nn::clip_grad_norm_(params, 1.0);
      opt.step();
      opt.zero_grad();
      Tensor l = ops::full({1}, ops::item(loss), TensorOptions(DType::f64));
      cm->all_reduce(l, dist::ReduceOp::avg);
      losses.push_back(ops::item(l));
    }
    std::vector<std::pair<std::string, Tensor>> out;
    for (auto& [k, v] : m.state_dict()) out.emplace_back(k, ops::clone(v));
    return std::make_tuple(losses, out, first_grads);
  };
  auto [ref_l, ref_p, ref_g] = run(dist::make_local_communicator());
  auto [got_l, got_p, got_g] = run(comm);
  for (size_t i = 0; i < ref_l.size(); ++i) EXPECT_NEAR(got_l[i], ref_l[i], 1e-5) << "step " << i;
  ASSERT_EQ(got_g.size(), ref_g.size());
  int64_t without_grad = 0;
  for (size_t i = 0; i < got_g.size(); ++i) {
    ASSERT_EQ(got_g[i].defined(), ref_g[i].defined()) << "parameter " << i;
    if (!got_g[i].defined()) {
      ++without_grad;
      continue;
    }
    EXPECT_TRUE(test::allclose(ops::to(got_g[i], DType::f64), ops::to(ref_g[i], DType::f64), 1e-5, 1e-4))
        << "gradient of parameter " << i;
  }
  EXPECT_EQ(without_grad, 2) << "the human head's weight and bias get no gradient";
  ASSERT_EQ(got_p.size(), ref_p.size());
  for (size_t i = 0; i < got_p.size(); ++i)
    EXPECT_TRUE(test::allclose(ops::to(got_p[i].second, DType::f64), ops::to(ref_p[i].second, DType::f64), 1e-5, 1e-5))
        << got_p[i].first;
}

TEST(Failure, FailingRankBringsTheJobDown) {
  // Run only by the mpi.failing_rank_aborts entry (which expects the job to die): rank 1 fails
  // (as with a bad file) while rank 0 waits in a collective that would otherwise never complete.
  if (!g_run_failure_test) GTEST_SKIP() << "run with --strand-run-failure-test";
  auto comm = world();
  dist::run_or_abort("mpi_tests", *comm, [&]() -> int {
    if (comm->rank() == 1) STRAND_CHECK(false, "simulated failure on rank ", comm->rank());
    comm->barrier();
    return 0;
  });
  if (comm->size() == 1) SUCCEED();
}

}  // namespace
}  // namespace strand::train
