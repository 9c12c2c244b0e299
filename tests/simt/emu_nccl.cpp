// NCCL on the emulated device (emu_runtime.cpp): the collectives strand's NCCL communicator
// (train/dist/nccl_communicator.cpp) calls, carried out over MPI between the processes of an
// mpirun launch, each with its own emulated device(s). Linked instead of libnccl into strand_emu.
//
// The data moves over MPI when the collective is called (after the work already queued on its
// stream, which NCCL would wait for too), but the result is written into the receive buffer by an
// item queued on the stream: so, as on a GPU, only work ordered after the stream (an event wait)
// sees it. The call blocks the host until every rank has made it, where NCCL would not: the ranks
// must call the collectives, and their own MPI_COMM_WORLD traffic, in the same order. Buffers must
// be memory of the communicator's device (the one current at ncclCommInitRank). Reductions go
// element by element in rank order (NCCL's ring order differs), in the element type (bf16 and f16
// rounded after each operation); avg multiplies each input by 1/ranks in the element type and sums,
// as NCCL does for floating types.
#include <mpi.h>
#include <nccl.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
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
bool less(const T& x, const T& y) {
  if constexpr (std::is_arithmetic_v<T>)
    return x < y;
  else
    return float(x) < float(y);  // bf16, f16
}
template <class T>
T combine(const T& x, const T& y, ncclRedOp_t op) {
  switch (op) {
    case ncclMax: return less(x, y) ? y : x;
    case ncclMin: return less(y, x) ? y : x;
    case ncclProd:
      if constexpr (std::is_arithmetic_v<T>) return T(x * y);
      else return T(float(x) * float(y));
    default:  // sum, avg
      if constexpr (std::is_arithmetic_v<T>) return T(x + y);
      else return T(float(x) + float(y));
  }
}
template <class T>
bool reduce(const unsigned char* all, unsigned char* out, size_t count, int ranks, ncclRedOp_t op) {
  if (op != ncclSum && op != ncclProd && op != ncclMax && op != ncclMin && op != ncclAvg) return false;
  if constexpr (std::is_integral_v<T>)
    if (op == ncclAvg) return false;  // NCCL's avg is for floating types
  const T* v = reinterpret_cast<const T*>(all);  // [ranks][count]
  T* o = reinterpret_cast<T*>(out);
  auto input = [&](int k, size_t i) {
    const T x = v[static_cast<size_t>(k) * count + i];
    if constexpr (std::is_integral_v<T>) return x;
    else return op == ncclAvg ? combine(x, T(1.0f / float(ranks)), ncclProd) : x;  // pre-multiplied
  };
  for (size_t i = 0; i < count; ++i) {
    T r = input(0, i);
    for (int k = 1; k < ranks; ++k) r = combine(r, input(k, i), op);
    o[i] = r;
  }
  return true;
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
  if (eb == 0 || bytes > size_t(INT32_MAX)) return ncclInvalidArgument;
  if (ncclResult_t r = check(comm, send, bytes, "ncclAllReduce's send buffer", stream); r != ncclSuccess) return r;
  if (ncclResult_t r = check(comm, recv, bytes, "ncclAllReduce's receive buffer", stream); r != ncclSuccess) return r;
  std::vector<unsigned char> all(bytes * static_cast<size_t>(comm->size));
  MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, all.data(), static_cast<int>(bytes), MPI_BYTE, comm->comm);
  auto result = std::make_shared<std::vector<unsigned char>>(bytes);
  const int n = comm->size;
  bool ok = false;
  switch (type) {
    case ncclInt8: ok = reduce<int8_t>(all.data(), result->data(), count, n, op); break;
    case ncclUint8: ok = reduce<uint8_t>(all.data(), result->data(), count, n, op); break;
    case ncclInt32: ok = reduce<int32_t>(all.data(), result->data(), count, n, op); break;
    case ncclUint32: ok = reduce<uint32_t>(all.data(), result->data(), count, n, op); break;
    case ncclInt64: ok = reduce<int64_t>(all.data(), result->data(), count, n, op); break;
    case ncclUint64: ok = reduce<uint64_t>(all.data(), result->data(), count, n, op); break;
    case ncclFloat16: ok = reduce<strand::f16>(all.data(), result->data(), count, n, op); break;
    case ncclBfloat16: ok = reduce<strand::bf16>(all.data(), result->data(), count, n, op); break;
    case ncclFloat32: ok = reduce<float>(all.data(), result->data(), count, n, op); break;
    case ncclFloat64: ok = reduce<double>(all.data(), result->data(), count, n, op); break;
    default: break;
  }
  if (!ok) return ncclInvalidArgument;
  strand::simt::device::enqueue_work(stream, [recv, result] { std::memcpy(recv, result->data(), result->size()); });
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t eb = element_bytes(type), bytes = count * eb;
  if (eb == 0 || bytes > size_t(INT32_MAX) || !comm || root < 0 || root >= comm->size) return ncclInvalidArgument;
  if (comm->rank == root)
    if (ncclResult_t r = check(comm, send, bytes, "ncclBroadcast's send buffer", stream); r != ncclSuccess) return r;
  if (ncclResult_t r = check(comm, recv, bytes, "ncclBroadcast's receive buffer", stream); r != ncclSuccess) return r;
  auto result = std::make_shared<std::vector<unsigned char>>(bytes);
  if (comm->rank == root) std::memcpy(result->data(), send, bytes);
  MPI_Bcast(result->data(), static_cast<int>(bytes), MPI_BYTE, root, comm->comm);
  strand::simt::device::enqueue_work(stream, [recv, result] { std::memcpy(recv, result->data(), result->size()); });
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  const size_t eb = element_bytes(type), bytes = count * eb;
  if (eb == 0 || bytes > size_t(INT32_MAX) / 1024) return ncclInvalidArgument;
  if (ncclResult_t r = check(comm, send, bytes, "ncclAllGather's send buffer", stream); r != ncclSuccess) return r;
  if (ncclResult_t r = check(comm, recv, bytes * static_cast<size_t>(comm->size), "ncclAllGather's receive buffer",
                             stream);
      r != ncclSuccess)
    return r;
  auto result = std::make_shared<std::vector<unsigned char>>(bytes * static_cast<size_t>(comm->size));
  MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, result->data(), static_cast<int>(bytes), MPI_BYTE,
                comm->comm);
  strand::simt::device::enqueue_work(stream, [recv, result] { std::memcpy(recv, result->data(), result->size()); });
  return ncclSuccess;
}
