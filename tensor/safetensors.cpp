#include "tensor/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

namespace strand::safetensors {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The format is little-endian and tensors alias the file bytes, so the host must be too.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

// The reference implementation's limit: a larger length is a corrupt prefix, not a real header.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// In the order of the reference implementation's Dtype enum, which its writer sorts by.
constexpr std::pair<DType, const char*> kDTypeNames[] = {
    {DType::b8, "BOOL"}, {DType::u8, "U8"},   {DType::f16, "F16"}, {DType::bf16, "BF16"},
    {DType::i32, "I32"}, {DType::f32, "F32"}, {DType::f64, "F64"}, {DType::i64, "I64"}};

std::optional<DType> find_dtype(const std::string& s) {
  for (const auto& [t, name] : kDTypeNames)
    if (s == name) return t;
  return std::nullopt;
}

// A JSON value for an error message, cut short: the header may be megabytes of garbage.
std::string brief(const json& v) {
  std::string s = v.dump(-1, ' ', true, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// The read-only view of a whole file. Tensors that alias it keep it alive through their storage's
// owner, so they outlive the File that produced them.
struct Mapping {
  char* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data) ::munmap(data, size);
  }
};

// Closes a file descriptor on every path out of a scope.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::shared_ptr<Mapping> map_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO by mistake must fail below instead of hanging.
  const Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  STRAND_CHECK(f.fd >= 0, "safetensors file '", path, "': cannot open: ", std::strerror(errno));
  struct stat st {};
  STRAND_CHECK(::fstat(f.fd, &st) == 0, "safetensors file '", path, "': cannot stat: ", std::strerror(errno));
  STRAND_CHECK(!S_ISDIR(st.st_mode), "safetensors file '", path, "': is a directory, not a file");
  STRAND_CHECK(S_ISREG(st.st_mode), "safetensors file '", path, "': is not a regular file");
  const auto size = static_cast<uint64_t>(st.st_size);
  STRAND_CHECK(size > 0, "safetensors file '", path, "': the file is empty");
  STRAND_CHECK(size >= 8, "safetensors file '", path, "': only ", size,
               " bytes, too short for the 8-byte header length");
  // Private and writable: loaded tensors may be modified in place (pages are copied on write);
  // the file itself never changes.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, f.fd, 0);
  STRAND_CHECK(p != MAP_FAILED, "safetensors file '", path, "': cannot map ", size, " bytes: ", std::strerror(errno));
  auto m = std::make_shared<Mapping>();
  m->data = static_cast<char*>(p);
  m->size = size;
  return m;
}

struct Record {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;  // in the data buffer
};

struct Header {
  std::vector<Record> records;
  Metadata metadata;
  uint64_t data_start = 0;  // file offset of the data buffer
};

