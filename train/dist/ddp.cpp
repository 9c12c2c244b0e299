#include "train/dist/ddp.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/ops.h"
#include "tensor/error.h"

namespace strand::dist {

struct GradReducer::State {
  struct Bucket {
    std::vector<size_t> params;   // indices into State::params
    std::vector<int64_t> offsets;  // element offset of each parameter's gradient in buf
    int64_t grad_numel = 0;        // buf = [gradients..., one "has a gradient" count per parameter]
    Tensor buf;
    int64_t pending = 0;           // gradients not yet final this step
    std::unique_ptr<Work> work;
  };
  std::vector<Tensor> params;
  std::vector<size_t> bucket_of;
  std::vector<bool> ready;
  std::vector<Bucket> buckets;
  size_t next = 0;  // the next bucket to start: buckets start strictly in order on every rank
  std::shared_ptr<Communicator> comm;
  int64_t bucket_bytes = 0;
  bool rebuilt = false;
  int64_t started_in_backward = 0, last_started_in_backward = 0;

  // Buckets over the parameters in `order` (the order their gradients are expected to be final).
  void build(const std::vector<size_t>& order) {
    buckets.clear();
    int64_t bytes = 0;
    for (size_t r : order) {
      const Tensor& p = params[r];
      const bool fresh = buckets.empty() || bytes >= bucket_bytes ||
                         params[buckets.back().params.front()].dtype() != p.dtype() ||
                         params[buckets.back().params.front()].device() != p.device();
      if (fresh) {
        buckets.emplace_back();
        bytes = 0;
      }
      Bucket& k = buckets.back();
      k.params.push_back(r);
      k.offsets.push_back(k.grad_numel);
      k.grad_numel += p.numel();
      bytes += p.numel() * static_cast<int64_t>(p.element_size());
      bucket_of[r] = buckets.size() - 1;
    }
    for (Bucket& k : buckets) {
      const Tensor& p0 = params[k.params.front()];
      k.buf = ops::zeros({k.grad_numel + static_cast<int64_t>(k.params.size())}, TensorOptions(p0.dtype(), p0.device()));
      k.pending = static_cast<int64_t>(k.params.size());
    }
  }

