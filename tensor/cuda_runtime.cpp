// The only place tensor/ touches the CUDA runtime: allocation (through a caching BlockPool per
// device, tensor/block_pool.h, over cudaMalloc/cudaFree, with CUDA events for cross-stream frees),
// copies, and streams and events (tensor/stream.h).
#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "tensor/block_pool.h"
#include "tensor/error.h"
#include "tensor/storage.h"
#include "tensor/stream.h"
#include "tensor/tensor.h"

#ifdef STRAND_WITH_CUDA
#include <cuda.h>  // the driver's types only: its functions come from cudaGetDriverEntryPoint*
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_map>
#define STRAND_CUDA_CHECK(stmt)                                                              \
  do {                                                                                       \
    cudaError_t err_ = (stmt);                                                               \
    STRAND_CHECK(err_ == cudaSuccess, "CUDA error ", cudaGetErrorString(err_), " in `", #stmt, \
                 "` at ", __FILE__, ":", __LINE__);                                          \
  } while (0)
#endif

namespace strand {

#ifdef STRAND_WITH_CUDA
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // a driver error here means "no usable GPU", not a failure
    return 0;
  }
  return n;
}
#else
int cuda_device_count() { return 0; }
#endif
bool cuda_available() { return cuda_device_count() > 0; }

