// The MPI backend: CPU tensors over MPI_COMM_WORLD. Compiled only when CMake found MPI.
#ifdef STRAND_WITH_MPI
#include "train/dist/mpi_include.h"

#include <cstdio>
#include <cstdlib>

#include "kernels/ops.h"
#include "tensor/error.h"
#include "train/dist/communicator.h"

// Errors are returned (not fatal) so they surface as a strand::Error naming the call; the caller's
// run_or_abort then brings the job down with that message.
#define MPI_CHECK(stmt)                                                                             \
  do {                                                                                              \
    int mpi_rc_ = (stmt);                                                                           \
    if (mpi_rc_ != MPI_SUCCESS) {                                                                   \
      char mpi_msg_[MPI_MAX_ERROR_STRING];                                                          \
      int mpi_len_ = 0;                                                                             \
      MPI_Error_string(mpi_rc_, mpi_msg_, &mpi_len_);                                               \
      STRAND_CHECK(false, #stmt, " failed at ", __FILE__, ":", __LINE__, ": ", std::string(mpi_msg_, mpi_len_)); \
    }                                                                                               \
  } while (0)

namespace strand::dist {

namespace {

void ensure_mpi() {
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) return;
  int provided = 0;
  // Collectives are issued from the thread that runs backward (hooks) only: serialized is enough.
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  std::atexit([] {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  });
}

// The MPI type of a dtype that MPI reduces natively; half types go through f32 (below).
MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    case DType::i32: return MPI_INT32_T;
    case DType::u8: return MPI_UINT8_T;
    case DType::b8: return MPI_C_BOOL;
    case DType::bf16:
    case DType::f16: return MPI_UINT16_T;  // raw bits: fine for broadcast/gather, not for reduce
  }
  return MPI_BYTE;
}

void check_cpu_contiguous(const Tensor& t, const char* op) {
  STRAND_CHECK(t.defined(), op, ": undefined tensor");
  STRAND_CHECK(t.device().is_cpu(), op, ": the MPI backend takes CPU tensors, got ", t.str(),
               " (CUDA tensors use the NCCL backend)");
  STRAND_CHECK(t.is_contiguous(), op, ": tensor must be contiguous, got ", t.str());
}

class MpiWork : public Work {
 public:
  MpiWork(MPI_Request r, Tensor t, bool avg, int world) : req_(r), t_(std::move(t)), avg_(avg), world_(world) {}
  void wait() override {
    if (done_) return;
    MPI_CHECK(MPI_Wait(&req_, MPI_STATUS_IGNORE));
    done_ = true;
    if (avg_) ops::copy_(t_, ops::mul(t_, 1.0 / static_cast<double>(world_)));
  }
  ~MpiWork() override {
    if (!done_) MPI_Wait(&req_, MPI_STATUS_IGNORE);
  }

 private:
  MPI_Request req_;
  Tensor t_;
  bool avg_;
  int world_;
  bool done_ = false;
};

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator() {
    ensure_mpi();
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce(const Tensor& t, ReduceOp op) override { all_reduce_async(t, op)->wait(); }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check_cpu_contiguous(t, "all_reduce");
    const DType dt = t.dtype();
    STRAND_CHECK(op == ReduceOp::sum || is_floating(dt), "all_reduce: avg needs a floating dtype, got ",
                 dtype_name(dt));
    if (dt == DType::bf16 || dt == DType::f16) {
      // MPI has no 16-bit float sum: reduce in f32 and round once.
      Tensor f = ops::to(t, DType::f32);
      all_reduce(f, op);
      ops::copy_(t, f);
      return all_reduce_async_done();
    }
    MPI_Request req;
    const MPI_Op mop = dt == DType::b8 ? MPI_LOR : MPI_SUM;
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), static_cast<int>(t.numel()), mpi_type(dt), mop,
                             MPI_COMM_WORLD, &req));
    return std::make_unique<MpiWork>(req, t, op == ReduceOp::avg, size_);
  }

  void broadcast(const Tensor& t, int root) override {
    check_cpu_contiguous(t, "broadcast");
    STRAND_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " is not a rank of a world of size ", size_);
    MPI_CHECK(MPI_Bcast(t.raw_data(), static_cast<int>(t.numel()), mpi_type(t.dtype()), root, MPI_COMM_WORLD));
  }

  Tensor all_gather(const Tensor& t_in) override {
    STRAND_CHECK(t_in.defined() && t_in.device().is_cpu(), "all_gather: the MPI backend takes CPU tensors, got ",
                 t_in.defined() ? t_in.str() : std::string("an undefined tensor"));
    Tensor t = ops::contiguous(t_in);
    // Ranks with different shapes would gather garbage: compare element counts first.
    int64_t n = t.numel(), lo = 0, hi = 0;
    MPI_CHECK(MPI_Allreduce(&n, &lo, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Allreduce(&n, &hi, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD));
    STRAND_CHECK(lo == hi, "all_gather: ranks hold different numbers of elements (", lo, " to ", hi,
                 "); this rank has ", t.str());
    Shape s = t.sizes();
    s.insert(s.begin(), size_);
    Tensor out = ops::empty(s, TensorOptions(t.dtype()));
    MPI_CHECK(MPI_Allgather(t.raw_data(), static_cast<int>(n), mpi_type(t.dtype()), out.raw_data(),
                            static_cast<int>(n), mpi_type(t.dtype()), MPI_COMM_WORLD));
    return out;
  }

  void barrier() override { MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }

  [[noreturn]] void abort(int exit_code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  static std::unique_ptr<Work> all_reduce_async_done() {
    struct Done : Work {
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace strand::dist
#endif  // STRAND_WITH_MPI
