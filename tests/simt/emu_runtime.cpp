// The emulated device: the parts of the CUDA runtime, cuBLAS and cuBLASLt that strand calls,
// implemented over host memory, so that the library's whole CUDA path (tensor/cuda_runtime.cpp,
// the op layer's dispatch, the kernel files compiled for the SIMT emulator) runs in the tests
// without a GPU. Linked instead of libcudart/libcublas into strand_emu (tests/CMakeLists.txt).
//
// STRAND_EMU_DEVICES devices (default 1) with an H100's limits (227 KB of opt-in shared memory per
// block, compute capability 9.0) and STRAND_EMU_DEVICE_MIB of memory in all (default 4096). Each
// allocation belongs to the device current at cudaMalloc; a kernel given another device's memory
// fails, as it would without peer access (which strand never enables).
//
// Streams queue their work (kernels, copies, memsets, GEMMs) and run it only when the host waits
// for it: cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, cudaFree, a copy into
// pageable host memory (which CUDA makes synchronous), or a stream that waits on an event of
// another stream and is itself run. So work reaches memory as late as CUDA allows, and code that
// reads a result without waiting for it, or uses it on another stream without an event, reads what
// was there before (new device memory is filled with 0xff bytes: NaN in every float type).
// An event query answers "not ready" until the work before the event has been run.
//
// Checked, as a GPU would fail: copies and memsets whose device side is not inside memory from
// cudaMalloc (or whose host side is), GEMM operands outside device memory, kernel pointer
// arguments outside it (cuda::DeviceLaunch), frees of what cudaMalloc did not return, launch
// configurations outside CUDA's limits, and dynamic shared memory above 48 KB that the kernel was
// not granted. Errors are thrown as strand::Error (a kernel's, when its stream is run, naming where
// it was launched), where CUDA would return an error code; after one the device is not reset (a
// GPU's context would be unusable), and the failed item, or the event wait that ran it, is gone.
//
// STRAND_EMU_DRY_RUN=1 runs nothing: kernels, GEMMs, copies and memsets are checked and dropped,
// copies to the host write zeros, and device memory is reserved address space that is never
// touched. What remains is every allocation the library makes, in order, through its caching
// allocator: the device's peak memory for a model far larger than this machine's RAM, in seconds
// (bench/README.md: compare_cpu_emu).
#include <sys/mman.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "tensor/error.h"
#include "tensor/half.h"
#include "tests/simt/emu_blas.h"
#include "tests/simt/simt.h"

struct CUstream_st {
  std::deque<std::function<void()>> work;
  uint64_t queued = 0, done = 0;  // items queued and run since creation
};
struct CUevent_st {
  CUstream_st* stream = nullptr;  // recorded on (null: never recorded)
  uint64_t position = 0;          // the stream's `queued` when recorded
  bool timing = true;             // not made with cudaEventDisableTiming
};
struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t mode = CUBLAS_DEFAULT_MATH;
};

