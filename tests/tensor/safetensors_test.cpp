#include "tensor/safetensors.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "kernels/ops.h"
#include "tests/test_util.h"

namespace strand {
namespace {

namespace fs = std::filesystem;
namespace st = safetensors;
using nlohmann::json;
using test::throws_with;

const fs::path kFixtures = fs::path(STRAND_FIXTURES) / "safetensors";

// A fresh directory per test, removed with everything in it afterwards.
struct TempDir {
  fs::path path;
  explicit TempDir(const fs::path& base = fs::temp_directory_path()) {
    static int n = 0;
    path = base / ("strand_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A file from a raw header string (not padded: callers choose) and data bytes.
std::string make_file(const std::string& header, const std::string& data = "") {
  const uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + data;
}
uint64_t header_length(const std::string& file) {
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return n;
}

// The bytes a tensor holds, row-major.
std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor c = ops::contiguous(ops::to(t, Device::cpu()));
  const auto* p = static_cast<const uint8_t*>(c.raw_data());
  return std::vector<uint8_t>(p, p + c.nbytes());
}
std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Every dtype, including the values that are easiest to get wrong bit-wise.
st::TensorMap sample_tensors() {
  const float inf = std::numeric_limits<float>::infinity();
  Tensor special = ops::from_vector<float>({0.0f, -0.0f, inf, -inf, std::nanf("0x123"), 1e-45f, 3.4e38f}, {7});
  Tensor base = test::uniform({3, 4}, -3, 3, 7);  // f64
  Tensor b8 = ops::compare(CompareOp::gt, base, 0.0);
  return {
      {"f32", ops::to(base, DType::f32)},
      {"f32.special", special},
      {"f64", base},
      {"f16", ops::to(base, DType::f16)},
      {"bf16", ops::to(base, DType::bf16)},
      {"i64", ops::from_vector<int64_t>({0, -1, INT64_MAX, INT64_MIN, 42, 7}, {2, 3})},
      {"i32", ops::from_vector<int32_t>({INT32_MIN, -1, 0, INT32_MAX}, {4})},
      {"u8", ops::to(ops::arange(250, 256), DType::u8)},
      {"bool", b8},
      {"scalar.f64", ops::scalar_tensor(-2.5, DType::f64)},
      {"scalar.bool", ops::scalar_tensor(1, DType::b8)},
      {"empty", ops::zeros({0, 3})},
      {"empty.i32", ops::zeros({3, 0, 2}, DType::i32)},
      {"transposed", ops::transpose(ops::to(base, DType::bf16), 0, 1)},
      {"strided", ops::slice(ops::to(base, DType::i32), 1, 0, 4, 2)},
      {"expanded", ops::expand(ops::from_vector<int64_t>({1, 2, 3}, {1, 3}), {4, 3})},
  };
}

void expect_same(const st::TensorMap& got, const st::TensorMap& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, w] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    const Tensor& g = got.at(name);
    EXPECT_EQ(g.dtype(), w.dtype()) << name;
    EXPECT_EQ(g.sizes(), w.sizes()) << name;
    EXPECT_TRUE(g.is_contiguous()) << name;
    EXPECT_EQ(bytes_of(g), bytes_of(w)) << name;
  }
}

// ---------------------------------------------------------------- round trips

TEST(Safetensors, DtypeNamesRoundTrip) {
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i64, DType::i32, DType::u8, DType::b8})
    EXPECT_EQ(st::dtype_from_string(st::dtype_to_string(t)), t);
  EXPECT_STREQ(st::dtype_to_string(DType::b8), "BOOL");
  EXPECT_STREQ(st::dtype_to_string(DType::bf16), "BF16");
  EXPECT_TRUE(throws_with([] { st::dtype_from_string("F8_E4M3"); }, {"unknown dtype", "F8_E4M3"}));
}

