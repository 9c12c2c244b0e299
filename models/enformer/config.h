#pragma once
// EnformerConfig: the fields of enformer-pytorch's `EnformerConfig` (config.json, model_type
// "enformer") plus strand's checkpointing switches. Every size of the network derives from these,
// so tiny test configs and the official 196,608-bp model run the same code.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace strand::models::enformer {

struct EnformerConfig {
  int64_t dim = 1536;
  int64_t depth = 11;
  int64_t heads = 8;
  int64_t attn_dim_key = 64;
  double dropout_rate = 0.4;   // after the attention output and both MLP linears; /8 in final_pointwise
  double attn_dropout = 0.05;  // on the attention weights
  double pos_dropout = 0.01;   // on the relative positional features
  int64_t num_downsamples = 7;
  int64_t dim_divisible_by = 128;
  int64_t target_length = 896;  // -1: no crop
  std::map<std::string, int64_t> output_heads = {{"human", 5313}, {"mouse", 1643}};
  // Gamma positional features: computed as enformer-pytorch does (false, ModelGenerator's path) or
  // read from a table [2T-1, F] (F = dim/heads/6) in the safetensors file `tf_gamma_path`
  // (tools/golden/enformer.py --tf-gammas exports enformer-pytorch's TF table, valid for T = 1536).
  bool use_tf_gamma = false;
  std::string tf_gamma_path;
  // Activation checkpointing (training only): `use_checkpointing` is the reference's switch (each
  // transformer block); `checkpoint_conv` is strand's, for the stem and each conv-tower block, whose
  // full-resolution activations dominate memory at 196,608 bp.
  bool use_checkpointing = false;
  bool checkpoint_conv = false;

  // The published EleutherAI/enformer-official-rough hyperparameters (= the defaults above).
  static EnformerConfig official() { return {}; }
  // Reads a config.json as enformer-pytorch writes it; unknown keys (architectures, dtype,
  // transformers_version, ...) are ignored, known keys of the wrong type are errors naming them.
  static EnformerConfig from_json_file(const std::string& path);
  static EnformerConfig from_json_string(const std::string& text, const std::string& where = "config");

  // strand::Error naming the offending value for anything the reference would reject or build
  // inconsistently (dim not divisible by heads, features not divisible by 6, ...).
  void validate() const;

  int64_t half_dim() const { return dim / 2; }
  int64_t dim_value() const { return dim / heads; }
  int64_t num_rel_pos_features() const { return dim / heads; }
  // [half_dim, exponential_linspace_int(half_dim, dim, num_downsamples - 1, dim_divisible_by)...]:
  // the stem width followed by each conv-tower block's output width.
  std::vector<int64_t> filter_list() const;
  // Bins after the stem and conv tower for an input of `length` bp (each pool rounds up).
  int64_t trunk_length(int64_t length) const;
  // Bins after the target-length crop (reproducing the reference's floor for an odd surplus).
  int64_t output_length(int64_t length) const;
};

// enformer-pytorch's exponential_linspace_int (Python round: half to even).
std::vector<int64_t> exponential_linspace_int(double start, double end, int64_t num, int64_t divisible_by);

}  // namespace strand::models::enformer
