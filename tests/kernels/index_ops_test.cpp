// Tests for the indexing ops, dropout and mse_loss: embedding, concat, stack, index_select,
// gather, pad, dropout, mse_loss. Forwards are compared with references written here in plain
// double loops (or hand-computed cases), never with the op itself; every differentiable input is
// gradchecked in f64.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
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
using V = std::vector<double>;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

V vals(const Tensor& t) { return ops::to_vector<double>(t); }
Tensor t64(const V& v, const Shape& s) { return ops::from_vector<double>(v, s); }
Tensor idx(const std::vector<int64_t>& v, const Shape& s) { return ops::from_vector<int64_t>(v, s); }
Tensor idx32(const std::vector<int32_t>& v, const Shape& s) { return ops::from_vector<int32_t>(v, s); }

Tensor nc_param(const Shape& base, int64_t d0, int64_t d1, uint64_t seed) {
  Tensor t = ops::transpose(uniform(base, -1, 1, seed), d0, d1);
  EXPECT_FALSE(t.is_contiguous());
  t.set_requires_grad(true);
  return t;
}

// Row-major multi-index helpers for the references.
std::vector<int64_t> unravel(int64_t i, const Shape& s) {
  std::vector<int64_t> p(s.size());
  for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
    p[d] = i % s[d];
    i /= s[d];
  }
  return p;
}
int64_t ravel(const std::vector<int64_t>& p, const Shape& s) {
  int64_t i = 0;
  for (size_t d = 0; d < s.size(); ++d) i = i * s[d] + p[d];
  return i;
}

using test::expect_dtypes;
using test::Tol;
using test::tol_for;

// ============================== embedding ==============================

Tensor embedding_ref(const Tensor& w, const Tensor& indices) {
  const int64_t D = w.size(1);
  const V wv = vals(w);
  const auto iv = ops::to_vector<int64_t>(indices);
  V out;
  for (int64_t i : iv)
    for (int64_t d = 0; d < D; ++d) out.push_back(wv[i * D + d]);
  Shape s = indices.sizes();
  s.push_back(D);
  return t64(out, s);
}

TEST(Embedding, HandComputed) {
  Tensor w = t64({0, 1, 10, 11, 20, 21}, {3, 2});
  EXPECT_TRUE(allclose(embedding(w, idx({2, 0, 2}, {3})), t64({20, 21, 0, 1, 20, 21}, {3, 2}), 0, 0));
}

TEST(Embedding, ForwardAllDtypesAndIndexTypes) {
  Tensor w = uniform({5, 3}, -1, 1, 301);
  Tensor i64 = idx({4, 0, 2, 2, 1, 4}, {2, 3});
  Tensor i32 = idx32({3, 3, 0, 1}, {4});
  for (const Tensor& ix : {i64, i32}) {
    expect_dtypes([](const std::vector<Tensor>& in) { return embedding(in[0], in[1]); },
                  [](const std::vector<Tensor>& in) { return embedding_ref(in[0], in[1]); }, {w, ix}, true);
  }
  // Scalar index -> one row; padding_idx does not change the forward (as PyTorch).
  EXPECT_EQ(embedding(w, idx({3}, {})).sizes(), (Shape{3}));
  EXPECT_TRUE(allclose(embedding(w, i64, 2), embedding_ref(w, i64), 0, 0));
}

TEST(Embedding, NonContiguousWeightAndIndices) {
  Tensor w = ops::transpose(uniform({3, 5}, -1, 1, 302), 0, 1);  // [5, 3]
  Tensor ix = ops::transpose(idx({0, 1, 2, 3, 4, 0}, {2, 3}), 0, 1);  // [3, 2]
  ASSERT_FALSE(w.is_contiguous());
  ASSERT_FALSE(ix.is_contiguous());
  EXPECT_TRUE(allclose(embedding(w, ix), embedding_ref(w, ix), 0, 0));
}

TEST(Embedding, Gradcheck) {
  Tensor ix = idx({1, 3, 1, 0, 3, 3}, {2, 3});
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return embedding(in[0], ix); }, {param({4, 3}, -1, 1, 311)}));
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return embedding(in[0], ix); }, {nc_param({3, 4}, 0, 1, 312)}));
}

TEST(Embedding, PaddingIdxRowGetsNoGradient) {
  // Index 2 is the padding row: it appears twice but must get exactly zero gradient; every other
  // row gets the sum of the upstream gradients of the positions that picked it.
  Tensor w = param({4, 2}, -1, 1, 321);
  Tensor ix = idx({2, 0, 2, 3, 0, 0}, {2, 3});
  Tensor y = embedding(w, ix, 2);
  Tensor g = uniform({2, 3, 2}, 0.5, 1.5, 322);
  backward(y, g);
  const V gv = vals(g), ixv = vals(ix);
  V want(8, 0.0);
  for (int p = 0; p < 6; ++p)
    if (ixv[p] != 2)
      for (int d = 0; d < 2; ++d) want[static_cast<int>(ixv[p]) * 2 + d] += gv[p * 2 + d];
  EXPECT_TRUE(allclose(w.grad(), t64(want, {4, 2}), 1e-15, 1e-15));
  EXPECT_EQ(vals(ops::select(w.grad(), 0, 2)), (V{0, 0}));
  // Without padding_idx row 2 gets its gradient.
  Tensor w2 = param({4, 2}, -1, 1, 321);
  backward(embedding(w2, ix), g);
  EXPECT_NE(vals(ops::select(w2.grad(), 0, 2)), (V{0, 0}));
}

