#pragma once
// A per-kernel time profile for finding where a step's time goes (the GPU machines here have no
// Nsight Systems): every op-layer kernel call (STRAND_DISPATCH) is timed under its kernel's name,
// with the device synchronised before and after so GPU time lands on the kernel that spent it.
// Off by default (one relaxed atomic load per call); STRAND_PROFILE=1 in the environment or
// set_enabled(true) turns it on. Synchronising serialises the GPU, so profiled steps run slower:
// the profile says where time goes, not how long an unprofiled step takes.
#include <cstdint>
#include <string>
#include <vector>

namespace strand::prof {

bool enabled();
void set_enabled(bool on);
void reset();

struct Entry {
  std::string name;
  int64_t calls = 0;
  double seconds = 0;
};
std::vector<Entry> report();  // by total time, largest first
std::string report_text(size_t top = 25);  // a table of the largest entries

// Times its scope under `name` when profiling is on (names must outlive the profile: literals).
class Scope {
 public:
  Scope(const char* name, bool cuda);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_ = nullptr;  // null when profiling is off
  bool cuda_ = false;
  int64_t start_ns_ = 0;
};

}  // namespace strand::prof