// Validates everything the header claims against the file size; touches no tensor data.
Header parse_header(const std::string& path, const Mapping& m) {
  const std::string where = "safetensors file '" + path + "': ";
  uint64_t n = 0;
  std::memcpy(&n, m.data, 8);
  STRAND_CHECK(n <= kMaxHeaderBytes, where, "header length ", n, " exceeds the limit of ", kMaxHeaderBytes,
               " bytes (corrupt length prefix?)");
  STRAND_CHECK(n <= m.size - 8, where, "header length ", n, " runs past the end of the file (", m.size, " bytes)");
  Header h;
  h.data_start = 8 + n;
  const uint64_t buffer_size = m.size - h.data_start;
  json j;
  try {
    j = json::parse(m.data + 8, m.data + 8 + n);
  } catch (const json::exception& e) {
    STRAND_CHECK(false, where, "header is not valid JSON: ", e.what());
  }
  STRAND_CHECK(j.is_object(), where, "header is not a JSON object but ", j.type_name());

  for (const auto& [key, v] : j.items()) {
    if (key == "__metadata__") {
      STRAND_CHECK(v.is_object(), where, "__metadata__ is not an object of strings: ", brief(v));
      for (const auto& [mk, mv] : v.items()) {
        STRAND_CHECK(mv.is_string(), where, "__metadata__ key '", mk, "' has a non-string value ", brief(mv));
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string what = where + "tensor '" + key + "': ";
    STRAND_CHECK(v.is_object(), what, "entry is not an object: ", brief(v));
    const auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
    STRAND_CHECK(dt != v.end() && dt->is_string(), what, "missing or non-string \"dtype\"");
    const auto dtype = find_dtype(dt->get<std::string>());
    STRAND_CHECK(dtype.has_value(), what, "unknown dtype '", dt->get<std::string>(),
                 "' (supported: F32 F64 F16 BF16 I64 I32 U8 BOOL)");
    STRAND_CHECK(sh != v.end() && sh->is_array(), what, "missing or non-array \"shape\"");
    Record r{key, *dtype, {}, 0, 0};
    // numel is the product of the non-zero dims (0 if any is 0); it must not overflow so that
    // strides computed from the shape cannot either.
    uint64_t product = 1;
    bool has_zero = false;
    for (const auto& d : *sh) {
      STRAND_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()), what,
                   "shape ", brief(*sh), " holds ", brief(d), ", not a non-negative integer");
      const uint64_t x = d.get<uint64_t>();
      has_zero |= x == 0;
      STRAND_CHECK(x == 0 || (!__builtin_mul_overflow(product, x, &product) &&
                              product <= uint64_t(std::numeric_limits<int64_t>::max())),
                   what, "shape ", brief(*sh), " has too many elements");
      r.shape.push_back(static_cast<int64_t>(x));
    }
    STRAND_CHECK(off != v.end() && off->is_array() && off->size() == 2 && (*off)[0].is_number_unsigned() &&
                     (*off)[1].is_number_unsigned(),
                 what, "\"data_offsets\" is not two non-negative integers: ", off == v.end() ? "missing" : brief(*off));
    r.begin = (*off)[0].get<uint64_t>();
    r.end = (*off)[1].get<uint64_t>();
    STRAND_CHECK(r.begin <= r.end, what, "data_offsets [", r.begin, ", ", r.end, "] end before they begin");
    STRAND_CHECK(r.end <= buffer_size, what, "data_offsets [", r.begin, ", ", r.end,
                 "] reach past the end of the data buffer (", buffer_size, " bytes)");
    const uint64_t numel = has_zero ? 0 : product, es = dtype_size(r.dtype), range = r.end - r.begin;
    STRAND_CHECK(range % es == 0 && range / es == numel, what, "shape ", shape_str(r.shape), " x ",
                 dt->get<std::string>(), " needs ", numel, " x ", es, " bytes but data_offsets [", r.begin, ", ", r.end,
                 "] hold ", range);
    h.records.push_back(std::move(r));
  }

  // Empty ranges hold no bytes, so they overlap nothing.
  std::vector<const Record*> by_begin;
  for (const auto& r : h.records)
    if (r.begin != r.end) by_begin.push_back(&r);
  std::sort(by_begin.begin(), by_begin.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const Record &a = *by_begin[i - 1], &b = *by_begin[i];
    STRAND_CHECK(b.begin >= a.end, where, "tensors '", a.name, "' [", a.begin, ", ", a.end, "] and '", b.name, "' [",
                 b.begin, ", ", b.end, "] overlap");
  }
  return h;
}