TEST(Embedding, EmptyIndices) {
  Tensor w = param({4, 3}, -1, 1, 331);
  Tensor y = embedding(w, idx({}, {2, 0}));
  EXPECT_EQ(y.sizes(), (Shape{2, 0, 3}));
  backward(sum(y));
  EXPECT_EQ(vals(w.grad()), V(12, 0.0));
  EXPECT_EQ(embedding(w, idx({}, {0})).sizes(), (Shape{0, 3}));
  // A zero-width embedding.
  Tensor w0 = param({4, 0});
  Tensor y0 = embedding(w0, idx({1, 3}, {2}), 0);
  EXPECT_EQ(y0.sizes(), (Shape{2, 0}));
  backward(sum(y0));
  EXPECT_EQ(w0.grad().sizes(), (Shape{4, 0}));
}

TEST(Embedding, BadInput) {
  Tensor w = ops::zeros({5, 3});
  EXPECT_TRUE(throws_with([&] { embedding(w, idx({1, 5}, {2})); }, {"index 5", "[0, 5)"}));
  EXPECT_TRUE(throws_with([&] { embedding(w, idx({-1}, {1})); }, {"index -1", "[0, 5)"}));
  EXPECT_TRUE(throws_with([&] { embedding(w, ops::zeros({2})); }, {"i64 or i32", "f32"}));
  EXPECT_TRUE(throws_with([&] { embedding(ops::zeros({5}), idx({0}, {1})); }, {"embedding", "weight", "[5]"}));
  EXPECT_TRUE(throws_with([&] { embedding(w, idx({0}, {1}), 7); }, {"embedding", "padding_idx 7"}));
}

// ============================== concat / stack ==============================

// Concatenation along `dim` by walking the output and finding the source of each element.
Tensor concat_ref(const std::vector<Tensor>& xs, int64_t dim) {
  const int64_t nd = xs[0].dim();
  if (dim < 0) dim += nd;
  Shape s = xs[0].sizes();
  s[dim] = 0;
  std::vector<V> vs;
  for (const Tensor& t : xs) {
    s[dim] += t.size(dim);
    vs.push_back(vals(t));
  }
  V out(static_cast<size_t>(shape_numel(s)));
  for (size_t o = 0; o < out.size(); ++o) {
    auto p = unravel(static_cast<int64_t>(o), s);
    size_t k = 0;
    while (p[dim] >= xs[k].size(dim)) p[dim] -= xs[k++].size(dim);
    out[o] = vs[k][ravel(p, xs[k].sizes())];
  }
  return t64(out, s);
}

TEST(Concat, HandComputed) {
  Tensor a = t64({1, 2, 3, 4}, {2, 2}), b = t64({5, 6}, {1, 2}), c = t64({7, 8}, {2, 1});
  EXPECT_TRUE(allclose(concat({a, b}, 0), t64({1, 2, 3, 4, 5, 6}, {3, 2}), 0, 0));
  EXPECT_TRUE(allclose(concat({a, c}, 1), t64({1, 2, 7, 3, 4, 8}, {2, 3}), 0, 0));
  EXPECT_TRUE(allclose(concat({c, a}, -1), t64({7, 1, 2, 8, 3, 4}, {2, 3}), 0, 0));
}

TEST(Concat, ForwardDimsAndDtypes) {
  Tensor a = uniform({2, 3, 4}, -1, 1, 401), b = uniform({2, 1, 4}, -1, 1, 402), c = uniform({2, 5, 4}, -1, 1, 403);
  expect_dtypes([](const std::vector<Tensor>& in) { return concat(in, 1); },
                [](const std::vector<Tensor>& in) { return concat_ref(in, 1); }, {a, b, c}, true);
  Tensor d = uniform({2, 3, 1}, -1, 1, 404), e = uniform({2, 3, 3}, -1, 1, 405);
  expect_dtypes([](const std::vector<Tensor>& in) { return concat(in, -1); },
                [](const std::vector<Tensor>& in) { return concat_ref(in, -1); }, {a, d, e}, true);
  expect_dtypes([](const std::vector<Tensor>& in) { return concat(in, 0); },
                [](const std::vector<Tensor>& in) { return concat_ref(in, 0); }, {a, uniform({1, 3, 4}, -1, 1, 406)},
                true);
  // A single tensor and integer tensors.
  EXPECT_TRUE(allclose(concat({a}, 2), a, 0, 0));
  EXPECT_EQ(ops::to_vector<int64_t>(concat({idx({1, 2}, {2}), idx({3}, {1})}, 0)), (std::vector<int64_t>{1, 2, 3}));
}