namespace strand::simt::device {
namespace {

// As in CUDA, the current device and the last error belong to the host thread.
thread_local int t_current_device = 0;
thread_local cudaError_t t_last_error = cudaSuccess;

struct State {
  std::recursive_mutex mu;
  int devices = 1;
  struct Allocation {
    size_t bytes;
    int device;
    bool mapped = false;  // pages mapped into reserved address space (cuMemMap), adjacent ones merged
  };
  std::map<uintptr_t, Allocation> allocations;  // by start
  // The driver's virtual memory (expandable segments): reserved ranges (aligned start -> bytes, and
  // the host mapping behind them), physical allocations, and what each mapping maps.
  struct Reservation {
    size_t bytes;
    void* host;
    size_t host_bytes;
  };
  std::map<uintptr_t, Reservation> reservations;
  struct Physical {
    size_t bytes;
    int device;
    uintptr_t mapped_at = 0;
    bool accessible = false;  // cuMemSetAccess has made the mapping usable
  };
  std::map<uintptr_t, Physical*> mappings;  // mapped address -> its physical allocation
  size_t allocated = 0, capacity = 0;
  bool dry_run = false;  // STRAND_EMU_DRY_RUN
  CUstream_st legacy, per_thread;  // the default streams (handles 0 and cudaStreamPerThread)
  std::vector<std::unique_ptr<CUstream_st>> streams;
  std::map<const void*, int> smem_granted;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
};
State& state() {
  static State* s = [] {
    auto* st = new State;  // never destroyed: frees may come from other static destructors
    const char* mib = std::getenv("STRAND_EMU_DEVICE_MIB");
    st->capacity = size_t(mib ? std::strtoull(mib, nullptr, 10) : 4096) << 20;
    const char* n = std::getenv("STRAND_EMU_DEVICES");
    st->devices = n ? std::max(1, std::atoi(n)) : 1;
    const char* dry = std::getenv("STRAND_EMU_DRY_RUN");
    st->dry_run = dry && std::strcmp(dry, "0") != 0;
    return st;
  }();
  return *s;
}
using Lock = std::lock_guard<std::recursive_mutex>;

CUstream_st* queue(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy) return &state().legacy;
  if (s == cudaStreamPerThread) return &state().per_thread;
  return s;
}
std::vector<CUstream_st*> all_queues() {
  std::vector<CUstream_st*> q{&state().legacy, &state().per_thread};
  for (auto& s : state().streams) q.push_back(s.get());
  return q;
}
void enqueue(cudaStream_t s, std::function<void()> f) {
  if (state().dry_run) return;
  CUstream_st* q = queue(s);
  q->work.push_back(std::move(f));
  ++q->queued;
}
// Runs the stream's queued work up to (not past) item `until`.
void run_until(CUstream_st* q, uint64_t until) {
  while (q->done < until && !q->work.empty()) {
    std::function<void()> f = std::move(q->work.front());
    q->work.pop_front();
    ++q->done;  // before running: a failing item is gone, as a failed kernel is
    f();
  }
}
void run_all(CUstream_st* q) { run_until(q, q->queued); }
void run_everything() {
  for (bool again = true; again;) {
    again = false;
    for (CUstream_st* q : all_queues())
      if (!q->work.empty()) {
        run_all(q);
        again = true;
      }
  }
}

// The entry of a map by start address (values with .bytes) holding [a, a + n), or m.end().
template <class M>
auto holding(M& m, uintptr_t a, size_t n) {
  auto it = m.upper_bound(a);
  if (it == m.begin()) return m.end();
  --it;
  return a + n <= it->first + it->second.bytes ? it : m.end();
}
// The device of the allocation holding [p, p + bytes) (p may be the end of an allocation when bytes
// is 0), or -1.
int device_of(const void* p, size_t bytes) {
  auto& m = state().allocations;
  const auto it = holding(m, reinterpret_cast<uintptr_t>(p), bytes);
  return it == m.end() ? -1 : it->second.device;
}
bool in_device(const void* p, size_t bytes) { return device_of(p, bytes) >= 0; }
bool touches_device(const void* p, size_t bytes) {  // any byte of [p, p + bytes) in device memory
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto& m = state().allocations;
  auto it = m.lower_bound(a + bytes);
  if (it == m.begin()) return false;
  --it;
  return it->first + it->second.bytes > a;
}
void check_device(const void* p, size_t bytes, const char* what) {
  STRAND_CHECK(bytes == 0 || in_device(p, bytes), "emulated device: ", what, " of ", bytes, " bytes at ", p,
               " is not inside memory from cudaMalloc");
}
void check_host(const void* p, size_t bytes, const char* what) {
  STRAND_CHECK(bytes == 0 || !touches_device(p, bytes), "emulated device: ", what, " of ", bytes, " bytes at ", p,
               " is device memory");
}

}  // namespace

void launch(cudaStream_t stream, const void* kernel, dim3 grid, dim3 block, size_t smem, std::function<void()> body,
            const char* file, unsigned line) {
  Lock lock(state().mu);
  check_launch(grid, block, smem);
  if (smem > 48 * 1024) {
    const auto it = state().smem_granted.find(kernel);
    STRAND_CHECK(it != state().smem_granted.end() && size_t(it->second) >= smem, "emulated device: a launch at ", file,
                 ":", line, " asks for ", smem,
                 " bytes of dynamic shared memory, above 48 KB, without cudaFuncSetAttribute granting them");
  }
  enqueue(stream, [grid, block, smem, body = std::move(body), file, line] {
    try {
      run_grid(grid, block, smem, body);
    } catch (const std::exception& e) {
      throw Error(std::string("emulated device: the kernel launched at ") + file + ":" + std::to_string(line) +
                  " failed: " + e.what());
    }
  });
}

