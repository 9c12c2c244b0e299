#include "train/data.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tensor/error.h"

namespace strand::train {

namespace {
constexpr char kMagic[8] = {'S', 'T', 'R', 'I', 'D', 'X', '1', '\0'};

std::vector<std::string> split_tabs(std::string_view line) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t tab = line.find('\t', start);
    if (tab == std::string_view::npos) {
      out.emplace_back(line.substr(start));
      return out;
    }
    out.emplace_back(line.substr(start, tab - start));
    start = tab + 1;
  }
}
void strip_eol(std::string& s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
}
std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += e + '\t';
  return s;
}
}  // namespace

std::vector<std::string> label_column_names(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back("labels_" + std::to_string(i));
  return v;
}

TsvFile::TsvFile(const std::string& path, const std::vector<std::string>& label_columns, bool use_cache)
    : path_(path), num_labels_(static_cast<int64_t>(label_columns.size())) {
  struct stat st {};
  STRAND_CHECK(::stat(path.c_str(), &st) == 0, "cannot open data file '", path, "': ", std::strerror(errno));
  STRAND_CHECK(S_ISREG(st.st_mode), "data file '", path, "' is not a regular file");
  file_size_ = static_cast<uint64_t>(st.st_size);
  mtime_ns_ = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  STRAND_CHECK(fd_ >= 0, "cannot open data file '", path, "': ", std::strerror(errno));
  {
    std::ifstream in(path, std::ios::binary);
    std::string header;
    std::getline(in, header);
    strip_eol(header);
    STRAND_CHECK(!header.empty(), "data file '", path, "' is empty (expected a header row)");
    columns_ = split_tabs(header);
  }
  for (const auto& l : label_columns) (void)column(l);  // every label column must exist
  const std::string cache = path + ".strand-index";
  if (use_cache && load_cache(cache, label_columns)) {
    index_was_cached_ = true;
    return;
  }
  build_index(label_columns);
  if (use_cache) save_cache(cache, label_columns);
}

TsvFile::~TsvFile() {
  if (fd_ >= 0) ::close(fd_);
}

bool TsvFile::has_column(const std::string& name) const {
  return std::find(columns_.begin(), columns_.end(), name) != columns_.end();
}

int64_t TsvFile::column(const std::string& name) const {
  auto it = std::find(columns_.begin(), columns_.end(), name);
  if (it == columns_.end()) {
    std::string have;
    for (size_t i = 0; i < columns_.size() && i < 12; ++i) have += (i ? ", " : "") + columns_[i];
    STRAND_CHECK(false, "data file '", path_, "' has no column '", name, "' (columns: ", have,
                 columns_.size() > 12 ? ", ..." : "", ")");
  }
  return it - columns_.begin();
}

void TsvFile::build_index(const std::vector<std::string>& label_columns) {
  std::vector<int64_t> label_idx;
  for (const auto& l : label_columns) label_idx.push_back(column(l));
  std::ifstream in(path_, std::ios::binary);
  std::string line;
  std::getline(in, line);  // header
  uint64_t pos = static_cast<uint64_t>(line.size()) + (in.eof() ? 0 : 1);
  int64_t line_no = 1;
  offsets_.clear();
  labels_.clear();
  while (std::getline(in, line)) {
    ++line_no;
    const uint64_t start = pos;
    pos += static_cast<uint64_t>(line.size()) + (in.eof() ? 0 : 1);
    strip_eol(line);
    if (line.empty()) continue;  // blank lines (e.g. a trailing one) are not rows
    // Count fields without splitting the (large) DNA cell into strings.
    const int64_t fields = 1 + std::count(line.begin(), line.end(), '\t');
    STRAND_CHECK(fields == static_cast<int64_t>(columns_.size()), path_, ":", line_no, ": expected ", columns_.size(),
                 " tab-separated columns, found ", fields);
    if (!label_idx.empty()) {
      std::vector<std::string_view> cells;
      size_t s = 0;
      for (int64_t f = 0; f < fields; ++f) {
        size_t e = f + 1 < fields ? line.find('\t', s) : line.size();
        cells.emplace_back(line.data() + s, e - s);
        s = e + 1;
      }
      for (size_t k = 0; k < label_idx.size(); ++k) {
        const std::string cell(cells[label_idx[k]]);
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(cell.c_str(), &end);
        STRAND_CHECK(!cell.empty() && end == cell.c_str() + cell.size() && errno != ERANGE && std::isfinite(v), path_,
                     ":", line_no, ": column '", label_columns[k], "' (column ", label_idx[k] + 1,
                     ") is not a finite number: '", cell.substr(0, 40), "'");
        labels_.push_back(v);
      }
    }
    offsets_.push_back(start);
  }
  offsets_.push_back(pos);
}