namespace cuda_rt {
#ifdef STRAND_WITH_CUDA
namespace {
// The answer of cudaEventQuery / cudaStreamQuery: true when the work has completed, false while it
// is still running; any other status is an error.
bool completed(cudaError_t r) {
  if (r == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  STRAND_CUDA_CHECK(r);
  return true;
}

// Makes `device` current for a scope (events and streams belong to a device).
class DeviceScope {
 public:
  explicit DeviceScope(int device) noexcept {
    if (cudaGetDevice(&prev_) == cudaSuccess && prev_ != device) {
      if (cudaSetDevice(device) == cudaSuccess) switched_ = true;
    }
    (void)cudaGetLastError();
  }
  ~DeviceScope() {
    if (switched_) cudaSetDevice(prev_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_ = 0;
  bool switched_ = false;
};

// ---- expandable segments: the driver's virtual memory calls ----
// Loaded through the runtime (cudaGetDriverEntryPointByVersion), so nothing links libcuda and a
// machine without a driver still loads the binaries.
struct VmmDriver {
  CUresult (*granularity)(size_t*, const CUmemAllocationProp*, CUmemAllocationGranularity_flags) = nullptr;
  CUresult (*reserve)(CUdeviceptr*, size_t, size_t, CUdeviceptr, unsigned long long) = nullptr;
  CUresult (*address_free)(CUdeviceptr, size_t) = nullptr;
  CUresult (*create)(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*, unsigned long long) = nullptr;
  CUresult (*release)(CUmemGenericAllocationHandle) = nullptr;
  CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long) = nullptr;
  CUresult (*unmap)(CUdeviceptr, size_t) = nullptr;
  CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc*, size_t) = nullptr;
  bool loaded = false;
};
template <class F>
bool driver_entry(const char* name, F& f) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
  const cudaError_t r = cudaGetDriverEntryPointByVersion(name, &p, 12000, cudaEnableDefault, &q);
#elif CUDART_VERSION >= 12000
  const cudaError_t r = cudaGetDriverEntryPoint(name, &p, cudaEnableDefault, &q);
#else
  const cudaError_t r = cudaGetDriverEntryPoint(name, &p, cudaEnableDefault);
  if (r == cudaSuccess) q = cudaDriverEntryPointSuccess;
#endif
  if (r != cudaSuccess || q != cudaDriverEntryPointSuccess || !p) {
    (void)cudaGetLastError();
    return false;
  }
  f = reinterpret_cast<F>(p);
  return true;
}
const VmmDriver& vmm_driver() {
  static const VmmDriver d = [] {
    VmmDriver v;
    v.loaded = driver_entry("cuMemGetAllocationGranularity", v.granularity) &&
               driver_entry("cuMemAddressReserve", v.reserve) && driver_entry("cuMemAddressFree", v.address_free) &&
               driver_entry("cuMemCreate", v.create) && driver_entry("cuMemRelease", v.release) &&
               driver_entry("cuMemMap", v.map) && driver_entry("cuMemUnmap", v.unmap) &&
               driver_entry("cuMemSetAccess", v.set_access);
    return v;
  }();
  return d;
}
bool expandable_requested() {
  const char* e = std::getenv("STRAND_EXPANDABLE_SEGMENTS");
  return e && *e && std::strcmp(e, "0") != 0;
}
void check_driver(CUresult r, const char* what, int device) {
  STRAND_CHECK(r == CUDA_SUCCESS, "CUDA driver error ", static_cast<int>(r), " in ", what, " on cuda:", device);
}

// The pool's virtual memory on `device`: each page its own physical allocation (cuMemCreate), so
// any run of pages can be unmapped and its memory returned; nullopt-like (map unset) where the
// driver cannot.
BlockPool::Vmm device_vmm(int device) {
  const VmmDriver& drv = vmm_driver();
  BlockPool::Vmm v;
  auto prop = std::make_shared<CUmemAllocationProp>();
  std::memset(prop.get(), 0, sizeof(CUmemAllocationProp));
  prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop->location.id = device;
  size_t page = 0, free_bytes = 0, total = 0;
  const DeviceScope on(device);  // for cudaMemGetInfo; the caller's device is restored
  if (!drv.loaded || drv.granularity(&page, prop.get(), CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS || page == 0 ||
      page % BlockPool::kRound != 0 || cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
    (void)cudaGetLastError();
    std::fprintf(stderr, "strand: STRAND_EXPANDABLE_SEGMENTS is set but cuda:%d's driver cannot map memory "
                         "(cuMemMap); using separate segments\n", device);
    return v;
  }
  v.page = page;
  v.reserve = (total + page - 1) / page * page;
  v.reserve_range = [&drv, page](size_t n) -> void* {
    CUdeviceptr p = 0;
    if (drv.reserve(&p, n, page, 0, 0) != CUDA_SUCCESS) return nullptr;
    return reinterpret_cast<void*>(p);
  };
  v.release_range = [&drv](void* p, size_t n) { drv.address_free(reinterpret_cast<CUdeviceptr>(p), n); };
  // The handle of every mapped page, by address (calls come under the pool's lock).
  auto handles = std::make_shared<std::unordered_map<uintptr_t, CUmemGenericAllocationHandle>>();
  auto unmap_pages = [&drv, handles, page, device](uintptr_t a, size_t n) {
    for (uintptr_t q = a; q < a + n; q += page) {
      const auto it = handles->find(q);
      STRAND_CHECK(it != handles->end(), "cuda:", device, ": unmapping page ", reinterpret_cast<void*>(q),
                   ", which the allocator did not map");
      check_driver(drv.unmap(q, page), "cuMemUnmap", device);
      check_driver(drv.release(it->second), "cuMemRelease", device);
      handles->erase(it);
    }
  };
  v.map = [&drv, handles, prop, page, device, unmap_pages](void* p, size_t n) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    size_t done = 0;
    // A failure leaves nothing mapped: out of memory returns false, any other error is thrown.
    const auto undo = [&](CUresult r, const char* what) {
      unmap_pages(a, done);
      if (r != CUDA_ERROR_OUT_OF_MEMORY) check_driver(r, what, device);
      return false;
    };
    for (; done < n; done += page) {
      CUmemGenericAllocationHandle h{};
      if (const CUresult r = drv.create(&h, page, prop.get(), 0); r != CUDA_SUCCESS) return undo(r, "cuMemCreate");
      if (const CUresult r = drv.map(a + done, page, 0, h, 0); r != CUDA_SUCCESS) {
        drv.release(h);
        return undo(r, "cuMemMap");
      }
      (*handles)[a + done] = h;
    }
    CUmemAccessDesc access{};
    access.location = prop->location;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    if (const CUresult r = drv.set_access(a, n, &access, 1); r != CUDA_SUCCESS) return undo(r, "cuMemSetAccess");
    return true;
  };
  v.unmap = [unmap_pages](void* p, size_t n) { unmap_pages(reinterpret_cast<uintptr_t>(p), n); };
  // Unlike cudaFree, unmapping does not wait for the device: work queued on any stream may still
  // use the pages, so the pool waits for all of it first (as PyTorch synchronises before it unmaps).
  v.synchronize = [device] {
    const DeviceScope on(device);
    STRAND_CUDA_CHECK(cudaDeviceSynchronize());
  };
  return v;
}

BlockPool& device_pool(int device) {
  static std::mutex mu;
  static auto* pools = new std::map<int, BlockPool*>;  // never destroyed: tensors may outlive statics
  std::lock_guard<std::mutex> lock(mu);
  BlockPool*& p = (*pools)[device];
  if (!p) {
    p = new BlockPool(
        "cuda:" + std::to_string(device),
        [device](size_t n) -> void* {
          void* q = nullptr;
          if (cudaSetDevice(device) != cudaSuccess || cudaMalloc(&q, n) != cudaSuccess) {
            (void)cudaGetLastError();  // out of memory is answered by the pool (release, retry, error)
            return nullptr;
          }
          return q;
        },
        [device](void* q) {
          cudaSetDevice(device);
          cudaFree(q);
        },
        // Called from free(), which must not throw: on failure (a sticky CUDA error) the stream is
        // waited for instead, best effort, and no event is returned.
        BlockPool::Events{[device](BlockPool::StreamId s) noexcept -> void* {
                            const DeviceScope on(device);
                            cudaEvent_t e = nullptr;
                            const auto st = reinterpret_cast<cudaStream_t>(s);
                            if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess ||
                                cudaEventRecord(e, st) != cudaSuccess) {
                              if (e) cudaEventDestroy(e);
                              (void)cudaStreamSynchronize(st);
                              (void)cudaGetLastError();
                              return nullptr;
                            }
                            return e;
                          },
                          [](void* e) { return completed(cudaEventQuery(static_cast<cudaEvent_t>(e))); },
                          [](void* e) { STRAND_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e))); },
                          [](void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); }},
        expandable_requested() ? device_vmm(device) : BlockPool::Vmm{});
  }
  return *p;
}