TEST(Safetensors, RoundTripsEveryDtypeBitExact) {
  TempDir dir;
  const auto tensors = sample_tensors();
  const st::Metadata meta{{"format", "pt"}, {"step", "1200"}, {"unicode", "\xc3\xa9t\xc3\xa9"}};
  st::save(dir / "m.safetensors", tensors, meta);
  const st::File f = st::load(dir / "m.safetensors");
  expect_same(f.tensors, tensors);
  EXPECT_EQ(f.metadata, meta);
  EXPECT_EQ(f.tensors.at("scalar.f64").dim(), 0);
  EXPECT_TRUE(std::isnan(ops::to_vector<float>(f.tensors.at("f32.special"))[4]));

  st::Metadata m2;
  const auto header = st::read_header(dir / "m.safetensors", &m2);
  EXPECT_EQ(m2, meta);
  ASSERT_EQ(header.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(header.at(name).dtype, t.dtype()) << name;
    EXPECT_EQ(header.at(name).shape, t.sizes()) << name;
  }
  // No tensors and no metadata is a valid file too.
  st::save(dir / "none.safetensors", {});
  EXPECT_TRUE(st::load(dir / "none.safetensors").tensors.empty());
}

TEST(Safetensors, WriterLayoutMatchesThePythonPackage) {
  TempDir dir;
  st::save(dir / "m.safetensors", sample_tensors(), {{"k", "v"}});
  const std::string bytes = read_bytes(dir / "m.safetensors");
  const uint64_t n = header_length(bytes);
  EXPECT_EQ(n % 8, 0u);  // padded with spaces so the data buffer starts 8-aligned
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}'));
  const json j = json::parse(header);
  // Data contiguous, in offset order, ending at the end of the file; each tensor aligned.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, e] : j.items()) {
    if (name == "__metadata__") continue;
    const uint64_t b = e["data_offsets"][0], end = e["data_offsets"][1];
    ranges.emplace_back(b, end);
    EXPECT_EQ((8 + n + b) % dtype_size(st::dtype_from_string(e["dtype"].get<std::string>())), 0u) << name;
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t at = 0;
  for (auto [b, e] : ranges) {
    EXPECT_EQ(b, at);
    at = e;
  }
  EXPECT_EQ(8 + n + at, bytes.size());

  // Byte for byte what the Python package writes (whose metadata order is random; the fixture
  // script keeps the sorted one, which is ours).
  for (const std::string name :
       {"all_dtypes.safetensors", "sharded/model-00001-of-00003.safetensors",
        "sharded/model-00002-of-00003.safetensors", "sharded/model-00003-of-00003.safetensors"}) {
    const std::string python = (kFixtures / name).string();
    const st::File f = st::load(python);
    st::save(dir / "copy.safetensors", f.tensors, f.metadata);
    EXPECT_EQ(read_bytes(dir / "copy.safetensors"), read_bytes(python)) << name;
  }
}

TEST(Safetensors, SavesCudaTensorsThroughAHostCopy) {
  STRAND_SKIP_WITHOUT_GPU();
  TempDir dir;
  const Tensor x = ops::to(test::uniform({5, 6}, -1, 1, 9, DType::f32), Device::cuda(0));
  const st::TensorMap tensors{{"x", x}, {"t", ops::transpose(x, 0, 1)}, {"s", ops::slice(x, 1, 1, 6, 2)}};
  st::save(dir / "cuda.safetensors", tensors);
  expect_same(st::load(dir / "cuda.safetensors").tensors, tensors);
}

// ---------------------------------------------------------------- zero-copy and lifetime

TEST(Safetensors, AlignedTensorsAliasTheMappingAndOutliveTheFile) {
  TempDir dir;
  Tensor w = test::uniform({64, 32}, -1, 1, 3, DType::f32);
  Tensor ids = ops::arange(0, 100);
  st::save(dir / "m.safetensors", {{"w", w}, {"ids", ids}});
  Tensor loaded_w;
  {
    const int64_t live = cpu_allocator_stats().live_bytes;
    st::File f = st::load(dir / "m.safetensors");
    // Zero-copy: the tensors' memory is the mapping, not the allocator's.
    EXPECT_EQ(cpu_allocator_stats().live_bytes, live);
    loaded_w = f.tensors.at("w");
  }
  // The File is gone; the tensor keeps the mapping alive.
  EXPECT_EQ(bytes_of(loaded_w), bytes_of(w));
  // In-place writes go to private pages: the file on disk is unchanged.
  ops::fill_(loaded_w, 5.0);
  EXPECT_EQ(ops::to_vector<float>(loaded_w)[0], 5.0f);
  EXPECT_EQ(bytes_of(st::load(dir / "m.safetensors").tensors.at("w")), bytes_of(w));

  // Replacing the file (rename) does not disturb tensors mapped from the old one.
  Tensor old_ids = st::load(dir / "m.safetensors").tensors.at("ids");
  st::save(dir / "m.safetensors", {{"ids", ops::zeros({100}, DType::i64)}});
  EXPECT_EQ(ops::to_vector<int64_t>(old_ids)[99], 99);
}