TEST(Concat, NonContiguousInputs) {
  Tensor a = ops::transpose(uniform({3, 2}, -1, 1, 411), 0, 1);             // [2, 3]
  Tensor b = ops::slice(uniform({2, 8}, -1, 1, 412), 1, 0, 8, 3);           // [2, 3], stride 3
  Tensor c = ops::expand(uniform({2, 1}, -1, 1, 413), {2, 4});              // stride 0
  EXPECT_TRUE(allclose(concat({a, b, c}, 1), concat_ref({a, b, c}, 1), 0, 0));
  EXPECT_TRUE(allclose(concat({a, b}, 0), concat_ref({a, b}, 0), 0, 0));
}

TEST(Concat, Gradcheck) {
  auto f1 = [](const std::vector<Tensor>& in) { return concat(in, 1); };
  EXPECT_TRUE(grad_ok(f1, {param({2, 3, 2}, -1, 1, 421), param({2, 1, 2}, -1, 1, 422), param({2, 2, 2}, -1, 1, 423)}));
  auto f0 = [](const std::vector<Tensor>& in) { return concat(in, -1); };
  EXPECT_TRUE(grad_ok(f0, {nc_param({3, 2}, 0, 1, 424), param({2, 5}, -1, 1, 425)}));
  // Only some inputs differentiable.
  Tensor k = uniform({1, 3}, -1, 1, 426);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return concat({k, in[0], k}, 0); }, {param({2, 3}, -1, 1, 427)}));
}

TEST(Concat, EmptyInputs) {
  Tensor a = param({2, 0, 3}), b = param({2, 2, 3}, -1, 1, 431);
  Tensor y = concat({a, b}, 1);
  EXPECT_TRUE(allclose(y, ops::detach(b), 0, 0));
  backward(sum(y));
  EXPECT_EQ(a.grad().sizes(), (Shape{2, 0, 3}));
  EXPECT_EQ(vals(b.grad()), V(12, 1.0));
  EXPECT_EQ(concat({ops::zeros({0, 3}), ops::zeros({0, 3})}, 0).sizes(), (Shape{0, 3}));
  EXPECT_EQ(concat({ops::zeros({0, 3}), ops::zeros({0, 2})}, 1).sizes(), (Shape{0, 5}));
}

TEST(Concat, BadInput) {
  Tensor a = ops::zeros({2, 3});
  EXPECT_TRUE(throws_with([&] { concat({}, 0); }, {"concat", "no tensors"}));
  EXPECT_TRUE(throws_with([&] { concat({a, ops::zeros({2, 4})}, 0); }, {"concat", "tensor 1", "[2, 4]", "[2, 3]", "dimension 0"}));
  EXPECT_TRUE(throws_with([&] { concat({a, ops::zeros({3})}, 0); }, {"concat", "tensor 1", "[3]", "rank 2"}));
  EXPECT_TRUE(throws_with([&] { concat({a, ops::zeros({2, 3}, DType::f64)}, 0); }, {"concat", "f32", "f64"}));
  EXPECT_TRUE(throws_with([&] { concat({a, a}, 2); }, {"concat", "dimension 2", "[2, 3]"}));
}

// stack: out[..., k, ...] = xs[k] with k inserted at position `dim` (of the output's rank).
Tensor stack_ref(const std::vector<Tensor>& xs, int64_t dim) {
  const Shape s = xs[0].sizes();
  const int64_t nd = static_cast<int64_t>(s.size()) + 1;
  if (dim < 0) dim += nd;
  Shape os = s;
  os.insert(os.begin() + dim, static_cast<int64_t>(xs.size()));
  std::vector<V> vs;
  for (const Tensor& t : xs) vs.push_back(vals(t));
  V out(static_cast<size_t>(shape_numel(os)));
  for (size_t o = 0; o < out.size(); ++o) {
    auto p = unravel(static_cast<int64_t>(o), os);
    const int64_t k = p[dim];
    p.erase(p.begin() + dim);
    out[o] = vs[k][ravel(p, s)];
  }
  return t64(out, os);
}

TEST(Stack, HandComputed) {
  Tensor a = t64({1, 2}, {2}), b = t64({3, 4}, {2});
  EXPECT_TRUE(allclose(stack({a, b}, 0), t64({1, 2, 3, 4}, {2, 2}), 0, 0));
  EXPECT_TRUE(allclose(stack({a, b}, 1), t64({1, 3, 2, 4}, {2, 2}), 0, 0));
  EXPECT_TRUE(allclose(stack({a, b}, -1), t64({1, 3, 2, 4}, {2, 2}), 0, 0));
}

TEST(Stack, ForwardDimsAndDtypes) {
  std::vector<Tensor> xs = {uniform({2, 3}, -1, 1, 441), uniform({2, 3}, -1, 1, 442), uniform({2, 3}, -1, 1, 443)};
  for (int64_t dim : {0, 1, 2, -1, -2, -3}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    expect_dtypes([dim](const std::vector<Tensor>& in) { return stack(in, dim); },
                  [dim](const std::vector<Tensor>& in) { return stack_ref(in, dim); }, xs, true);
  }
  Tensor nc = ops::transpose(uniform({3, 2}, -1, 1, 444), 0, 1);
  EXPECT_TRUE(allclose(stack({nc, xs[0]}, 1), stack_ref({nc, xs[0]}, 1), 0, 0));
}

