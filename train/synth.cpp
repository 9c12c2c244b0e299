#include "train/synth.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tensor/error.h"
#include "tensor/philox.h"

namespace strand::train {

namespace {
const char* kMotif = "TATAAA";
constexpr int64_t kMotifWindow = 256;  // motifs counted within ±kMotifWindow/2 of the centre

// A stream of uniforms: (seed, stream id) -> u(i) in [0, 1).
struct Rng {
  uint64_t seed, stream;
  uint64_t i = 0;
  double u() {
    auto r = philox::philox4x32_10(seed, i++, stream);
    return philox::uniform_f64(r.x, r.y);
  }
  double normal() {
    const double u1 = 1.0 - u(), u2 = u();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  int64_t below(int64_t n) { return std::min<int64_t>(n - 1, static_cast<int64_t>(u() * static_cast<double>(n))); }
};

std::string random_seq(Rng& r, int64_t n, const char* alphabet, int64_t k) {
  std::string s(static_cast<size_t>(n), 'A');
  for (auto& c : s) c = alphabet[r.below(k)];
  return s;
}

double gc(const std::string& s, size_t b, size_t e) {
  if (e <= b) return 0;
  size_t n = 0;
  for (size_t i = b; i < e; ++i) n += s[i] == 'G' || s[i] == 'C';
  return static_cast<double>(n) / static_cast<double>(e - b);
}

// Tissue weights over the features: a shared direction plus per-tissue variation, so tissues
// correlate but differ.
std::vector<double> tissue_weights(uint64_t seed, int num_labels) {
  Rng r{seed, 0xC0FFEE};
  const double shared[kSynthFeatures] = {1.2, 2.5, 2.0, 1.0, 2.5, 0.8};
  std::vector<double> w(static_cast<size_t>(num_labels * kSynthFeatures));
  for (int t = 0; t < num_labels; ++t)
    for (int j = 0; j < kSynthFeatures; ++j) w[t * kSynthFeatures + j] = shared[j] * (0.6 + 0.8 * r.u());
  return w;
}
}  // namespace

std::vector<double> synth_features(const std::string& dna, const std::string& rna, const std::string& protein) {
  std::vector<double> f(kSynthFeatures, 0.0);
  const size_t c = dna.size() / 2, half = kMotifWindow / 2;
  const size_t b = c > half ? c - half : 0, e = std::min(dna.size(), c + half);
  int motifs = 0;
  for (size_t i = b; i + 6 <= e; ++i) motifs += dna.compare(i, 6, kMotif) == 0;
  f[0] = motifs;                                      // promoter-like motif count
  f[1] = gc(dna, b, e) - 0.5;                         // central GC content
  f[2] = gc(rna, 0, rna.size()) - 0.5;                // RNA GC content
  f[3] = std::log(1.0 + static_cast<double>(rna.size())) - 5.0;  // RNA length
  if (!protein.empty()) {
    size_t h = 0;
    for (char ch : protein) h += std::string_view("AILMFVW").find(ch) != std::string_view::npos;
    f[4] = static_cast<double>(h) / static_cast<double>(protein.size()) - 0.35;  // hydrophobic fraction
    f[5] = std::log(1.0 + static_cast<double>(protein.size())) - 3.5;
  } else {
    f[5] = -3.5;  // non-coding
  }
  return f;
}

void write_synthetic_dataset(const std::string& dir, const SynthConfig& cfg, bool progress) {
  STRAND_CHECK(cfg.n_train > 0 && cfg.n_valid > 1 && cfg.n_test > 1, "synthetic data: need n_train > 0 and at least 2 "
               "validation and test rows, got ", cfg.n_train, "/", cfg.n_valid, "/", cfg.n_test);
  STRAND_CHECK(cfg.train_files >= 1 && cfg.train_files <= cfg.n_train, "synthetic data: train_files must be in [1, ",
               cfg.n_train, "], got ", cfg.train_files);
  STRAND_CHECK(cfg.dna_length >= kMotifWindow, "synthetic data: dna_length must be at least ", kMotifWindow, ", got ",
               cfg.dna_length);
  STRAND_CHECK(cfg.rna_min >= 1 && cfg.rna_max >= cfg.rna_min, "synthetic data: bad RNA length range [", cfg.rna_min,
               ", ", cfg.rna_max, "]");
  STRAND_CHECK(cfg.protein_max >= 1 && cfg.num_labels >= 1, "synthetic data: protein_max and num_labels must be >= 1");
  std::filesystem::create_directories(dir);
  const auto w = tissue_weights(cfg.seed, cfg.num_labels);

  int64_t next_id = 0;
  auto write_file = [&](const std::string& name, int64_t rows, uint64_t split) {
    const std::string path = (std::filesystem::path(dir) / name).string(), tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      STRAND_CHECK(out.good(), "cannot write '", tmp, "'");
      out << "transcript_id\tgene_id";
      for (int t = 0; t < cfg.num_labels; ++t) out << "\tlabels_" << t;
      out << "\tchromosome\ttss\ttes\tstrand\trna_seq\tprotein_seq\tdna_seq\n";
      char num[32];
      for (int64_t i = 0; i < rows; ++i, ++next_id) {
        Rng r{cfg.seed, (split << 40) + static_cast<uint64_t>(i) + 1};
        std::string dna = random_seq(r, cfg.dna_length, "ACGT", 4);
        // Plant 0-4 motifs near the centre and shift the central GC content per transcript.
        const int64_t motifs = r.below(5), c = cfg.dna_length / 2;
        for (int64_t m = 0; m < motifs; ++m) {
          const int64_t at = c - kMotifWindow / 2 + 8 + r.below(kMotifWindow - 16);
          dna.replace(static_cast<size_t>(at), 6, kMotif);
        }
        const double gc_bias = r.u();
        for (int64_t k = c - kMotifWindow / 2; k < c + kMotifWindow / 2; ++k)
          if (r.u() < 0.3) dna[k] = r.u() < gc_bias ? (r.u() < 0.5 ? 'G' : 'C') : (r.u() < 0.5 ? 'A' : 'T');
        const int64_t rl = cfg.rna_min + r.below(cfg.rna_max - cfg.rna_min + 1);
        const double rna_gc = 0.25 + 0.5 * r.u();
        std::string rna(static_cast<size_t>(rl), 'A');
        for (auto& ch : rna) ch = r.u() < rna_gc ? (r.u() < 0.5 ? 'G' : 'C') : (r.u() < 0.5 ? 'A' : 'T');
        std::string protein;
        if (r.u() >= cfg.noncoding_fraction) {
          const int64_t pl = 1 + r.below(cfg.protein_max);
          const double hyd = 0.1 + 0.5 * r.u();
          protein.resize(static_cast<size_t>(pl));
          for (auto& ch : protein) ch = r.u() < hyd ? "AILMFVW"[r.below(7)] : "RNDCQEGHKPSTY"[r.below(13)];
        }
        const auto f = synth_features(dna, rna, protein);
        out << "ENST" << 10000000 + next_id << "\tENSG" << 20000000 + next_id / 3;
        for (int t = 0; t < cfg.num_labels; ++t) {
          double y = -1.0;
          for (int j = 0; j < kSynthFeatures; ++j) y += w[t * kSynthFeatures + j] * f[j];
          y = 2.0 * y + cfg.noise * r.normal();
          if (y < -2.5) y = kZeroTpmLabel;  // not expressed: the floor every zero-TPM transcript shares
          std::snprintf(num, sizeof num, "%.17g", y);  // round-trips exactly: floor ties stay ties
          out << '\t' << num;
        }
        out << "\tchr" << 1 + split << '\t' << 1000 + i * 10 << '\t' << 1000 + i * 10 + rl << "\t+\t" << rna << '\t'
            << protein << '\t' << dna << '\n';
      }
      STRAND_CHECK(out.good(), "writing '", tmp, "' failed");
    }
    std::filesystem::rename(tmp, path);
    if (progress) std::printf("strand-synth: wrote %s (%lld rows)\n", path.c_str(), static_cast<long long>(rows));
  };
  for (int k = 0; k < cfg.train_files; ++k) {
    const int64_t b = cfg.n_train * k / cfg.train_files, e = cfg.n_train * (k + 1) / cfg.train_files;
    write_file("train_" + std::to_string(k + 1) + ".tsv", e - b, static_cast<uint64_t>(k + 1));
  }
  write_file("validation.tsv", cfg.n_valid, 100);
  write_file("test.tsv", cfg.n_test, 200);
}

}  // namespace strand::train
