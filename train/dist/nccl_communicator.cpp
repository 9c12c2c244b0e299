// The NCCL backend: CUDA tensors, one GPU per local rank, bootstrapped over MPI (rank 0 creates the
// unique id, MPI_Bcast shares it, ncclCommInitRank joins). Compiled only when CMake found NCCL and
// MPI and the CUDA backend is on. Collectives run on the communicator's own (high-priority, pooled)
// stream, ordered after the work already queued on the caller's current stream by an event, so
// all-reduces overlap the rest of backward; wait() makes that stream wait on the result without
// blocking the host. The tensor is recorded on the communicator's stream (tensor/stream.h), so
// dropping it before wait() cannot hand its memory to new work while NCCL still uses it.
#ifdef STRAND_WITH_NCCL
#include <cuda_runtime.h>
#include "train/dist/mpi_include.h"
#include <nccl.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/ops.h"
#include "tensor/error.h"
#include "tensor/stream.h"
#include "train/dist/communicator.h"

#define STRAND_NCCL_CUDA_CHECK(stmt)                                                          \
  do {                                                                                        \
    cudaError_t err_ = (stmt);                                                                \
    STRAND_CHECK(err_ == cudaSuccess, "CUDA error ", cudaGetErrorString(err_), " in `", #stmt, \
                 "` at ", __FILE__, ":", __LINE__);                                           \
  } while (0)
#define NCCL_CHECK(stmt)                                                                          \
  do {                                                                                            \
    ncclResult_t res_ = (stmt);                                                                   \
    STRAND_CHECK(res_ == ncclSuccess, "NCCL error ", ncclGetErrorString(res_), " in `", #stmt,     \
                 "` at ", __FILE__, ":", __LINE__);                                               \
  } while (0)

namespace strand::dist {

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i64: return ncclInt64;
    case DType::i32: return ncclInt32;
    case DType::u8:
    case DType::b8: return ncclUint8;
  }
  return ncclUint8;
}

void check_cuda_contiguous(const Tensor& t, const char* op) {
  STRAND_CHECK(t.defined(), op, ": undefined tensor");
  STRAND_CHECK(t.device().is_cuda(), op, ": the NCCL backend takes CUDA tensors, got ", t.str(),
               " (CPU tensors use the MPI backend)");
  STRAND_CHECK(t.is_contiguous(), op, ": tensor must be contiguous, got ", t.str());
}

// A collective queued on the communicator's stream; `consumer` is the stream that was current
// when it was issued, which is the one wait() orders after it (torch's Work.wait() uses the stream
// current at the wait; DDP issues and waits on the same one).
class NcclWork : public Work {
 public:
  NcclWork(Event done, Stream consumer) : done_(std::move(done)), consumer_(consumer) {}
  void wait() override {
    if (waited_) return;
    done_.wait(consumer_);
    waited_ = true;
  }
  ~NcclWork() override {
    if (waited_) return;
    try {
      done_.wait(consumer_);  // nothing queued later may overtake it, waited or not
    } catch (...) {
      // after a CUDA or NCCL error (a step abandoned by an exception): the original error stands
    }
  }

 private:
  Event done_;
  Stream consumer_;
  bool waited_ = false;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator() {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      std::atexit([] {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
      });
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    int devices = 0;
    STRAND_NCCL_CUDA_CHECK(cudaGetDeviceCount(&devices));
    STRAND_CHECK(devices > 0, "NCCL backend: rank ", rank_, " sees no CUDA device");
    // One GPU per local rank; CUDA_VISIBLE_DEVICES narrows the choice (README).
    device_ = env_local_rank() % devices;
    STRAND_NCCL_CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id;
    if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    stream_ = stream_from_pool(Device::cuda(device_), /*high_priority=*/true);
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  // Host tensors (the trainer's loss, evaluation's predictions, SyncBatchNorm's per-channel sums)
  // go through a device copy: NCCL moves device memory only.
  void all_reduce(const Tensor& t, ReduceOp op) override {
    if (t.defined() && t.device().is_cpu()) {
      Tensor d = on_device(t);
      all_reduce(d, op);
      ops::copy_(t, d);
      return;
    }
    all_reduce_async(t, op)->wait();
    compute().synchronize();
  }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    if (t.defined() && t.device().is_cpu()) {  // staged and finished here; the returned work is done
      all_reduce(t, op);
      return std::make_unique<NcclWork>(Event(), compute());  // never recorded: complete
    }
    check_cuda_contiguous(t, "all_reduce");
    const DType dt = t.dtype();
    STRAND_CHECK(op == ReduceOp::sum || is_floating(dt), "all_reduce: avg needs a floating dtype, got ",
                 dtype_name(dt));
    const ncclRedOp_t nop = dt == DType::b8 ? ncclMax : op == ReduceOp::avg ? ncclAvg : ncclSum;
    after_compute(t);
    NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(dt), nop, comm_,
                             raw_stream()));
    Event done;
    done.record(stream_);
    return std::make_unique<NcclWork>(std::move(done), compute());
  }

  void broadcast(const Tensor& t, int root) override {
    if (t.defined() && t.device().is_cpu()) {
      Tensor d = on_device(t);
      broadcast(d, root);
      ops::copy_(t, d);
      return;
    }
    check_cuda_contiguous(t, "broadcast");
    STRAND_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not a rank of a world of size ", size_);
    after_compute(t);
    NCCL_CHECK(ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root,
                             comm_, raw_stream()));
    stream_.synchronize();
  }

  Tensor all_gather(const Tensor& t_in) override {
    STRAND_CHECK(t_in.defined(), "all_gather: undefined tensor");
    if (t_in.device().is_cpu()) return ops::to(all_gather(on_device(t_in)), Device::cpu());
    Tensor t = ops::contiguous(t_in);
    // Different element counts would gather garbage: compare them over MPI first.
    int64_t n = t.numel(), lo = 0, hi = 0;
    MPI_Allreduce(&n, &lo, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&n, &hi, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
    STRAND_CHECK(lo == hi, "all_gather: ranks hold different numbers of elements (", lo, " to ", hi,
                 "); this rank has ", t.str());
    Shape s = t.sizes();
    s.insert(s.begin(), size_);
    Tensor out = ops::empty(s, TensorOptions(t.dtype(), t.device()));
    after_compute(t);
    NCCL_CHECK(ncclAllGather(t.raw_data(), out.raw_data(), static_cast<size_t>(n), nccl_type(t.dtype()), comm_,
                             raw_stream()));
    stream_.synchronize();
    return out;
  }

  void barrier() override {
    compute().synchronize();
    MPI_Barrier(MPI_COMM_WORLD);
  }

  [[noreturn]] void abort(int exit_code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  Stream compute() const { return current_stream(Device::cuda(device_)); }
  cudaStream_t raw_stream() const { return reinterpret_cast<cudaStream_t>(stream_.id()); }
  // The collective must see the values the caller's stream is still producing, and t's memory
  // must outlive the collective even if the caller drops t first.
  void after_compute(const Tensor& t) {
    Event ready;
    ready.record(compute());
    ready.wait(stream_);
    record_stream(t, stream_);
  }
  Tensor on_device(const Tensor& t) const { return ops::to(ops::contiguous(t), Device::cuda(device_)); }
  int rank_ = 0, size_ = 1, device_ = 0;
  ncclComm_t comm_ = nullptr;
  Stream stream_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator() { return std::make_unique<NcclCommunicator>(); }

}  // namespace strand::dist
#endif  // STRAND_WITH_NCCL