// Makes the bytes of t, row-major, available on the host: CPU-contiguous tensors are read in
// place; anything else is gathered into `scratch`. Done here rather than with ops::contiguous so
// that tensor/ does not depend on kernels/.
const char* host_bytes(const Tensor& t, std::vector<char>& scratch) {
  const size_t es = t.element_size();
  if (t.numel() == 0) return nullptr;
  if (t.device().is_cpu() && t.is_contiguous()) return static_cast<const char*>(t.raw_data());
  // The elements a view addresses lie within [offset, offset + extent) of its storage.
  int64_t extent = 1;
  for (int64_t d = 0; d < t.dim(); ++d) {
    STRAND_ASSERT(t.stride(d) >= 0, "negative stride");
    extent += (t.size(d) - 1) * t.stride(d);
  }
  const char* src = static_cast<const char*>(t.raw_data());
  std::vector<char> staged;
  if (t.is_cuda()) {
    staged.resize(static_cast<size_t>(extent) * es);
    cuda_rt::memcpy(staged.data(), src, staged.size(), cuda_rt::CopyKind::DeviceToHost);
    if (t.is_contiguous()) return (scratch = std::move(staged)).data();
    src = staged.data();
  }
  // Gather rows of the last dim (one memcpy per row when it is dense), odometer over the rest.
  scratch.resize(t.nbytes());
  const int64_t nd = t.dim(), inner = nd ? t.size(nd - 1) : 1, inner_stride = nd ? t.stride(nd - 1) : 1;
  std::vector<int64_t> idx(nd > 0 ? nd - 1 : 0, 0);
  char* dst = scratch.data();
  for (int64_t row = 0, rows = t.numel() / inner; row < rows; ++row) {
    int64_t off = 0;
    for (int64_t d = 0; d + 1 < nd; ++d) off += idx[d] * t.stride(d);
    if (inner_stride == 1) {
      std::memcpy(dst, src + off * es, inner * es);
      dst += inner * es;
    } else {
      for (int64_t i = 0; i < inner; ++i, dst += es) std::memcpy(dst, src + (off + i * inner_stride) * es, es);
    }
    for (int64_t d = nd - 2; d >= 0 && ++idx[d] == t.size(d); --d) idx[d] = 0;
  }
  return scratch.data();
}

using Sink = std::function<void(const void*, size_t)>;

