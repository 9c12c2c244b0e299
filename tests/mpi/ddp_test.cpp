// DDP: a W-rank run with per-rank batch 1 equals a 1-process run with batch W (losses and final
// parameters within 1e-5), for an MLP, an MLP with SyncBatchNorm in training mode, and with a
// parameter that never gets a gradient. Each rank computes the 1-process reference itself.
#include <gtest/gtest.h>

#include "autograd/engine.h"
#include "autograd/functional.h"
#include "nn/clip_grad.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "tests/test_util.h"
#include "train/dist/ddp.h"

namespace strand::dist {
namespace {

struct Mlp : nn::Module {
  std::shared_ptr<nn::Linear> l1, l2, unused;
  std::shared_ptr<nn::BatchNorm1d> bn;
  Mlp(bool with_bn) : nn::Module("Mlp") {
    manual_seed(5);
    // Before a BatchNorm a bias has no effect and a gradient of pure rounding noise, which Adam
    // would amplify into lr-sized steps: leave it out, as real networks do.
    l1 = std::make_shared<nn::Linear>(6, 9, !with_bn);
    l2 = std::make_shared<nn::Linear>(9, 3);
    unused = std::make_shared<nn::Linear>(9, 2);  // like Enformer's unused heads: never in the graph
    register_module("l1", l1);
    if (with_bn) {
      bn = std::make_shared<nn::BatchNorm1d>(9);
      register_module("bn", bn);
    }
    register_module("unused", unused);
    register_module("l2", l2);
  }
  Tensor forward(const Tensor& x) {
    Tensor h = (*l1)(x);
    if (bn) h = (*bn)(h);
    return (*l2)(tanh(h));
  }
};

constexpr int kSteps = 6;

Tensor rows(int64_t first, int64_t count, int64_t cols, uint64_t seed) {
  Tensor all = test::uniform({kSteps * 8 * 3, cols}, -2, 2, seed, DType::f32);
  return ops::contiguous(ops::narrow(all, 0, first, count));
}

struct RunResult {
  std::vector<double> losses;
  std::vector<std::vector<float>> params;
  std::vector<float> running_mean;
};

// world == nullptr: the 1-process reference over batches of `global` rows.
RunResult train(bool with_bn, int global, std::shared_ptr<Communicator> comm, int64_t bucket_bytes) {
  Mlp m(with_bn);
  m.train();
  std::vector<Tensor> params = m.trainable_parameters();
  std::unique_ptr<GradReducer> ddp;
  std::unique_ptr<SyncBatchNormScope> sync;
  const int rank = comm ? comm->rank() : 0, W = comm ? comm->size() : 1;
  if (comm) {
    // Ranks other than 0 start from different weights: the broadcast must fix that.
    if (rank != 0) {
      NoGradGuard ng;
      for (const Tensor& p : params) ops::copy_(p, ops::add(p, 0.5));
    }
    ddp = std::make_unique<GradReducer>(params, comm, bucket_bytes);
    ddp->broadcast_parameters();
    ddp->check_parameters_equal();
    sync = std::make_unique<SyncBatchNormScope>(comm);
  }
  nn::AdamW opt(params, 1e-2, {0.9, 0.999}, 1e-8, 0.01);
  RunResult r;
  for (int s = 0; s < kSteps; ++s) {
    const int64_t first = comm ? s * global + rank * (global / W) : s * global;
    const int64_t count = comm ? global / W : global;
    // With BatchNorm a sample is 3 rows (as a sequence is L positions for Enformer's BatchNorm):
    // normalising 2 values only would give outputs of +-1 whatever the weights, and gradients of
    // pure rounding noise.
    const int64_t per = with_bn ? 3 : 1;
    Tensor pred = m.forward(rows(first * per, count * per, 6, 1));
    Tensor loss = mse_loss(pred, rows(first * per, count * per, 3, 2));
    backward(loss);
    if (ddp) ddp->finish();
    nn::clip_grad_norm_(params, 0.5);
    opt.step();
    opt.zero_grad();
    Tensor l = ops::full({1}, ops::item(loss), TensorOptions(DType::f64));
    if (comm) comm->all_reduce(l, ReduceOp::avg);
    r.losses.push_back(ops::item(l));
  }
  for (const Tensor& p : m.parameters()) r.params.push_back(ops::to_vector<float>(p));
  if (with_bn) r.running_mean = ops::to_vector<float>(m.bn->running_mean);
  EXPECT_FALSE(m.unused->weight.grad().defined()) << "a parameter no rank used got a gradient";
  return r;
}

void expect_same(const RunResult& a, const RunResult& b) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) EXPECT_NEAR(a.losses[i], b.losses[i], 1e-5) << "step " << i;
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t p = 0; p < a.params.size(); ++p)
    for (size_t i = 0; i < a.params[p].size(); ++i)
      ASSERT_NEAR(a.params[p][i], b.params[p][i], 1e-5) << "parameter " << p << " element " << i;
  ASSERT_EQ(a.running_mean.size(), b.running_mean.size());
  for (size_t i = 0; i < a.running_mean.size(); ++i) EXPECT_NEAR(a.running_mean[i], b.running_mean[i], 1e-5);
}

