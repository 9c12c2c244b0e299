#include "kernels/profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "tensor/storage.h"

namespace strand::prof {

namespace {
std::atomic<bool>& flag() {
  static std::atomic<bool> f{[] {
    const char* e = std::getenv("STRAND_PROFILE");
    return e != nullptr && e[0] != '\0' && e[0] != '0';
  }()};
  return f;
}
struct Table {
  std::mutex mu;
  std::map<std::string, Entry> entries;
};
Table& table() {
  static Table t;
  return t;
}
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

bool enabled() { return flag().load(std::memory_order_relaxed); }
void set_enabled(bool on) { flag() = on; }
void reset() {
  std::lock_guard<std::mutex> lock(table().mu);
  table().entries.clear();
}

std::vector<Entry> report() {
  std::vector<Entry> r;
  {
    std::lock_guard<std::mutex> lock(table().mu);
    for (const auto& [k, e] : table().entries) r.push_back(e);
  }
  std::sort(r.begin(), r.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return r;
}

std::string report_text(size_t top) {
  const auto r = report();
  double total = 0;
  for (const Entry& e : r) total += e.seconds;
  std::string s = "kernel                        calls      total ms   share\n";
  char line[128];
  for (size_t i = 0; i < r.size() && i < top; ++i) {
    std::snprintf(line, sizeof line, "%-28s %6lld %13.3f %6.1f%%\n", r[i].name.c_str(),
                  static_cast<long long>(r[i].calls), r[i].seconds * 1e3, total > 0 ? 100 * r[i].seconds / total : 0.0);
    s += line;
  }
  std::snprintf(line, sizeof line, "%-28s %6s %13.3f\n", "(all kernels)", "", total * 1e3);
  return s + line;
}

Scope::Scope(const char* name, bool cuda) {
  if (!enabled()) return;
  name_ = name;
  cuda_ = cuda;
  if (cuda_) cuda_rt::synchronize();
  start_ns_ = now_ns();
}

Scope::~Scope() {
  if (!name_) return;
  if (cuda_) {
    try {
      cuda_rt::synchronize();
    } catch (...) {  // a destructor must not throw; the kernel's own check reports the error
    }
  }
  const double s = static_cast<double>(now_ns() - start_ns_) * 1e-9;
  std::lock_guard<std::mutex> lock(table().mu);
  Entry& e = table().entries[name_];
  e.name = name_;
  ++e.calls;
  e.seconds += s;
}

}  // namespace strand::prof
