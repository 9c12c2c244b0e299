#pragma once
// Data parallelism over a Communicator, as PyTorch's DistributedDataParallel under ModelGenerator:
// parameters broadcast from rank 0, gradients all-reduced in ~25 MB buckets as their leaves become
// final during backward, then averaged; a sampler that shards each epoch's order across ranks; and
// SyncBatchNorm through the kernels' batch-norm reducer.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "train/dist/communicator.h"

namespace strand::dist {

// Buckets of parameters, filled in reverse registration order (roughly the order backward makes
// gradients final). A bucket is all-reduced as soon as all its gradients are final and every
// earlier bucket has been started, so every rank starts the same collectives in the same order even
// when some parameters get no gradient (unused heads): those buckets wait for finish(). After the
// first step the buckets are rebuilt with the parameters no rank used placed last, so they stop
// holding the others back. One backward per step; accumulating gradients over several backwards
// is not supported.
class GradReducer {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25ll << 20;
  GradReducer(std::vector<Tensor> params, std::shared_ptr<Communicator> comm,
              int64_t bucket_bytes = kDefaultBucketBytes);
  ~GradReducer();  // the hooks stay on the parameters but do nothing afterwards
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Every rank takes rank 0's values (call before training, after loading a checkpoint).
  void broadcast_parameters();
  // Debug mode: fails on every rank, naming the first parameter that differs from rank 0's.
  void check_parameters_equal();
  // After backward: starts the buckets not yet started, waits for all, and leaves each parameter's
  // gradient the average over ranks (a rank without a gradient counts zeros). A parameter that got
  // no gradient on any rank keeps none, as in a single-process run.
  void finish();
  int64_t num_buckets() const;
  // How many buckets the last step started during backward, before finish(): the overlap achieved.
  int64_t started_in_backward() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// PyTorch's DistributedSampler with drop_last = false: the order is padded by wrapping around to a
// multiple of the world size, and rank r takes positions r, r + world, r + 2 world, ...
std::vector<int64_t> shard(const std::vector<int64_t>& order, int rank, int world);
int64_t shard_size(int64_t n, int world);  // ceil(n / world)

// Every rank's list of strings, in rank order (the lists may differ in length).
std::vector<std::vector<std::string>> all_gather_strings(Communicator& comm, const std::vector<std::string>& mine);

// Installs the communicator as the batch-norm statistics reducer for its lifetime (world size > 1;
// a no-op otherwise), so BatchNorm in training mode normalises over the global batch.
class SyncBatchNormScope {
 public:
  explicit SyncBatchNormScope(std::shared_ptr<Communicator> comm);
  ~SyncBatchNormScope();
  SyncBatchNormScope(const SyncBatchNormScope&) = delete;
  SyncBatchNormScope& operator=(const SyncBatchNormScope&) = delete;

 private:
  bool active_ = false;
};

}  // namespace strand::dist