TEST(Safetensors, MisalignedDataIsCopied) {
  // An unpadded header of odd length (as other writers may produce) leaves the f32 data at an odd
  // address; the reader must copy rather than hand out a misaligned pointer.
  const std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  const float v[2] = {1.5f, -2.0f};
  TempDir dir;
  write_bytes(dir / "odd.safetensors", make_file(header, std::string(reinterpret_cast<const char*>(v), 8)));
  const int64_t live = cpu_allocator_stats().live_bytes;
  st::File f = st::load(dir / "odd.safetensors");
  EXPECT_EQ(cpu_allocator_stats().live_bytes, live + 8);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.tensors.at("x").raw_data()) % 4, 0u);
  EXPECT_EQ(ops::to_vector<float>(f.tensors.at("x")), (std::vector<float>{1.5f, -2.0f}));
}

TEST(Safetensors, BoolBytesOtherThanZeroOrOneReadAsTrue) {
  TempDir dir;
  write_bytes(dir / "b.safetensors", make_file(R"({"b":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}})",
                                               std::string("\x00\x01\x07\xff", 4)));
  EXPECT_EQ(bytes_of(st::load(dir / "b.safetensors").tensors.at("b")), (std::vector<uint8_t>{0, 1, 1, 1}));
}

// ---------------------------------------------------------------- atomic writes

bool has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  return false;
}

