#include "train/cli.h"

#include <cstdio>

#include "kernels/ops.h"
#include "tensor/error.h"
#include "train/dist/communicator.h"

namespace strand::train {

Splits open_splits(const Config& cfg) {
  SplitFiles f = find_split_files(cfg.data.dir);
  Splits s;
  s.train = std::make_unique<SplitData>(f.train, cfg.data.num_labels);
  s.validation = std::make_unique<SplitData>(f.validation, cfg.data.num_labels);
  s.test = std::make_unique<SplitData>(f.test, cfg.data.num_labels);
  if (cfg.data.normalize) {
    label_statistics({s.train.get(), s.validation.get()}, s.mean, s.std);
    for (SplitData* d : {s.train.get(), s.validation.get(), s.test.get()}) d->set_normalisation(s.mean, s.std);
  } else {
    s.mean.assign(cfg.data.num_labels, 0.0);
    s.std.assign(cfg.data.num_labels, 1.0);
  }
  return s;
}

SplitData& split_by_name(Splits& s, const std::string& name) {
  if (name == "train") return *s.train;
  if (name == "validation" || name == "valid" || name == "val") return *s.validation;
  if (name == "test") return *s.test;
  STRAND_CHECK(false, "unknown split '", name, "' (expected train, validation or test)");
  return *s.test;
}

int run_tool(const char* tool, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
  }
  return 2;
}

Device device_from_config(const Config& cfg) {
  Device device = Device::parse(cfg.trainer.device);
  // Under mpirun each rank takes the GPU of its local rank, as the NCCL communicator does; a fixed
  // cuda:N would put every rank on one GPU while their communicators used others.
  STRAND_CHECK(!device.is_cuda() || cfg.trainer.device == "cuda" || dist::env_world_size() <= 1,
               "trainer.device '", cfg.trainer.device, "': with ", dist::env_world_size(),
               " processes use trainer.device = \"cuda\" (each rank takes the GPU of its local rank; "
               "CUDA_VISIBLE_DEVICES picks which)");
  if (device.is_cuda()) {
    STRAND_CHECK(cuda_available(), "trainer.device '", cfg.trainer.device,
                 "': no usable CUDA GPU here (or this build has no CUDA backend)");
    // "cuda" under mpirun: one GPU per local rank (the NCCL communicator picks the same one).
    if (cfg.trainer.device == "cuda") device = Device::cuda(dist::env_local_rank() % cuda_device_count());
    STRAND_CHECK(device.index < cuda_device_count(), "trainer.device '", cfg.trainer.device, "': this machine has ",
                 cuda_device_count(), " GPU(s)");
  }
  ops::set_allow_tf32(cfg.trainer.tf32);
  return device;
}

}  // namespace strand::train
