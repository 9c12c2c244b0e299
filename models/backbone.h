#pragma once
// What the sequence backbones (ESM-2, AIDO.RNA) share: the output they give the task heads, the
// rotary position embedding both use, and masked mean pooling.
#include <string>

#include "nn/module.h"

namespace strand::models {

struct BackboneOutput {
  Tensor last_hidden_state;  // [B, L, D], after the final norm
  Tensor attention_mask;     // i64 [B, L], the mask the model was given
};

class Backbone : public nn::Module {
 public:
  using nn::Module::Module;
  // input_ids / attention_mask: i64 [B, L] (1 = token, 0 = padding).
  virtual BackboneOutput forward(const Tensor& input_ids, const Tensor& attention_mask) = 0;
  virtual int64_t hidden_size() const = 0;
  virtual std::string model_type() const = 0;  // config.json's model_type: "esm", "rnabert"
};

// Masked mean over the sequence: sum(h * m) / clamp(sum(m), 1e-9). h [B, L, D], mask i64/bool/float [B, L]
// -> [B, D]. Special tokens count when the mask has them, as ModelGenerator's mean pooling does.
Tensor masked_mean(const Tensor& h, const Tensor& mask);

// ---- rotary position embedding (split-half / GPT-NeoX layout, positions 0..T-1) ----
// inv_freq[i] = 1 / base^(2i/dim) computed in fp32 as torch does (AIDO.RNA; ESM-2's HF init).
Tensor rotary_inv_freq(int64_t dim, double base = 10000);
struct RotaryTables {
  Tensor cos, sin;  // f32 [T, 2*len(inv_freq)]: emb = cat(freqs, freqs), freqs = outer(t, inv_freq)
};
RotaryTables rotary_tables(const Tensor& inv_freq, int64_t T, DType dtype = DType::f32, Device device = Device::cpu());
// x [..., T, hd]: the first cos.size(-1) dims are rotated, x*cos + rotate_half(x)*sin with
// rotate_half([a, b]) = [-b, a]; any remaining dims pass unchanged (partial rotary).
Tensor apply_rotary(const Tensor& x, const RotaryTables& t);

// i64 mask -> the x dtype (1/0) for multiplications.
Tensor mask_as(const Tensor& mask, const Tensor& like);

}  // namespace strand::models