bool TsvFile::load_cache(const std::string& cache, const std::vector<std::string>& label_columns) {
  std::ifstream in(cache, std::ios::binary);
  if (!in) return false;
  char magic[8];
  uint64_t size = 0, n = 0, nl = 0, names_len = 0;
  int64_t mtime = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&size), 8);
  in.read(reinterpret_cast<char*>(&mtime), 8);
  in.read(reinterpret_cast<char*>(&names_len), 8);
  if (!in || std::memcmp(magic, kMagic, 8) != 0 || size != file_size_ || mtime != mtime_ns_ || names_len > (1u << 20))
    return false;
  std::string names(names_len, '\0');
  in.read(names.data(), static_cast<std::streamsize>(names_len));
  in.read(reinterpret_cast<char*>(&n), 8);
  in.read(reinterpret_cast<char*>(&nl), 8);
  if (!in || names != joined(label_columns) || nl != label_columns.size() || n > file_size_ + 1) return false;
  offsets_.resize(n + 1);
  labels_.resize(n * nl);
  in.read(reinterpret_cast<char*>(offsets_.data()), static_cast<std::streamsize>((n + 1) * 8));
  in.read(reinterpret_cast<char*>(labels_.data()), static_cast<std::streamsize>(n * nl * 8));
  if (!in || offsets_.back() > file_size_) {
    offsets_.clear();
    labels_.clear();
    return false;
  }
  return true;
}

void TsvFile::save_cache(const std::string& cache, const std::vector<std::string>& label_columns) const {
  // Best effort: a read-only data directory just means re-indexing next time.
  const std::string tmp = cache + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return;
    const std::string names = joined(label_columns);
    const uint64_t names_len = names.size(), n = static_cast<uint64_t>(num_rows()),
                   nl = static_cast<uint64_t>(num_labels_);
    out.write(kMagic, 8);
    out.write(reinterpret_cast<const char*>(&file_size_), 8);
    out.write(reinterpret_cast<const char*>(&mtime_ns_), 8);
    out.write(reinterpret_cast<const char*>(&names_len), 8);
    out.write(names.data(), static_cast<std::streamsize>(names_len));
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(reinterpret_cast<const char*>(&nl), 8);
    out.write(reinterpret_cast<const char*>(offsets_.data()), static_cast<std::streamsize>(offsets_.size() * 8));
    out.write(reinterpret_cast<const char*>(labels_.data()), static_cast<std::streamsize>(labels_.size() * 8));
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), cache.c_str()) != 0) std::remove(tmp.c_str());
}

std::vector<std::string> TsvFile::row(int64_t i) const {
  STRAND_CHECK(i >= 0 && i < num_rows(), "row ", i, " out of range for '", path_, "' with ", num_rows(), " rows");
  const uint64_t b = offsets_[i], e = offsets_[i + 1];
  std::string buf(e - b, '\0');
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t r = ::pread(fd_, buf.data() + got, buf.size() - got, static_cast<off_t>(b + got));
    STRAND_CHECK(r > 0, "reading row ", i, " of '", path_, "' failed (file changed or truncated?)");
    got += static_cast<size_t>(r);
  }
  strip_eol(buf);
  auto fields = split_tabs(buf);
  STRAND_CHECK(fields.size() == columns_.size(), path_, ": row ", i, " changed since indexing (", fields.size(),
               " columns); delete '", path_, ".strand-index' to rebuild");
  return fields;
}

// ---------------- splits ----------------
SplitData::SplitData(std::vector<std::string> files, int num_labels, bool use_cache)
    : files_(std::move(files)), num_labels_(num_labels) {
  STRAND_CHECK(!files_.empty(), "a data split needs at least one file");
  const auto names = label_column_names(num_labels);
  for (const auto& f : files_) {
    starts_.push_back(total_);
    tsv_.push_back(std::make_unique<TsvFile>(f, names, use_cache));
    total_ += tsv_.back()->num_rows();
  }
}