TEST(Safetensors, FailedSaveLeavesNoTempAndKeepsTheOldFile) {
  TempDir dir;
  const st::TensorMap good{{"a", ops::ones({16})}};
  const std::string target = dir / "m.safetensors";
  st::save(target, good);
  const std::string before = read_bytes(target);

  // Into a directory that does not exist.
  EXPECT_TRUE(throws_with([&] { st::save(dir / "missing/m.safetensors", good); }, {"missing/m.safetensors"}));
  // Onto a path that is a directory: the temporary is written, then the rename fails.
  fs::create_directories(dir.path / "adir");
  EXPECT_TRUE(throws_with([&] { st::save(dir / "adir", good); }, {"adir", "renaming"}));
  EXPECT_TRUE(fs::is_directory(dir.path / "adir"));
  // An undefined tensor is refused before anything is written.
  EXPECT_TRUE(throws_with([&] { st::save(target, {{"a", ops::ones({2})}, {"b", Tensor()}}); }, {"'b'", "undefined"}));
  EXPECT_TRUE(throws_with([&] { st::save(target, {{"__metadata__", ops::ones({2})}}); }, {"reserved"}));

  // A write that fails half-way (file size limit): the old file stays as it was.
  struct rlimit old_limit {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // get EFBIG from write() instead of dying
  struct rlimit small = old_limit;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  bool threw = false;
  try {
    st::save(target, {{"big", ops::zeros({100000})}});
  } catch (const Error& e) {
    threw = std::string(e.what()).find("writing") != std::string::npos;
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(threw);

  EXPECT_EQ(read_bytes(target), before);
  EXPECT_FALSE(has_temp_files(dir.path));
  EXPECT_FALSE(fs::exists(dir.path / "missing"));
}

// ---------------------------------------------------------------- malformed input

// Each case: a file's bytes and the words its error must contain (besides the path).
struct BadCase {
  const char* what;
  std::string bytes;
  std::vector<std::string> needles;
};

std::vector<BadCase> bad_cases() {
  const std::string f8(8, '\0');  // 2 f32
  auto one = [&](const std::string& entry, const std::string& data = std::string(8, '\0')) {
    return make_file("{" + entry + "}", data);
  };
  std::string too_long = make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f8);
  const uint64_t n = too_long.size();  // header length > what follows the prefix
  std::memcpy(too_long.data(), &n, 8);
  std::string huge = too_long;
  const uint64_t h = uint64_t{1} << 40;
  std::memcpy(huge.data(), &h, 8);
  return {
      {"empty file", "", {"empty"}},
      {"short file", "abc", {"3 bytes", "too short"}},
      {"length beyond the file", too_long, {"header length", "runs past the end"}},
      {"absurd length", huge, {"header length 1099511627776", "exceeds the limit"}},
      {"not JSON", make_file("{\"a\": nope}"), {"not valid JSON"}},
      {"not an object", make_file("[1, 2]"), {"not a JSON object", "array"}},
      {"entry not an object", one(R"("a": 3)"), {"'a'", "not an object"}},
      {"unknown dtype", one(R"("a":{"dtype":"I16","shape":[4],"data_offsets":[0,8]})"), {"'a'", "unknown dtype 'I16'"}},
      {"missing dtype", one(R"("a":{"shape":[2],"data_offsets":[0,8]})"), {"'a'", "dtype"}},
      {"shape x dtype != range",
       one(R"("w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})"),
       {"'w'", "[3]", "needs 3 x 4 bytes", "[0, 8]", "hold 8"}},
      {"range outside the buffer",
       one(R"("w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})"),
       {"'w'", "[0, 16]", "past the end of the data buffer (8 bytes)"}},
      {"range inverted", one(R"("w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]})"), {"'w'", "[8, 4]"}},
      {"offsets not two integers",
       one(R"("w":{"dtype":"U8","shape":[8],"data_offsets":[0]})"),
       {"'w'", "data_offsets"}},
      {"negative offset", one(R"("w":{"dtype":"U8","shape":[8],"data_offsets":[-1,7]})"), {"'w'", "data_offsets"}},
      {"overlapping ranges",
       one(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]})"),
       {"'a' [0, 8]", "'b' [4, 8]", "overlap"}},
      {"negative shape",
       one(R"("a":{"dtype":"U8","shape":[2,-1],"data_offsets":[0,8]})"),
       {"'a'", "[2,-1]", "-1", "not a non-negative integer"}},
      {"float shape", one(R"("a":{"dtype":"U8","shape":[8.0],"data_offsets":[0,8]})"), {"'a'", "8.0"}},
      {"shape overflows",
       one(R"("a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]})"),
       {"'a'", "too many elements"}},
      {"non-string metadata",
       one(R"("__metadata__":{"epoch":3})", ""),
       {"__metadata__", "'epoch'", "non-string value 3"}},
      {"metadata not an object", one(R"("__metadata__":["x"])", ""), {"__metadata__", "not an object"}},
  };
}

TEST(Safetensors, MalformedFilesGiveErrorsNamingTheProblem) {
  TempDir dir;
  for (const auto& c : bad_cases()) {
    const std::string path = dir / "bad.safetensors";
    write_bytes(path, c.bytes);
    auto needles = c.needles;
    needles.push_back(path);
    EXPECT_TRUE(throws_with([&] { st::load(path); }, needles)) << c.what;
    EXPECT_TRUE(throws_with([&] { st::read_header(path); }, needles)) << c.what;
  }
  EXPECT_TRUE(throws_with([&] { st::load(dir / "nope.safetensors"); }, {"nope.safetensors", "cannot open"}));
  EXPECT_TRUE(throws_with([&] { st::load(dir.path.string()); }, {"is a directory"}));
  // Zero-size ranges overlap nothing, wherever they point.
  write_bytes(
      dir / "ok.safetensors",
      make_file(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
          std::string(8, '\0')));
  EXPECT_EQ(st::load(dir / "ok.safetensors").tensors.at("e").numel(), 0);
}

