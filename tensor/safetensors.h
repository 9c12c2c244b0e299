#pragma once
// safetensors I/O (https://github.com/huggingface/safetensors format): an 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, ...,
// "__metadata__": {str: str}}, then the data buffer. Offsets are relative to the buffer start.
//
// Reading maps the file and validates the header completely before touching data: length bounds,
// well-formed JSON, known dtypes, non-negative shapes, shape x dtype size == byte range, ranges
// inside the buffer and not overlapping. Any violation is a strand::Error naming the file and the
// offending entry; no input makes the reader crash or read out of bounds. Tensors alias the
// mapping when their data is suitably aligned (zero-copy) and are copied otherwise; either way
// they stay valid after the File is gone.
//
// Writing goes to a temporary file in the same directory, which is renamed over the target only
// once complete, so a crash never leaves a partial checkpoint.
#include <map>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace strand::safetensors {

using TensorMap = std::map<std::string, Tensor>;
using Metadata = std::map<std::string, std::string>;

struct File {
  TensorMap tensors;
  Metadata metadata;
};

// dtype names as the format spells them: F32 F64 F16 BF16 I64 I32 U8 BOOL.
const char* dtype_to_string(DType t);
DType dtype_from_string(const std::string& s);  // strand::Error for anything else

File load(const std::string& path);
// Only the header: names, dtypes, shapes (tensors are undefined), and metadata.
struct Entry {
  DType dtype;
  Shape shape;
};
std::map<std::string, Entry> read_header(const std::string& path, Metadata* metadata = nullptr);

// Tensors may live on any device and have any layout; they are written contiguous, as they are.
void save(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

// Sharded checkpoints as Hugging Face writes them: `model.safetensors.index.json` with
// {"metadata": {"total_size": N}, "weight_map": {name: "model-00001-of-00002.safetensors"}} beside
// the shards. load_sharded takes the index path; every listed tensor must be found in its shard.
File load_sharded(const std::string& index_path);
// Writes `<dir>/<stem>-0000i-of-0000n.safetensors` shards of at most max_shard_bytes each (a
// tensor larger than that gets a shard of its own) and `<dir>/<stem>.safetensors.index.json`.
// With a single shard, writes `<dir>/<stem>.safetensors` and no index, as Hugging Face does.
void save_sharded(const std::string& dir, const TensorMap& tensors, size_t max_shard_bytes,
                  const std::string& stem = "model", const Metadata& metadata = {});

// Loads a checkpoint given either a .safetensors file, an index .json, or a directory holding one
// of `model.safetensors` / `model.safetensors.index.json`.
File load_any(const std::string& path);

}  // namespace strand::safetensors