constexpr int kMaxDevices = 64;
// The calling thread's current stream of each device (0: the legacy default stream).
thread_local std::array<StreamId, kMaxDevices> t_current{};

int checked_index(Device d, const char* what) {
  STRAND_CHECK(d.is_cuda(), what, " needs a CUDA device, got ", d.str());
  STRAND_CHECK(d.index >= 0 && d.index < kMaxDevices && d.index < cuda_device_count(), what, ": no usable GPU ",
               d.str(), " (", cuda_device_count(), " visible)");
  return d.index;
}

int current_device() {
  int d = 0;
  STRAND_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

cudaStream_t current_cuda_stream() { return reinterpret_cast<cudaStream_t>(t_current[current_device()]); }

// A device's side streams: created on first use with the device current, never destroyed.
StreamId pooled_stream(int device, bool high_priority) {
  struct Pool {
    std::once_flag once;
    std::array<cudaStream_t, kStreamPoolSize> streams{};
    std::atomic<unsigned> next{0};
  };
  static std::array<Pool, kMaxDevices> low, high;
  Pool& pool = (high_priority ? high : low)[device];
  std::call_once(pool.once, [&] {
    int prev = current_device();
    STRAND_CUDA_CHECK(cudaSetDevice(device));
    int least = 0, greatest = 0;
    STRAND_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    for (cudaStream_t& s : pool.streams)
      STRAND_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, high_priority ? greatest : least));
    STRAND_CUDA_CHECK(cudaSetDevice(prev));
  });
  return reinterpret_cast<StreamId>(pool.streams[pool.next.fetch_add(1) % kStreamPoolSize]);
}
}  // namespace