Sample SplitData::get(int64_t i) const {
  STRAND_CHECK(i >= 0 && i < total_, "sample ", i, " out of range for a split of ", total_);
  const size_t f = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), i) - starts_.begin() - 1);
  const TsvFile& t = *tsv_[f];
  const int64_t r = i - starts_[f];
  auto fields = t.row(r);
  Sample s;
  auto cell = [&](const char* name) -> std::string {
    return t.has_column(name) ? std::move(fields[t.column(name)]) : std::string();
  };
  s.transcript_id = cell("transcript_id");
  s.dna = cell("dna_seq");
  s.rna = cell("rna_seq");
  s.protein = cell("protein_seq");
  const double* y = t.labels(r);
  s.labels.assign(y, y + num_labels_);
  if (!mean_.empty())
    for (int k = 0; k < num_labels_; ++k) s.labels[k] = (s.labels[k] - mean_[k]) / std_[k];
  return s;
}

std::vector<double> SplitData::raw_labels() const {
  std::vector<double> out;
  out.reserve(static_cast<size_t>(total_ * num_labels_));
  for (const auto& t : tsv_)
    for (int64_t r = 0; r < t->num_rows(); ++r) out.insert(out.end(), t->labels(r), t->labels(r) + num_labels_);
  return out;
}

void SplitData::set_normalisation(std::vector<double> mean, std::vector<double> std) {
  STRAND_CHECK(static_cast<int>(mean.size()) == num_labels_ && static_cast<int>(std.size()) == num_labels_,
               "normalisation needs ", num_labels_, " means and stds, got ", mean.size(), " and ", std.size());
  mean_ = std::move(mean);
  std_ = std::move(std);
}

SplitFiles find_split_files(const std::string& dir) {
  namespace fs = std::filesystem;
  STRAND_CHECK(fs::is_directory(dir), "data directory '", dir, "' does not exist");
  SplitFiles s;
  std::vector<std::pair<int64_t, std::string>> train;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("train_", 0) == 0 && name.size() > 10 && name.substr(name.size() - 4) == ".tsv") {
      const std::string mid = name.substr(6, name.size() - 10);
      const bool numeric = !mid.empty() && mid.find_first_not_of("0123456789") == std::string::npos;
      train.emplace_back(numeric ? std::stoll(mid) : INT64_MAX, e.path().string());
    }
  }
  std::sort(train.begin(), train.end());
  for (auto& [_, p] : train) s.train.push_back(p);
  STRAND_CHECK(!s.train.empty(), "data directory '", dir, "' has no train_*.tsv files");
  const auto val = fs::path(dir) / "validation.tsv", test = fs::path(dir) / "test.tsv";
  STRAND_CHECK(fs::exists(val), "data directory '", dir, "' has no validation.tsv");
  STRAND_CHECK(fs::exists(test), "data directory '", dir, "' has no test.tsv");
  s.validation = {val.string()};
  s.test = {test.string()};
  return s;
}

void label_statistics(const std::vector<const SplitData*>& splits, std::vector<double>& mean, std::vector<double>& std) {
  STRAND_CHECK(!splits.empty(), "label_statistics: no splits");
  const int k = splits[0]->num_labels();
  mean.assign(k, 0.0);
  std.assign(k, 0.0);
  int64_t n = 0;
  for (const SplitData* s : splits) {
    auto y = s->raw_labels();
    for (size_t i = 0; i < y.size(); ++i) mean[i % k] += y[i];
    n += s->size();
  }
  STRAND_CHECK(n > 0, "label_statistics: the splits are empty");
  for (auto& m : mean) m /= static_cast<double>(n);
  for (const SplitData* s : splits) {
    auto y = s->raw_labels();
    for (size_t i = 0; i < y.size(); ++i) std[i % k] += (y[i] - mean[i % k]) * (y[i] - mean[i % k]);
  }
  for (auto& v : std) {
    v = std::sqrt(v / static_cast<double>(n));
    if (v == 0) v = 1;
  }
}

}  // namespace strand::train
