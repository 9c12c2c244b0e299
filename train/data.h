#pragma once
// The GenBio isoform-expression data: TSV files with a header row, read by column name
// (transcript_id, labels_0..labels_29, dna_seq, rna_seq, protein_seq, ...). Files are 1-3 GB (DNA
// is ~196 kB per row), so rows are never all in memory: one pass builds an index of row byte
// offsets, which also parses the label columns, and is cached beside the file as
// "<file>.strand-index" (rebuilt when the file's size or modification time changes). Rows are then
// read on demand with pread. Empty cells stay "" (an absent protein is two special tokens later).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace strand::train {

class TsvFile {
 public:
  // Opens (and indexes, or loads the cached index of) `path`. `label_columns` are parsed as
  // doubles during indexing; a malformed row is an error naming the file, line and column.
  TsvFile(const std::string& path, const std::vector<std::string>& label_columns, bool use_cache = true);
  ~TsvFile();
  TsvFile(const TsvFile&) = delete;
  TsvFile& operator=(const TsvFile&) = delete;

  const std::string& path() const { return path_; }
  int64_t num_rows() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  const std::vector<std::string>& columns() const { return columns_; }
  // Index of a column; an unknown name is an error listing the columns the file has.
  int64_t column(const std::string& name) const;
  bool has_column(const std::string& name) const;
  // The fields of row i (0-based data row; line i + 2 of the file).
  std::vector<std::string> row(int64_t i) const;
  // Labels of row i, in the order of label_columns (parsed at indexing time).
  const double* labels(int64_t i) const { return labels_.data() + i * num_labels_; }
  int64_t num_labels() const { return num_labels_; }
  bool index_was_cached() const { return index_was_cached_; }

 private:
  void build_index(const std::vector<std::string>& label_columns);
  bool load_cache(const std::string& cache, const std::vector<std::string>& label_columns);
  void save_cache(const std::string& cache, const std::vector<std::string>& label_columns) const;

  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  int64_t mtime_ns_ = 0;
  std::vector<std::string> columns_;
  std::vector<uint64_t> offsets_;  // start of each data row, plus the end of the last
  int64_t num_labels_ = 0;
  std::vector<double> labels_;
  bool index_was_cached_ = false;
};

struct Sample {
  std::string transcript_id, dna, rna, protein;
  std::vector<double> labels;  // z-scored when the dataset is normalised
};

// One split: one or more TSV files (train_*.tsv) read as a single sequence of rows.
class SplitData {
 public:
  SplitData(std::vector<std::string> files, int num_labels = 30, bool use_cache = true);
  int64_t size() const { return total_; }
  const std::vector<std::string>& files() const { return files_; }
  Sample get(int64_t i) const;
  // Raw (un-normalised) labels, row-major [size, num_labels].
  std::vector<double> raw_labels() const;
  int num_labels() const { return num_labels_; }
  // (y - mean) / std per label column, applied by get().
  void set_normalisation(std::vector<double> mean, std::vector<double> std);

 private:
  std::vector<std::string> files_;
  std::vector<std::unique_ptr<TsvFile>> tsv_;
  std::vector<int64_t> starts_;
  int64_t total_ = 0;
  int num_labels_;
  std::vector<double> mean_, std_;
};

// Files of a data directory: train_*.tsv (numeric order: train_2 before train_10), validation.tsv,
// test.tsv. A missing split is an error naming the directory and pattern.
struct SplitFiles {
  std::vector<std::string> train, validation, test;
};
SplitFiles find_split_files(const std::string& dir);

// Per-label mean and population std over the union of the given splits (ModelGenerator uses
// train + validation); a zero std becomes 1 so constant labels do not divide by zero.
void label_statistics(const std::vector<const SplitData*>& splits, std::vector<double>& mean, std::vector<double>& std);

std::vector<std::string> label_column_names(int n);  // labels_0 .. labels_{n-1}

}  // namespace strand::train