TEST(Stack, GradcheckAndEmpty) {
  auto f = [](const std::vector<Tensor>& in) { return stack(in, 1); };
  EXPECT_TRUE(grad_ok(f, {param({2, 3}, -1, 1, 451), nc_param({3, 2}, 0, 1, 452)}));
  EXPECT_TRUE(grad_ok([](const std::vector<Tensor>& in) { return stack(in, -1); },
                      {param({3}, -1, 1, 453), param({3}, -1, 1, 454), param({3}, -1, 1, 455)}));
  EXPECT_EQ(stack({ops::zeros({0, 3}), ops::zeros({0, 3})}, 0).sizes(), (Shape{2, 0, 3}));
  EXPECT_EQ(stack({ops::zeros({0, 3}), ops::zeros({0, 3})}, -1).sizes(), (Shape{0, 3, 2}));
}

TEST(Stack, BadInput) {
  Tensor a = ops::zeros({2, 3});
  EXPECT_TRUE(throws_with([&] { stack({}, 0); }, {"stack", "no tensors"}));
  EXPECT_TRUE(throws_with([&] { stack({a, ops::zeros({2, 4})}, 0); }, {"stack", "tensor 1", "[2, 4]", "[2, 3]"}));
  EXPECT_TRUE(throws_with([&] { stack({a, a}, 3); }, {"dimension 3", "[2, 3]"}));
  EXPECT_TRUE(throws_with([&] { stack({a, ops::zeros({2, 3}, DType::f64)}, 0); }, {"f32", "f64"}));
  // Mixed precision promotes (autograd/autocast.h): f32 with bf16 stacks as f32.
  EXPECT_EQ(stack({a, ops::zeros({2, 3}, DType::bf16)}, 0).dtype(), DType::f32);
}

// ============================== index_select ==============================

Tensor index_select_ref(const Tensor& x, int64_t dim, const Tensor& index) {
  if (dim < 0) dim += x.dim();
  const auto iv = ops::to_vector<int64_t>(index);
  Shape s = x.sizes();
  s[dim] = static_cast<int64_t>(iv.size());
  const V xv = vals(x);
  V out(static_cast<size_t>(shape_numel(s)));
  for (size_t o = 0; o < out.size(); ++o) {
    auto p = unravel(static_cast<int64_t>(o), s);
    p[dim] = iv[p[dim]];
    out[o] = xv[ravel(p, x.sizes())];
  }
  return t64(out, s);
}

TEST(IndexSelect, HandComputed) {
  Tensor x = t64({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_TRUE(allclose(index_select(x, 1, idx({2, 0, 2}, {3})), t64({3, 1, 3, 6, 4, 6}, {2, 3}), 0, 0));
  EXPECT_TRUE(allclose(index_select(x, 0, idx32({1}, {1})), t64({4, 5, 6}, {1, 3}), 0, 0));
}

TEST(IndexSelect, ForwardDimsAndDtypes) {
  Tensor x = uniform({3, 4, 5}, -1, 1, 501);
  struct Case {
    int64_t dim;
    Tensor index;
  };
  for (const Case& c : {Case{0, idx({2, 2, 0, 1, 2}, {5})}, Case{1, idx32({3, 0}, {2})}, Case{-1, idx({4, 1, 1}, {3})},
                        Case{2, idx({0, 1, 2, 3, 4, 0, 4}, {7})}}) {
    SCOPED_TRACE("dim " + std::to_string(c.dim));
    expect_dtypes([&](const std::vector<Tensor>& in) { return index_select(in[0], c.dim, in[1]); },
                  [&](const std::vector<Tensor>& in) { return index_select_ref(in[0], c.dim, in[1]); },
                  {x, c.index}, true);
  }
  // Non-contiguous input and index.
  Tensor xt = ops::transpose(x, 0, 2);  // [5, 4, 3]
  Tensor it = ops::slice(idx({3, 9, 1, 9, 0, 9}, {6}), 0, 0, 6, 2);  // (3, 1, 0)
  ASSERT_FALSE(xt.is_contiguous());
  ASSERT_FALSE(it.is_contiguous());
  EXPECT_TRUE(allclose(index_select(xt, 1, it), index_select_ref(xt, 1, it), 0, 0));
  EXPECT_EQ(ops::to_vector<int64_t>(index_select(idx({7, 8, 9}, {3}), 0, idx({2, 0}, {2}))),
            (std::vector<int64_t>{9, 7}));
}

TEST(IndexSelect, Gradcheck) {
  // Repeated indices must accumulate, absent ones get zero.
  Tensor i = idx({2, 0, 2, 2}, {4});
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return index_select(in[0], 0, i); }, {param({3, 4}, -1, 1, 511)}));
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return index_select(in[0], -1, i); }, {nc_param({3, 2, 4}, 0, 1, 512)}));
}