void check_pointer_argument(const void* p, const char* file, unsigned line) {
  Lock lock(state().mu);
  if (p == nullptr) return;
  const int d = device_of(p, 0);
  STRAND_CHECK(d >= 0, "emulated device: a kernel launched at ", file, ":", line, " was given the pointer ", p,
               ", which is not device memory");
  STRAND_CHECK(d == t_current_device, "emulated device: a kernel launched at ", file, ":", line,
               " on device ", t_current_device, " was given memory of device ", d);
}

void check_memory(const void* p, size_t bytes, int device, const char* what) {
  Lock lock(state().mu);
  const int d = device_of(p, bytes);
  STRAND_CHECK(bytes == 0 || d == device, "emulated device: ", what, " of ", bytes, " bytes at ", p,
               d < 0 ? std::string(" is not inside memory from cudaMalloc")
                     : " is memory of device " + std::to_string(d) + ", not " + std::to_string(device));
}

void synchronize(cudaStream_t stream) {
  Lock lock(state().mu);
  run_all(queue(stream));
}

void enqueue_work(cudaStream_t stream, std::function<void()> work) {
  Lock lock(state().mu);
  enqueue(stream, std::move(work));
}

// ---- cuBLAS ----

namespace {

// Column-major C[m, n] = alpha op(A) op(B) + beta C (C not read when beta is 0) (+ bias[i] in each
// row i), summed in Acc (gemm_rows); batch i at A + i sa, B + i sb, C + i sc. Checks the leading
// dimensions as cuBLAS does, and that every operand lies in device memory. Queued on `stream`.
template <class T, class Acc, class Out>
cublasStatus_t product(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, Acc alpha,
                       const T* A, int64_t lda, int64_t sa, const T* B, int64_t ldb, int64_t sb, Acc beta, Out* C,
                       int64_t ldc, int64_t sc, int batch, bool tf32, cudaStream_t stream,
                       const Out* bias = nullptr) {
  Lock lock(state().mu);
  const bool at = ta != CUBLAS_OP_N, bt = tb != CUBLAS_OP_N;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, at ? k : m) || ldb < std::max(1, bt ? n : k) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  auto extent = [](int64_t ld, int64_t cols, int64_t rows, int64_t stride, int b) {  // elements touched
    return (b - 1) * stride + (cols - 1) * ld + rows;
  };
  if (k > 0) {
    check_device(A, sizeof(T) * size_t(extent(lda, at ? m : k, at ? k : m, sa, batch)), "cuBLAS operand A");
    check_device(B, sizeof(T) * size_t(extent(ldb, bt ? k : n, bt ? n : k, sb, batch)), "cuBLAS operand B");
  }
  check_device(C, sizeof(Out) * size_t(extent(ldc, n, m, sc, batch)), "cuBLAS operand C");
  if (bias) check_device(bias, sizeof(Out) * size_t(m), "cuBLASLt's bias");
  enqueue(stream, [=] {  // column-major C = op(A) op(B): the row-major Cᵀ = op(B)ᵀ op(A)ᵀ
    gemm_rows<T, Acc, Out>(bt, at, n, m, k, alpha, B, ldb, sb, A, lda, sa, beta, C, ldc, sc, batch, tf32, bias);
  });
  return CUBLAS_STATUS_SUCCESS;
}

bool tf32_mode(cublasHandle_t h) { return (h->mode & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH; }

}  // namespace
}  // namespace strand::simt::device

using namespace strand::simt::device;  // NOLINT: the C entry points below

// ---- CUDA runtime ----

