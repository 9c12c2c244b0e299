#pragma once
// What the strand-* binaries share: loading the data splits of a config with ModelGenerator's label
// normalisation, and the one-line error convention (exit code 2).
#include <functional>
#include <memory>
#include <string>

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

// Runs body; a strand::Error (or any std::exception) is printed as "<tool>: <message>" and gives 2.
int run_tool(const char* tool, const std::function<int()>& body);

}  // namespace strand::train