TEST(IndexSelect, EmptyIndexAndInput) {
  Tensor x = param({3, 4}, -1, 1, 521);
  Tensor y = index_select(x, 1, idx({}, {0}));
  EXPECT_EQ(y.sizes(), (Shape{3, 0}));
  backward(sum(y));
  EXPECT_EQ(vals(x.grad()), V(12, 0.0));
  EXPECT_EQ(index_select(ops::zeros({0, 4}), 1, idx({1, 1}, {2})).sizes(), (Shape{0, 2}));
}

TEST(IndexSelect, BadInput) {
  Tensor x = ops::zeros({3, 4});
  EXPECT_TRUE(throws_with([&] { index_select(x, 1, idx({0, 4}, {2})); }, {"index_select", "index 4", "[0, 4)"}));
  EXPECT_TRUE(throws_with([&] { index_select(x, 0, idx({0, 1, 2, 0}, {2, 2})); }, {"index_select", "1-D", "[2, 2]"}));
  EXPECT_TRUE(throws_with([&] { index_select(x, 0, ops::zeros({2}, DType::f64)); }, {"index_select", "f64"}));
  EXPECT_TRUE(throws_with([&] { index_select(x, 2, idx({0}, {1})); }, {"dimension 2", "[3, 4]"}));
}

// ============================== gather ==============================

// torch.gather: out[p] = x[p with p[dim] replaced by index[p]].
Tensor gather_ref(const Tensor& x, int64_t dim, const Tensor& index) {
  if (dim < 0) dim += x.dim();
  const auto iv = ops::to_vector<int64_t>(index);
  const V xv = vals(x);
  V out(iv.size());
  for (size_t o = 0; o < out.size(); ++o) {
    auto p = unravel(static_cast<int64_t>(o), index.sizes());
    p[dim] = iv[o];
    out[o] = xv[ravel(p, x.sizes())];
  }
  return t64(out, index.sizes());
}

TEST(Gather, HandComputedTorchDocExample) {
  // torch.gather(torch.tensor([[1, 2], [3, 4]]), 1, torch.tensor([[0, 0], [1, 0]])) = [[1, 1], [4, 3]]
  Tensor t = t64({1, 2, 3, 4}, {2, 2});
  EXPECT_TRUE(allclose(gather(t, 1, idx({0, 0, 1, 0}, {2, 2})), t64({1, 1, 4, 3}, {2, 2}), 0, 0));
  // dim 0: out[i][j] = t[index[i][j]][j]
  EXPECT_TRUE(allclose(gather(t, 0, idx({1, 0, 0, 0}, {2, 2})), t64({3, 2, 1, 2}, {2, 2}), 0, 0));
}

TEST(Gather, ForwardDimsShapesAndDtypes) {
  Tensor x = uniform({3, 4, 5}, -1, 1, 601);
  struct Case {
    int64_t dim;
    Tensor index;
  };
  // The index may be smaller than x in every dim (and larger in `dim`), as in torch.
  std::vector<Case> cases = {
      {0, idx({2, 0, 1, 1, 0, 2, 2, 2, 0, 1, 1, 0, 2, 0, 1, 0, 1, 2, 2, 1}, {2, 2, 5})},
      {1, idx({3, 3, 0, 1, 2, 0}, {1, 3, 2})},
      {-1, idx32({4, 0, 0, 4, 1, 2, 3, 3, 1, 0, 0, 0}, {2, 1, 6})},
      {2, idx({0, 1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 0, 1, 1, 2,
               2, 3, 3, 4, 4, 0, 1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4},
              {3, 4, 5})},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("dim " + std::to_string(c.dim) + " index " + shape_str(c.index.sizes()));
    expect_dtypes([&](const std::vector<Tensor>& in) { return gather(in[0], c.dim, in[1]); },
                  [&](const std::vector<Tensor>& in) { return gather_ref(in[0], c.dim, in[1]); }, {x, c.index}, true);
  }
  // Non-contiguous input and index.
  Tensor xt = ops::transpose(x, 0, 2);                                   // [5, 4, 3]
  Tensor it = ops::transpose(idx({0, 2, 1, 1, 2, 0}, {1, 2, 3}), 1, 2);  // [1, 3, 2]
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_TRUE(allclose(gather(xt, 2, it), gather_ref(xt, 2, it), 0, 0));
}

TEST(Gather, Gradcheck) {
  Tensor i0 = idx({2, 0, 1, 1, 0, 2, 2, 2}, {2, 4});  // repeats: gradients accumulate
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return gather(in[0], 0, i0); }, {param({3, 4}, -1, 1, 611)}));
  Tensor i1 = idx({3, 3, 0, 1, 2, 0}, {2, 3});
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return gather(in[0], -1, i1); }, {param({3, 4}, -1, 1, 612)}));
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return gather(in[0], 1, i1); }, {nc_param({4, 3}, 0, 1, 613)}));
}

TEST(Gather, EmptyIndex) {
  Tensor x = param({3, 4}, -1, 1, 621);
  Tensor y = gather(x, 1, idx({}, {3, 0}));
  EXPECT_EQ(y.sizes(), (Shape{3, 0}));
  backward(sum(y));
  EXPECT_EQ(vals(x.grad()), V(12, 0.0));
}

