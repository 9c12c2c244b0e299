#include "models/enformer/enformer.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "models/enformer/positional.h"
#include "nn/init.h"
#include "tensor/safetensors.h"

namespace strand::models::enformer {

namespace detail {

// A plain container whose children are added by name ("0", "fn", "to_q", ...), so the module tree
// spells enformer-pytorch's parameter names; forward lives in Enformer.
class Box : public nn::Module {
 public:
  explicit Box(std::string type) : nn::Module(std::move(type)) {}
  using nn::Module::add_child;
};

struct ConvBlock {
  std::shared_ptr<nn::BatchNorm1d> bn;
  std::shared_ptr<nn::Conv1d> conv;
  std::shared_ptr<Box> box;  // children "0" (BatchNorm) and "2" (Conv1d); "1" is the GELU
};

struct AttentionPool {
  Tensor weight;             // [C, C, 1, 1] (nn.Conv2d 1x1, no bias), dirac * 2 at init
  std::shared_ptr<Box> box;  // child "to_attn_logits" holding `weight`
};

struct TowerBlock {
  ConvBlock conv, res;
  AttentionPool pool;
};

struct TransformerBlock {
  std::shared_ptr<nn::LayerNorm> ln1, ln2;
  std::shared_ptr<nn::Linear> to_q, to_k, to_v, to_out, to_rel_k, ff1, ff2;
  Tensor rel_content_bias, rel_pos_bias;  // [1, H, 1, Dk]
};

}  // namespace detail

using detail::Box;

namespace {

detail::ConvBlock make_conv_block(int64_t cin, int64_t cout, int64_t k, const nn::LayerOptions& o) {
  detail::ConvBlock b;
  b.bn = std::make_shared<nn::BatchNorm1d>(cin, 1e-5, 0.1, o);
  b.conv = std::make_shared<nn::Conv1d>(cin, cout, k, k / 2, true, o);
  b.box = std::make_shared<Box>("ConvBlock");
  b.box->add_child("0", b.bn);
  b.box->add_child("2", b.conv);
  return b;
}

detail::AttentionPool make_pool(int64_t c, const nn::LayerOptions& o) {
  detail::AttentionPool p;
  auto logits = std::make_shared<Box>("Conv2d");
  std::vector<double> eye(static_cast<size_t>(c * c), 0.0);
  for (int64_t i = 0; i < c; ++i) eye[static_cast<size_t>(i * c + i)] = 2.0;  // dirac_ then * 2
  Tensor w = ops::to(ops::to(ops::from_vector<double>(eye, {c, c, 1, 1}), o.dtype), o.device);
  p.weight = logits->register_parameter("weight", ops::contiguous(w));
  p.box = std::make_shared<Box>("AttentionPool");
  p.box->add_child("to_attn_logits", logits);
  return p;
}

std::shared_ptr<Box> residual(const std::shared_ptr<nn::Module>& fn) {
  auto r = std::make_shared<Box>("Residual");
  r->add_child("fn", fn);
  return r;
}

}  // namespace

Enformer::~Enformer() = default;

Enformer::Enformer(const EnformerConfig& cfg, nn::LayerOptions o) : nn::Module("Enformer"), config_(cfg) {
  config_.validate();
  const int64_t dim = config_.dim, half = config_.half_dim(), H = config_.heads, Dk = config_.attn_dim_key;
  const int64_t Dv = config_.dim_value(), F6 = config_.num_rel_pos_features();
  const auto filters = config_.filter_list();

  auto stem = std::make_shared<Box>("Sequential");
  stem_conv_ = std::make_shared<nn::Conv1d>(4, half, 15, 7, true, o);
  stem_block_ = std::make_unique<detail::ConvBlock>(make_conv_block(half, half, 1, o));
  stem_pool_ = std::make_unique<detail::AttentionPool>(make_pool(half, o));
  stem->add_child("0", stem_conv_);
  stem->add_child("1", residual(stem_block_->box));
  stem->add_child("2", stem_pool_->box);
  add_child("stem", stem);

  auto tower = std::make_shared<Box>("Sequential");
  for (size_t i = 0; i + 1 < filters.size(); ++i) {
    detail::TowerBlock t{make_conv_block(filters[i], filters[i + 1], 5, o),
                         make_conv_block(filters[i + 1], filters[i + 1], 1, o), make_pool(filters[i + 1], o)};
    auto box = std::make_shared<Box>("Sequential");
    box->add_child("0", t.conv.box);
    box->add_child("1", residual(t.res.box));
    box->add_child("2", t.pool.box);
    tower->add_child(std::to_string(i), box);
    tower_.push_back(std::move(t));
  }
  add_child("conv_tower", tower);

  auto transformer = std::make_shared<Box>("Sequential");
  for (int64_t l = 0; l < config_.depth; ++l) {
    detail::TransformerBlock b;
    b.ln1 = std::make_shared<nn::LayerNorm>(dim, 1e-5, true, true, o);
    b.ln2 = std::make_shared<nn::LayerNorm>(dim, 1e-5, true, true, o);
    b.to_q = std::make_shared<nn::Linear>(dim, Dk * H, false, o);
    b.to_k = std::make_shared<nn::Linear>(dim, Dk * H, false, o);
    b.to_v = std::make_shared<nn::Linear>(dim, Dv * H, false, o);
    b.to_out = std::make_shared<nn::Linear>(Dv * H, dim, true, o);
    {
      NoGradGuard ng;
      ops::zero_(b.to_out->weight);  // the reference zero-initialises the output projection
      ops::zero_(b.to_out->bias);
    }
    b.to_rel_k = std::make_shared<nn::Linear>(F6, Dk * H, false, o);
    b.ff1 = std::make_shared<nn::Linear>(dim, 2 * dim, true, o);
    b.ff2 = std::make_shared<nn::Linear>(2 * dim, dim, true, o);
    auto attn = std::make_shared<Box>("Attention");
    attn->add_child("to_q", b.to_q);
    attn->add_child("to_k", b.to_k);
    attn->add_child("to_v", b.to_v);
    attn->add_child("to_out", b.to_out);
    attn->add_child("to_rel_k", b.to_rel_k);
    const TensorOptions po(o.dtype, o.device);
    b.rel_content_bias = attn->register_parameter("rel_content_bias", ops::empty({1, H, 1, Dk}, po));
    b.rel_pos_bias = attn->register_parameter("rel_pos_bias", ops::empty({1, H, 1, Dk}, po));
    nn::init::normal_(b.rel_content_bias);
    nn::init::normal_(b.rel_pos_bias);
    auto seq0 = std::make_shared<Box>("Sequential");
    seq0->add_child("0", b.ln1);
    seq0->add_child("1", attn);
    auto seq1 = std::make_shared<Box>("Sequential");
    seq1->add_child("0", b.ln2);
    seq1->add_child("1", b.ff1);
    seq1->add_child("4", b.ff2);
    auto block = std::make_shared<Box>("Sequential");
    block->add_child("0", residual(seq0));
    block->add_child("1", residual(seq1));
    transformer->add_child(std::to_string(l), block);
    blocks_.push_back(std::move(b));
  }
  add_child("transformer", transformer);

  final_block_ = std::make_unique<detail::ConvBlock>(make_conv_block(filters.back(), 2 * dim, 1, o));
  auto fin = std::make_shared<Box>("Sequential");
  fin->add_child("1", final_block_->box);
  add_child("final_pointwise", fin);

  auto heads = std::make_shared<Box>("ModuleDict");
  for (const auto& [name, n] : config_.output_heads) {
    auto lin = std::make_shared<nn::Linear>(2 * dim, n, true, o);
    auto seq = std::make_shared<Box>("Sequential");
    seq->add_child("0", lin);
    heads->add_child(name, seq);
    heads_[name] = lin;
  }
  add_child("_heads", heads);

  if (config_.use_tf_gamma) tf_gamma_ = load_gamma_table(config_.tf_gamma_path);
}

void Enformer::set_dropout(double rate, double attn, double pos) {
  EnformerConfig c = config_;
  c.dropout_rate = rate;
  c.attn_dropout = attn;
  c.pos_dropout = pos;
  c.validate();
  config_ = c;
}

int64_t Enformer::num_trunk_parameters() const {
  int64_t n = 0;
  for (const auto& [name, p] : named_parameters())
    if (name.rfind("_heads.", 0) != 0) n += p.numel();
  return n;
}

const Tensor& Enformer::positions(int64_t T) {
  const Tensor& ref = blocks_.at(0).to_rel_k->weight;
  auto it = positions_.find(T);
  if (it != positions_.end() && (it->second.dtype() != ref.dtype() || it->second.device() != ref.device())) {
    positions_.erase(it);  // the model was moved or cast since
    it = positions_.end();
  }
  if (it == positions_.end()) {
    NoGradGuard ng;
    Tensor p = positional_features(T, config_.num_rel_pos_features(), tf_gamma_);
    it = positions_.emplace(T, ops::to(ops::to(p, ref.dtype()), ref.device())).first;
  }
  return it->second;
}

Tensor Enformer::conv_block(const detail::ConvBlock& b, const Tensor& x) {
  const nn::BatchNorm1d& bn = *b.bn;
  Tensor y;
  if (!is_training()) {
    y = batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, false, bn.momentum, bn.eps);
  } else if (recomputing_) {
    // Checkpoint recomputation: same batch statistics, running statistics already updated.
    y = batch_norm(x, bn.weight, bn.bias, Tensor(), Tensor(), true, bn.momentum, bn.eps);
  } else {
    {
      NoGradGuard ng;
      ops::add_(bn.num_batches_tracked, ops::scalar_tensor(1, TensorOptions(DType::i64, bn.num_batches_tracked.device())));
    }
    y = batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, true, bn.momentum, bn.eps);
  }
  return conv1d(gelu_sigmoid(y), b.conv->weight, b.conv->bias, b.conv->padding);
}

