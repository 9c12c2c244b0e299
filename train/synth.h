#pragma once
// Synthetic isoform-expression data in the GenBio TSV layout, with a planted signal: each label is
// a tissue-specific linear function of features from all three modalities — a DNA motif count near
// the sequence centre and the central GC content, the RNA's GC content and length, the protein's
// hydrophobic fraction and length — plus noise, floored at the zero-TPM value log2(1e-4) so many
// labels tie, as in the real data. No single modality carries all the signal, so a fused model
// beats each single-modality one. Deterministic from the seed (Philox; no std:: distributions).
#include <cstdint>
#include <string>
#include <vector>

namespace strand::train {

struct SynthConfig {
  int64_t n_train = 256, n_valid = 64, n_test = 64;
  int train_files = 2;              // train_1.tsv .. train_<k>.tsv
  int64_t dna_length = 2048;        // every DNA sequence has this length (Enformer needs one length)
  int64_t rna_min = 60, rna_max = 240;
  int64_t protein_max = 80;         // proteins are 0 (non-coding, "") .. protein_max long
  double noncoding_fraction = 0.2;  // share of transcripts with an empty protein
  int num_labels = 30;
  double noise = 0.5;               // label noise standard deviation
  uint64_t seed = 0;
};

constexpr double kZeroTpmLabel = -13.287712379549449;  // log2(1e-4)

// The planted features of one transcript (what the labels are a function of).
std::vector<double> synth_features(const std::string& dna, const std::string& rna, const std::string& protein);
constexpr int kSynthFeatures = 6;

// Writes train_*.tsv, validation.tsv and test.tsv into `dir` (created if needed), each file
// atomically. `progress` prints a line per file.
void write_synthetic_dataset(const std::string& dir, const SynthConfig& cfg, bool progress = false);

}  // namespace strand::train
