// The fused attention op (ops::attention / strand::attention): forward against plain double loops
// of the models' composed semantics (masked_fill with -FLT_MAX, softmax, AIDO.RNA's zeroed pad
// rows), gradients against finite differences and against autograd through the composed ops, for
// every mask variant, several query blocks, cross-attention, strided inputs and every dtype.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <vector>

#include "autograd/functional.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::grad_ok;
using test::param;
using test::throws_with;
using test::uniform;

using test::pad_mask;  // key_pad[b][j], query_pad[b][i] (true = padding)

// Plain loops in double: s = scale q·k, masked keys -> -DBL_MAX, softmax, o = p v; a padded query
// row is zero, or has every key masked.
Tensor reference(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const ops::AttentionParams& p) {
  const std::vector<double> q = ops::to_vector<double>(q_in), k = ops::to_vector<double>(k_in),
                            v = ops::to_vector<double>(v_in);
  const int64_t B = q_in.size(0), H = q_in.size(1), Tq = q_in.size(2), D = q_in.size(3), Tk = k_in.size(2);
  auto flag = [](const Tensor& m, int64_t b, int64_t t) {
    return m.defined() && static_cast<const uint8_t*>(m.raw_data())[b * m.size(1) + t] != 0;
  };
  std::vector<double> o(static_cast<size_t>(B * H * Tq * D), 0.0), s(static_cast<size_t>(Tk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const bool qpad = flag(p.query_pad, b, i);
        if (qpad && p.zero_padded_queries) continue;
        double m = -INFINITY;
        for (int64_t j = 0; j < Tk; ++j) {
          double d = 0;
          for (int64_t c = 0; c < D; ++c) d += q[((b * H + h) * Tq + i) * D + c] * k[((b * H + h) * Tk + j) * D + c];
          s[j] = qpad || flag(p.key_pad, b, j) ? -DBL_MAX : p.scale * d;
          m = std::max(m, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < Tk; ++j) z += s[j] = std::exp(s[j] - m);
        for (int64_t j = 0; j < Tk; ++j)
          for (int64_t c = 0; c < D; ++c)
            o[((b * H + h) * Tq + i) * D + c] += s[j] / z * v[((b * H + h) * Tk + j) * D + c];
      }
  return ops::from_vector<double>(o, q_in.sizes());
}

// The models' composed path (autograd through matmul, masked_fill, softmax), for gradients.
Tensor composed(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionParams& p) {
  const int64_t B = q.size(0), Tq = q.size(2), Tk = k.size(2);
  Tensor s = matmul(q * p.scale, transpose(k, -1, -2));
  // blocked = key padded or query padded, as a bool [B, 1, Tq, Tk]
  Tensor blocked_count = ops::zeros({B, 1, Tq, Tk}, TensorOptions(DType::f64));
  if (p.key_pad.defined()) blocked_count = ops::add(blocked_count, ops::to(ops::reshape(p.key_pad, {B, 1, 1, Tk}), DType::f64));
  if (p.query_pad.defined())
    blocked_count = ops::add(blocked_count, ops::to(ops::reshape(p.query_pad, {B, 1, Tq, 1}), DType::f64));
  Tensor blocked;
  if (p.key_pad.defined() || p.query_pad.defined()) blocked = ops::compare(CompareOp::gt, blocked_count, 0.0);
  if (blocked.defined()) s = masked_fill(s, blocked, -FLT_MAX);
  Tensor pr = softmax(s, -1);
  if (p.query_pad.defined() && p.zero_padded_queries) pr = masked_fill(pr, blocked, 0.0);
  if (p.dropout > 0) pr = dropout(pr, p.dropout, true, p.generator);
  return matmul(pr, v);
}

struct Shape4 {
  int64_t B, H, Tq, Tk, D;
};

void check_forward(const Shape4& s, const ops::AttentionParams& p, uint64_t seed) {
  Tensor q = uniform({s.B, s.H, s.Tq, s.D}, -1, 1, seed), k = uniform({s.B, s.H, s.Tk, s.D}, -1, 1, seed + 1),
         v = uniform({s.B, s.H, s.Tk, s.D}, -1, 1, seed + 2);
  const Tensor ref = reference(q, k, v, p);
  EXPECT_TRUE(allclose(ops::fused_attention(q, k, v, p).out, ref, 1e-13, 1e-12));
  test::expect_dtypes([&](const std::vector<Tensor>& in) { return ops::fused_attention(in[0], in[1], in[2], p).out; },
                      [&](const std::vector<Tensor>& in) { return reference(in[0], in[1], in[2], p); }, {q, k, v});
}

TEST(Attention, ForwardMatchesLoopsForEveryVariant) {
  const Shape4 s{2, 3, 70, 70, 8};  // 70 queries: two blocks, the second partial
  check_forward(s, {0.35, {}, {}}, 1);
  check_forward(s, {0.35, pad_mask(2, 70, {70, 41}), {}}, 2);                       // ESM-2 key padding
  check_forward(s, {0.35, pad_mask(2, 70, {65, 41}), pad_mask(2, 70, {65, 41})}, 3);  // AIDO.RNA
  check_forward({2, 2, 5, 130, 4}, {1.0, pad_mask(2, 130, {130, 3}), {}}, 4);        // cross-attention, Tq < Tk
  // ModelGenerator's cross-attention: padded queries attend uniformly
  check_forward({2, 2, 67, 33, 4}, {0.5, pad_mask(2, 33, {30, 3}), pad_mask(2, 67, {67, 20}), false}, 6);
  check_forward({1, 2, 129, 3, 16}, {0.25, {}, {}}, 5);                               // Tq > Tk
}

TEST(Attention, EveryKeyPaddedIsUniformAsMaskedFillGives) {
  const ops::AttentionParams p{0.5, pad_mask(2, 6, {6, 0}), {}};
  Tensor q = uniform({2, 1, 4, 3}, -1, 1, 7), k = uniform({2, 1, 6, 3}, -1, 1, 8), v = uniform({2, 1, 6, 3}, -1, 1, 9);
  Tensor o = ops::fused_attention(q, k, v, p).out;
  EXPECT_TRUE(allclose(o, reference(q, k, v, p), 1e-14, 1e-13));
  // batch 1: every row is the mean of v over keys
  Tensor mean_v = ops::expand(ops::mean(ops::select(v, 0, 1), {1}, true), {1, 4, 3});
  EXPECT_TRUE(allclose(ops::select(o, 0, 1), mean_v, 1e-14, 1e-13));
}

TEST(Attention, OutputIsATransposedViewOfBTHD) {
  Tensor q = uniform({2, 3, 5, 4}), k = uniform({2, 3, 6, 4}, -1, 1, 2), v = uniform({2, 3, 6, 4}, -1, 1, 3);
  Tensor o = ops::fused_attention(q, k, v, {}).out;
  EXPECT_TRUE(ops::transpose(o, 1, 2).is_contiguous());
}

TEST(Attention, ReadsStridedProjectionsInPlace) {
  // q, k, v as the models make them: [B, T, H*D] -> view [B, T, H, D] -> transpose to [B, H, T, D].
  auto heads = [](const Tensor& x) { return ops::transpose(ops::reshape(x, {2, 9, 3, 4}), 1, 2); };
  Tensor q = heads(uniform({2, 9, 12}, -1, 1, 1)), k = heads(uniform({2, 9, 12}, -1, 1, 2)),
         v = heads(uniform({2, 9, 12}, -1, 1, 3));
  ASSERT_FALSE(q.is_contiguous());
  const ops::AttentionParams p{0.5, pad_mask(2, 9, {9, 4}), {}};
  EXPECT_TRUE(allclose(ops::fused_attention(q, k, v, p).out, reference(q, k, v, p), 1e-13, 1e-12));
}

TEST(Attention, GradientsMatchFiniteDifferences) {
  const std::vector<ops::AttentionParams> variants = {
      {0.7, {}, {}},
      {0.7, pad_mask(2, 5, {5, 2}), {}},
      {0.7, pad_mask(2, 5, {4, 2}), pad_mask(2, 5, {4, 2})},
      {0.7, pad_mask(2, 5, {4, 2}), pad_mask(2, 5, {3, 5}), false}};
  for (const auto& p : variants) {
    EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return strand::attention(in[0], in[1], in[2], p); },
                        {param({2, 2, 5, 3}, -1, 1, 1), param({2, 2, 5, 3}, -1, 1, 2), param({2, 2, 5, 3}, -1, 1, 3)}));
  }
  // cross-attention with every key of batch 1 padded
  const ops::AttentionParams p{0.5, pad_mask(2, 4, {3, 0}), {}};
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return strand::attention(in[0], in[1], in[2], p); },
                      {param({2, 1, 3, 2}, -1, 1, 4), param({2, 1, 4, 2}, -1, 1, 5), param({2, 1, 4, 2}, -1, 1, 6)}));
}