cudaError_t cudaGetDeviceCount(int* count) {
  *count = state().devices;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = t_current_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= state().devices) return t_last_error = cudaErrorInvalidDevice;
  t_current_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_error; }
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error (emulated device)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated device)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulated device)";
    case cudaErrorNotReady: return "device not ready (emulated device)";
    case cudaErrorInvalidValue: return "invalid argument (emulated device)";
    default: return "error (emulated device)";
  }
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= state().devices) return t_last_error = cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(strand::simt::kSharedBytes); break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    default: return t_last_error = cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  Lock lock(state().mu);
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      size_t(value) > strand::simt::kSharedBytes)
    return t_last_error = cudaErrorInvalidValue;
  state().smem_granted[func] = value;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t size) {
  Lock lock(state().mu);
  State& st = state();
  const size_t bytes = (std::max<size_t>(size, 1) + 255) / 256 * 256;
  if (st.allocated + bytes > st.capacity) return t_last_error = cudaErrorMemoryAllocation;
  void* q = nullptr;
  if (st.dry_run) {  // address space only: pages that are never touched take no memory
    q = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (q == MAP_FAILED) return t_last_error = cudaErrorMemoryAllocation;
  } else {
    q = std::aligned_alloc(256, bytes);
    if (!q) return t_last_error = cudaErrorMemoryAllocation;
    std::memset(q, 0xff, bytes);
  }
  st.allocations[reinterpret_cast<uintptr_t>(q)] = {size, t_current_device, false};
  st.allocated += bytes;
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  Lock lock(state().mu);
  run_everything();  // cudaFree waits for the device
  State& st = state();
  const auto it = st.allocations.find(reinterpret_cast<uintptr_t>(p));
  STRAND_CHECK(it != st.allocations.end() && !it->second.mapped, "emulated device: cudaFree of ", p,
               ", which cudaMalloc did not return");
  const size_t bytes = (std::max<size_t>(it->second.bytes, 1) + 255) / 256 * 256;
  st.allocated -= bytes;
  st.allocations.erase(it);
  if (st.dry_run)
    munmap(p, bytes);
  else
    std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  Lock lock(state().mu);
  *total = state().capacity;
  *free = state().capacity - state().allocated;
  return cudaSuccess;
}

