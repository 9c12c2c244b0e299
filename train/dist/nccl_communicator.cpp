// The NCCL backend: CUDA tensors, one GPU per local rank, bootstrapped over MPI (rank 0 creates the
// unique id, MPI_Bcast shares it, ncclCommInitRank joins). Compiled only when CMake found NCCL and
// MPI and the CUDA backend is on. All-reduces run on the communicator's own stream, ordered after
// the work already queued on the compute (default) stream by an event, so they overlap the rest of
// backward; wait() makes the compute stream wait on the result without blocking the host.
#ifdef STRAND_WITH_NCCL
#include <cuda_runtime.h>
#include "train/dist/mpi_include.h"
#include <nccl.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/ops.h"
#include "tensor/error.h"
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

class NcclWork : public Work {
 public:
  explicit NcclWork(cudaEvent_t done) : done_(done) {}
  void wait() override {
    if (!done_) return;
    STRAND_NCCL_CUDA_CHECK(cudaStreamWaitEvent(cudaStreamLegacy, done_, 0));
    cudaEventDestroy(done_);
    done_ = nullptr;
  }
  ~NcclWork() override {
    if (done_) {
      cudaStreamWaitEvent(cudaStreamLegacy, done_, 0);
      cudaEventDestroy(done_);
    }
  }

 private:
  cudaEvent_t done_;
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
    STRAND_NCCL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
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
    STRAND_NCCL_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
  }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    if (t.defined() && t.device().is_cpu()) {  // staged and finished here; the returned work is done
      all_reduce(t, op);
      cudaEvent_t done;
      STRAND_NCCL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
      STRAND_NCCL_CUDA_CHECK(cudaEventRecord(done, stream_));
      return std::make_unique<NcclWork>(done);
    }
    check_cuda_contiguous(t, "all_reduce");
    const DType dt = t.dtype();
    STRAND_CHECK(op == ReduceOp::sum || is_floating(dt), "all_reduce: avg needs a floating dtype, got ",
                 dtype_name(dt));
    const ncclRedOp_t nop = dt == DType::b8 ? ncclMax : op == ReduceOp::avg ? ncclAvg : ncclSum;
    after_compute();
    NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(dt), nop, comm_,
                             stream_));
    cudaEvent_t done;
    STRAND_NCCL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    STRAND_NCCL_CUDA_CHECK(cudaEventRecord(done, stream_));
    return std::make_unique<NcclWork>(done);
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
    after_compute();
    NCCL_CHECK(ncclBroadcast(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root,
                             comm_, stream_));
    STRAND_NCCL_CUDA_CHECK(cudaStreamSynchronize(stream_));
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
    after_compute();
    NCCL_CHECK(ncclAllGather(t.raw_data(), out.raw_data(), static_cast<size_t>(n), nccl_type(t.dtype()), comm_,
                             stream_));
    STRAND_NCCL_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return out;
  }

  void barrier() override {
    STRAND_NCCL_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
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
  // The collective must see the values the compute stream is still producing.
  void after_compute() {
    cudaEvent_t ready;
    STRAND_NCCL_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    STRAND_NCCL_CUDA_CHECK(cudaEventRecord(ready, cudaStreamLegacy));
    STRAND_NCCL_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    cudaEventDestroy(ready);
  }
  Tensor on_device(const Tensor& t) const { return ops::to(ops::contiguous(t), Device::cuda(device_)); }
  int rank_ = 0, size_ = 1, device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator() { return std::make_unique<NcclCommunicator>(); }

}  // namespace strand::dist
#endif  // STRAND_WITH_NCCL