TEST(Attention, GradientsMatchTheComposedOpsOverSeveralBlocks) {
  const int64_t B = 2, H = 2, T = 150, D = 8;
  const std::vector<ops::AttentionParams> variants = {
      {0.3, {}, {}},
      {0.3, pad_mask(B, T, {150, 77}), {}},
      {0.3, pad_mask(B, T, {140, 77}), pad_mask(B, T, {140, 77})},
      {0.3, pad_mask(B, T, {140, 77}), pad_mask(B, T, {100, 150}), false}};
  for (const auto& p : variants) {
    Tensor w = uniform({B, H, T, D}, -1, 1, 10);
    std::vector<Tensor> a, c;
    for (uint64_t i = 0; i < 3; ++i) {
      a.push_back(param({B, H, T, D}, -1, 1, 20 + i));
      c.push_back(param({B, H, T, D}, -1, 1, 20 + i));
    }
    backward(sum(strand::attention(a[0], a[1], a[2], p) * w));
    backward(sum(composed(c[0], c[1], c[2], p) * w));
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(allclose(a[i].grad(), c[i].grad(), 1e-12, 1e-10)) << "input " << i;
  }
}

// Dropout inside the fused kernel draws the composed path's mask (dropout() on the [B, H, Tq, Tk]
// probabilities with the same generator offset) and replays it in backward: values and gradients
// equal the composed ones for every mask variant, over several query blocks.
TEST(Attention, DropoutDrawsTheComposedMaskForEveryVariant) {
  const int64_t B = 2, H = 2, T = 150, D = 8;
  const std::vector<ops::AttentionParams> variants = {
      {0.3, {}, {}},
      {0.3, pad_mask(B, T, {150, 77}), {}},
      {0.3, pad_mask(B, T, {140, 77}), pad_mask(B, T, {140, 77})},
      {0.3, pad_mask(B, T, {140, 0}), pad_mask(B, T, {100, 150}), false}};
  for (ops::AttentionParams p : variants) {
    p.dropout = 0.2;
    Generator ga, gb;
    ga.seed = gb.seed = 77;
    Tensor w = uniform({B, H, T, D}, -1, 1, 10);
    std::vector<Tensor> a, c;
    for (uint64_t i = 0; i < 3; ++i) {
      a.push_back(param({B, H, T, D}, -1, 1, 20 + i));
      c.push_back(param({B, H, T, D}, -1, 1, 20 + i));
    }
    p.generator = &ga;
    Tensor fused = strand::attention(a[0], a[1], a[2], p);
    p.generator = &gb;
    Tensor comp = composed(c[0], c[1], c[2], p);
    EXPECT_EQ(ga.offset, 1u);
    EXPECT_EQ(gb.offset, 1u);
    EXPECT_TRUE(allclose(fused, comp, 1e-13, 1e-12));
    backward(sum(fused * w));
    backward(sum(comp * w));
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(allclose(a[i].grad(), c[i].grad(), 1e-12, 1e-10)) << "input " << i;
    p.dropout = 0;
    EXPECT_FALSE(allclose(fused, strand::attention(a[0], a[1], a[2], p), 1e-3, 1e-3)) << "nothing was dropped";
  }
  // finite differences through a fixed mask
  ops::AttentionParams p{0.7, pad_mask(2, 5, {4, 2}), pad_mask(2, 5, {4, 2})};
  p.dropout = 0.25;
  EXPECT_TRUE(grad_ok(
      [&](const std::vector<Tensor>& in) {
        Generator g;
        ops::AttentionParams q = p;
        q.generator = &g;
        return strand::attention(in[0], in[1], in[2], q);
      },
      {param({2, 2, 5, 3}, -1, 1, 1), param({2, 2, 5, 3}, -1, 1, 2), param({2, 2, 5, 3}, -1, 1, 3)}));
  EXPECT_TRUE(throws_with([&] {
    ops::AttentionParams bad = p;
    bad.dropout = 1;
    strand::attention(param({2, 2, 5, 3}), param({2, 2, 5, 3}), param({2, 2, 5, 3}), bad);
  }, {"dropout", "[0, 1)"}));
}

