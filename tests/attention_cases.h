#pragma once
// What the fused-attention parity tests share (tests/cuda/nn_parity_test.cpp on a GPU,
// tests/simt/ on the SIMT emulator): the variants to cover, a forward-and-backward runner, and the
// same attention composed of ops in one precision (FlashAttention's baseline for bf16/f16 kernels).
#include <functional>
#include <string>
#include <vector>

#include "autograd/functional.h"
#include "tests/test_util.h"

namespace strand::test {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f on the inputs (each a fresh leaf requiring grad) on `dev`; returns the output and every
// input's gradient for the upstream gradient `up`, all copied to the CPU.
inline std::vector<Tensor> run_with_grads(const Fn& f, const std::vector<Tensor>& inputs, const Tensor& up,
                                          Device dev) {
  std::vector<Tensor> in;
  for (const Tensor& t : inputs) {
    Tensor d = ops::clone(ops::to(t, dev));  // a fresh leaf on both devices: no grad accumulates across runs
    d.set_requires_grad(true);
    in.push_back(d);
  }
  Tensor y = f(in);
  backward(y, ops::to(up, dev));
  std::vector<Tensor> r{ops::to(y, Device::cpu())};
  for (const Tensor& t : in) r.push_back(ops::to(t.grad(), Device::cpu()));
  return r;
}

struct AttentionCase {
  int64_t B, H, Tq, Tk, D;
  ops::AttentionParams p;
};
// The fused attention's variants: the models' masks, cross-attention, several and ragged 64-row
// tiles, head dims 8-200 (the row kernels above 128), every key masked.
inline std::vector<AttentionCase> attention_cases() {
  return {
      {2, 3, 70, 70, 16, {0.25, {}, {}}},
      {2, 3, 70, 70, 64, {0.125, pad_mask(2, 70, {70, 41}), {}}},                            // ESM-2
      {2, 2, 65, 65, 40, {0.2, pad_mask(2, 65, {60, 30}), pad_mask(2, 65, {60, 30})}},       // AIDO.RNA
      {2, 2, 33, 17, 8, {0.5, pad_mask(2, 17, {17, 0}), pad_mask(2, 33, {20, 33}), false}},  // cross-attention
      {1, 1, 5, 9, 200, {0.07, {}, {}}},                                                     // wide heads
      // several 64-row tiles, ragged last tiles (the tiled kernels), head dims 32 and 128
      {2, 2, 150, 131, 32, {0.17, pad_mask(2, 131, {131, 77}), {}}},
      {1, 2, 130, 130, 128, {0.09, pad_mask(1, 130, {100}), pad_mask(1, 130, {100})}},
      {1, 1, 70, 129, 64, {0.3, pad_mask(1, 129, {0}), pad_mask(1, 70, {10}), false}},  // every key masked
      {1, 1, 20, 9, 200, {0.3, pad_mask(1, 9, {0}), pad_mask(1, 20, {5}), false}},      // the same, row kernels
  };
}

// Attention composed of ops (matmul, scale, masked_fill, softmax, dropout, matmul), each rounded to
// the inputs' dtype: q, k, v = in[0..2]. Dropout draws from the default generator, which is set to
// `start` first (the fused kernels' mask for the same start).
inline Tensor composed_attention(const AttentionCase& c, double dropout, const Generator& start,
                                 const std::vector<Tensor>& in) {
  const ops::AttentionParams& cp = c.p;
  const DType dt = in[0].dtype();
  const double lowest = dt == DType::bf16  ? -3.3895313892515355e38
                        : dt == DType::f16 ? -65504.0
                        : dt == DType::f32 ? -3.4028234663852886e38
                                           : -1.7976931348623157e308;  // finite in the dtype
  default_generator() = start;
  Tensor s = mul(matmul(in[0], transpose(in[1], 2, 3)), cp.scale);
  if (cp.key_pad.defined()) s = masked_fill(s, reshape(cp.key_pad, {c.B, 1, 1, c.Tk}), lowest);
  const Tensor qp = cp.query_pad.defined() ? reshape(cp.query_pad, {c.B, 1, c.Tq, 1}) : Tensor();
  if (qp.defined() && !cp.zero_padded_queries) s = masked_fill(s, qp, lowest);
  Tensor pr = softmax(s, -1);
  if (dropout > 0) pr = strand::dropout(pr, dropout, true);
  Tensor o = matmul(pr, in[2]);
  return qp.defined() && cp.zero_padded_queries ? masked_fill(o, qp, 0.0) : o;
}

// FlashAttention's criterion for a half-precision kernel: each of got = {out, dq, dk, dv} within
// twice the relative L2 error (against the f64 `ref`) of the composed computation `base` in the
// same precision. Where ref is all zeros (every key masked: no gradient), got must be zeros too.
inline void expect_within_twice_composed(const std::vector<Tensor>& got, const std::vector<Tensor>& base,
                                         const std::vector<Tensor>& ref, const std::string& what) {
  const char* names[] = {"out", "dq", "dk", "dv"};
  auto f64 = [](const Tensor& t) { return ops::to(t, DType::f64); };
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    if (ops::item(ops::amax(ops::unary(UnaryOp::abs, ref[i]))) == 0) {
      EXPECT_EQ(bf16_error(f64(got[i]), ref[i]).max_abs, 0.0) << names[i] << " " << what;
      continue;
    }
    const double e_got = bf16_error(f64(got[i]), ref[i]).rel_l2, e_base = bf16_error(f64(base[i]), ref[i]).rel_l2;
    EXPECT_LE(e_got, 2 * e_base + 1e-6) << names[i] << " " << what << ": kernel " << e_got << ", composed " << e_base;
  }
}

}  // namespace strand::test
