#include "tensor/storage.h"

#include <cstdlib>
#include <new>

#include "tensor/error.h"

namespace strand {

namespace {
constexpr size_t kCpuAlignment = 64;
std::atomic<int64_t> g_live{0}, g_peak{0}, g_allocs{0};

void* cpu_alloc(size_t nbytes) {
  size_t rounded = (nbytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
  if (rounded == 0) rounded = kCpuAlignment;
  void* p = std::aligned_alloc(kCpuAlignment, rounded);
  STRAND_CHECK(p != nullptr, "out of CPU memory allocating ", nbytes, " bytes (live ",
               g_live.load(), " bytes, peak ", g_peak.load(), ")");
  int64_t live = g_live.fetch_add(static_cast<int64_t>(nbytes)) + static_cast<int64_t>(nbytes);
  int64_t peak = g_peak.load();
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  g_allocs.fetch_add(1);
  return p;
}
}  // namespace

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cpu()) {
    data_ = cpu_alloc(nbytes);
  } else {
    data_ = cuda_rt::malloc(nbytes, device.index);
  }
}

Storage::Storage(void* data, size_t nbytes, Device device, std::shared_ptr<void> owner)
    : data_(data), nbytes_(nbytes), device_(device), owner_(std::move(owner)) {}

Storage::~Storage() {
  if (owner_) return;  // external memory: the owner frees it
  if (device_.is_cpu()) {
    std::free(data_);
    g_live.fetch_sub(static_cast<int64_t>(nbytes_));
  } else {
    cuda_rt::free(data_, device_.index);
  }
}

AllocatorStats cpu_allocator_stats() { return {g_live.load(), g_peak.load(), g_allocs.load()}; }
void reset_cpu_peak_bytes() { g_peak.store(g_live.load()); }

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    bool digits = !idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos;
    STRAND_CHECK(digits, "bad device '", s, "': expected cpu, cuda or cuda:N");
    return cuda(std::stoi(idx));
  }
  STRAND_CHECK(false, "bad device '", s, "': expected cpu, cuda or cuda:N");
  return cpu();
}

}  // namespace strand
