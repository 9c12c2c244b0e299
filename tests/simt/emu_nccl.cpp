// NCCL on the emulated device (emu_runtime.cpp): the collectives strand's NCCL communicator
// (train/dist/nccl_communicator.cpp) calls, carried out over MPI between the processes of an
// mpirun launch, each with its own emulated device(s). Linked instead of libnccl into strand_emu.
//
// A collective runs when it is called (after the work already queued on its stream, which NCCL
// would wait for too); the ranks must therefore call the same collectives in the same order, as
// NCCL requires. Buffers must be device memory of the communicator's device (the one current at
// ncclCommInitRank). Reductions go element by element in rank order, in the element type (bf16 and
// f16 rounded after each addition); avg divides the sum by the number of ranks.
#include <mpi.h>
#include <nccl.h>

#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "tensor/error.h"
#include "tensor/half.h"
#include "tests/simt/simt.h"

struct ncclComm {
  int rank = 0, size = 1, device = 0;
  MPI_Comm comm = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD: apart from the caller's own MPI traffic
};

namespace {

size_t element_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
  }
}

template <class T>
void reduce(const unsigned char* all, void* out, size_t count, int ranks, ncclRedOp_t op) {
  const T* v = reinterpret_cast<const T*>(all);  // [ranks][count]
  T* o = static_cast<T*>(out);
  for (size_t i = 0; i < count; ++i) {
    T r = v[i];
    for (int k = 1; k < ranks; ++k) {
      const T x = v[static_cast<size_t>(k) * count + i];
      if (op == ncclMax) {
        r = static_cast<double>(x) > static_cast<double>(r) ? x : r;
      } else if (op == ncclMin) {
        r = static_cast<double>(x) < static_cast<double>(r) ? x : r;
      } else if constexpr (std::is_floating_point_v<T> || std::is_integral_v<T>) {
        r = op == ncclProd ? T(r * x) : T(r + x);
      } else {  // bf16, f16: in f32, rounded each time
        r = T(op == ncclProd ? float(r) * float(x) : float(r) + float(x));
      }
    }
    if (op == ncclAvg) {
      if constexpr (std::is_integral_v<T>)
        r = T(r / ranks);
      else
        r = T(static_cast<double>(r) / ranks);
    }
    o[i] = r;
  }
}

ncclResult_t check(ncclComm_t comm, const void* p, size_t bytes, const char* what, cudaStream_t stream) {
  if (!comm || comm->comm == MPI_COMM_NULL) return ncclInvalidArgument;
  strand::simt::device::check_memory(p, bytes, comm->device, what);
  strand::simt::device::synchronize(stream);  // the stream's earlier work, which the collective follows
  return ncclSuccess;
}

}  // namespace

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error (emulated NCCL)";
    case ncclInvalidArgument: return "invalid argument (emulated NCCL)";
    case ncclInvalidUsage: return "invalid usage (emulated NCCL)";
    default: return "error (emulated NCCL)";
  }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof *id);
  std::strcpy(id->internal, "emulated-nccl");
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
  int world = 0, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  // the emulation's ranks are MPI_COMM_WORLD's, and the id must be rank 0's (broadcast by the caller)
  if (nranks != world || rank != me || std::strcmp(id.internal, "emulated-nccl") != 0) return ncclInvalidUsage;
  auto* c = new ncclComm;
  c->rank = rank;
  c->size = nranks;
  cudaGetDevice(&c->device);
  MPI_Comm_dup(MPI_COMM_WORLD, &c->comm);
  *out = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->comm != MPI_COMM_NULL) MPI_Comm_free(&comm->comm);
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  delete comm;  // the caller aborts MPI next
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t eb = element_bytes(type), bytes = count * eb;
  if (eb == 0) return ncclInvalidArgument;
  if (ncclResult_t r = check(comm, send, bytes, "ncclAllReduce's send buffer", stream); r != ncclSuccess) return r;
  if (ncclResult_t r = check(comm, recv, bytes, "ncclAllReduce's receive buffer", stream); r != ncclSuccess) return r;
  std::vector<unsigned char> all(bytes * static_cast<size_t>(comm->size));
  MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, all.data(), static_cast<int>(bytes), MPI_BYTE, comm->comm);
  switch (type) {
    case ncclInt8: reduce<int8_t>(all.data(), recv, count, comm->size, op); break;
    case ncclUint8: reduce<uint8_t>(all.data(), recv, count, comm->size, op); break;
    case ncclInt32: reduce<int32_t>(all.data(), recv, count, comm->size, op); break;
    case ncclUint32: reduce<uint32_t>(all.data(), recv, count, comm->size, op); break;
    case ncclInt64: reduce<int64_t>(all.data(), recv, count, comm->size, op); break;
    case ncclUint64: reduce<uint64_t>(all.data(), recv, count, comm->size, op); break;
    case ncclFloat16: reduce<strand::f16>(all.data(), recv, count, comm->size, op); break;
    case ncclBfloat16: reduce<strand::bf16>(all.data(), recv, count, comm->size, op); break;
    case ncclFloat32: reduce<float>(all.data(), recv, count, comm->size, op); break;
    case ncclFloat64: reduce<double>(all.data(), recv, count, comm->size, op); break;
    default: return ncclInvalidArgument;
  }
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t eb = element_bytes(type), bytes = count * eb;
  if (eb == 0 || !comm || root < 0 || root >= comm->size) return ncclInvalidArgument;
  if (comm->rank == root)
    if (ncclResult_t r = check(comm, send, bytes, "ncclBroadcast's send buffer", stream); r != ncclSuccess) return r;
  if (ncclResult_t r = check(comm, recv, bytes, "ncclBroadcast's receive buffer", stream); r != ncclSuccess) return r;
  if (comm->rank == root && send != recv) std::memmove(recv, send, bytes);
  MPI_Bcast(recv, static_cast<int>(bytes), MPI_BYTE, root, comm->comm);
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  const size_t eb = element_bytes(type), bytes = count * eb;
  if (eb == 0) return ncclInvalidArgument;
  if (ncclResult_t r = check(comm, send, bytes, "ncclAllGather's send buffer", stream); r != ncclSuccess) return r;
  if (ncclResult_t r = check(comm, recv, bytes * static_cast<size_t>(comm->size), "ncclAllGather's receive buffer",
                             stream);
      r != ncclSuccess)
    return r;
  std::vector<unsigned char> mine(static_cast<const unsigned char*>(send), static_cast<const unsigned char*>(send) + bytes);
  MPI_Allgather(mine.data(), static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE, comm->comm);
  return ncclSuccess;
}
