// Enformer's fused relative-position attention (ops::rel_attention, kernels/cpu/rel_attention.cpp)
// against the composed computation the model used before it (and still uses on a GPU):
// dropout(softmax(qc kᵀ + rel_shift(qr rᵀ))) v — values, every gradient, the dropout mask, with
// lengths inside one 64-query block and across several; finite-difference gradients in f64.
#include "autograd/autocast.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::grad_ok;

struct Inputs {
  Tensor qc, qr, k, r, v;
  std::vector<Tensor> all() const { return {qc, qr, k, r, v}; }
};
Inputs inputs(int64_t B, int64_t H, int64_t T, int64_t Dk, int64_t Dv, uint64_t seed, DType dt = DType::f64) {
  auto leaf = [&](const Shape& s, uint64_t k) {
    Tensor t = ops::to(test::uniform(s, -1.5, 1.5, seed + k), dt);
    t.set_requires_grad(true);
    return t;
  };
  return {leaf({B, H, T, Dk}, 1), leaf({B, H, T, Dk}, 2), leaf({B, H, T, Dk}, 3), leaf({H, 2 * T - 1, Dk}, 4),
          leaf({B, H, T, Dv}, 5)};
}
Tensor composed(const std::vector<Tensor>& in, double p = 0, Generator* g = nullptr) {
  Tensor content = matmul(in[0], transpose(in[2], -1, -2));
  Tensor rel = rel_shift(matmul(in[1], transpose(in[3], -1, -2)));
  return matmul(dropout(softmax(content + rel, -1), p, p > 0, g), in[4]);
}
Tensor fused(const std::vector<Tensor>& in, double p = 0, Generator* g = nullptr) {
  return rel_attention(in[0], in[1], in[2], in[3], in[4], p, g);
}
// Output and every input gradient for one upstream gradient.
std::vector<Tensor> run(const std::function<Tensor(const std::vector<Tensor>&)>& f, const Inputs& x, uint64_t seed) {
  std::vector<Tensor> in;
  for (const Tensor& t : x.all()) {
    Tensor c = ops::clone(t);
    c.set_requires_grad(true);
    in.push_back(c);
  }
  Tensor y = f(in);
  backward(y, ops::to(test::uniform(y.sizes(), -1, 1, seed), y.dtype()));
  std::vector<Tensor> r{ops::contiguous(y)};
  for (const Tensor& t : in) r.push_back(t.grad());
  return r;
}

TEST(RelAttention, MatchesTheComposedComputationWithinAndAcrossBlocks) {
  for (int64_t T : {1, 5, 64, 70, 131}) {
    const Inputs x = inputs(2, 3, T, 4, 6, static_cast<uint64_t>(T));
    const auto want = run([](const auto& in) { return composed(in); }, x, 7);
    const auto got = run([](const auto& in) { return fused(in); }, x, 7);
    const char* names[] = {"out", "dqc", "dqr", "dk", "dr", "dv"};
    for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(allclose(got[i], want[i], 1e-12, 1e-10)) << names[i] << " T=" << T;
  }
}

TEST(RelAttention, FiniteDifferenceGradients) {
  const Inputs x = inputs(2, 2, 5, 3, 4, 11);
  EXPECT_TRUE(grad_ok([](const std::vector<Tensor>& in) { return fused(in); }, x.all()));
}

TEST(RelAttention, DropoutDrawsTheComposedMaskAndReplaysItInBackward) {
  for (int64_t T : {9, 70}) {
    const Inputs x = inputs(2, 2, T, 3, 5, 20 + static_cast<uint64_t>(T));
    Generator g0;
    g0.seed = 1234;
    g0.offset = 17;
    Generator ga = g0, gb = g0;
    const auto want = run([&](const auto& in) { return composed(in, 0.3, &ga); }, x, 8);
    const auto got = run([&](const auto& in) { return fused(in, 0.3, &gb); }, x, 8);
    EXPECT_EQ(ga.offset, gb.offset);  // one offset, as dropout() takes
    for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(allclose(got[i], want[i], 1e-12, 1e-10)) << i << " T=" << T;
    // and it really dropped: without dropout the output differs
    EXPECT_FALSE(allclose(got[0], run([](const auto& in) { return fused(in); }, x, 8)[0], 1e-3, 1e-3));
  }
  // gradcheck through the (fixed) mask
  const Inputs x = inputs(1, 2, 6, 3, 4, 31);
  EXPECT_TRUE(grad_ok(
      [](const std::vector<Tensor>& in) {
        Generator g;  // the same mask at every evaluation
        return fused(in, 0.25, &g);
      },
      x.all()));
}

TEST(RelAttention, F32AndBf16AgainstF64) {
  const Inputs x = inputs(1, 2, 70, 8, 8, 41);
  const Tensor ref = ops::contiguous(fused(x.all()));
  const Inputs x32 = inputs(1, 2, 70, 8, 8, 41, DType::f32);
  EXPECT_TRUE(allclose(ops::to(fused(x32.all()), DType::f64), ref, 1e-5, 1e-5));
  Tensor y16;
  {
    AutocastGuard bf16(true);  // the autocast list takes the operands in bf16
    y16 = fused(x32.all());
  }
  EXPECT_EQ(y16.dtype(), DType::bf16);
  EXPECT_TRUE(allclose(ops::to(y16, DType::f64), ref, 0.05, 0.05));
}

TEST(RelAttention, BadInputNamesTheShapes) {
  const Inputs x = inputs(1, 2, 5, 3, 4, 1);
  EXPECT_TRUE(test::throws_with([&] { rel_attention(x.qc, x.qr, x.k, ops::zeros({2, 8, 3}, DType::f64), x.v); },
                                {"r must be [2, 9, 3]", "[2, 8, 3]"}));
  EXPECT_TRUE(test::throws_with([&] { rel_attention(x.qc, x.qr, ops::zeros({1, 2, 4, 3}, DType::f64), x.r, x.v); },
                                {"qc", "k", "[1, 2, 4, 3]"}));
  EXPECT_TRUE(test::throws_with([&] { rel_attention(x.qc, x.qr, x.k, x.r, x.v, 1.0); }, {"dropout", "[0, 1)"}));
  EXPECT_TRUE(test::throws_with([&] { rel_attention(x.qc, x.qr, x.k, ops::to(x.r, DType::f32), x.v); },
                                {"dtype mismatch"}));
}

}  // namespace
}  // namespace strand