// Loads `path`; on success touches every byte of every tensor. Returns whether it loaded.
bool load_and_touch(const std::string& path) {
  try {
    const st::File f = st::load(path);
    for (const auto& [name, t] : f.tensors) {
      EXPECT_EQ(t.nbytes(), static_cast<size_t>(shape_numel(t.sizes())) * t.element_size());
      volatile uint8_t sink = 0;
      const auto* p = static_cast<const uint8_t*>(t.raw_data());
      for (size_t i = 0; i < t.nbytes(); ++i) sink = sink ^ p[i];
      if (t.dtype() == DType::b8)
        for (size_t i = 0; i < t.nbytes(); ++i) EXPECT_LE(p[i], 1);
    }
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "non-strand exception: " << e.what();
    return false;
  }
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  // tmpfs when there is one: thousands of tiny files, no need to reach a disk.
  TempDir dir(fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path());
  std::vector<std::string> seeds = {read_bytes((kFixtures / "all_dtypes.safetensors").string()),
                                    read_bytes((kFixtures / "sharded" / "model-00002-of-00003.safetensors").string())};
  st::save(dir / "ours.safetensors", sample_tensors(), {{"a", "b"}});
  seeds.push_back(read_bytes(dir / "ours.safetensors"));
  st::save(dir / "small.safetensors", {{"x", ops::ones({3})}, {"y", ops::zeros({2, 2}, DType::i64)}});
  seeds.push_back(read_bytes(dir / "small.safetensors"));

  std::mt19937_64 rng(20240611);
  auto pick = [&](uint64_t n) { return n ? rng() % n : 0; };
  const char* dtypes[] = {"F32", "F64", "F16", "BF16", "I64", "I32", "U8", "BOOL", "I8", "", "f32"};
  const json weird[] = {
      json(-1),         json(0),   json(1),       json(3),       json(7.5),      json(uint64_t{1} << 62),
      json(UINT64_MAX), json("2"), json(nullptr), json::array(), json::object(), json(true)};
  const std::string path = dir / "fuzz.safetensors";
  int loaded = 0, failed = 0;
  // CPU time, not wall time: the budget must not fail because a shared CI machine is busy.
  const std::clock_t start = std::clock();
  const int kIterations = 3000;
  for (int it = 0; it < kIterations; ++it) {
    std::string f = seeds[it % seeds.size()];
    const uint64_t n = header_length(f);
    switch (pick(5)) {
      case 0:  // truncate
        f.resize(pick(f.size()));
        break;
      case 1:  // flip bytes in the header
        for (uint64_t k = 0, m = 1 + pick(4); k < m; ++k) f[8 + pick(n)] ^= static_cast<char>(1 + pick(255));
        break;
      case 2:  // flip bits of the length prefix
        f[pick(8)] ^= static_cast<char>(1 << pick(8));
        break;
      case 3: {  // a well-formed header that lies about one entry
        json j = json::parse(f.substr(8, n));
        std::vector<std::string> names;
        for (const auto& [k, v] : j.items()) names.push_back(k);
        json& e = j[names[pick(names.size())]];
        if (e.is_object() && e.contains("dtype")) {
          switch (pick(7)) {
            case 0: e["dtype"] = dtypes[pick(std::size(dtypes))]; break;
            case 1: e["shape"][pick(e["shape"].size() + 1)] = weird[pick(std::size(weird))]; break;
            case 2: e["shape"] = json::array({pick(5), pick(5)}); break;
            case 3: e["data_offsets"][pick(2)] = pick(f.size() + 16); break;
            case 4: e["data_offsets"][pick(2)] = weird[pick(std::size(weird))]; break;
            case 5: {  // same length, moved: overlaps a neighbour or leaves the buffer
              const int64_t shift = static_cast<int64_t>(pick(33)) - 16;
              for (auto& o : e["data_offsets"]) o = o.get<int64_t>() + shift;
              break;
            }
            default: e.erase(pick(2) ? "shape" : "data_offsets"); break;
          }
        } else {
          e[std::to_string(pick(3))] = weird[pick(std::size(weird))];  // metadata
        }
        std::string header = j.dump();
        header.append(pick(9), ' ');
        f = make_file(header, f.substr(8 + n));
        break;
      }
      default:  // random bytes in the data buffer: must still load
        if (f.size() > 8 + n) f[8 + n + pick(f.size() - 8 - n)] = static_cast<char>(rng());
        break;
    }
    write_bytes(path, f);
    const bool ok = load_and_touch(path);
    ok ? ++loaded : ++failed;
    bool header_ok = true;
    try {
      st::read_header(path);
    } catch (const Error&) {
      header_ok = false;
    }
    ASSERT_EQ(ok, header_ok) << "load and read_header disagree at iteration " << it;
  }
  const double seconds = static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC;
  EXPECT_GT(loaded, 100);
  EXPECT_GT(failed, 1000);
  EXPECT_LT(seconds, 5.0);
}