TEST(Gather, BadInput) {
  Tensor x = ops::zeros({3, 4});
  EXPECT_TRUE(throws_with([&] { gather(x, 1, idx({0, 1}, {2})); }, {"gather", "rank 1", "rank 2"}));
  EXPECT_TRUE(throws_with([&] { gather(x, 1, idx(std::vector<int64_t>(8, 0), {4, 2})); },
                          {"gather", "[4, 2]", "[3, 4]", "dimension 0"}));
  EXPECT_TRUE(throws_with([&] { gather(x, 1, idx({0, 4}, {1, 2})); }, {"gather", "index 4", "[0, 4)"}));
  EXPECT_TRUE(throws_with([&] { gather(x, 0, idx({-1}, {1, 1})); }, {"gather", "index -1"}));
  EXPECT_TRUE(throws_with([&] { gather(x, 0, ops::zeros({1, 1})); }, {"gather", "i64 or i32", "f32"}));
}

// ============================== pad ==============================

// torch F.pad (constant): pads come in (left, right) pairs from the last dim backwards; negative
// values crop. out[p] = x[p - left] where that is inside x, else value.
Tensor pad_ref(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  const Shape s = x.sizes();
  const int64_t nd = x.dim();
  std::vector<int64_t> left(nd, 0);
  Shape os = s;
  for (size_t i = 0; i < pads.size() / 2; ++i) {
    const int64_t d = nd - 1 - static_cast<int64_t>(i);
    left[d] = pads[2 * i];
    os[d] += pads[2 * i] + pads[2 * i + 1];
  }
  const V xv = vals(x);
  V out(static_cast<size_t>(shape_numel(os)), value);
  for (size_t o = 0; o < out.size(); ++o) {
    auto p = unravel(static_cast<int64_t>(o), os);
    bool inside = true;
    for (int64_t d = 0; d < nd; ++d) {
      p[d] -= left[d];
      inside = inside && p[d] >= 0 && p[d] < s[d];
    }
    if (inside) out[o] = xv[ravel(p, s)];
  }
  return t64(out, os);
}

TEST(Pad, HandComputed) {
  Tensor x = t64({1, 2, 3, 4}, {2, 2});
  // F.pad(x, (1, 0)): one column of zeros on the left of the last dim.
  EXPECT_TRUE(allclose(pad(x, {1, 0}), t64({0, 1, 2, 0, 3, 4}, {2, 3}), 0, 0));
  // F.pad(x, (0, 1, 1, 0), value=9): a column on the right, a row on top.
  EXPECT_TRUE(allclose(pad(x, {0, 1, 1, 0}, 9), t64({9, 9, 9, 1, 2, 9, 3, 4, 9}, {3, 3}), 0, 0));
  // F.pad(x, (-1, 0)): crop the first column.
  EXPECT_TRUE(allclose(pad(x, {-1, 0}), t64({2, 4}, {2, 1}), 0, 0));
}

TEST(Pad, ForwardPadsAndDtypes) {
  Tensor x = uniform({2, 3, 5}, -1, 1, 701);
  const std::vector<std::vector<int64_t>> cases = {
      {}, {1, 2}, {0, 0}, {2, 0, 0, 1}, {1, 1, 1, 1, 1, 1}, {-1, 2}, {-2, -1}, {1, -3, -1, 2}, {0, 0, -1, 0, 2, -1},
      {-5, 0}, {3, -4, 0, 0, -2, 1}};
  for (const auto& p : cases) {
    SCOPED_TRACE("pads " + shape_str(p));
    for (double value : {0.0, -2.5}) {
      expect_dtypes([&](const std::vector<Tensor>& in) { return pad(in[0], p, value); },
                    [&](const std::vector<Tensor>& in) { return pad_ref(in[0], p, value); }, {x}, true);
    }
  }
  Tensor xt = ops::transpose(uniform({4, 3}, -1, 1, 702), 0, 1);
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_TRUE(allclose(pad(xt, {1, -1, -1, 2}, 7), pad_ref(xt, {1, -1, -1, 2}, 7), 0, 0));
  EXPECT_EQ(ops::to_vector<int64_t>(pad(idx({5, 6}, {2}), {1, 1}, 3)), (std::vector<int64_t>{3, 5, 6, 3}));
}

TEST(Pad, Gradcheck) {
  for (const std::vector<int64_t>& p : {std::vector<int64_t>{1, 2}, std::vector<int64_t>{-1, 1, 2, -1},
                                        std::vector<int64_t>{0, 0, 1, 1, -1, 0}, std::vector<int64_t>{-2, -1}}) {
    SCOPED_TRACE("pads " + shape_str(p));
    EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return pad(in[0], p, 1.5); }, {param({2, 3, 4}, -1, 1, 711)}));
  }
  EXPECT_TRUE(grad_ok([](const std::vector<Tensor>& in) { return pad(in[0], {1, -1, 0, 2}); }, {nc_param({4, 3}, 0, 1, 712)}));
}