// Softmax pooling over windows of 2 positions with per-channel logits W·x (enformer-pytorch's
// AttentionPool); an odd length gets a zero position whose logits are masked to -max.
Tensor Enformer::pool(const detail::AttentionPool& p, const Tensor& x) {
  const int64_t L = x.size(1), C = x.size(2);
  const bool odd = L % 2 == 1;
  Tensor xx = odd ? pad(x, {0, 0, 0, 1}) : x;
  Tensor logits = linear(xx, reshape(p.weight, {C, C}));
  if (odd) {
    std::vector<uint8_t> m(static_cast<size_t>(L + 1), 0);
    m.back() = 1;
    Tensor mask = ops::to(ops::from_vector<uint8_t>(m, {1, L + 1, 1}), DType::b8);
    logits = masked_fill(logits, ops::to(mask, x.device()), -static_cast<double>(FLT_MAX));
  }
  // Fused: no [B, n, 2, C] softmax, product or their gradients in memory (the composed form,
  // sum(x * softmax(logits over each window)), is the reference in the kernel tests).
  return softmax_pool(xx, logits, 2);
}

// With checkpoint_conv each of these steps is its own checkpointed segment: a segment keeps only its
// input, so at most one full-resolution step is materialised again during backward (checkpointing
// the whole stem as one segment would recompute all of its ~8 full-resolution tensors at once).
Tensor Enformer::stem_forward(const Tensor& x) {
  const bool ck = config_.checkpoint_conv;
  Tensor y = segment(ck, [this](const Tensor& t) { return conv1d(t, stem_conv_->weight, stem_conv_->bias, 7); }, x);
  y = segment(ck, [this](const Tensor& t) { return conv_block(*stem_block_, t) + t; }, y);
  return segment(ck, [this](const Tensor& t) { return pool(*stem_pool_, t); }, y);
}