// ---------------------------------------------------------------- files written by Python

json expected() {
  std::ifstream in(kFixtures / "expected.json");
  return json::parse(in);
}

void expect_matches(const st::File& f, const json& want) {
  EXPECT_EQ(json(f.metadata), want["metadata"]);
  ASSERT_EQ(f.tensors.size(), want["tensors"].size());
  for (const auto& [name, w] : want["tensors"].items()) {
    ASSERT_TRUE(f.tensors.count(name)) << name;
    const Tensor& t = f.tensors.at(name);
    EXPECT_STREQ(st::dtype_to_string(t.dtype()), w["dtype"].get<std::string>().c_str()) << name;
    EXPECT_EQ(t.sizes(), w["shape"].get<Shape>()) << name;
    EXPECT_EQ(bytes_of(t), from_hex(w["hex"])) << name;
    const std::vector<double> values = ops::to_vector<double>(t);
    ASSERT_EQ(values.size(), w["values"].size()) << name;
    for (size_t i = 0; i < values.size(); ++i) {
      const json& v = w["values"][i];
      EXPECT_EQ(values[i], v.is_boolean() ? double(v.get<bool>()) : v.get<double>()) << name << "[" << i << "]";
    }
  }
}

TEST(Safetensors, ReadsFilesWrittenByThePythonPackage) {
  const json want = expected();
  const st::File f = st::load((kFixtures / "all_dtypes.safetensors").string());
  expect_matches(f, want["all_dtypes.safetensors"]);
  EXPECT_EQ(f.tensors.at("scalar").dim(), 0);
  EXPECT_EQ(f.tensors.at("empty").sizes(), (Shape{0, 3}));

  // Our writer's version of the same checkpoint reads back identically; with
  // STRAND_SAFETENSORS_EXPORT=<file> it is also left there for
  // `tools/make_safetensors_fixtures.py --verify <file>` to check with the Python package.
  TempDir dir;
  std::string out = dir / "rewritten.safetensors";
  if (const char* env = std::getenv("STRAND_SAFETENSORS_EXPORT")) out = env;
  st::save(out, f.tensors, f.metadata);
  expect_matches(st::load(out), want["all_dtypes.safetensors"]);
}

TEST(Safetensors, ReadsAPythonShardedCheckpoint) {
  const json want = expected()["sharded/model.safetensors.index.json"];
  const std::string index = (kFixtures / "sharded" / "model.safetensors.index.json").string();
  expect_matches(st::load_sharded(index), want);
  expect_matches(st::load_any(index), want);
  expect_matches(st::load_any((kFixtures / "sharded").string()), want);
  expect_matches(
      st::load_any((kFixtures / "sharded" / "model-00001-of-00003.safetensors").string()),
      json{{"metadata", want["metadata"]}, {"tensors", {{"embed.weight", want["tensors"]["embed.weight"]}}}});
}

// ---------------------------------------------------------------- sharded checkpoints

