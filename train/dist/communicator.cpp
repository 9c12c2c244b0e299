#include "train/dist/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>

#include "kernels/ops.h"
#include "tensor/error.h"

namespace strand::dist {

namespace {

struct DoneWork : Work {
  void wait() override {}
};

class LocalCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_reduce(const Tensor& t, ReduceOp op) override {
    STRAND_CHECK(t.is_contiguous(), "all_reduce: tensor must be contiguous, got ", t.str());
    STRAND_CHECK(op == ReduceOp::sum || is_floating(t.dtype()), "all_reduce: avg needs a floating dtype, got ",
                 dtype_name(t.dtype()));
  }
  void broadcast(const Tensor& t, int root) override {
    STRAND_CHECK(root == 0, "broadcast: root ", root, " is not a rank of a world of size 1");
  }
  Tensor all_gather(const Tensor& t) override {
    Shape s = t.sizes();
    s.insert(s.begin(), 1);
    return ops::reshape(ops::clone(t), s);
  }
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(exit_code);
  }
};

int env_int(std::initializer_list<const char*> names, int fallback) {
  for (const char* n : names)
    if (const char* v = std::getenv(n); v && *v) return std::atoi(v);
  return fallback;
}

std::mutex g_world_mu;
std::shared_ptr<Communicator> g_world;

}  // namespace

std::unique_ptr<Work> Communicator::all_reduce_async(const Tensor& t, ReduceOp op) {
  all_reduce(t, op);
  return std::make_unique<DoneWork>();
}

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

int env_world_size() { return env_int({"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"}, 1); }
int env_rank() { return env_int({"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}, 0); }
int env_local_rank() { return env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"}, 0); }

std::shared_ptr<Communicator> communicator_from_env(const std::string& device) {
  const int n = env_world_size();
  if (n <= 1) return make_local_communicator();
  if (device.rfind("cuda", 0) == 0) {
#ifdef STRAND_WITH_NCCL
    return make_nccl_communicator();
#else
    STRAND_CHECK(false, "launched with ", n, " ranks on device '", device,
                 "', but this build has no NCCL (configure with STRAND_CUDA=ON and NCCL installed)");
#endif
  }
#ifdef STRAND_WITH_MPI
  return make_mpi_communicator();
#else
  STRAND_CHECK(false, "launched with ", n,
               " ranks, but this build has no MPI (install libopenmpi-dev and reconfigure)");
  return nullptr;
#endif
}

std::shared_ptr<Communicator> world() {
  std::lock_guard<std::mutex> lk(g_world_mu);
  if (!g_world) g_world = make_local_communicator();
  return g_world;
}
void set_world(std::shared_ptr<Communicator> c) {
  std::lock_guard<std::mutex> lk(g_world_mu);
  g_world = std::move(c);
}

int run_or_abort(const char* tool, Communicator& comm, const std::function<int()>& body) {
  std::string msg;
  try {
    return body();
  } catch (const std::exception& e) {
    msg = e.what();
  } catch (...) {
    msg = "unknown error";
  }
  std::fflush(stdout);
  if (comm.size() > 1) {
    std::fprintf(stderr, "%s (rank %d/%d): %s\n", tool, comm.rank(), comm.size(), msg.c_str());
    std::fprintf(stderr, "%s (rank %d/%d): aborting the job\n", tool, comm.rank(), comm.size());
    std::fflush(stderr);
    comm.abort(2);
  }
  std::fprintf(stderr, "%s: %s\n", tool, msg.c_str());
  return 2;
}

}  // namespace strand::dist
