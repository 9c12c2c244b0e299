// strand-train: trains ModelGenerator's (multi-modal) isoform-expression regression from a TOML config.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "train/cli.h"
#include "train/dist/communicator.h"
#include "train/task.h"
#include "train/trainer.h"

using namespace strand;
using namespace strand::train;

namespace {
void usage(FILE* f) {
  std::fprintf(f,
               "usage: strand-train --config FILE [--set key.path=value ...] [--resume]\n"
               "Trains the regression task the config describes (configs/*.toml) on the data in data.dir\n"
               "(train_*.tsv, validation.tsv, test.tsv). Writes run_dir/{last,best}.safetensors,\n"
               "run_dir/metrics.csv and run_dir/config.toml.\n"
               "  --config FILE        the experiment config\n"
               "  --set a.b=c          override any config key (repeatable)\n"
               "  --resume             continue from run_dir/last.safetensors (same losses as uninterrupted)\n"
               "Data parallel: mpirun -np N strand-train --config FILE (data.batch_size rows per rank and step;\n"
               "rank 0 alone prints and writes; see README, \"Multi-process training\").\n");
}
}  // namespace

int main(int argc, char** argv) {
  // The arguments and the config are read first (they pick the device, and with it the backend:
  // MPI for the CPU, NCCL for GPUs). Under mpirun the communicator is made next, and from then on
  // a rank that fails brings the job down with its message instead of leaving the others blocked
  // in a collective.
  std::shared_ptr<dist::Communicator> comm;
  std::string config_path;
  std::vector<std::string> sets;
  bool resume = false, help = false;
  Config cfg;
  Device device;
  const int code = run_tool("strand-train", [&] {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        usage(stdout);
        help = true;
        return 0;
      }
      if (a == "--resume") {
        resume = true;
        continue;
      }
      STRAND_CHECK(a == "--config" || a == "--set", "unknown option '", a, "' (see --help)");
      STRAND_CHECK(i + 1 < argc, a, " needs a value (see --help)");
      (a == "--config" ? config_path : sets.emplace_back()) = argv[++i];
    }
    STRAND_CHECK(!config_path.empty(), "--config FILE is required (see --help)");
    cfg = load_config(config_path, sets);
    device = device_from_config(cfg);
    comm = dist::communicator_from_env(cfg.trainer.device);
    return 0;
  });
  if (code != 0 || help) return code;
  dist::set_world(comm);
  if (comm->rank() != 0) std::freopen("/dev/null", "w", stdout);  // rank 0 alone logs; errors still reach stderr
  return dist::run_or_abort("strand-train", *comm, [&] {
    Splits s = open_splits(cfg);
    std::printf("strand-train: data %s: %lld train, %lld validation, %lld test rows\n", cfg.data.dir.c_str(),
                static_cast<long long>(s.train->size()), static_cast<long long>(s.validation->size()),
                static_cast<long long>(s.test->size()));
    manual_seed(cfg.trainer.seed);  // weight initialisation
    auto task = std::make_shared<RegressionTask>(cfg);
    if (device.is_cuda()) task->to(device);
    std::printf("strand-train: %s on %s\n", task->summary().c_str(), device.str().c_str());
    std::filesystem::create_directories(cfg.trainer.run_dir);
    {
      std::ifstream in(config_path);
      std::ofstream out(std::filesystem::path(cfg.trainer.run_dir) / "config.toml");
      out << in.rdbuf();
      for (const auto& s2 : sets) out << "\n# --set " << s2;
      out << "\n";
    }
    Trainer trainer(cfg, task, *s.train, s.validation.get(), s.mean, s.std);
    FitResult r = trainer.fit(resume);
    std::printf("strand-train: done after %lld steps; best validation Spearman %.4f; checkpoints in %s\n",
                static_cast<long long>(r.steps), r.best_val_spearman, cfg.trainer.run_dir.c_str());
    return 0;
  });
}
