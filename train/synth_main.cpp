// strand-synth: writes a synthetic dataset in the GenBio TSV layout (see train/synth.h).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tensor/error.h"
#include "train/synth.h"

namespace {
void usage(FILE* f) {
  std::fprintf(f,
               "usage: strand-synth --out DIR [options]\n"
               "Writes train_*.tsv, validation.tsv and test.tsv with a planted signal in all three\n"
               "modalities (DNA motif near the centre, RNA composition/length, protein features).\n"
               "  --out DIR            output directory (created if needed)\n"
               "  --train N            training rows (default 256)\n"
               "  --valid N            validation rows (default 64)\n"
               "  --test N             test rows (default 64)\n"
               "  --train-files K      number of train_*.tsv files (default 2)\n"
               "  --dna-length L       DNA length of every row (default 2048)\n"
               "  --rna-min N --rna-max N   RNA length range (default 60..240)\n"
               "  --protein-max N      longest protein (default 80)\n"
               "  --labels N           label columns (default 30)\n"
               "  --noise F            label noise std (default 0.5)\n"
               "  --seed S             random seed (default 0)\n");
}
}  // namespace

int main(int argc, char** argv) {
  strand::train::SynthConfig cfg;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "strand-synth: '%s' needs a value (see --help)\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    char* end = nullptr;
    const double num = std::strtod(v.c_str(), &end);
    const bool is_num = end && *end == '\0' && !v.empty();
    auto need_num = [&]() {
      if (!is_num) {
        std::fprintf(stderr, "strand-synth: bad value '%s' for %s\n", v.c_str(), a.c_str());
        std::exit(2);
      }
      return num;
    };
    if (a == "--out") out = v;
    else if (a == "--train") cfg.n_train = static_cast<int64_t>(need_num());
    else if (a == "--valid") cfg.n_valid = static_cast<int64_t>(need_num());
    else if (a == "--test") cfg.n_test = static_cast<int64_t>(need_num());
    else if (a == "--train-files") cfg.train_files = static_cast<int>(need_num());
    else if (a == "--dna-length") cfg.dna_length = static_cast<int64_t>(need_num());
    else if (a == "--rna-min") cfg.rna_min = static_cast<int64_t>(need_num());
    else if (a == "--rna-max") cfg.rna_max = static_cast<int64_t>(need_num());
    else if (a == "--protein-max") cfg.protein_max = static_cast<int64_t>(need_num());
    else if (a == "--labels") cfg.num_labels = static_cast<int>(need_num());
    else if (a == "--noise") cfg.noise = need_num();
    else if (a == "--seed") cfg.seed = static_cast<uint64_t>(need_num());
    else {
      std::fprintf(stderr, "strand-synth: unknown option '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (out.empty()) {
    std::fprintf(stderr, "strand-synth: --out DIR is required (see --help)\n");
    return 2;
  }
  try {
    strand::train::write_synthetic_dataset(out, cfg, true);
  } catch (const strand::Error& e) {
    std::fprintf(stderr, "strand-synth: %s\n", e.what());
    return 2;
  }
  return 0;
}
