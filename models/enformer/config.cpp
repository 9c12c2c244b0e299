#include "models/enformer/config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "models/config_fields.h"
#include "tensor/error.h"

namespace strand::models::enformer {

using json = nlohmann::json;

std::vector<int64_t> exponential_linspace_int(double start, double end, int64_t num, int64_t divisible_by) {
  STRAND_CHECK(num >= 2, "exponential_linspace_int: num must be at least 2, got ", num);
  STRAND_CHECK(divisible_by >= 1, "exponential_linspace_int: divisible_by must be positive, got ", divisible_by);
  const double base = std::exp(std::log(end / start) / static_cast<double>(num - 1));
  std::vector<int64_t> out;
  for (int64_t i = 0; i < num; ++i) {
    const double v = start * std::pow(base, static_cast<double>(i));
    // Python's round() rounds halves to even, as nearbyint does in the default rounding mode.
    out.push_back(static_cast<int64_t>(std::nearbyint(v / static_cast<double>(divisible_by))) * divisible_by);
  }
  return out;
}

EnformerConfig EnformerConfig::from_json_string(const std::string& text, const std::string& where) {
  const json j = parse_config_json(text, where);
  if (j.contains("model_type")) {
    const std::string mt = j["model_type"].is_string() ? j["model_type"].get<std::string>() : j["model_type"].dump();
    STRAND_CHECK(mt == "enformer", where, ": model_type is '", mt, "', expected 'enformer'");
  }
  EnformerConfig c;
  get_field(j, "dim", c.dim, where);
  get_field(j, "depth", c.depth, where);
  get_field(j, "heads", c.heads, where);
  get_field(j, "attn_dim_key", c.attn_dim_key, where);
  get_field(j, "dropout_rate", c.dropout_rate, where);
  get_field(j, "attn_dropout", c.attn_dropout, where);
  get_field(j, "pos_dropout", c.pos_dropout, where);
  get_field(j, "num_downsamples", c.num_downsamples, where);
  get_field(j, "dim_divisible_by", c.dim_divisible_by, where);
  get_field(j, "target_length", c.target_length, where);
  get_field(j, "output_heads", c.output_heads, where);
  get_field(j, "use_tf_gamma", c.use_tf_gamma, where);
  get_field(j, "tf_gamma_path", c.tf_gamma_path, where);
  get_field(j, "use_checkpointing", c.use_checkpointing, where);
  get_field(j, "checkpoint_conv", c.checkpoint_conv, where);
  bool convnext = false;
  get_field(j, "use_convnext", convnext, where);
  STRAND_CHECK(!convnext, where, ": use_convnext = true is not supported (enformer-pytorch ignores it too)");
  c.validate();
  return c;
}

EnformerConfig EnformerConfig::from_json_file(const std::string& path) {
  std::ifstream f(path);
  STRAND_CHECK(f.good(), "Enformer: cannot open config file '", path, "'");
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json_string(ss.str(), path);
}

void EnformerConfig::validate() const {
  STRAND_CHECK(dim > 0 && dim % 2 == 0, "Enformer config: dim must be positive and even, got ", dim);
  STRAND_CHECK(depth >= 0, "Enformer config: depth must be non-negative, got ", depth);
  STRAND_CHECK(heads > 0 && dim % heads == 0, "Enformer config: dim ", dim, " must be divisible by heads ", heads);
  STRAND_CHECK((dim / heads) % 6 == 0, "Enformer config: dim/heads = ", dim / heads,
               " relative-position features must be divisible by 6 (3 functions x symmetric/asymmetric)");
  STRAND_CHECK(attn_dim_key > 0, "Enformer config: attn_dim_key must be positive, got ", attn_dim_key);
  for (auto [name, p] : {std::pair<const char*, double>{"dropout_rate", dropout_rate},
                         {"attn_dropout", attn_dropout}, {"pos_dropout", pos_dropout}})
    STRAND_CHECK(p >= 0 && p < 1, "Enformer config: ", name, " must be in [0, 1), got ", p);
  STRAND_CHECK(num_downsamples >= 3, "Enformer config: num_downsamples must be at least 3 (the reference's ",
               "exponential_linspace_int needs num_downsamples - 1 >= 2 tower widths), got ", num_downsamples);
  STRAND_CHECK(dim_divisible_by >= 1, "Enformer config: dim_divisible_by must be positive, got ", dim_divisible_by);
  STRAND_CHECK(target_length == -1 || target_length > 0, "Enformer config: target_length must be positive or -1, got ",
               target_length);
  for (const auto& [name, n] : output_heads)
    STRAND_CHECK(n > 0, "Enformer config: output head '", name, "' must have a positive size, got ", n);
  const auto f = filter_list();
  for (size_t i = 0; i < f.size(); ++i)
    STRAND_CHECK(f[i] > 0, "Enformer config: conv tower width ", i, " rounds to ", f[i], " (dim ", dim,
                 ", dim_divisible_by ", dim_divisible_by, ")");
  STRAND_CHECK(f.back() == dim, "Enformer config: the last conv tower width ", f.back(), " differs from dim ", dim,
               " (dim_divisible_by ", dim_divisible_by, " rounds it), which the transformer cannot take");
  STRAND_CHECK(!use_tf_gamma || !tf_gamma_path.empty(),
               "Enformer config: use_tf_gamma = true needs tf_gamma_path (a safetensors file holding the table)");
}

std::vector<int64_t> EnformerConfig::filter_list() const {
  std::vector<int64_t> f{half_dim()};
  for (int64_t v : exponential_linspace_int(static_cast<double>(half_dim()), static_cast<double>(dim),
                                            num_downsamples - 1, dim_divisible_by))
    f.push_back(v);
  return f;
}

int64_t EnformerConfig::trunk_length(int64_t length) const {
  for (int64_t i = 0; i < num_downsamples; ++i) length = (length + 1) / 2;  // stem + tower pools
  return length;
}

int64_t EnformerConfig::output_length(int64_t length) const {
  const int64_t T = trunk_length(length);
  if (target_length == -1) return T;
  // trim = (target - T) // 2 (floor, negative); x[:, -trim : trim]
  const int64_t d = target_length - T;
  const int64_t trim = d >= 0 ? d / 2 : -((-d + 1) / 2);
  return trim == 0 ? T : T + 2 * trim;
}

}  // namespace strand::models::enformer