TEST(Ddp, PerRankBatch1EqualsOneProcessWithGlobalBatch) {
  auto comm = world();
  const int W = comm->size();
  RunResult ref = train(false, W, nullptr, 0);
  RunResult ddp = train(false, W, comm, GradReducer::kDefaultBucketBytes);
  expect_same(ddp, ref);
}

TEST(Ddp, SmallBucketsGiveTheSameResult) {
  // 64-byte buckets: one per parameter, started one by one during backward.
  auto comm = world();
  expect_same(train(false, 2 * comm->size(), comm, 64), train(false, 2 * comm->size(), nullptr, 0));
}

TEST(Ddp, SyncBatchNormInTrainingMatchesGlobalBatch) {
  // Per-rank batch 1: local statistics would be undefined (one row), global ones are those of W rows.
  auto comm = world();
  if (comm->size() == 1) GTEST_SKIP() << "one row per channel cannot train BatchNorm without a second rank";
  expect_same(train(true, comm->size(), comm, 256), train(true, comm->size(), nullptr, 0));
}

TEST(Ddp, SyncBatchNormPerRankBatch2) {
  auto comm = world();
  expect_same(train(true, 2 * comm->size(), comm, 1 << 20), train(true, 2 * comm->size(), nullptr, 0));
}

TEST(Ddp, BucketsFollowSizeLimit) {
  auto comm = world();
  Mlp m(true);
  EXPECT_EQ(GradReducer(m.trainable_parameters(), comm).num_buckets(), 1);
  EXPECT_EQ(GradReducer(m.trainable_parameters(), comm, 1).num_buckets(),
            static_cast<int64_t>(m.trainable_parameters().size()));
}

TEST(Ddp, UnusedParametersStopBlockingOverlapAfterTheFirstStep) {
  // One bucket per parameter. "unused" sits between l1 and l2, so in the first step its buckets
  // hold back every bucket after them (l1's) until finish(); from the second step on they are last.
  auto comm = world();
  Mlp m(false);
  auto params = m.trainable_parameters();  // l1.w, l1.b, unused.w, unused.b, l2.w, l2.b
  GradReducer ddp(params, comm, 1);
  std::vector<int64_t> early;
  for (int s = 0; s < 3; ++s) {
    backward(mse_loss(m.forward(rows(s, 2, 6, 1)), rows(s, 2, 3, 2)));
    ddp.finish();
    early.push_back(ddp.started_in_backward());
    for (const Tensor& p : params) p.set_grad(Tensor());
  }
  EXPECT_EQ(early[0], 2);  // l2's two buckets; unused.b blocks the rest
  EXPECT_EQ(early[1], 4);  // l2 and l1; the unused pair goes at the end
  EXPECT_EQ(early[2], 4);
  EXPECT_FALSE(m.unused->weight.grad().defined());
}

TEST(Ddp, CheckParametersEqualFailsOnEveryRank) {
  auto comm = world();
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  Mlp m(false);
  GradReducer ddp(m.trainable_parameters(), comm);
  if (comm->rank() == 1) {
    NoGradGuard ng;
    ops::copy_(m.l2->bias, ops::add(m.l2->bias, 1.0));
  }
  EXPECT_TRUE(test::throws_with([&] { ddp.check_parameters_equal(); }, {"differ from rank 0", "1 rank"}));
  ddp.broadcast_parameters();
  ddp.check_parameters_equal();
}

}  // namespace
}  // namespace strand::dist