TEST(Pad, EmptyTensors) {
  EXPECT_TRUE(allclose(pad(ops::zeros({2, 0}, DType::f64), {1, 2}, 4), t64(V(6, 4.0), {2, 3}), 0, 0));
  EXPECT_EQ(pad(ops::zeros({0, 3}), {1, 1}).sizes(), (Shape{0, 5}));
  // Cropping everything away.
  EXPECT_EQ(pad(ops::zeros({2, 3}), {-1, -2}).sizes(), (Shape{2, 0}));
  Tensor x = param({2, 3}, -1, 1, 721);
  Tensor y = pad(x, {-2, -1});
  backward(sum(y));
  EXPECT_EQ(vals(x.grad()), V(6, 0.0));
}

TEST(Pad, BadInput) {
  Tensor x = ops::zeros({2, 3});
  EXPECT_TRUE(throws_with([&] { pad(x, {1}); }, {"pad", "1 pad values", "[2, 3]"}));
  EXPECT_TRUE(throws_with([&] { pad(x, {1, 1, 1, 1, 1, 1}); }, {"pad", "6 pad values", "[2, 3]"}));
  EXPECT_TRUE(throws_with([&] { pad(x, {-3, -1}); }, {"pad", "(-3, -1)", "dimension 1", "size 3"}));
}

// ============================== dropout ==============================

TEST(Dropout, TrainingMaskValuesAndKeptFraction) {
  const double p = 0.3;
  Tensor x = uniform({4000}, 0.5, 1.5, 801);  // no zeros, so a zero output means "dropped"
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    Generator g{1234, 0};
    Tensor xc = ops::to(x, dt);
    Tensor y = dropout(xc, p, true, &g);
    EXPECT_EQ(y.dtype(), dt);
    const V xv = vals(xc), yv = vals(y);
    int64_t kept = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      if (yv[i] == 0) continue;
      ++kept;
      // The scale 1/(1-p) is rounded to the dtype, hence the f32 tolerance.
      ASSERT_NEAR(yv[i], xv[i] / (1 - p), dt == DType::f64 ? 1e-14 : 1e-6 * xv[i] / (1 - p)) << i;
    }
    // Binomial(4000, 0.7): sd of the fraction ~0.0072; 0.03 is over 4 sd.
    EXPECT_NEAR(static_cast<double>(kept) / 4000, 1 - p, 0.03);
  }
  // bf16 with p = 0.5: the scale 2 is exact, so kept values are exactly 2x.
  Generator g{99, 0};
  Tensor xb = ops::to(x, DType::bf16);
  Tensor yb = dropout(xb, 0.5, true, &g);
  const V xv = vals(xb), yv = vals(yb);
  int64_t kept = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    ASSERT_TRUE(yv[i] == 0 || yv[i] == 2 * xv[i]) << i << ": " << yv[i] << " from " << xv[i];
    kept += yv[i] != 0;
  }
  EXPECT_NEAR(static_cast<double>(kept) / 4000, 0.5, 0.03);
}

TEST(Dropout, SameSeedSameMask) {
  Tensor x = uniform({3, 50}, 0.5, 1.5, 811);
  Generator a{77, 0}, b{77, 0};
  Tensor ya = dropout(x, 0.5, true, &a), yb = dropout(x, 0.5, true, &b);
  EXPECT_EQ(vals(ya), vals(yb));
  // The next call consumes a new offset: a different mask.
  Tensor ya2 = dropout(x, 0.5, true, &a);
  EXPECT_NE(vals(ya), vals(ya2));
  // A different seed: a different mask.
  Generator c{78, 0};
  EXPECT_NE(vals(ya), vals(dropout(x, 0.5, true, &c)));
}

TEST(Dropout, EvalAndZeroProbabilityReturnInput) {
  Tensor x = param({3, 4}, -1, 1, 821);
  EXPECT_TRUE(dropout(x, 0.5, false).is_same(x));
  EXPECT_TRUE(dropout(x, 0.0, true).is_same(x));
}

TEST(Dropout, GradientIsTheScaledMask) {
  // A fresh generator with a fixed seed inside f: every evaluation draws the same mask.
  auto f = [](const std::vector<Tensor>& in) {
    Generator g{5, 0};
    return dropout(in[0], 0.4, true, &g);
  };
  EXPECT_TRUE(grad_ok(f, {param({4, 5}, -1, 1, 831)}));
  EXPECT_TRUE(grad_ok(f, {nc_param({5, 4}, 0, 1, 832)}));
  // d y / d x = y / x exactly: 0 or 1/(1-p).
  Tensor x = param({30}, 0.5, 1.5, 833);
  Tensor y = f({x});
  backward(sum(y));
  const V xv = vals(x), yv = vals(y), gv = vals(x.grad());
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(gv[i], yv[i] / xv[i], 1e-14) << i;
}

