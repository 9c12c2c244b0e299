#pragma once
// Collectives between the ranks of a data-parallel job, behind one interface with three backends:
// local (world size 1: no MPI, no launcher), MPI (CPU tensors), and NCCL (CUDA tensors,
// bootstrapped over MPI). Every rank must call the same collectives in the same order; the DDP
// reducer and SyncBatchNorm rely on that, and on the determinism of the autograd engine.
#include <functional>
#include <memory>
#include <string>

#include "tensor/tensor.h"

namespace strand::dist {

enum class ReduceOp { sum, avg };

// An all-reduce in flight; wait() returns once the tensor holds the result.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "local" | "mpi" | "nccl"

  // In place on a contiguous tensor. avg needs a floating dtype.
  virtual void all_reduce(const Tensor& t, ReduceOp op) = 0;
  // Starts an all-reduce that may overlap the caller's work (NCCL: on the communicator's stream).
  // The default runs it at once.
  virtual std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op);
  // In place: every rank ends with root's values. Shapes and dtypes must match across ranks.
  virtual void broadcast(const Tensor& t, int root) = 0;
  // Concatenation of every rank's tensor along a new leading dim: [size, ...t.sizes()].
  virtual Tensor all_gather(const Tensor& t) = 0;
  virtual void barrier() = 0;
  // Brings the whole job down (MPI_Abort): a rank that failed must not leave the others waiting
  // in a collective forever.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// World size 1: every collective is the identity.
std::unique_ptr<Communicator> make_local_communicator();
#ifdef STRAND_WITH_MPI
// MPI_COMM_WORLD; initialises MPI on first use and finalises it at exit.
std::unique_ptr<Communicator> make_mpi_communicator();
#endif
#ifdef STRAND_WITH_NCCL
// One GPU per local rank (OMPI_COMM_WORLD_LOCAL_RANK modulo the visible devices); the unique id
// travels from rank 0 over MPI_Bcast. Collectives take CUDA tensors.
std::unique_ptr<Communicator> make_nccl_communicator();
#endif

// Whether this process was started by a launcher with more than one rank (OMPI_COMM_WORLD_SIZE,
// PMIX/PMI_SIZE), and this process's rank and local rank by the same variables (0 when absent).
int env_world_size();
int env_rank();
int env_local_rank();

// The communicator a process should use: local unless launched with world size > 1, then MPI for
// the CPU or NCCL for CUDA. A multi-rank launch of a build without MPI is a clear error.
std::shared_ptr<Communicator> communicator_from_env(const std::string& device = "cpu");

// The process-wide communicator (local until set): what strand-train's helpers consult.
std::shared_ptr<Communicator> world();
void set_world(std::shared_ptr<Communicator> c);

// Runs body; on any exception prints "<tool> (rank r/W): <message>" and, with more than one rank,
// aborts the job so no other rank hangs; otherwise returns 2 (the binaries' bad-input code).
int run_or_abort(const char* tool, Communicator& comm, const std::function<int()>& body);

}  // namespace strand::dist