TEST(Safetensors, SaveShardedSplitsGreedilyAndWritesTheIndex) {
  TempDir dir;
  const st::TensorMap tensors{{"a", ops::ones({10})},             // 40 bytes
                              {"b", ops::ones({5}, DType::f64)},  // 40
                              {"c", ops::ones({100})},            // 400: over the limit, a shard of its own
                              {"d", ops::ones({3}, DType::u8)},   // 3
                              {"e", ops::zeros({0})}};
  st::save_sharded(dir.path.string(), tensors, 100, "model", {{"format", "pt"}});
  const json index = json::parse(read_bytes(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 483);
  EXPECT_EQ(index["weight_map"], (json{{"a", "model-00001-of-00003.safetensors"},
                                       {"b", "model-00001-of-00003.safetensors"},
                                       {"c", "model-00002-of-00003.safetensors"},
                                       {"d", "model-00003-of-00003.safetensors"},
                                       {"e", "model-00003-of-00003.safetensors"}}));
  EXPECT_FALSE(fs::exists(dir.path / "model.safetensors"));
  EXPECT_EQ(st::read_header(dir / "model-00002-of-00003.safetensors").size(), 1u);
  const st::File f = st::load_any(dir.path.string());
  expect_same(f.tensors, tensors);
  EXPECT_EQ(f.metadata, (st::Metadata{{"format", "pt"}}));
  EXPECT_FALSE(has_temp_files(dir.path));

  // Re-saved in two shards: the three of the earlier save are removed.
  st::save_sharded(dir.path.string(), tensors, 450);
  EXPECT_TRUE(fs::exists(dir.path / "model-00002-of-00002.safetensors"));
  for (int i = 1; i <= 3; ++i)
    EXPECT_FALSE(fs::exists(dir.path / ("model-0000" + std::to_string(i) + "-of-00003.safetensors"))) << i;
  expect_same(st::load_any(dir.path.string()).tensors, tensors);

  // Re-saved as one file: the index and shards of the earlier save are removed.
  st::save_sharded(dir.path.string(), tensors, 1 << 20);
  EXPECT_TRUE(fs::exists(dir.path / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir.path / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir.path / "model-00001-of-00002.safetensors"));
  expect_same(st::load_any(dir.path.string()).tensors, tensors);

  // And back to two shards under another stem into a new directory.
  st::save_sharded(dir / "sub/dir", tensors, 450, "ckpt");
  EXPECT_TRUE(fs::exists(dir.path / "sub/dir/ckpt-00002-of-00002.safetensors"));
  expect_same(st::load_sharded(dir / "sub/dir/ckpt.safetensors.index.json").tensors, tensors);
}

TEST(Safetensors, LoadShardedErrorsNameTheProblem) {
  TempDir dir;
  st::save_sharded(dir.path.string(), {{"a", ops::ones({10})}, {"b", ops::ones({10})}}, 40);
  const std::string index = dir / "model.safetensors.index.json";
  const std::string good = read_bytes(index);

  fs::remove(dir.path / "model-00002-of-00002.safetensors");
  EXPECT_TRUE(
      throws_with([&] { st::load_sharded(index); }, {index, "model-00002-of-00002.safetensors", "'b'", "missing"}));

  json j = json::parse(good);
  j["weight_map"]["ghost"] = "model-00001-of-00002.safetensors";
  j["weight_map"].erase("b");
  write_bytes(index, j.dump());
  EXPECT_TRUE(
      throws_with([&] { st::load_sharded(index); }, {"'ghost'", "model-00001-of-00002.safetensors", "does not hold"}));

  write_bytes(index, "{\"weight_map\": {");
  EXPECT_TRUE(throws_with([&] { st::load_sharded(index); }, {index, "not valid JSON"}));
  write_bytes(index, R"({"metadata": {}})");
  EXPECT_TRUE(throws_with([&] { st::load_sharded(index); }, {"weight_map"}));
  write_bytes(index, R"({"weight_map": {"a": 1}})");
  EXPECT_TRUE(throws_with([&] { st::load_sharded(index); }, {"'a'", "not a file name"}));
  write_bytes(index, R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  EXPECT_TRUE(throws_with([&] { st::load_sharded(index); }, {"'a'", "not a file name"}));
  EXPECT_TRUE(throws_with([&] { st::load_sharded(dir / "none.json"); }, {"none.json", "does not exist"}));

  fs::remove(index);
  EXPECT_TRUE(throws_with([&] { st::load_any(dir.path.string()); }, {"neither model.safetensors"}));
}

}  // namespace
}  // namespace strand