Tensor Enformer::tower_forward(size_t i, const Tensor& x) {
  const bool ck = config_.checkpoint_conv;
  const detail::TowerBlock& t = tower_.at(i);
  Tensor y = segment(ck, [this, &t](const Tensor& u) { return conv_block(t.conv, u); }, x);
  y = segment(ck, [this, &t](const Tensor& u) { return conv_block(t.res, u) + u; }, y);
  return segment(ck, [this, &t](const Tensor& u) { return pool(t.pool, u); }, y);
}

Tensor Enformer::attention(size_t l, const Tensor& x) {
  const detail::TransformerBlock& b = blocks_.at(l);
  const int64_t B = x.size(0), T = x.size(1), H = config_.heads, Dk = config_.attn_dim_key, Dv = config_.dim_value();
  auto split = [&](const Tensor& t, int64_t d) { return permute(view(t, {B, T, H, d}), {0, 2, 1, 3}); };
  Tensor q = split(linear(x, b.to_q->weight), Dk) * (1.0 / std::sqrt(static_cast<double>(Dk)));
  Tensor k = split(linear(x, b.to_k->weight), Dk);
  Tensor v = split(linear(x, b.to_v->weight), Dv);
  Tensor pos = dropout(positions(T), config_.pos_dropout, is_training());
  Tensor rk = view(linear(pos, b.to_rel_k->weight), {2 * T - 1, H, Dk});  // row m: distance m - (T-1)
  Tensor qc = q + b.rel_content_bias, qr = q + b.rel_pos_bias;
  Tensor o;  // [B, H, T, Dv]
  if (!x.is_cuda() || ops::fused_gpu_attention()) {
    // Fused (ops::rel_attention): the same logits, softmax and dropout mask without the
    // [B, H, T, T] and [B, H, T, 2T-1] tensors.
    o = rel_attention(qc, qr, k, permute(rk, {1, 0, 2}), v, is_training() ? config_.attn_dropout : 0.0);
  } else {  // composed on a GPU until the CUDA kernel of the fused op has run on one (opt-in until then)
    Tensor content = matmul(qc, transpose(k, -1, -2));                      // [B, H, T, T]
    Tensor rel = rel_shift(matmul(qr, permute(rk, {1, 2, 0})));              // [B, H, T, 2T-1] -> [B, H, T, T]
    o = matmul(dropout(softmax(content + rel, -1), config_.attn_dropout, is_training()), v);
  }
  Tensor out = reshape(permute(o, {0, 2, 1, 3}), {B, T, H * Dv});
  return linear(out, b.to_out->weight, b.to_out->bias);
}