// ---- the driver's virtual memory calls (reached through cudaGetDriverEntryPointByVersion) ----
// Checked as the driver checks them: granularity-aligned sizes and addresses, mappings inside a
// reservation and over nothing mapped, unmaps of whole mappings, physical memory released only
// once unmapped, and no unmap while queued work could still use the memory (which the driver
// would not wait for). A mapping becomes device memory for the other checks (and, outside a dry
// run, readable and writable) only once cuMemSetAccess has covered it, as a GPU faults before;
// adjacent mappings are merged into one allocation so a block may span pages.
namespace strand::simt::device {
namespace {
constexpr size_t kVmmPage = size_t{2} << 20;
bool in_reservation(uintptr_t a, size_t n) {
  const auto& r = state().reservations;
  return holding(r, a, n) != r.end();
}
void add_mapped(uintptr_t a, size_t n, int device) {
  auto& m = state().allocations;
  const auto next = m.find(a + n);
  if (next != m.end() && next->second.mapped && next->second.device == device) {
    n += next->second.bytes;
    m.erase(next);
  }
  auto prev = m.lower_bound(a);
  if (prev != m.begin()) {
    --prev;
    if (prev->second.mapped && prev->second.device == device && prev->first + prev->second.bytes == a) {
      prev->second.bytes += n;
      return;
    }
  }
  m[a] = {n, device, true};
}
void remove_mapped(uintptr_t a, size_t n) {
  auto& m = state().allocations;
  const auto it = holding(m, a, n);  // the merged mapping (there is one: the caller made it accessible)
  const uintptr_t start = it->first;
  const State::Allocation whole = it->second;
  m.erase(it);
  if (a > start) m[start] = {a - start, whole.device, true};
  if (a + n < start + whole.bytes) m[a + n] = {start + whole.bytes - a - n, whole.device, true};
}
bool work_queued() {
  for (CUstream_st* q : all_queues())
    if (!q->work.empty()) return true;
  return false;
}

CUresult emu_granularity(size_t* g, const CUmemAllocationProp* prop, CUmemAllocationGranularity_flags) {
  if (!g || !prop || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->location.id < 0 ||
      prop->location.id >= state().devices)
    return CUDA_ERROR_INVALID_VALUE;
  *g = kVmmPage;
  return CUDA_SUCCESS;
}
CUresult emu_reserve(CUdeviceptr* ptr, size_t size, size_t alignment, CUdeviceptr addr, unsigned long long) {
  Lock lock(state().mu);
  if (size == 0 || size % kVmmPage || addr != 0 || (alignment && alignment % kVmmPage)) return CUDA_ERROR_INVALID_VALUE;
  const size_t host_bytes = size + kVmmPage;  // room to align the start to a page
  void* h = mmap(nullptr, host_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (h == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  const uintptr_t a = (reinterpret_cast<uintptr_t>(h) + kVmmPage - 1) / kVmmPage * kVmmPage;
  state().reservations[a] = {size, h, host_bytes};
  *ptr = a;
  return CUDA_SUCCESS;
}
CUresult emu_address_free(CUdeviceptr ptr, size_t size) {
  Lock lock(state().mu);
  auto& r = state().reservations;
  const auto it = r.find(ptr);
  STRAND_CHECK(it != r.end() && it->second.bytes == size, "emulated driver: cuMemAddressFree of ", size,
               " bytes at ", reinterpret_cast<void*>(ptr), ", which cuMemAddressReserve did not return");
  const auto m = state().mappings.lower_bound(ptr);
  STRAND_CHECK(m == state().mappings.end() || m->first >= ptr + size, "emulated driver: cuMemAddressFree of a range ",
               "with memory still mapped in it");
  munmap(it->second.host, it->second.host_bytes);
  r.erase(it);
  return CUDA_SUCCESS;
}
CUresult emu_create(CUmemGenericAllocationHandle* h, size_t size, const CUmemAllocationProp* prop, unsigned long long) {
  Lock lock(state().mu);
  State& st = state();
  if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
      prop->location.id < 0 || prop->location.id >= st.devices || size == 0 || size % kVmmPage)
    return CUDA_ERROR_INVALID_VALUE;
  if (st.allocated + size > st.capacity) return CUDA_ERROR_OUT_OF_MEMORY;
  st.allocated += size;
  *h = reinterpret_cast<CUmemGenericAllocationHandle>(new State::Physical{size, prop->location.id});
  return CUDA_SUCCESS;
}
CUresult emu_release(CUmemGenericAllocationHandle h) {
  Lock lock(state().mu);
  auto* p = reinterpret_cast<State::Physical*>(h);
  STRAND_CHECK(p->mapped_at == 0, "emulated driver: cuMemRelease of memory still mapped at ",
               reinterpret_cast<void*>(p->mapped_at), " (strand unmaps first)");
  state().allocated -= p->bytes;
  delete p;
  return CUDA_SUCCESS;
}
CUresult emu_map(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h, unsigned long long) {
  Lock lock(state().mu);
  auto* p = reinterpret_cast<State::Physical*>(h);
  if (offset != 0 || size != p->bytes || ptr % kVmmPage || p->mapped_at) return CUDA_ERROR_INVALID_VALUE;
  STRAND_CHECK(in_reservation(ptr, size), "emulated driver: cuMemMap at ", reinterpret_cast<void*>(ptr),
               " outside reserved address space");
  const auto& maps = state().mappings;
  const auto after = maps.lower_bound(ptr);
  const bool overlaps = (after != maps.end() && after->first < ptr + size) ||
                        (after != maps.begin() && std::prev(after)->first + std::prev(after)->second->bytes > ptr);
  STRAND_CHECK(!overlaps && !touches_device(reinterpret_cast<void*>(ptr), size), "emulated driver: cuMemMap at ",
               reinterpret_cast<void*>(ptr), " over memory already mapped");
  p->mapped_at = ptr;
  state().mappings[ptr] = p;
  return CUDA_SUCCESS;
}
CUresult emu_set_access(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  Lock lock(state().mu);
  if (!desc || count != 1 || desc->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE ||
      desc->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
    return CUDA_ERROR_INVALID_VALUE;
  // The range must be exactly covered by mappings, end to end.
  auto& maps = state().mappings;
  uintptr_t a = ptr;
  while (a < ptr + size) {
    const auto it = maps.find(a);
    STRAND_CHECK(it != maps.end() && a + it->second->bytes <= ptr + size, "emulated driver: cuMemSetAccess on ", size,
                 " bytes at ", reinterpret_cast<void*>(ptr), ", not a run of whole mappings");
    a += it->second->bytes;
  }
  for (a = ptr; a < ptr + size;) {
    State::Physical* p = maps.at(a);
    if (!p->accessible) {
      p->accessible = true;
      add_mapped(a, p->bytes, p->device);
      if (!state().dry_run) {  // fresh device memory reads as NaN, as cudaMalloc's
        mprotect(reinterpret_cast<void*>(a), p->bytes, PROT_READ | PROT_WRITE);
        std::memset(reinterpret_cast<void*>(a), 0xff, p->bytes);
      }
    }
    a += p->bytes;
  }
  return CUDA_SUCCESS;
}
CUresult emu_unmap(CUdeviceptr ptr, size_t size) {
  Lock lock(state().mu);
  STRAND_CHECK(!work_queued(), "emulated driver: cuMemUnmap while queued work may still use the memory (the driver "
               "does not wait for it: synchronize first)");
  auto& maps = state().mappings;
  uintptr_t a = ptr;
  while (a < ptr + size) {  // whole mappings only, end to end
    const auto it = maps.find(a);
    STRAND_CHECK(it != maps.end() && a + it->second->bytes <= ptr + size, "emulated driver: cuMemUnmap of ", size,
                 " bytes at ", reinterpret_cast<void*>(ptr), ", not a run of whole mappings");
    State::Physical* p = it->second;
    if (p->accessible) {
      remove_mapped(a, p->bytes);
      if (!state().dry_run) {
        madvise(reinterpret_cast<void*>(a), p->bytes, MADV_DONTNEED);
        mprotect(reinterpret_cast<void*>(a), p->bytes, PROT_NONE);
      }
    }
    p->mapped_at = 0;
    p->accessible = false;
    a += p->bytes;
    maps.erase(it);
  }
  return CUDA_SUCCESS;
}
}  // namespace
}  // namespace strand::simt::device

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned int, unsigned long long,
                                             cudaDriverEntryPointQueryResult* status) {
  static const std::map<std::string, void*> entries = {
      {"cuMemGetAllocationGranularity", reinterpret_cast<void*>(&emu_granularity)},
      {"cuMemAddressReserve", reinterpret_cast<void*>(&emu_reserve)},
      {"cuMemAddressFree", reinterpret_cast<void*>(&emu_address_free)},
      {"cuMemCreate", reinterpret_cast<void*>(&emu_create)},
      {"cuMemRelease", reinterpret_cast<void*>(&emu_release)},
      {"cuMemMap", reinterpret_cast<void*>(&emu_map)},
      {"cuMemUnmap", reinterpret_cast<void*>(&emu_unmap)},
      {"cuMemSetAccess", reinterpret_cast<void*>(&emu_set_access)},
  };
  if (!fn) return t_last_error = cudaErrorInvalidValue;
  const auto it = entries.find(symbol ? symbol : "");
  *fn = it == entries.end() ? nullptr : it->second;
  if (status) *status = *fn ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  Lock lock(state().mu);
  switch (kind) {
    case cudaMemcpyHostToDevice: {
      check_device(dst, count, "a copy's device destination");
      check_host(src, count, "a copy's host source");
      if (state().dry_run) return cudaSuccess;
      // from pageable memory the source is read before the call returns
      auto copy = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                               static_cast<const unsigned char*>(src) + count);
      enqueue(stream, [dst, copy] { std::memcpy(dst, copy->data(), copy->size()); });
      return cudaSuccess;
    }
    case cudaMemcpyDeviceToHost:
      check_device(src, count, "a copy's device source");
      check_host(dst, count, "a copy's host destination");
      if (state().dry_run) std::memset(dst, 0, count);
      enqueue(stream, [=] { std::memcpy(dst, src, count); });
      run_all(queue(stream));  // into pageable memory the copy has completed when the call returns
      return cudaSuccess;
    case cudaMemcpyDeviceToDevice:
      check_device(src, count, "a copy's device source");
      check_device(dst, count, "a copy's device destination");
      enqueue(stream, [=] { std::memmove(dst, src, count); });
      return cudaSuccess;
    default:
      return t_last_error = cudaErrorInvalidValue;
  }
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  Lock lock(state().mu);
  const cudaError_t e = cudaMemcpyAsync(dst, src, count, kind, nullptr);
  run_all(queue(nullptr));  // the legacy stream's work; strand's streams are non-blocking
  return e;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream) {
  Lock lock(state().mu);
  check_device(p, count, "a memset");
  enqueue(stream, [=] { std::memset(p, value, count); });
  return cudaSuccess;
}

cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  *least = 0;
  *greatest = -5;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned int, int) {
  Lock lock(state().mu);
  state().streams.push_back(std::make_unique<CUstream_st>());
  *s = state().streams.back().get();
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithPriority(s, 0, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }  // kept: events may refer to it
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  Lock lock(state().mu);
  run_all(queue(s));
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  Lock lock(state().mu);
  return queue(s)->work.empty() ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaDeviceSynchronize(void) {
  Lock lock(state().mu);
  run_everything();
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  *e = new CUevent_st;
  (*e)->timing = !(flags & cudaEventDisableTiming);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  Lock lock(state().mu);
  e->stream = queue(s);
  e->position = e->stream->queued;
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  Lock lock(state().mu);
  return !e->stream || e->stream->done >= e->position ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  Lock lock(state().mu);
  if (e->stream) run_until(e->stream, e->position);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  Lock lock(state().mu);
  if (!e->stream) return cudaSuccess;
  CUstream_st* other = e->stream;
  const uint64_t until = e->position;  // the record current at the call
  enqueue(s, [other, until] { run_until(other, until); });
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Lock lock(state().mu);
  if (!start->timing || !end->timing || !start->stream || !end->stream)
    return t_last_error = cudaErrorInvalidResourceHandle;
  if (start->stream->done < start->position || end->stream->done < end->position) return cudaErrorNotReady;
  *ms = 0;  // no clock on the emulated device
  return cudaSuccess;
}

// ---- cuBLAS ----

cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  h->mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  return product<float, float, float>(ta, tb, m, n, k, *alpha, A, lda, 0, B, ldb, 0, *beta, C, ldc, 0, 1,
                                      tf32_mode(h), h->stream);
}
cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double* alpha, const double* A, int lda, const double* B, int ldb, const double* beta,
                           double* C, int ldc) {
  return product<double, double, double>(ta, tb, m, n, k, *alpha, A, lda, 0, B, ldb, 0, *beta, C, ldc, 0, 1, false,
                                         h->stream);
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                                         long long sc, int batch) {
  return product<float, float, float>(ta, tb, m, n, k, *alpha, A, lda, sa, B, ldb, sb, *beta, C, ldc, sc, batch,
                                      tf32_mode(h), h->stream);
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* A, int lda, long long sa,
                                         const double* B, int ldb, long long sb, const double* beta, double* C,
                                         int ldc, long long sc, int batch) {
  return product<double, double, double>(ta, tb, m, n, k, *alpha, A, lda, sa, B, ldb, sb, *beta, C, ldc, sc, batch,
                                         false, h->stream);
}
// bf16/f16 operands, f32 compute and scalars, C in the operands' type or f32.
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType at, int lda, const void* B, cudaDataType bt,
                            int ldb, const void* beta, void* C, cudaDataType ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (compute != CUBLAS_COMPUTE_32F || at != bt || (at != CUDA_R_16BF && at != CUDA_R_16F) ||
      (ct != at && ct != CUDA_R_32F))
    return CUBLAS_STATUS_NOT_SUPPORTED;  // what strand does not ask for is not emulated
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* a = static_cast<const T*>(A);
    const T* b = static_cast<const T*>(B);
    if (ct == CUDA_R_32F)
      return product<T, float, float>(ta, tb, m, n, k, al, a, lda, 0, b, ldb, 0, be, static_cast<float*>(C), ldc, 0,
                                      1, false, h->stream);
    return product<T, float, T>(ta, tb, m, n, k, al, a, lda, 0, b, ldb, 0, be, static_cast<T*>(C), ldc, 0, 1, false,
                                h->stream);
  };
  return at == CUDA_R_16BF ? run(strand::bf16{}) : run(strand::f16{});
}