TEST(Dropout, NonContiguousAndEmpty) {
  Tensor x = ops::transpose(uniform({20, 30}, 0.5, 1.5, 841), 0, 1);
  ASSERT_FALSE(x.is_contiguous());
  Generator g{3, 0};
  Tensor y = dropout(x, 0.25, true, &g);
  EXPECT_EQ(y.sizes(), (Shape{30, 20}));
  const V xv = vals(x), yv = vals(y);
  for (size_t i = 0; i < xv.size(); ++i) ASSERT_TRUE(yv[i] == 0 || std::abs(yv[i] - xv[i] / 0.75) < 1e-14) << i;
  EXPECT_EQ(dropout(ops::zeros({0, 3}), 0.5, true).sizes(), (Shape{0, 3}));
}

TEST(Dropout, BadProbability) {
  Tensor x = ops::zeros({3});
  EXPECT_TRUE(throws_with([&] { dropout(x, 1.0, true); }, {"dropout", "[0, 1)", "1"}));
  EXPECT_TRUE(throws_with([&] { dropout(x, -0.1, true); }, {"dropout", "-0.1"}));
}

// ============================== mse_loss ==============================

Tensor mse_ref(const Tensor& p, const Tensor& t, Reduction r) {
  const V pv = vals(p), tv = vals(t);
  V sq(pv.size());
  double s = 0;
  for (size_t i = 0; i < pv.size(); ++i) {
    sq[i] = (pv[i] - tv[i]) * (pv[i] - tv[i]);
    s += sq[i];
  }
  if (r == Reduction::none) return t64(sq, p.sizes());
  return t64({r == Reduction::sum ? s : s / static_cast<double>(pv.size())}, {});
}

TEST(MseLoss, HandComputed) {
  Tensor p = t64({1, 2, 3}, {3}), t = t64({1, 0, 5}, {3});
  EXPECT_TRUE(allclose(strand::mse_loss(p, t, Reduction::none), t64({0, 4, 4}, {3}), 0, 0));
  EXPECT_TRUE(allclose(strand::mse_loss(p, t, Reduction::sum), t64({8}, {}), 0, 0));
  EXPECT_TRUE(allclose(strand::mse_loss(p, t), t64({8.0 / 3}, {}), 1e-15, 1e-15));  // mean is the default
}

TEST(MseLoss, ForwardReductionsAndDtypes) {
  // In bf16/f16 mse_loss is composed of elementwise ops that each round (sub, mul, then the mean's
  // output), so it is up to ~4 half-ulps off; one ulp relative plus the small atol still bounds it.
  Tensor p = uniform({3, 7}, -1, 1, 901), t = uniform({3, 7}, -1, 1, 902);
  for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
    SCOPED_TRACE(static_cast<int>(r));
    expect_dtypes([r](const std::vector<Tensor>& in) { return strand::mse_loss(in[0], in[1], r); },
                  [r](const std::vector<Tensor>& in) { return mse_ref(in[0], in[1], r); }, {p, t}, false);
  }
  Tensor pt = ops::transpose(uniform({7, 3}, -1, 1, 903), 0, 1);
  ASSERT_FALSE(pt.is_contiguous());
  EXPECT_TRUE(allclose(strand::mse_loss(pt, t, Reduction::none), mse_ref(pt, t, Reduction::none), 1e-15, 1e-15));
  EXPECT_TRUE(allclose(strand::mse_loss(pt, t), mse_ref(pt, t, Reduction::mean), 1e-14, 1e-14));
}

TEST(MseLoss, Gradcheck) {
  for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
    SCOPED_TRACE(static_cast<int>(r));
    auto f = [r](const std::vector<Tensor>& in) { return strand::mse_loss(in[0], in[1], r); };
    EXPECT_TRUE(grad_ok(f, {param({3, 5}, -1, 1, 911), param({3, 5}, -1, 1, 912)}));
    EXPECT_TRUE(grad_ok(f, {nc_param({5, 3}, 0, 1, 913), param({3, 5}, -1, 1, 914)}));
  }
  // A constant target, as in training.
  Tensor t = uniform({4}, -1, 1, 915);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return strand::mse_loss(in[0], t); }, {param({4}, -1, 1, 916)}));
}

TEST(MseLoss, EmptyInput) {
  Tensor p = ops::zeros({0, 3}, DType::f64), t = ops::zeros({0, 3}, DType::f64);
  EXPECT_EQ(strand::mse_loss(p, t, Reduction::none).sizes(), (Shape{0, 3}));
  EXPECT_EQ(ops::item(strand::mse_loss(p, t, Reduction::sum)), 0.0);
  EXPECT_TRUE(std::isnan(ops::item(strand::mse_loss(p, t, Reduction::mean))));  // 0/0, as torch
}

TEST(MseLoss, BadInput) {
  // Unlike torch (which warns and broadcasts), mismatched shapes are an error.
  EXPECT_TRUE(throws_with([] { strand::mse_loss(ops::zeros({3}), ops::zeros({4})); }, {"mse_loss", "[3]", "[4]"}));
  EXPECT_TRUE(throws_with([] { strand::mse_loss(ops::zeros({3, 1}), ops::zeros({3})); }, {"mse_loss", "[3, 1]", "[3]"}));
  EXPECT_TRUE(throws_with([] { strand::mse_loss(ops::zeros({3}), ops::zeros({3}, DType::f64)); }, {"f32", "f64"}));
}

}  // namespace
}  // namespace strand
