// The tensor-core attention kernels (kernels/cuda/attention_tc.cuh) run on the SIMT emulator:
// the same kernels and launch sequence as on a GPU, with CPU tensors, against the f64 attention
// and the composed half-precision baseline (FlashAttention's criterion, as the GPU test
// CudaNnParity.TensorCoreAttentionWithinTwiceTheComposedHalfPrecisionError). This checks the
// kernels' indexing, fragment layouts, masks, dropout and online softmax without a GPU; it says
// nothing of their speed or of races the emulator's ordering hides (tests/simt/simt.h).
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/attention_tc.cuh"
#include "tests/attention_cases.h"
#include "tests/simt/simt_test_util.h"

namespace strand {
namespace {

using test::AttentionCase;

// A [B, H, T, D] operand: contiguous, or a transposed view of [B, T, H, D] memory as the models

struct Emulated {
  std::vector<Tensor> grads;  // out, dq, dk, dv
  Tensor lse;
};
// The tensor-core kernels on the emulator for upstream gradient `up`.
Emulated emulated(const AttentionCase& c, double dropout, const Generator& start, const Tensor& q, const Tensor& k,
                  const Tensor& v, const Tensor& up, bool transposed) {
  Generator gen = start;  // the mask fused_attention draws: one offset of the default generator
  cpu::DropoutMask d;
  if (dropout > 0) d = {dropout, gen.seed, gen.next_offset()};
  auto bytes = [](const Tensor& m) { return m.defined() ? static_cast<const uint8_t*>(m.raw_data()) : nullptr; };
  const Tensor kp = c.p.key_pad.defined() ? contiguous(c.p.key_pad) : Tensor(),
               qp = c.p.query_pad.defined() ? contiguous(c.p.query_pad) : Tensor();
  const cpu::AttentionMasks m{bytes(kp), bytes(qp), c.p.zero_padded_queries, d};
  const DType dt = q.dtype();
  Tensor out = test::heads_view(test::unwritten(q.sizes(), dt), transposed),
         lse = test::unwritten({c.B, c.H, c.Tq}, DType::f32);
  Tensor dq = test::heads_view(test::unwritten(q.sizes(), dt), transposed),
         dk = test::heads_view(test::unwritten(k.sizes(), dt), transposed),
         dv = test::heads_view(test::unwritten(v.sizes(), dt), transposed);
  const Tensor qh = test::heads_view(q, transposed), kh = test::heads_view(k, transposed),
               vh = test::heads_view(v, transposed);
  cuda::tc::forward(simt::Launch{}, qh, kh, vh, m, c.p.scale, out, lse);
  cuda::tc::backward(simt::Launch{}, test::heads_view(up, transposed), qh, kh, vh, out, lse, m, c.p.scale, dq, dk, dv);
  return {{out, dq, dk, dv}, lse};
}

// The logsumexp against the f32 CPU kernel's on the same (rounded) inputs: the scores are exact
// products of halves accumulated in f32 on both, so they agree to f32 rounding; +-inf (zeroed and
// fully masked rows) must match exactly.
void expect_same_lse(const Tensor& got, const Tensor& ref, const std::string& what) {
  const auto g = ops::to_vector<double>(got), r = ops::to_vector<double>(ref);
  for (size_t i = 0; i < r.size(); ++i) {
    if (std::isinf(r[i])) {
      ASSERT_EQ(g[i], r[i]) << "lse " << i << " " << what;
      continue;
    }
    ASSERT_NEAR(g[i], r[i], 1e-5 * (1 + std::abs(r[i]))) << "lse " << i << " " << what;
  }
}

TEST(SimtTensorCoreAttention, WithinTwiceTheComposedHalfPrecisionError) {
  std::vector<AttentionCase> cases;  // the head dims the tensor-core kernels serve (up to 128)
  for (const AttentionCase& c : test::attention_cases())
    if (c.D <= 128) cases.push_back(c);
  cases.push_back({1, 1, 192, 192, 64, {0.125, {}, {}}});  // three full tiles
  for (double dropout : {0.0, 0.15})
    for (DType dt : {DType::bf16, DType::f16})
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        const AttentionCase& c = cases[ci];
        const bool transposed = ci % 2 == 1;  // every other case in the models' [B, T, H, D] layout
        const std::string what = "case " + std::to_string(ci) + " " + std::string(dtype_name(dt)) + " dropout " +
                                 std::to_string(dropout) + (transposed ? " transposed" : "");
        const Generator start = default_generator();
        ops::AttentionParams p = c.p;
        p.dropout = dropout;
        const test::Fn fused = [&](const std::vector<Tensor>& in) {
          default_generator() = start;
          return attention(in[0], in[1], in[2], p);
        };
        auto composed = [&](const std::vector<Tensor>& in) { return test::composed_attention(c, dropout, start, in); };
        const Tensor q = test::uniform({c.B, c.H, c.Tq, c.D}, -1, 1, 11, dt),
                     k = test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 12, dt),
                     v = test::uniform({c.B, c.H, c.Tk, c.D}, -1, 1, 13, dt),
                     up = test::uniform(q.sizes(), -1, 1, 99, dt);
        auto f64 = [](const Tensor& t) { return ops::to(t, DType::f64); };
        const auto ref = test::run_with_grads(fused, {f64(q), f64(k), f64(v)}, f64(up), Device::cpu());
        const auto base = test::run_with_grads(composed, {q, k, v}, up, Device::cpu());
        const Emulated tc = emulated(c, dropout, start, q, k, v, up, transposed);
        test::expect_within_twice_composed(tc.grads, base, ref, what);
        auto f32 = [](const Tensor& t) { return ops::to(t, DType::f32); };
        default_generator() = start;
        const Tensor lse32 = ops::fused_attention(f32(q), f32(k), f32(v), p).lse;
        expect_same_lse(tc.lse, lse32, what);
      }
}

}  // namespace
}  // namespace strand