// ---- cuBLASLt: the matmul with the BIAS epilogue that kernels/cuda/gemm_lt.cu asks for ----

struct cublasLtContext {};

namespace strand::simt::device {
namespace {

struct LtOp {  // kept in cublasLtMatmulDescOpaque_t's bytes
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
};
struct LtLayout {  // kept in cublasLtMatrixLayoutOpaque_t's bytes
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
static_assert(sizeof(LtOp) <= sizeof(cublasLtMatmulDescOpaque_t) && sizeof(LtLayout) <= sizeof(cublasLtMatrixLayoutOpaque_t));
template <class D, class O>
D read(const O* o) {
  D d;
  std::memcpy(&d, o->data, sizeof d);
  return d;
}
template <class D, class O>
void write(O* o, const D& d) {
  std::memcpy(o->data, &d, sizeof d);
}
// The shapes agree: op(A) [m, k], op(B) [k, n], C and D [m, n], leading dimensions at least the rows.
bool lt_consistent(const LtOp& op, const LtLayout& a, const LtLayout& b, const LtLayout& c, const LtLayout& d) {
  const uint64_t m = d.rows, n = d.cols;
  const uint64_t am = op.ta == CUBLAS_OP_N ? a.rows : a.cols, ak = op.ta == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t bk = op.tb == CUBLAS_OP_N ? b.rows : b.cols, bn = op.tb == CUBLAS_OP_N ? b.cols : b.rows;
  return am == m && bn == n && ak == bk && c.rows == m && c.cols == n && a.type == b.type && c.type == d.type &&
         a.ld >= int64_t(std::max<uint64_t>(1, a.rows)) && b.ld >= int64_t(std::max<uint64_t>(1, b.rows)) &&
         c.ld >= int64_t(std::max<uint64_t>(1, m)) && d.ld >= int64_t(std::max<uint64_t>(1, m)) &&
         (op.epilogue == CUBLASLT_EPILOGUE_DEFAULT || (op.epilogue == CUBLASLT_EPILOGUE_BIAS && op.bias)) &&
         op.scale == CUDA_R_32F &&
         (op.compute == CUBLAS_COMPUTE_32F || (op.compute == CUBLAS_COMPUTE_32F_FAST_TF32 && a.type == CUDA_R_32F));
}

}  // namespace
}  // namespace strand::simt::device

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
  *d = new cublasLtMatmulDescOpaque_t{};
  LtOp op;
  op.compute = compute;
  op.scale = scale;
  write(*d, op);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  LtOp op = read<LtOp>(d);
  auto take = [&](auto& field) {
    if (bytes != sizeof field) return false;
    std::memcpy(&field, buf, bytes);
    return true;
  };
  bool ok = false;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: ok = take(op.ta); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: ok = take(op.tb); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: ok = take(op.epilogue); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = take(op.bias); break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;  // not emulated
  }
  if (!ok) return CUBLAS_STATUS_INVALID_VALUE;
  write(d, op);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
  *l = new cublasLtMatrixLayoutOpaque_t{};
  write(*l, LtLayout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new cublasLtMatmulPreferenceOpaque_t{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void*, size_t) {
  switch (attr) {  // limits on the algorithm: the emulator has one, which meets them
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return CUBLAS_STATUS_SUCCESS;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* count) {
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  if (!lt_consistent(read<LtOp>(op), read<LtLayout>(a), read<LtLayout>(b), read<LtLayout>(c), read<LtLayout>(d)))
    return CUBLAS_STATUS_INVALID_VALUE;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *count = 1;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t opd, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t ad, const void* B, cublasLtMatrixLayout_t bd, const void* beta,
                              const void* C, cublasLtMatrixLayout_t cd, void* D, cublasLtMatrixLayout_t dd,
                              const cublasLtMatmulAlgo_t*, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const LtOp op = read<LtOp>(opd);
  const LtLayout a = read<LtLayout>(ad), b = read<LtLayout>(bd), c = read<LtLayout>(cd), d = read<LtLayout>(dd);
  if (!lt_consistent(op, a, b, c, d)) return CUBLAS_STATUS_INVALID_VALUE;
  const float be = *static_cast<const float*>(beta);
  // the emulation computes D in place of C: both must be the same matrix, unless C is not read
  if (be != 0 && (C != D || c.ld != d.ld)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (workspace_bytes) {
    Lock lock(state().mu);
    check_device(workspace, workspace_bytes, "cuBLASLt's workspace");
  }
  const float al = *static_cast<const float*>(alpha);
  const int m = int(d.rows), n = int(d.cols), k = int(op.ta == CUBLAS_OP_N ? a.cols : a.rows);
  const bool tf32 = op.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    return product<T, float, T>(op.ta, op.tb, m, n, k, al, static_cast<const T*>(A), a.ld, 0,
                                static_cast<const T*>(B), b.ld, 0, be, static_cast<T*>(D), d.ld, 0, 1, tf32, stream,
                                op.epilogue == CUBLASLT_EPILOGUE_BIAS ? static_cast<const T*>(op.bias) : nullptr);
  };
  switch (a.type) {
    case CUDA_R_32F: return d.type == CUDA_R_32F ? run(float{}) : CUBLAS_STATUS_NOT_SUPPORTED;
    case CUDA_R_16BF: return d.type == CUDA_R_16BF ? run(strand::bf16{}) : CUBLAS_STATUS_NOT_SUPPORTED;
    case CUDA_R_16F: return d.type == CUDA_R_16F ? run(strand::f16{}) : CUBLAS_STATUS_NOT_SUPPORTED;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}