// Writes `path` via a temporary file beside it, renamed over the target only once complete and on
// disk, so a reader never sees a partial file; on any failure the temporary is removed.
void write_atomically(const std::string& path, const std::function<void(const Sink&)>& produce) {
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  STRAND_CHECK(fd >= 0, "safetensors: cannot write '", path, "': creating '", tmp, "' failed: ", std::strerror(errno));
  try {
    produce([&](const void* p, size_t n) {
      const char* c = static_cast<const char*>(p);
      while (n > 0) {
        const ssize_t w = ::write(fd, c, std::min<size_t>(n, size_t{1} << 30));
        if (w < 0 && errno == EINTR) continue;
        STRAND_CHECK(w > 0, "safetensors: writing '", tmp, "' failed: ", std::strerror(errno));
        c += w;
        n -= static_cast<size_t>(w);
      }
    });
    STRAND_CHECK(::fsync(fd) == 0, "safetensors: fsync of '", tmp, "' failed: ", std::strerror(errno));
    const int rc = ::close(fd);
    fd = -1;
    STRAND_CHECK(rc == 0, "safetensors: closing '", tmp, "' failed: ", std::strerror(errno));
    STRAND_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "safetensors: cannot write '", path,
                 "': renaming the temporary file over it failed: ", std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable; a failure here loses nothing already written, so it is ignored.
  const fs::path parent = fs::path(path).parent_path();
  const int dfd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void check_tensors(const std::string& path, const TensorMap& tensors) {
  for (const auto& [name, t] : tensors) {
    STRAND_CHECK(t.defined(), "safetensors: cannot save '", path, "': tensor '", name, "' is undefined");
    STRAND_CHECK(name != "__metadata__", "safetensors: cannot save '", path, "': '__metadata__' is reserved");
  }
}

}  // namespace

const char* dtype_to_string(DType t) {
  for (const auto& [d, name] : kDTypeNames)
    if (d == t) return name;
  STRAND_CHECK(false, "safetensors: no format name for dtype ", dtype_name(t));
  return "";
}

DType dtype_from_string(const std::string& s) {
  const auto t = find_dtype(s);
  STRAND_CHECK(t.has_value(), "safetensors: unknown dtype '", s, "' (supported: F32 F64 F16 BF16 I64 I32 U8 BOOL)");
  return *t;
}

File load(const std::string& path) {
  const auto m = map_file(path);
  Header h = parse_header(path, *m);
  File f;
  f.metadata = std::move(h.metadata);
  for (auto& r : h.records) {
    char* p = m->data + h.data_start + r.begin;
    const size_t es = dtype_size(r.dtype), nbytes = r.end - r.begin;
    // A C++ bool must hold 0 or 1; other bytes are read as true (as PyTorch does) via a copy.
    bool clean = true;
    if (r.dtype == DType::b8) clean = std::all_of(p, p + nbytes, [](char c) { return c == 0 || c == 1; });
    Tensor t;
    if (clean && reinterpret_cast<uintptr_t>(p) % es == 0) {
      t = Tensor::from_blob(p, r.shape, r.dtype, m);
    } else {
      t = Tensor::empty(r.shape, r.dtype);
      if (nbytes) std::memcpy(t.raw_data(), p, nbytes);
      auto* b = static_cast<uint8_t*>(t.raw_data());
      if (!clean) std::transform(b, b + nbytes, b, [](uint8_t v) { return v != 0; });
    }
    f.tensors.emplace(std::move(r.name), std::move(t));
  }
  return f;
}

std::map<std::string, Entry> read_header(const std::string& path, Metadata* metadata) {
  Header h = parse_header(path, *map_file(path));
  std::map<std::string, Entry> out;
  for (auto& r : h.records) out.emplace(std::move(r.name), Entry{r.dtype, std::move(r.shape)});
  if (metadata) *metadata = std::move(h.metadata);
  return out;
}

void save(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  check_tensors(path, tensors);
  // Laid out as the Python package does, byte for byte: dtypes in descending enum order (so element
  // sizes never grow and, with the header padded to 8 bytes, every tensor is aligned and loads
  // zero-copy), then by name; "__metadata__" first; fields in the order dtype, shape, data_offsets.
  std::vector<const TensorMap::value_type*> order;
  for (const auto& kv : tensors) order.push_back(&kv);
  const auto rank = [](const Tensor& t) {
    return std::find_if(std::begin(kDTypeNames), std::end(kDTypeNames), [&](auto& d) { return d.first == t.dtype(); });
  };
  std::stable_sort(order.begin(), order.end(), [&](auto* a, auto* b) { return rank(a->second) > rank(b->second); });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* kv : order) {
    const Tensor& t = kv->second;
    auto& e = header[kv->first];
    e["dtype"] = dtype_to_string(t.dtype());
    e["shape"] = t.sizes();
    e["data_offsets"] = {offset, offset + t.nbytes()};
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    STRAND_CHECK(false, "safetensors: cannot save '", path,
                 "': a tensor name or metadata string is not UTF-8: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  write_atomically(path, [&](const Sink& write) {
    const uint64_t n = text.size();
    write(&n, 8);
    write(text.data(), text.size());
    std::vector<char> scratch;
    for (const auto* kv : order)
      if (const char* p = host_bytes(kv->second, scratch)) write(p, kv->second.nbytes());
  });
}

File load_sharded(const std::string& index_path) {
  const std::string where = "safetensors index '" + index_path + "': ";
  std::error_code ec;
  STRAND_CHECK(fs::is_regular_file(index_path, ec), where, "does not exist or is not a file");
  STRAND_CHECK(fs::file_size(index_path, ec) <= kMaxHeaderBytes && !ec, where, "too large to be an index");
  std::ifstream in(index_path, std::ios::binary);
  STRAND_CHECK(in.good(), where, "cannot open: ", std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    STRAND_CHECK(false, where, "not valid JSON: ", e.what());
  }
  STRAND_CHECK(j.is_object(), where, "not a JSON object but ", j.type_name());
  const auto wm = j.find("weight_map");
  STRAND_CHECK(wm != j.end() && wm->is_object(), where, "no \"weight_map\" object");
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [name, shard] : wm->items()) {
    STRAND_CHECK(shard.is_string(), where, "weight_map entry '", name, "' is not a file name: ", brief(shard));
    const std::string s = shard.get<std::string>();
    // Shards lie beside the index, as Hugging Face writes them; never elsewhere.
    STRAND_CHECK(!s.empty() && s.find('/') == std::string::npos && s != "." && s != "..", where, "tensor '", name,
                 "': shard '", s, "' is not a file name");
    by_shard[s].push_back(name);
  }
  const fs::path dir = fs::path(index_path).parent_path();
  File out;
  for (const auto& [shard, names] : by_shard) {
    const fs::path p = dir / shard;
    STRAND_CHECK(fs::exists(p, ec), where, "shard '", shard, "' (holding tensor '", names[0],
                 "') is missing: ", p.string());
    File f = load(p.string());
    for (const auto& name : names) {
      const auto it = f.tensors.find(name);
      STRAND_CHECK(it != f.tensors.end(), where, "tensor '", name, "' is listed in shard '", shard,
                   "' but that file does not hold it");
      out.tensors.emplace(name, it->second);
    }
    out.metadata.insert(f.metadata.begin(), f.metadata.end());
  }
  return out;
}

