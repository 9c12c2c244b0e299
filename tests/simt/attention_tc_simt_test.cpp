// The tensor-core attention kernels (kernels/cuda/attention_tc.cuh) run on the SIMT emulator:
// the same kernels and launch sequence as on a GPU, with CPU tensors, against the f64 attention
// and the composed half-precision baseline (FlashAttention's criterion, as the GPU test
// CudaNnParity.TensorCoreAttentionWithinTwiceTheComposedHalfPrecisionError). This checks the
// kernels' indexing, fragment layouts, masks, dropout and online softmax without a GPU; it says
// nothing of their speed or of races the emulator's ordering hides (tests/simt/simt.h).
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator
#include "kernels/cuda/attention_tc.cuh"
#include "tests/attention_cases.h"

namespace strand {
namespace {

using test::AttentionCase;

// out, dq, dk, dv of the tensor-core kernels on the emulator for upstream gradient `up`.
std::vector<Tensor> emulated(const AttentionCase& c, double dropout, const Generator& start, const Tensor& q,
                             const Tensor& k, const Tensor& v, const Tensor& up) {
  Generator gen = start;  // the mask fused_attention draws: one offset of the default generator
  cpu::DropoutMask d;
  if (dropout > 0) d = {dropout, gen.seed, gen.next_offset()};
  auto bytes = [](const Tensor& m) { return m.defined() ? static_cast<const uint8_t*>(m.raw_data()) : nullptr; };
  const Tensor kp = c.p.key_pad.defined() ? contiguous(c.p.key_pad) : Tensor(),
               qp = c.p.query_pad.defined() ? contiguous(c.p.query_pad) : Tensor();
  const cpu::AttentionMasks m{bytes(kp), bytes(qp), c.p.zero_padded_queries, d};
  const TensorOptions opt(q.dtype(), Device::cpu());
  Tensor out = empty(q.sizes(), opt), lse = empty({c.B, c.H, c.Tq}, TensorOptions(DType::f32, Device::cpu()));
  Tensor dq = empty(q.sizes(), opt), dk = empty(k.sizes(), opt), dv = empty(v.sizes(), opt);
  cuda::tc::forward(simt::Launch{}, q, k, v, m, c.p.scale, out, lse);
  cuda::tc::backward(simt::Launch{}, up, q, k, v, out, lse, m, c.p.scale, dq, dk, dv);
  return {out, dq, dk, dv};
}

TEST(SimtTensorCoreAttention, WithinTwiceTheComposedHalfPrecisionError) {
  std::vector<AttentionCase> cases;  // the head dims the tensor-core kernels serve (up to 128)
  for (const AttentionCase& c : test::attention_cases())
    if (c.D <= 128) cases.push_back(c);
  cases.push_back({1, 1, 192, 192, 64, {0.125, {}, {}}});  // three full tiles
  const uint64_t blocks_before = simt::blocks_run();
  for (double dropout : {0.0, 0.15})
    for (DType dt : {DType::bf16, DType::f16})
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        const AttentionCase& c = cases[ci];
        const Generator start = default_generator();
        const test::Fn fused = [&](const std::vector<Tensor>& in) {
          default_generator() = start;
          ops::AttentionParams p = c.p;
          p.dropout = dropout;
          return attention(in[0], in[1], in[2], p);
        };
        auto composed = [&](const std::vector<Tensor>& in) { return test::composed_attention(c, dropout, start, in); };
        const Tensor q = test::uniform({c.B, c.H, c.Tq, c.D}, -1, 1, 11, dt),
                     k = test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 12, dt),
                     v = test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 13, dt), up = test::uniform(q.sizes(), -1, 1, 99, dt);
        auto f64 = [](const Tensor& t) { return ops::to(t, DType::f64); };
        const auto ref = test::run_with_grads(fused, {f64(q), f64(k), f64(v)}, f64(up), Device::cpu());
        const auto base = test::run_with_grads(composed, {q, k, v}, up, Device::cpu());
        const auto tc = emulated(c, dropout, start, q, k, v, up);
        test::expect_within_twice_composed(tc, base, ref,
                                           "case " + std::to_string(ci) + " " + std::string(dtype_name(dt)) + " dropout " +
                                               std::to_string(dropout));
      }
  EXPECT_GT(simt::blocks_run(), blocks_before);
}

}  // namespace
}  // namespace strand
