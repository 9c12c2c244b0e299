#pragma once
// CUDA streams and events, after c10::cuda's: every CUDA kernel, cuBLAS call, copy and fill is
// queued on the calling thread's *current stream* of its device, which is the device's default
// stream until a StreamGuard (or set_current_stream) says otherwise. Side streams come from a
// fixed per-device pool of non-blocking streams that are never destroyed, so a stream handle stays
// valid for the life of the process (the caching allocator keys its blocks by stream).
//
// Memory follows the stream it was allocated on (tensor/block_pool.h). When a tensor allocated on
// one stream is used by work queued on another, call record_stream(tensor, other) before dropping
// it: its memory is then not reused until the work queued on `other` so far has finished.
//
// Ordering between streams is explicit: Event::record on the producer, Event::wait (or
// Stream::wait) on the consumer. A CPU "stream" (id 0 on a CPU device) exists so that code can be
// written once; its synchronisation calls do nothing. Without a CUDA build, side streams and events
// are strand::Errors that say so.
#include <cstdint>

#include "tensor/device.h"

namespace strand {

class Tensor;
class Event;

using StreamId = uintptr_t;  // the cudaStream_t handle; 0 is the device's legacy default stream

class Stream {
 public:
  Stream() = default;  // the CPU stream
  Stream(Device device, StreamId id) : device_(device), id_(id) {}
  Device device() const { return device_; }
  StreamId id() const { return id_; }
  bool is_default() const { return id_ == 0; }
  void synchronize() const;         // blocks the host until all work queued on it has run
  bool query() const;               // whether all work queued on it has run
  void wait(const Event& e) const;  // work queued on it from now on waits for e
  bool operator==(const Stream&) const = default;

 private:
  Device device_;
  StreamId id_ = 0;
};

Stream default_stream(Device device);
Stream current_stream(Device device);
// One of `kStreamPoolSize` non-blocking streams of the device, handed out round robin (as
// torch.cuda.Stream() takes from PyTorch's pool); high_priority ones come from a second pool.
Stream stream_from_pool(Device device, bool high_priority = false);
constexpr int kStreamPoolSize = 32;
// Sets the calling thread's current stream for s.device(). Prefer StreamGuard.
void set_current_stream(const Stream& s);

namespace cuda_rt {
// Makes `device` the current CUDA device; returns the previous one (no-op without CUDA).
int exchange_device(int device);
}  // namespace cuda_rt

// Makes `s` current for its device, and (a CUDA stream) its device the current device, as
// c10::cuda::CUDAStreamGuard does, until the guard goes out of scope; then restores both.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s) : prev_(current_stream(s.device())) {
    if (s.device().is_cuda()) prev_device_ = cuda_rt::exchange_device(s.device().index);
    set_current_stream(s);
  }
  ~StreamGuard() {
    set_current_stream(prev_);
    if (prev_device_ >= 0) cuda_rt::exchange_device(prev_device_);
  }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream prev_;
  int prev_device_ = -1;
};

// A CUDA event, created lazily on its first record. Movable, not copyable.
class Event {
 public:
  explicit Event(bool timing = false) : timing_(timing) {}
  ~Event();
  Event(Event&& o) noexcept;
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(const Stream& s);         // captures the work queued on s so far (re-recording moves it)
  void wait(const Stream& s) const;     // work queued on s from now on waits for it; nothing if never recorded
  void synchronize() const;             // blocks the host until it has completed; nothing if never recorded
  bool query() const;                   // completed (true if never recorded)
  bool recorded() const { return ev_ != nullptr; }
  // Milliseconds from this event to `end`, both recorded with timing = true and completed.
  double elapsed_ms(const Event& end) const;

 private:
  void* ev_ = nullptr;
  Device device_;
  bool timing_;
};

// The memory of t (a CUDA tensor from the caching allocator) is used by work queued on s: when the
// last handle to it goes, it is held back until that work has run. Does nothing for CPU tensors,
// for memory owned elsewhere, and for t's own allocation stream.
void record_stream(const Tensor& t, const Stream& s);

namespace cuda_rt {
// The current stream of `device` for the calling thread, as a raw handle (kernels' hot path).
StreamId current_stream_id(int device);
}  // namespace cuda_rt

}  // namespace strand