Tensor Enformer::block_forward(size_t l, const Tensor& x) {
  const detail::TransformerBlock& b = blocks_.at(l);
  const bool tr = is_training();
  Tensor y = dropout(attention(l, layer_norm(x, b.ln1->weight, b.ln1->bias, b.ln1->eps)), config_.dropout_rate, tr);
  Tensor h = y + x;
  y = linear(layer_norm(h, b.ln2->weight, b.ln2->bias, b.ln2->eps), b.ff1->weight, b.ff1->bias);
  y = relu(dropout(y, config_.dropout_rate, tr));
  y = dropout(linear(y, b.ff2->weight, b.ff2->bias), config_.dropout_rate, tr);
  return y + h;
}

Tensor Enformer::segment(bool on, const std::function<Tensor(const Tensor&)>& fn, const Tensor& x) {
  if (!on || !is_training() || !grad_enabled()) return fn(x);
  auto runs = std::make_shared<int>(0);
  return checkpoint(
      [this, fn, runs](const std::vector<Tensor>& in) {
        const bool prev = recomputing_;
        recomputing_ = (*runs)++ > 0;
        Tensor y;
        try {
          y = fn(in[0]);
        } catch (...) {
          recomputing_ = prev;
          throw;
        }
        recomputing_ = prev;
        return std::vector<Tensor>{y};
      },
      {x})[0];
}

Tensor Enformer::forward(const Tensor& one_hot) {
  STRAND_CHECK(one_hot.defined() && one_hot.dim() == 3 && one_hot.size(2) == 4,
               "Enformer: expected one-hot DNA [B, L, 4], got ", one_hot.defined() ? shape_str(one_hot.sizes()) : "undefined");
  const int64_t B = one_hot.size(0), L = one_hot.size(1), nd = config_.num_downsamples, tl = config_.target_length;
  STRAND_CHECK(B > 0 && L > 0, "Enformer: empty input ", shape_str(one_hot.sizes()));
  const int64_t T = config_.trunk_length(L);
  STRAND_CHECK(tl == -1 || T >= tl, "Enformer: an input of ", L, " bp gives ", T, " bins after ", nd,
               " downsamplings (x", int64_t{1} << nd, "), fewer than target_length ", tl, "; inputs need at least ",
               ((tl - 1) << nd) + 1, " bp (", tl << nd, " for the full ", tl, "-bin window)");
  const Tensor& w0 = stem_conv_->weight;
  Tensor x = ops::to(ops::to(one_hot, w0.dtype()), w0.device());
  const bool ck_tr = config_.use_checkpointing;
  x = stem_forward(x);
  for (size_t i = 0; i < tower_.size(); ++i) x = tower_forward(i, x);
  for (size_t l = 0; l < blocks_.size(); ++l)
    x = segment(ck_tr, [this, l](const Tensor& t) { return block_forward(l, t); }, x);
  if (tl != -1) {
    // TargetLengthCrop: trim = (target - T) // 2 (floor), x[:, -trim:trim]; an odd surplus leaves
    // target - 1 bins, as in the reference.
    const int64_t d = tl - T;
    const int64_t trim = d >= 0 ? d / 2 : -((-d + 1) / 2);
    if (trim != 0) x = narrow(x, 1, -trim, T + 2 * trim);
  }
  x = conv_block(*final_block_, x);
  return gelu_sigmoid(dropout(x, config_.dropout_rate / 8, is_training()));
}