  void start(size_t b) {
    Bucket& k = buckets[b];
    for (size_t j = 0; j < k.params.size(); ++j) {
      const Tensor& p = params[k.params[j]];
      const Tensor g = p.grad();
      Tensor seg = ops::narrow(k.buf, 0, k.offsets[j], p.numel());
      if (g.defined()) ops::copy_(seg, ops::reshape(g, {p.numel()}));
      else ops::zero_(seg);
      ops::fill_(ops::narrow(k.buf, 0, k.grad_numel + static_cast<int64_t>(j), 1), g.defined() ? 1.0 : 0.0);
    }
    k.work = comm->all_reduce_async(k.buf, ReduceOp::sum);
  }
  void on_final(size_t i) {
    if (ready[i]) return;  // a second backward in the same step: the bucket already has the first
    ready[i] = true;
    --buckets[bucket_of[i]].pending;
    while (next < buckets.size() && buckets[next].pending == 0) {
      start(next++);
      ++started_in_backward;
    }
  }
};

GradReducer::GradReducer(std::vector<Tensor> params, std::shared_ptr<Communicator> comm, int64_t bucket_bytes)
    : state_(std::make_shared<State>()) {
  STRAND_CHECK(comm, "GradReducer: no communicator");
  STRAND_CHECK(bucket_bytes > 0, "GradReducer: bucket_bytes must be positive, got ", bucket_bytes);
  State& s = *state_;
  s.comm = std::move(comm);
  s.params = std::move(params);
  s.bucket_of.assign(s.params.size(), 0);
  s.ready.assign(s.params.size(), false);
  s.bucket_bytes = bucket_bytes;
  // Reverse registration order: the last layers' gradients are final first.
  std::vector<size_t> order;
  for (size_t r = s.params.size(); r-- > 0;) {
    const Tensor& p = s.params[r];
    STRAND_CHECK(p.requires_grad() && p.is_leaf(), "GradReducer: parameter ", r, " (", p.str(),
                 ") is not a trainable leaf");
    order.push_back(r);
  }
  s.build(order);
  std::weak_ptr<State> weak = state_;
  for (size_t i = 0; i < s.params.size(); ++i)
    s.params[i].register_hook([weak, i](const Tensor&) {
      if (auto st = weak.lock()) st->on_final(i);
    });
}

GradReducer::~GradReducer() {
  // A step abandoned by an exception may leave collectives in flight: let them complete.
  for (State::Bucket& k : state_->buckets)
    if (k.work) k.work.reset();
}

int64_t GradReducer::num_buckets() const { return static_cast<int64_t>(state_->buckets.size()); }
int64_t GradReducer::started_in_backward() const { return state_->last_started_in_backward; }

void GradReducer::broadcast_parameters() {
  for (const Tensor& p : state_->params) {
    Tensor c = ops::contiguous(p);
    state_->comm->broadcast(c, 0);
    if (!c.is_same(p)) ops::copy_(p, c);
  }
}

void GradReducer::check_parameters_equal() {
  Communicator& comm = *state_->comm;
  int64_t first_bad = -1;
  for (size_t i = 0; i < state_->params.size(); ++i) {
    Tensor mine = ops::clone(state_->params[i]);
    Tensor root = ops::clone(mine);
    comm.broadcast(root, 0);
    Tensor a = ops::to(mine, Device::cpu()), b = ops::to(root, Device::cpu());
    if (first_bad < 0 && std::memcmp(a.raw_data(), b.raw_data(), a.numel() * a.element_size()) != 0)
      first_bad = static_cast<int64_t>(i);
  }
  // Agree on the verdict so that every rank fails together instead of some waiting on the others.
  Tensor flag = ops::full({1}, first_bad >= 0 ? 1.0 : 0.0, TensorOptions(DType::i64));
  comm.all_reduce(flag, ReduceOp::sum);
  const int64_t bad_ranks = static_cast<int64_t>(ops::item(flag));
  STRAND_CHECK(bad_ranks == 0, "DDP: parameters differ from rank 0's on ", bad_ranks, " rank(s)",
               first_bad >= 0 ? "; on this rank first at parameter " + std::to_string(first_bad) + " (" +
                                    state_->params[first_bad].str() + ")"
                              : std::string());
}

void GradReducer::finish() {
  State& s = *state_;
  while (s.next < s.buckets.size()) s.start(s.next++);
  const double inv_world = 1.0 / static_cast<double>(s.comm->size());
  std::vector<size_t> used, unused;  // by the all-reduced counts: the same on every rank
  for (State::Bucket& k : s.buckets) {
    k.work->wait();
    k.work.reset();
    Tensor counts = ops::to(ops::narrow(k.buf, 0, k.grad_numel, static_cast<int64_t>(k.params.size())), Device::cpu());
    const std::vector<double> has = ops::to_vector<double>(counts);
    for (size_t j = 0; j < k.params.size(); ++j) {
      const Tensor& p = s.params[k.params[j]];
      (has[j] == 0 ? unused : used).push_back(k.params[j]);
      if (has[j] == 0) continue;  // no rank produced a gradient: keep none, as one process would
      Tensor avg = ops::mul(ops::reshape(ops::narrow(k.buf, 0, k.offsets[j], p.numel()), p.sizes()), inv_world);
      const Tensor g = p.grad();
      if (g.defined()) ops::copy_(g, avg);
      else p.set_grad(ops::contiguous(avg));
    }
    k.pending = static_cast<int64_t>(k.params.size());
  }
  s.ready.assign(s.params.size(), false);
  s.next = 0;
  s.last_started_in_backward = s.started_in_backward;
  s.started_in_backward = 0;
  // After the first step, as PyTorch's DDP rebuilds its buckets: parameters no rank used (Enformer's
  // heads) go last, so they no longer hold back every later bucket until finish(). Decided from the
  // all-reduced counts, so every rank rebuilds identically.
  if (!s.rebuilt) {
    s.rebuilt = true;
    if (!unused.empty()) {
      used.insert(used.end(), unused.begin(), unused.end());
      s.build(used);
    }
  }
}

std::vector<int64_t> shard(const std::vector<int64_t>& order, int rank, int world) {
  STRAND_CHECK(world >= 1 && rank >= 0 && rank < world, "shard: rank ", rank, " is not in a world of size ", world);
  const int64_t n = static_cast<int64_t>(order.size());
  std::vector<int64_t> out;
  if (n == 0) return out;
  const int64_t total = shard_size(n, world) * world;
  for (int64_t p = rank; p < total; p += world) out.push_back(order[static_cast<size_t>(p % n)]);
  return out;
}
int64_t shard_size(int64_t n, int world) { return (n + world - 1) / world; }

std::vector<std::vector<std::string>> all_gather_strings(Communicator& comm, const std::vector<std::string>& mine) {
  // One byte buffer per rank: the strings, each followed by a NUL, padded to the longest buffer.
  std::vector<uint8_t> bytes;
  for (const std::string& m : mine) {
    bytes.insert(bytes.end(), m.begin(), m.end());
    bytes.push_back(0);
  }
  Tensor len = ops::full({1}, static_cast<double>(bytes.size()), TensorOptions(DType::i64));
  const std::vector<int64_t> lens = ops::to_vector<int64_t>(comm.all_gather(len));
  int64_t longest = 1;
  for (int64_t l : lens) longest = std::max(longest, l);
  Tensor buf = ops::zeros({longest}, TensorOptions(DType::u8));
  std::memcpy(buf.raw_data(), bytes.data(), bytes.size());
  Tensor all = comm.all_gather(buf);
  const uint8_t* p = static_cast<const uint8_t*>(all.raw_data());
  std::vector<std::vector<std::string>> out(static_cast<size_t>(comm.size()));
  for (int r = 0; r < comm.size(); ++r) {
    const char* b = reinterpret_cast<const char*>(p + r * longest);
    for (int64_t i = 0; i < lens[r];) {
      std::string s(b + i);
      i += static_cast<int64_t>(s.size()) + 1;
      out[r].push_back(std::move(s));
    }
  }
  return out;
}

SyncBatchNormScope::SyncBatchNormScope(std::shared_ptr<Communicator> comm) {
  if (!comm || comm->size() <= 1) return;
  active_ = true;
  ops::set_batch_norm_reducer([comm](std::vector<double>& buf) {
    Tensor t = ops::from_vector<double>(buf, {static_cast<int64_t>(buf.size())});
    comm->all_reduce(t, ReduceOp::sum);
    std::memcpy(buf.data(), t.raw_data(), buf.size() * sizeof(double));
  });
}
SyncBatchNormScope::~SyncBatchNormScope() {
  if (active_) ops::set_batch_norm_reducer({});
}

}  // namespace strand::dist