void save_sharded(const std::string& dir, const TensorMap& tensors, size_t max_shard_bytes, const std::string& stem,
                  const Metadata& metadata) {
  STRAND_CHECK(!stem.empty() && stem.find('/') == std::string::npos, "safetensors: bad checkpoint stem '", stem, "'");
  check_tensors(dir, tensors);
  std::error_code ec;
  fs::create_directories(dir, ec);
  STRAND_CHECK(!ec, "safetensors: cannot create directory '", dir, "': ", ec.message());
  // Greedy in name order: a new shard starts when the next tensor would overflow this one.
  std::vector<TensorMap> shards(1);
  size_t size = 0;
  for (const auto& [name, t] : tensors) {
    if (!shards.back().empty() && size + t.nbytes() > max_shard_bytes) {
      shards.emplace_back();
      size = 0;
    }
    shards.back().emplace(name, t);
    size += t.nbytes();
  }
  const fs::path d(dir);
  const std::string single = (d / (stem + ".safetensors")).string();
  const std::string index = (d / (stem + ".safetensors.index.json")).string();
  std::vector<std::string> written;
  if (shards.size() == 1) {
    save(single, tensors, metadata);
    fs::remove(index, ec);  // a stale index from an earlier sharded save would mislead readers
  } else {
    json weight_map = json::object();
    uint64_t total = 0;
    for (size_t i = 0; i < shards.size(); ++i) {
      char num[32];
      std::snprintf(num, sizeof num, "-%05zu-of-%05zu", i + 1, shards.size());
      const std::string name = stem + num + ".safetensors";
      save((d / name).string(), shards[i], metadata);
      written.push_back(name);
      for (const auto& [tname, t] : shards[i]) {
        weight_map[tname] = name;
        total += t.nbytes();
      }
    }
    // Removed before the index appears: a crash in between leaves no checkpoint rather than a stale one.
    fs::remove(single, ec);
    const std::string text = json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n";
    write_atomically(index, [&](const Sink& write) { write(text.data(), text.size()); });
  }
  // Shards of an earlier save with another shard count are no longer referenced: remove them.
  const auto numbered = [&](const std::string& f) {  // "<stem>-00001-of-00003.safetensors"
    if (f.size() != stem.size() + 27 || !f.starts_with(stem + "-") || !f.ends_with(".safetensors")) return false;
    const std::string m = f.substr(stem.size() + 1, 14);
    for (size_t i : {0, 1, 2, 3, 4, 9, 10, 11, 12, 13})
      if (!std::isdigit(static_cast<unsigned char>(m[i]))) return false;
    return m.substr(5, 4) == "-of-";
  };
  for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string f = it->path().filename().string();
    if (numbered(f) && std::find(written.begin(), written.end(), f) == written.end()) fs::remove(it->path(), ec);
  }
}

File load_any(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path d(path);
    if (fs::exists(d / "model.safetensors", ec)) return load((d / "model.safetensors").string());
    if (fs::exists(d / "model.safetensors.index.json", ec))
      return load_sharded((d / "model.safetensors.index.json").string());
    STRAND_CHECK(false, "safetensors: directory '", path,
                 "' holds neither model.safetensors nor model.safetensors.index.json");
  }
  if (path.ends_with(".json")) return load_sharded(path);
  return load(path);
}

}  // namespace strand::safetensors
