#pragma once
#include <ostream>
#include <string>

namespace strand {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  // "cpu", "cuda", "cuda:1"; anything else is a strand::Error naming the string.
  static Device parse(const std::string& s);

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};
inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

// True when this build has the CUDA backend and at least one GPU can be used. A driver error from
// cudaGetDeviceCount (the usual case on a machine without a GPU) counts as none.
bool cuda_available();
int cuda_device_count();

}  // namespace strand