void* malloc(size_t nbytes, int device) {
  STRAND_CHECK(cuda_available(), "a CUDA tensor was requested but no usable GPU was found");
  if (nbytes == 0) return nullptr;
  STRAND_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " is out of range");
  STRAND_CUDA_CHECK(cudaSetDevice(device));
  return device_pool(device).allocate(nbytes, t_current[device]);
}
void free(void* p, int device) noexcept {
  if (p) device_pool(device).free(p);
}
void record_stream(void* p, int device, uintptr_t stream) {
  if (p) device_pool(device).record_stream(p, stream);
}
StreamId current_stream_id(int device) { return t_current[device]; }
int exchange_device(int device) {
  int prev = 0;
  STRAND_CUDA_CHECK(cudaGetDevice(&prev));
  if (prev != device) STRAND_CUDA_CHECK(cudaSetDevice(device));
  return prev;
}
BlockPoolStats allocator_stats(int device) { return device_pool(device).stats(); }
void empty_cache(int device) { device_pool(device).empty_cache(); }
bool expandable_segments(int device) { return device_pool(device).expandable(); }
void reset_peak_stats(int device) { device_pool(device).reset_peaks(); }
void memcpy(void* dst, const void* src, size_t nbytes, CopyKind kind) {
  if (nbytes == 0) return;
  cudaMemcpyKind k = kind == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
                     : kind == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                                      : cudaMemcpyDeviceToDevice;
  cudaStream_t s = current_cuda_stream();
  STRAND_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, k, s));
  if (kind != CopyKind::DeviceToDevice) STRAND_CUDA_CHECK(cudaStreamSynchronize(s));
}
void memset_zero(void* dst, size_t nbytes) {
  if (nbytes) STRAND_CUDA_CHECK(cudaMemsetAsync(dst, 0, nbytes, current_cuda_stream()));
}
void synchronize() { STRAND_CUDA_CHECK(cudaDeviceSynchronize()); }
#else
namespace {
[[noreturn]] void no_cuda() {
  STRAND_CHECK(false, "a CUDA tensor was requested but strand was built without CUDA "
                      "(reconfigure with -DSTRAND_CUDA=ON on a machine with nvcc)");
  throw;  // unreachable
}
}  // namespace
void* malloc(size_t, int) { no_cuda(); }
void free(void*, int) noexcept {}
void record_stream(void*, int, uintptr_t) {}
StreamId current_stream_id(int) { return 0; }
int exchange_device(int device) { return device; }
BlockPoolStats allocator_stats(int) { return {}; }
void empty_cache(int) {}
bool expandable_segments(int) { return false; }
void reset_peak_stats(int) {}
void memcpy(void*, const void*, size_t, CopyKind) { no_cuda(); }
void memset_zero(void*, size_t) { no_cuda(); }
void synchronize() {}
#endif
}  // namespace cuda_rt

// ---------------- streams and events ----------------
#ifdef STRAND_WITH_CUDA
namespace {
cudaStream_t raw(const Stream& s) { return reinterpret_cast<cudaStream_t>(s.id()); }
}  // namespace

Stream default_stream(Device device) { return Stream(device, 0); }
Stream current_stream(Device device) {
  if (device.is_cpu()) return Stream();
  return Stream(device, cuda_rt::t_current[cuda_rt::checked_index(device, "current_stream")]);
}
Stream stream_from_pool(Device device, bool high_priority) {
  return Stream(device, cuda_rt::pooled_stream(cuda_rt::checked_index(device, "stream_from_pool"), high_priority));
}
void set_current_stream(const Stream& s) {
  if (s.device().is_cpu()) return;
  cuda_rt::t_current[cuda_rt::checked_index(s.device(), "set_current_stream")] = s.id();
}
void Stream::synchronize() const {
  if (device_.is_cuda()) STRAND_CUDA_CHECK(cudaStreamSynchronize(raw(*this)));
}
bool Stream::query() const {
  if (device_.is_cpu()) return true;
  return cuda_rt::completed(cudaStreamQuery(raw(*this)));
}
void Stream::wait(const Event& e) const { e.wait(*this); }