Tensor Enformer::head(const std::string& name, const Tensor& embedding) {
  auto it = heads_.find(name);
  STRAND_CHECK(it != heads_.end(), "Enformer: no output head named '", name, "'");
  return softplus(linear(embedding, it->second->weight, it->second->bias));
}

nn::StateDict canonicalize_enformer_state_dict(const nn::StateDict& sd) {
  static const std::pair<const char*, const char*> kAliases[] = {
      {"_trunk.1.", "stem."}, {"_trunk.2.", "conv_tower."}, {"_trunk.4.", "transformer."}, {"_trunk.6.", "final_pointwise."}};
  nn::StateDict out;
  for (const auto& [key, t] : sd) {
    std::string canon = key;
    for (const auto& [from, to] : kAliases) {
      if (key.rfind(from, 0) == 0) {
        canon = std::string(to) + key.substr(std::strlen(from));
        break;
      }
    }
    if (canon == key) {
      out[key] = t;
      continue;
    }
    auto dup = sd.find(canon);
    if (dup == sd.end()) {
      out[canon] = t;
      continue;
    }
    const Tensor& c = dup->second;
    bool same = c.sizes() == t.sizes() && c.dtype() == t.dtype();
    if (same) {
      Tensor a = ops::contiguous(ops::to(c, Device::cpu())), b = ops::contiguous(ops::to(t, Device::cpu()));
      same = std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
    }
    STRAND_CHECK(same, "Enformer checkpoint: aliased keys '", key, "' (", t.str(), ") and '", canon, "' (", c.str(),
                 ") hold different values");
  }
  return out;
}

std::shared_ptr<Enformer> load_enformer(const std::string& folder, const LoadEnformerOptions& opts) {
  namespace fs = std::filesystem;
  STRAND_CHECK(fs::is_directory(folder), "load_enformer: '", folder, "' is not a directory");
  const fs::path dir(folder);
  STRAND_CHECK(fs::exists(dir / "config.json"), "load_enformer: no config.json in '", folder, "'");
  EnformerConfig cfg = EnformerConfig::from_json_file((dir / "config.json").string());
  if (opts.edit_config) opts.edit_config(cfg);
  if (cfg.use_tf_gamma && !cfg.tf_gamma_path.empty() && fs::path(cfg.tf_gamma_path).is_relative() &&
      fs::exists(dir / cfg.tf_gamma_path))
    cfg.tf_gamma_path = (dir / cfg.tf_gamma_path).string();
  cfg.validate();
  const bool has_st = fs::exists(dir / "model.safetensors") || fs::exists(dir / "model.safetensors.index.json");
  STRAND_CHECK(has_st || !fs::exists(dir / "pytorch_model.bin"), "load_enformer: '", folder,
               "' holds pytorch_model.bin but no model.safetensors; convert it with tools/convert_checkpoint.py");
  STRAND_CHECK(has_st, "load_enformer: no model.safetensors or model.safetensors.index.json in '", folder, "'");
  auto model = std::make_shared<Enformer>(cfg, opts.layer_options);
  auto file = safetensors::load_any(folder);
  nn::LoadOptions lo;
  lo.strict = true;
  lo.allow_dtype_cast = true;
  model->load_state_dict(canonicalize_enformer_state_dict(file.tensors), lo);
  model->eval();
  return model;
}

}  // namespace strand::models::enformer
