#pragma once
// What the strand-* binaries share: loading the data splits of a config with ModelGenerator's label
// normalisation, and the one-line error convention (exit code 2).
#include <functional>
#include <memory>
#include <string>

#include "tensor/device.h"
#include "train/config.h"
#include "train/data.h"

namespace strand::train {

struct Splits {
  std::unique_ptr<SplitData> train, validation, test;
  std::vector<double> mean, std;  // label statistics over train + validation (population std)
};
// Opens the data directory of the config and z-scores every split (when data.normalize).
Splits open_splits(const Config& cfg);
SplitData& split_by_name(Splits& s, const std::string& name);  // train | validation | test

// The device trainer.device names ("cpu", "cuda" = this process's GPU under mpirun, "cuda:N"),
// checked against this machine; also applies trainer.tf32. An error names the bad value.
Device device_from_config(const Config& cfg);

// Runs body; a strand::Error (or any std::exception) is printed as "<tool>: <message>" and gives 2.
int run_tool(const char* tool, const std::function<int()>& body);

}  // namespace strand::train