Event::~Event() {
  if (ev_) cudaEventDestroy(static_cast<cudaEvent_t>(ev_));
}
Event::Event(Event&& o) noexcept : ev_(std::exchange(o.ev_, nullptr)), device_(o.device_), timing_(o.timing_) {}
Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (ev_) cudaEventDestroy(static_cast<cudaEvent_t>(ev_));
    ev_ = std::exchange(o.ev_, nullptr);
    device_ = o.device_;
    timing_ = o.timing_;
  }
  return *this;
}
void Event::record(const Stream& s) {
  STRAND_CHECK(s.device().is_cuda(), "Event::record needs a CUDA stream, got one on ", s.device().str());
  STRAND_CHECK(!ev_ || device_ == s.device(), "Event::record: the event belongs to ", device_.str(),
               ", the stream to ", s.device().str());
  const cuda_rt::DeviceScope on(s.device().index);  // an event belongs to the device it is created on
  if (!ev_) {
    cudaEvent_t e = nullptr;
    STRAND_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing_ ? cudaEventDefault : cudaEventDisableTiming));
    ev_ = e;
    device_ = s.device();
  }
  STRAND_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(ev_), raw(s)));
}
void Event::wait(const Stream& s) const {
  if (!ev_ || s.device().is_cpu()) return;
  STRAND_CUDA_CHECK(cudaStreamWaitEvent(raw(s), static_cast<cudaEvent_t>(ev_), 0));
}
void Event::synchronize() const {
  if (ev_) STRAND_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(ev_)));
}
bool Event::query() const {
  if (!ev_) return true;
  return cuda_rt::completed(cudaEventQuery(static_cast<cudaEvent_t>(ev_)));
}
double Event::elapsed_ms(const Event& end) const {
  STRAND_CHECK(timing_ && end.timing_, "Event::elapsed_ms needs two events created with timing = true");
  STRAND_CHECK(ev_ && end.ev_, "Event::elapsed_ms: both events must have been recorded");
  float ms = 0;
  STRAND_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(ev_), static_cast<cudaEvent_t>(end.ev_)));
  return ms;
}
#else
namespace {
[[noreturn]] void no_cuda_streams(const char* what) {
  STRAND_CHECK(false, what, " needs CUDA, but strand was built without it (reconfigure with -DSTRAND_CUDA=ON)");
  throw;  // unreachable
}
}  // namespace
Stream default_stream(Device device) { return device.is_cpu() ? Stream() : Stream(device, 0); }
Stream current_stream(Device device) { return default_stream(device); }
Stream stream_from_pool(Device, bool) { no_cuda_streams("stream_from_pool"); }
void set_current_stream(const Stream& s) {
  if (s.device().is_cuda() && s.id() != 0) no_cuda_streams("set_current_stream");
}
void Stream::synchronize() const {}
bool Stream::query() const { return true; }
void Stream::wait(const Event&) const {}
Event::~Event() = default;
Event::Event(Event&& o) noexcept : ev_(nullptr), device_(o.device_), timing_(o.timing_) {}
Event& Event::operator=(Event&& o) noexcept {
  device_ = o.device_;
  timing_ = o.timing_;
  return *this;
}
void Event::record(const Stream& s) {
  STRAND_CHECK(s.device().is_cuda(), "Event::record needs a CUDA stream, got one on ", s.device().str());
  no_cuda_streams("Event::record");
}
void Event::wait(const Stream&) const {}
void Event::synchronize() const {}
bool Event::query() const { return true; }
double Event::elapsed_ms(const Event&) const { no_cuda_streams("Event::elapsed_ms"); }
#endif

void record_stream(const Tensor& t, const Stream& s) {
  if (!t.defined() || !t.is_cuda() || !s.device().is_cuda()) return;
  STRAND_CHECK(s.device() == t.device(), "record_stream: the tensor is on ", t.device().str(), ", the stream on ",
               s.device().str());
  const auto& st = t.storage();
  if (st && st->owns_memory()) cuda_rt::record_stream(st->data(), t.device().index, s.id());
}

}  // namespace strand