TEST(Attention, Float32GradientsAgreeWithFloat64) {
  const ops::AttentionParams p{0.25, pad_mask(2, 90, {90, 50}), pad_mask(2, 90, {90, 50})};
  std::vector<Tensor> f, d;
  for (uint64_t i = 0; i < 3; ++i) {
    d.push_back(param({2, 4, 90, 16}, -1, 1, 30 + i));
    Tensor t = ops::to(ops::detach(d.back()), DType::f32);
    t.set_requires_grad(true);
    f.push_back(t);
  }
  Tensor w = uniform({2, 4, 90, 16}, -1, 1, 40);
  backward(sum(strand::attention(d[0], d[1], d[2], p) * w));
  backward(sum(strand::attention(f[0], f[1], f[2], p) * ops::to(w, DType::f32)));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(allclose(ops::to(f[i].grad(), DType::f64), d[i].grad(), 2e-6, 1e-4));
}

TEST(Attention, BadInputsAreNamed) {
  Tensor q = uniform({2, 3, 5, 4}), k = uniform({2, 3, 6, 4});
  EXPECT_TRUE(throws_with([&] { ops::fused_attention(q, k, uniform({2, 3, 7, 4}), {}); }, {"attention", "[2, 3, 6, 4]", "[2, 3, 7, 4]"}));
  EXPECT_TRUE(throws_with([&] { ops::fused_attention(q, uniform({2, 3, 6, 5}), uniform({2, 3, 6, 5}), {}); }, {"head dim"}));
  EXPECT_TRUE(throws_with([&] { ops::fused_attention(uniform({2, 5, 4}), k, k, {}); }, {"4-D", "[2, 5, 4]"}));
  EXPECT_TRUE(throws_with([&] { ops::fused_attention(q, k, k, {1.0, pad_mask(2, 5, {5, 5}), {}}); }, {"key_pad", "[2, 6]", "[2, 5]"}));
  EXPECT_TRUE(throws_with([&] { ops::fused_attention(q, k, k, {1.0, uniform({2, 6}), {}}); }, {"key_pad", "bool", "f64"}));
  EXPECT_TRUE(throws_with([&] { ops::fused_attention(q, ops::to(k, DType::f32), ops::to(k, DType::f32), {}); }, {"attention"}));
}

}  // namespace
}  // namespace strand
