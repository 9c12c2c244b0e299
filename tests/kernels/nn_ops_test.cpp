// Tests for the nn ops: softmax, log_softmax, layer_norm, rms_norm, batch_norm, conv1d, matmul,
// linear. Every forward is compared with a reference written here in plain double loops (or a
// hand-computed case), never with the op itself; every differentiable input is gradchecked in f64.
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
using test::param;
using test::throws_with;
using test::uniform;
using V = std::vector<double>;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

V vals(const Tensor& t) { return ops::to_vector<double>(t); }

using test::grad_ok;  // undefined (optional) inputs such as a missing bias are skipped
Tensor t64(const V& v, const Shape& s) { return ops::from_vector<double>(v, s); }

// A non-contiguous leaf requiring grad: the transpose (dims d0, d1) of a fresh tensor of shape
// `base`. gradcheck perturbs it through its own strides.
Tensor nc_param(const Shape& base, int64_t d0, int64_t d1, uint64_t seed) {
  Tensor t = ops::transpose(uniform(base, -1, 1, seed), d0, d1);
  EXPECT_FALSE(t.is_contiguous());
  t.set_requires_grad(true);
  return t;
}

using test::expect_dtypes;
using test::Tol;
using test::tol_for;

// ============================== softmax / log_softmax ==============================

// Softmax of x along `dim` in double, x read in its logical order.
Tensor softmax_ref(const Tensor& x, int64_t dim, bool log) {
  const Shape s = x.sizes();
  const int64_t nd = static_cast<int64_t>(s.size());
  if (dim < 0) dim += nd;
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= s[d];
  for (int64_t d = dim + 1; d < nd; ++d) inner *= s[d];
  const int64_t n = s[dim];
  const V v = vals(x);
  V out(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return (o * n + j) * inner + i; };
      double m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, v[at(j)]);
      double z = 0;
      for (int64_t j = 0; j < n; ++j) z += std::exp(v[at(j)] - m);
      for (int64_t j = 0; j < n; ++j)
        out[at(j)] = log ? v[at(j)] - m - std::log(z) : std::exp(v[at(j)] - m) / z;
    }
  return t64(out, s);
}

TEST(Softmax, HandComputed) {
  Tensor x = t64({0, std::log(3.0), 0, 0}, {2, 2});
  EXPECT_TRUE(allclose(softmax(x), t64({0.25, 0.75, 0.5, 0.5}, {2, 2}), 1e-15, 1e-15));
  EXPECT_TRUE(allclose(log_softmax(x), t64({std::log(0.25), std::log(0.75), std::log(0.5), std::log(0.5)}, {2, 2}),
                       1e-15, 1e-15));
  // Large logits must not overflow: the max is subtracted first.
  Tensor big = ops::from_vector<float>({1000, 1000, 1000, 0}, {2, 2});
  EXPECT_TRUE(allclose(softmax(big), t64({0.5, 0.5, 1, 0}, {2, 2}), 1e-6, 0));
  EXPECT_TRUE(allclose(log_softmax(big), t64({-std::log(2.0), -std::log(2.0), 0, -1000}, {2, 2}), 1e-5, 1e-6));
}

TEST(Softmax, ForwardEveryDimAndDtype) {
  // Odd sizes on every axis; dims counted from both ends.
  Tensor x = uniform({3, 5, 7}, -3, 3, 11);
  for (int64_t dim : {0, 1, 2, -1, -2, -3}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    for (bool log : {false, true}) {
      expect_dtypes([&](const std::vector<Tensor>& in) { return log ? log_softmax(in[0], dim) : softmax(in[0], dim); },
                    [&](const std::vector<Tensor>& in) { return softmax_ref(in[0], dim, log); }, {x});
    }
  }
}

TEST(Softmax, NonContiguousInput) {
  Tensor base = uniform({6, 4}, -2, 2, 3);
  Tensor xt = ops::transpose(base, 0, 1);       // [4, 6], strides (1, 4)
  Tensor xs = ops::slice(base, 0, 0, 6, 2);     // [3, 4], row stride 8
  ASSERT_FALSE(xt.is_contiguous());
  ASSERT_FALSE(xs.is_contiguous());
  for (int64_t dim : {0, 1}) {
    EXPECT_TRUE(allclose(softmax(xt, dim), softmax_ref(xt, dim, false), 1e-12, 1e-12));
    EXPECT_TRUE(allclose(log_softmax(xt, dim), softmax_ref(xt, dim, true), 1e-12, 1e-12));
    EXPECT_TRUE(allclose(softmax(xs, dim), softmax_ref(xs, dim, false), 1e-12, 1e-12));
    EXPECT_TRUE(allclose(log_softmax(ops::to(xs, DType::f32), dim), softmax_ref(xs, dim, true), 1e-5, 1e-5));
  }
}

TEST(Softmax, Gradcheck) {
  for (int64_t dim : {-1, 0, 1}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    EXPECT_TRUE(grad_ok([dim](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, {param({3, 4, 5}, -2, 2, 5)}));
    EXPECT_TRUE(grad_ok([dim](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); }, {param({3, 4, 5}, -2, 2, 6)}));
  }
  // Non-contiguous leaf, softmax over its strided (non-last-in-memory) dim.
  EXPECT_TRUE(grad_ok([](const std::vector<Tensor>& in) { return softmax(in[0], -1); }, {nc_param({5, 3}, 0, 1, 7)}));
  EXPECT_TRUE(grad_ok([](const std::vector<Tensor>& in) { return log_softmax(in[0], 0); }, {nc_param({5, 3}, 0, 1, 8)}));
}

TEST(Softmax, EmptyTensors) {
  for (const Shape& s : {Shape{0, 4}, Shape{3, 0}, Shape{2, 0, 3}}) {
    for (int64_t dim : {0, -1}) {
      Tensor x = param(s);
      Tensor y = softmax(x, dim), z = log_softmax(x, dim);
      EXPECT_EQ(y.sizes(), s);
      EXPECT_EQ(z.sizes(), s);
      backward(sum(add(y, z)));
      ASSERT_TRUE(x.grad().defined());
      EXPECT_EQ(x.grad().sizes(), s);
    }
  }
}

TEST(Softmax, BadInput) {
  Tensor i = ops::arange(0, 6);
  EXPECT_TRUE(throws_with([&] { softmax(i); }, {"softmax", "floating", "i64"}));
  EXPECT_TRUE(throws_with([&] { log_softmax(i); }, {"log_softmax", "floating", "i64"}));
  Tensor x = ops::zeros({2, 3});
  EXPECT_TRUE(throws_with([&] { softmax(x, 2); }, {"dimension 2", "[2, 3]"}));
  EXPECT_TRUE(throws_with([&] { log_softmax(x, -3); }, {"dimension -3", "[2, 3]"}));
}

// ============================== layer_norm ==============================

Tensor layer_norm_ref(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  const V v = vals(x);
  const V wv = w.defined() ? vals(w) : V(), bv = b.defined() ? vals(b) : V();
  V out(v.size());
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0, var = 0;
    for (int64_t j = 0; j < n; ++j) m += v[r * n + j];
    m /= n;
    for (int64_t j = 0; j < n; ++j) var += (v[r * n + j] - m) * (v[r * n + j] - m);
    var /= n;
    for (int64_t j = 0; j < n; ++j) {
      double h = (v[r * n + j] - m) / std::sqrt(var + eps);
      if (w.defined()) h *= wv[j];
      if (b.defined()) h += bv[j];
      out[r * n + j] = h;
    }
  }
  return t64(out, x.sizes());
}

TEST(LayerNorm, HandComputed) {
  // mean 2, population variance 2/3: (x - 2) / sqrt(2/3) = (-1.2247..., 0, 1.2247...)
  Tensor x = t64({1, 2, 3}, {1, 3});
  const double k = 1 / std::sqrt(2.0 / 3.0);
  EXPECT_TRUE(allclose(layer_norm(x, {}, {}, 0.0), t64({-k, 0, k}, {1, 3}), 1e-15, 1e-14));
  // A constant row normalises to zero, so the output is the bias.
  Tensor c = t64({5, 5, 5}, {1, 3});
  EXPECT_TRUE(allclose(layer_norm(c, t64({2, 2, 2}, {3}), t64({1, -1, 0.5}, {3})), t64({1, -1, 0.5}, {1, 3}), 0, 0));
}

TEST(LayerNorm, ForwardWithAndWithoutAffineAllDtypes) {
  Tensor x = uniform({2, 3, 5}, -2, 3, 21), w = uniform({5}, 0.5, 1.5, 22), b = uniform({5}, -1, 1, 23);
  const double eps = 1e-5;
  for (int variant = 0; variant < 4; ++variant) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    const bool hw = variant & 1, hb = variant & 2;
    expect_dtypes(
        [&](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], eps); },
        [&](const std::vector<Tensor>& in) { return layer_norm_ref(in[0], in[1], in[2], eps); },
        {x, hw ? w : Tensor(), hb ? b : Tensor()});
  }
  // Non-contiguous input (normalising over a strided dim) and non-contiguous weight.
  Tensor xt = ops::transpose(uniform({5, 4}, -1, 1, 24), 0, 1);
  Tensor wt = ops::slice(uniform({10}, 0.5, 1.5, 25), 0, 0, 10, 2);
  ASSERT_FALSE(xt.is_contiguous());
  ASSERT_FALSE(wt.is_contiguous());
  EXPECT_TRUE(allclose(layer_norm(xt, wt, b, eps), layer_norm_ref(xt, wt, b, eps), 1e-12, 1e-12));
}

TEST(LayerNorm, Gradcheck) {
  auto f = [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); };
  EXPECT_TRUE(grad_ok(f, {param({3, 5}, -2, 2, 31), param({5}, 0.5, 1.5, 32), param({5}, -1, 1, 33)}));
  EXPECT_TRUE(grad_ok(f, {param({2, 2, 3}, -2, 2, 34), param({3}, 0.5, 1.5, 35), Tensor()}));
  EXPECT_TRUE(grad_ok(f, {param({2, 2, 3}, -2, 2, 36), Tensor(), param({3}, -1, 1, 37)}));
  EXPECT_TRUE(grad_ok(f, {param({4, 3}, -2, 2, 38), Tensor(), Tensor()}));
  EXPECT_TRUE(grad_ok(f, {nc_param({5, 3}, 0, 1, 39), param({5}, 0.5, 1.5, 40), param({5}, -1, 1, 41)}));
}

TEST(LayerNorm, EmptyInput) {
  Tensor x = param({0, 4}), w = param({4}, 0.5, 1.5, 2), b = param({4}, -1, 1, 3);
  Tensor y = layer_norm(x, w, b);
  EXPECT_EQ(y.sizes(), (Shape{0, 4}));
  backward(sum(y));
  EXPECT_EQ(x.grad().sizes(), (Shape{0, 4}));
  EXPECT_EQ(vals(w.grad()), V(4, 0.0));
  EXPECT_EQ(vals(b.grad()), V(4, 0.0));
  // A zero-size normalised dim.
  Tensor x0 = param({3, 0});
  Tensor y0 = layer_norm(x0, {}, {});
  EXPECT_EQ(y0.sizes(), (Shape{3, 0}));
  backward(sum(y0));
  EXPECT_EQ(x0.grad().sizes(), (Shape{3, 0}));
}

TEST(LayerNorm, BadInput) {
  Tensor x = ops::zeros({2, 5});
  EXPECT_TRUE(throws_with([&] { layer_norm(x, ops::ones({4}), {}); }, {"layer_norm", "weight", "[4]", "5", "[2, 5]"}));
  EXPECT_TRUE(throws_with([&] { layer_norm(x, {}, ops::zeros({5, 1})); }, {"layer_norm", "bias", "[5, 1]"}));
  EXPECT_TRUE(throws_with([&] { layer_norm(x, ops::ones({5}, DType::f64), {}); }, {"layer_norm", "f64", "f32"}));
  EXPECT_TRUE(throws_with([&] { layer_norm(ops::zeros({2, 5}, DType::i32), {}, {}); }, {"layer_norm", "i32"}));
}

// ============================== rms_norm ==============================

Tensor rms_norm_ref(const Tensor& x, const Tensor& w, double eps) {
  const int64_t n = x.size(-1), rows = n ? x.numel() / n : 0;
  const V v = vals(x), wv = w.defined() ? vals(w) : V();
  V out(v.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < n; ++j) ms += v[r * n + j] * v[r * n + j];
    const double inv = 1 / std::sqrt(ms / n + eps);
    for (int64_t j = 0; j < n; ++j) out[r * n + j] = v[r * n + j] * inv * (w.defined() ? wv[j] : 1.0);
  }
  return t64(out, x.sizes());
}

TEST(RmsNorm, HandComputed) {
  // rms(3, 4) = sqrt(12.5)
  const double r = std::sqrt(12.5);
  EXPECT_TRUE(allclose(rms_norm(t64({3, 4}, {1, 2}), {}, 0.0), t64({3 / r, 4 / r}, {1, 2}), 1e-15, 1e-14));
  EXPECT_TRUE(allclose(rms_norm(t64({3, 4}, {1, 2}), t64({2, -1}, {2}), 0.0), t64({6 / r, -4 / r}, {1, 2}), 1e-15,
                       1e-14));
}

TEST(RmsNorm, ForwardAllDtypes) {
  Tensor x = uniform({3, 2, 7}, -2, 2, 51), w = uniform({7}, 0.5, 1.5, 52);
  for (bool hw : {false, true}) {
    SCOPED_TRACE(hw ? "with weight" : "without weight");
    expect_dtypes([&](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); },
                  [&](const std::vector<Tensor>& in) { return rms_norm_ref(in[0], in[1], 1e-6); },
                  {x, hw ? w : Tensor()});
  }
  Tensor xt = ops::transpose(uniform({7, 3}, -1, 1, 53), 0, 1);
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_TRUE(allclose(rms_norm(xt, w), rms_norm_ref(xt, w, 1e-6), 1e-12, 1e-12));
}

TEST(RmsNorm, Gradcheck) {
  auto f = [](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); };
  EXPECT_TRUE(grad_ok(f, {param({3, 5}, -2, 2, 61), param({5}, 0.5, 1.5, 62)}));
  EXPECT_TRUE(grad_ok(f, {param({2, 2, 3}, -2, 2, 63), Tensor()}));
  EXPECT_TRUE(grad_ok(f, {nc_param({4, 3}, 0, 1, 64), param({4}, 0.5, 1.5, 65)}));
}

TEST(RmsNorm, EmptyInput) {
  Tensor x = param({2, 0, 3}), w = param({3}, 0.5, 1.5, 2);
  Tensor y = rms_norm(x, w);
  EXPECT_EQ(y.sizes(), (Shape{2, 0, 3}));
  backward(sum(y));
  EXPECT_EQ(x.grad().sizes(), (Shape{2, 0, 3}));
  EXPECT_EQ(vals(w.grad()), V(3, 0.0));
}

TEST(RmsNorm, BadInput) {
  Tensor x = ops::zeros({2, 5});
  EXPECT_TRUE(throws_with([&] { rms_norm(x, ops::ones({3})); }, {"rms_norm", "weight", "[3]", "5"}));
  EXPECT_TRUE(throws_with([&] { rms_norm(x, ops::ones({5}, DType::bf16)); }, {"rms_norm", "bf16", "f32"}));
  EXPECT_TRUE(throws_with([&] { rms_norm(ops::zeros({5}, DType::i64), {}); }, {"rms_norm", "i64"}));
}

// ============================== batch_norm ==============================

// Per-channel mean and population variance over all dims but the last.
void channel_stats(const Tensor& x, V& mean, V& var) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  const V v = vals(x);
  mean.assign(C, 0);
  var.assign(C, 0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) mean[c] += v[i * C + c];
  for (int64_t c = 0; c < C; ++c) mean[c] /= N;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) var[c] += (v[i * C + c] - mean[c]) * (v[i * C + c] - mean[c]);
  for (int64_t c = 0; c < C; ++c) var[c] /= N;
}
Tensor bn_apply_ref(const Tensor& x, const Tensor& w, const Tensor& b, const V& mean, const V& var, double eps) {
  const int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
  const V v = vals(x), wv = w.defined() ? vals(w) : V(), bv = b.defined() ? vals(b) : V();
  V out(v.size());
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c)
      out[i * C + c] = (v[i * C + c] - mean[c]) / std::sqrt(var[c] + eps) * (w.defined() ? wv[c] : 1.0) +
                       (b.defined() ? bv[c] : 0.0);
  return t64(out, x.sizes());
}
Tensor bn_train_ref(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  V m, v;
  channel_stats(x, m, v);
  return bn_apply_ref(x, w, b, m, v, eps);
}

TEST(BatchNorm, HandComputedTraining) {
  // One channel, values (1, 3): mean 2, population var 1, unbiased var 2.
  Tensor x = t64({1, 3}, {2, 1});
  Tensor rm = t64({0.5}, {1}), rv = t64({4}, {1});
  Tensor y = batch_norm(x, {}, {}, rm, rv, true, 0.25, 0.0);
  EXPECT_TRUE(allclose(y, t64({-1, 1}, {2, 1}), 1e-15, 1e-15));
  EXPECT_DOUBLE_EQ(ops::item(rm), 0.75 * 0.5 + 0.25 * 2);  // 0.875
  EXPECT_DOUBLE_EQ(ops::item(rv), 0.75 * 4 + 0.25 * 2);    // unbiased: 3.5
}

TEST(BatchNorm, TrainingChannelsLastStatsAndRunningUpdate) {
  // [B, L, C] = [2, 3, 4]: each channel's statistics run over the 6 (b, l) positions.
  Tensor x = uniform({2, 3, 4}, -2, 3, 71), w = uniform({4}, 0.5, 1.5, 72), b = uniform({4}, -1, 1, 73);
  const V rm0 = vals(uniform({4}, -0.5, 0.5, 74)), rv0 = vals(uniform({4}, 0.5, 2, 75));
  const double eps = 1e-5;
  V m, v;
  channel_stats(x, m, v);
  for (double momentum : {0.1, 0.3}) {
    for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " momentum " + std::to_string(momentum));
      const DType sd = dt == DType::f64 ? DType::f64 : DType::f32;  // running stats: f32 except for f64
      Tensor xc = ops::to(x, dt), wc = ops::to(w, dt), bc = ops::to(b, dt);
      Tensor xr = ops::to(xc, DType::f64), wr = ops::to(wc, DType::f64), br = ops::to(bc, DType::f64);
      Tensor rm = ops::to(t64(rm0, {4}), sd), rv = ops::to(t64(rv0, {4}), sd);
      const V rmr = vals(rm), rvr = vals(rv);
      Tensor y = batch_norm(xc, wc, bc, rm, rv, true, momentum, eps);
      const Tol tl = tol_for(dt);
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_TRUE(allclose(y, bn_train_ref(xr, wr, br, eps), tl.atol, tl.rtol));
      // Running stats: (1 - momentum) * old + momentum * batch, the variance unbiased (n = 6).
      V mr, vr;
      channel_stats(xr, mr, vr);
      V want_m(4), want_v(4);
      for (int c = 0; c < 4; ++c) {
        want_m[c] = (1 - momentum) * rmr[c] + momentum * mr[c];
        want_v[c] = (1 - momentum) * rvr[c] + momentum * vr[c] * 6.0 / 5.0;
      }
      const double st = dt == DType::f64 ? 1e-12 : 1e-6;  // stats are f32 (or f64), whatever x's dtype
      EXPECT_TRUE(allclose(rm, t64(want_m, {4}), st, st));
      EXPECT_TRUE(allclose(rv, t64(want_v, {4}), st, st));
    }
  }
  // Without running stats, training still normalises with batch statistics.
  EXPECT_TRUE(allclose(batch_norm(x, w, b, {}, {}, true), bn_train_ref(x, w, b, 1e-5), 1e-12, 1e-12));
  // 2-D [N, C] input and no affine parameters.
  Tensor x2 = uniform({5, 3}, -1, 1, 76);
  EXPECT_TRUE(allclose(batch_norm(x2, {}, {}, {}, {}, true), bn_train_ref(x2, {}, {}, 1e-5), 1e-12, 1e-12));
}

TEST(BatchNorm, EvalUsesRunningStats) {
  Tensor x = uniform({2, 3, 4}, -2, 3, 81), w = uniform({4}, 0.5, 1.5, 82), b = uniform({4}, -1, 1, 83);
  const V rm0 = vals(uniform({4}, -0.5, 0.5, 84)), rv0 = vals(uniform({4}, 0.5, 2, 85));
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    const DType sd = dt == DType::f64 ? DType::f64 : DType::f32;
    Tensor xc = ops::to(x, dt), wc = ops::to(w, dt), bc = ops::to(b, dt);
    Tensor rm = ops::to(t64(rm0, {4}), sd), rv = ops::to(t64(rv0, {4}), sd);
    const V rmr = vals(rm), rvr = vals(rv);
    Tensor y = batch_norm(xc, wc, bc, rm, rv, false, 0.1, 1e-5);
    const Tol tl = tol_for(dt);
    EXPECT_TRUE(allclose(y, bn_apply_ref(ops::to(xc, DType::f64), ops::to(wc, DType::f64), ops::to(bc, DType::f64),
                                         rmr, rvr, 1e-5),
                         tl.atol, tl.rtol));
    EXPECT_EQ(vals(rm), rmr);  // eval never touches the running stats
    EXPECT_EQ(vals(rv), rvr);
  }
  // A single sample is fine in eval mode.
  Tensor one = uniform({1, 4}, -1, 1, 86);
  EXPECT_TRUE(allclose(batch_norm(one, w, b, t64(rm0, {4}), t64(rv0, {4}), false),
                       bn_apply_ref(one, w, b, rm0, rv0, 1e-5), 1e-12, 1e-12));
}

TEST(BatchNorm, NonContiguousInput) {
  // x [B, L, C] viewed from a [C, B, L] buffer: the channel dim is the strided one.
  Tensor base = uniform({3, 2, 5}, -1, 2, 91);
  Tensor x = ops::permute(base, {1, 2, 0});
  ASSERT_FALSE(x.is_contiguous());
  Tensor rm = ops::zeros({3}, DType::f64), rv = ops::ones({3}, DType::f64);
  EXPECT_TRUE(allclose(batch_norm(x, {}, {}, rm, rv, true, 0.1), bn_train_ref(x, {}, {}, 1e-5), 1e-12, 1e-12));
  V m, v;
  channel_stats(x, m, v);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(vals(rm)[c], 0.1 * m[c], 1e-12);
    EXPECT_NEAR(vals(rv)[c], 0.9 + 0.1 * v[c] * 10.0 / 9.0, 1e-12);
  }
}

TEST(BatchNorm, Gradcheck) {
  auto train = [](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2], {}, {}, true, 0.1, 1e-5); };
  EXPECT_TRUE(grad_ok(train, {param({2, 3, 4}, -2, 2, 101), param({4}, 0.5, 1.5, 102), param({4}, -1, 1, 103)}));
  EXPECT_TRUE(grad_ok(train, {param({5, 3}, -2, 2, 104), Tensor(), Tensor()}));
  EXPECT_TRUE(grad_ok(train, {param({5, 3}, -2, 2, 105), param({3}, 0.5, 1.5, 106), Tensor()}));
  EXPECT_TRUE(grad_ok(train, {param({5, 3}, -2, 2, 107), Tensor(), param({3}, -1, 1, 108)}));
  EXPECT_TRUE(grad_ok(train, {nc_param({3, 5}, 0, 1, 109), param({3}, 0.5, 1.5, 110), param({3}, -1, 1, 111)}));
  // Eval: running stats are constants.
  Tensor rm = uniform({4}, -0.5, 0.5, 112), rv = uniform({4}, 0.5, 2, 113);
  auto eval = [&](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2], rm, rv, false, 0.1, 1e-5); };
  EXPECT_TRUE(grad_ok(eval, {param({2, 3, 4}, -2, 2, 114), param({4}, 0.5, 1.5, 115), param({4}, -1, 1, 116)}));
  EXPECT_TRUE(grad_ok(eval, {param({3, 4}, -2, 2, 117), Tensor(), param({4}, -1, 1, 118)}));
}

TEST(BatchNorm, EmptyInputInEval) {
  Tensor x = param({0, 3}), w = param({3}, 0.5, 1.5, 2), b = param({3}, -1, 1, 3);
  Tensor y = batch_norm(x, w, b, ops::zeros({3}, DType::f64), ops::ones({3}, DType::f64), false);
  EXPECT_EQ(y.sizes(), (Shape{0, 3}));
}

TEST(BatchNorm, BadInput) {
  Tensor x = ops::zeros({4, 3});
  EXPECT_TRUE(throws_with([&] { batch_norm(ops::zeros({5}), {}, {}, {}, {}, true); }, {"batch_norm", "[5]"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(ops::zeros({1, 3}), {}, {}, {}, {}, true); },
                          {"batch_norm", "more than one value per channel", "[1, 3]"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(ops::zeros({0, 3}), {}, {}, {}, {}, true); },
                          {"batch_norm", "more than one value per channel", "[0, 3]"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(x, {}, {}, {}, {}, false); }, {"batch_norm", "eval", "running"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(x, {}, {}, ops::zeros({3}, DType::f64), ops::ones({3}), true); },
                          {"batch_norm", "running", "f32 [3]", "f64"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(x, {}, {}, ops::zeros({4}), ops::ones({4}), true); },
                          {"batch_norm", "running", "[3]", "Tensor[4]"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(x, ops::ones({4}), {}, {}, {}, true); }, {"batch_norm", "weight", "[4]", "3"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(ops::zeros({4, 3}, DType::i32), {}, {}, {}, {}, true); }, {"batch_norm", "i32"}));
}

TEST(BatchNorm, ApplyGivesTheForwardsOutputFromItsStatistics) {
  // batch_norm_apply (what the output's recompute runs) is batch_norm's y, bit for bit, from the
  // statistics batch_norm returned; bad statistics are clear errors.
  const DType f = DType::f32;
  Tensor x = uniform({2, 5, 3}, -2, 2, 31, f), w = uniform({3}, 0.5, 1.5, 32, f), b = uniform({3}, -1, 1, 33, f);
  const ops::NormOut o = ops::batch_norm(x, w, b, {}, {}, true, 0.1, 1e-5);
  EXPECT_TRUE(allclose(ops::batch_norm_apply(x, w, b, o.mean, o.rstd), o.y, 0, 0));
  EXPECT_TRUE(throws_with([&] { ops::batch_norm_apply(x, w, b, o.mean, Tensor()); },
                          {"batch_norm_apply", "statistics", "[3]", "undefined"}));
  EXPECT_TRUE(throws_with([&] { ops::batch_norm_apply(x, w, b, ops::zeros({4}), o.rstd); },
                          {"batch_norm_apply", "[3]", "Tensor[4]"}));
  EXPECT_TRUE(throws_with([&] { ops::batch_norm_apply(x, w, b, ops::to(o.mean, DType::f64), o.rstd); },
                          {"batch_norm_apply", "f32 [3]", "f64"}));
  EXPECT_TRUE(throws_with([&] { ops::batch_norm_apply(x, ops::ones({4}), b, o.mean, o.rstd); },
                          {"batch_norm_apply", "weight"}));
}

TEST(BatchNorm, HalfInputWithF32ParametersIsTheF32ComputationRoundedOnce) {
  // bf16-mixed: a bf16/f16 input with f32 weight, bias and running statistics. The kernels read the
  // half input and gradient as they are: y and gx equal the f32 computation on the widened input,
  // rounded once to the input's dtype; statistics and the weight and bias gradients are those f32
  // results exactly.
  const DType f = DType::f32;
  for (DType hd : {DType::bf16, DType::f16})
    for (bool training : {true, false}) {
      SCOPED_TRACE(std::string(dtype_name(hd)) + (training ? " training" : " eval"));
      Tensor x = ops::to(uniform({2, 50, 3}, -2, 2, 41, f), hd), g = ops::to(uniform({2, 50, 3}, -1, 1, 42, f), hd);
      Tensor w = uniform({3}, 0.5, 1.5, 43, f), b = uniform({3}, -1, 1, 44, f);
      Tensor rm = uniform({3}, -0.5, 0.5, 45, f), rv = uniform({3}, 0.5, 1.5, 46, f);
      Tensor rm32 = ops::clone(rm), rv32 = ops::clone(rv);
      const ops::NormOut o = ops::batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5);
      const ops::NormOut r = ops::batch_norm(ops::to(x, f), w, b, rm32, rv32, training, 0.1, 1e-5);
      EXPECT_EQ(o.y.dtype(), hd);
      EXPECT_TRUE(allclose(o.y, ops::to(r.y, hd), 0, 0));
      EXPECT_TRUE(allclose(o.mean, r.mean, 0, 0));
      EXPECT_TRUE(allclose(o.rstd, r.rstd, 0, 0));
      EXPECT_TRUE(allclose(rm, rm32, 0, 0));
      EXPECT_TRUE(allclose(rv, rv32, 0, 0));
      EXPECT_TRUE(allclose(ops::batch_norm_apply(x, w, b, o.mean, o.rstd), o.y, 0, 0));
      auto [gx, gw, gb] = ops::batch_norm_backward(g, x, w, o.mean, o.rstd, training);
      auto [rgx, rgw, rgb] = ops::batch_norm_backward(ops::to(g, f), ops::to(x, f), w, r.mean, r.rstd, training);
      EXPECT_EQ(gx.dtype(), hd);
      EXPECT_EQ(gw.dtype(), f);
      EXPECT_EQ(gb.dtype(), f);
      EXPECT_TRUE(allclose(gx, ops::to(rgx, hd), 0, 0));
      EXPECT_TRUE(allclose(gw, rgw, 0, 0));
      EXPECT_TRUE(allclose(gb, rgb, 0, 0));
      // Without a weight the bias gradient still comes in f32, not rounded to the input's dtype.
      auto [gx0, gw0, gb0] = ops::batch_norm_backward(g, x, Tensor(), o.mean, o.rstd, training);
      auto [rgx0, rgw0, rgb0] = ops::batch_norm_backward(ops::to(g, f), ops::to(x, f), Tensor(), r.mean, r.rstd, training);
      EXPECT_FALSE(gw0.defined());
      EXPECT_EQ(gb0.dtype(), f);
      EXPECT_TRUE(allclose(gb0, rgb0, 0, 0));
      EXPECT_TRUE(allclose(gx0, ops::to(rgx0, hd), 0, 0));
    }
  // Parameters fit the input: its own dtype, or f32 beside a half input; weight and bias alike.
  Tensor xb = ops::to(uniform({4, 3}, -1, 1, 47, f), DType::bf16);
  EXPECT_TRUE(throws_with([&] { ops::batch_norm(xb, ops::ones({3}, DType::f64), {}, {}, {}, true, 0.1, 1e-5); },
                          {"batch_norm", "weight dtype f64", "input dtype bf16", "bf16 or f32"}));
  EXPECT_TRUE(throws_with([&] { ops::batch_norm(xb, ops::ones({3}), ops::zeros({3}, DType::bf16), {}, {}, true, 0.1, 1e-5); },
                          {"batch_norm", "weight (f32)", "bias (bf16)", "one dtype"}));
  EXPECT_TRUE(throws_with([&] { ops::batch_norm(ops::to(xb, f), ops::ones({3}, DType::f64), {}, {}, {}, true, 0.1, 1e-5); },
                          {"batch_norm", "dtype mismatch", "f64"}));
  EXPECT_TRUE(throws_with([&] { ops::batch_norm_backward(ops::zeros({4, 3}), xb, ops::ones({3}), ops::zeros({3}), ops::ones({3}), true); },
                          {"batch_norm_backward", "gradient", "does not match"}));
}

// ============================== threaded paths ==============================

// Inputs big enough that the row kernels split rows across OpenMP threads (work above
// kParallelGrain); every row must still match the reference.
TEST(NnOps, LargeInputsTakeTheThreadedPath) {
  Tensor x = uniform({128, 300}, -3, 3, 191), w = uniform({300}, 0.5, 1.5, 192), b = uniform({300}, -1, 1, 193);
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tol tl = tol_for(dt);
    Tensor xc = ops::to(x, dt), wc = ops::to(w, dt), bc = ops::to(b, dt);
    Tensor xr = ops::to(xc, DType::f64), wr = ops::to(wc, DType::f64), br = ops::to(bc, DType::f64);
    EXPECT_TRUE(allclose(softmax(xc), softmax_ref(xr, -1, false), tl.atol, tl.rtol));
    EXPECT_TRUE(allclose(log_softmax(xc, 0), softmax_ref(xr, 0, true), tl.atol, tl.rtol));
    EXPECT_TRUE(allclose(layer_norm(xc, wc, bc), layer_norm_ref(xr, wr, br, 1e-5), tl.atol, tl.rtol));
    EXPECT_TRUE(allclose(rms_norm(xc, wc), rms_norm_ref(xr, wr, 1e-6), tl.atol, tl.rtol));
    Tensor xb = ops::reshape(xc, {4800, 8});
    EXPECT_TRUE(allclose(batch_norm(xb, {}, {}, {}, {}, true), bn_train_ref(ops::reshape(xr, {4800, 8}), {}, {}, 1e-5),
                         tl.atol, tl.rtol));
  }
}

// ============================== conv1d ==============================

// Cross-correlation as PyTorch: out[b, l, o] = bias[o] + sum_{i,k} w[o, i, k] * x[b, l + k - pad, i].
Tensor conv1d_ref(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t pad) {
  const int64_t B = x.size(0), L = x.size(1), Ci = x.size(2), Co = w.size(0), K = w.size(2);
  if (pad < 0) pad = K / 2;
  const int64_t Lo = L + 2 * pad - K + 1;
  const V xv = vals(x), wv = vals(w), bv = bias.defined() ? vals(bias) : V(Co, 0.0);
  V out(static_cast<size_t>(B * Lo * Co));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < Lo; ++l)
      for (int64_t o = 0; o < Co; ++o) {
        double s = bv[o];
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = l + k - pad;
          if (src < 0 || src >= L) continue;
          for (int64_t i = 0; i < Ci; ++i) s += wv[(o * Ci + i) * K + k] * xv[(b * L + src) * Ci + i];
        }
        out[(b * Lo + l) * Co + o] = s;
      }
  return t64(out, {B, Lo, Co});
}

TEST(Conv1d, HandComputed) {
  // x = (1, 2, 3), kernel (1, 0, -1), 'same' padding: out[l] = x[l-1] - x[l+1].
  Tensor x = t64({1, 2, 3}, {1, 3, 1}), w = t64({1, 0, -1}, {1, 1, 3});
  EXPECT_TRUE(allclose(conv1d(x, w), t64({-2, -2, 2}, {1, 3, 1}), 0, 0));
  EXPECT_TRUE(allclose(conv1d(x, w, t64({10}, {1}), 0), t64({8}, {1, 1, 1}), 0, 0));
  // Two input channels, one output channel, K = 1: a per-position weighted sum of channels.
  Tensor x2 = t64({1, 2, 3, 4}, {1, 2, 2}), w2 = t64({10, 1}, {1, 2, 1});
  EXPECT_TRUE(allclose(conv1d(x2, w2), t64({12, 34}, {1, 2, 1}), 0, 0));
}

TEST(Conv1d, ForwardKernelSizesPaddingsDtypes) {
  struct Case {
    int64_t K, pad;
  };
  // 'same' for K = 1, 3, 5; explicit padding 0 (valid) and more than K/2.
  for (Case c : {Case{1, -1}, Case{3, -1}, Case{5, -1}, Case{3, 0}, Case{5, 0}, Case{3, 2}, Case{1, 1}}) {
    SCOPED_TRACE("K " + std::to_string(c.K) + " pad " + std::to_string(c.pad));
    Tensor x = uniform({2, 7, 3}, -1, 1, 121), w = uniform({4, 3, c.K}, -1, 1, 122), b = uniform({4}, -1, 1, 123);
    for (bool hb : {true, false}) {
      expect_dtypes([&](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], in[2], c.pad); },
                    [&](const std::vector<Tensor>& in) { return conv1d_ref(in[0], in[1], in[2], c.pad); },
                    {x, w, hb ? b : Tensor()});
    }
    const int64_t Lo = 7 + 2 * (c.pad < 0 ? c.K / 2 : c.pad) - c.K + 1;
    EXPECT_EQ(conv1d(x, w, b, c.pad).sizes(), (Shape{2, Lo, 4}));
  }
}

TEST(Conv1d, NonContiguousOperands) {
  // x [B, L, Cin] as a transpose of [B, Cin, L] (PyTorch's layout); w from a [K, Cout, Cin] buffer.
  Tensor x = ops::transpose(uniform({2, 3, 5}, -1, 1, 131), 1, 2);
  Tensor w = ops::permute(uniform({3, 4, 3}, -1, 1, 132), {1, 2, 0});
  Tensor b = ops::slice(uniform({8}, -1, 1, 133), 0, 0, 8, 2);
  ASSERT_FALSE(x.is_contiguous());
  ASSERT_FALSE(w.is_contiguous());
  ASSERT_FALSE(b.is_contiguous());
  EXPECT_TRUE(allclose(conv1d(x, w, b), conv1d_ref(x, w, b, -1), 1e-12, 1e-12));
  EXPECT_TRUE(allclose(conv1d(ops::to(x, DType::f32), ops::to(w, DType::f32), ops::to(b, DType::f32), 0),
                       conv1d_ref(x, w, b, 0), 1e-5, 1e-5));
}

TEST(Conv1d, Gradcheck) {
  auto f = [](int64_t pad) {
    return [pad](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], in[2], pad); };
  };
  EXPECT_TRUE(grad_ok(f(-1), {param({2, 5, 3}, -1, 1, 141), param({2, 3, 3}, -1, 1, 142), param({2}, -1, 1, 143)}));
  EXPECT_TRUE(grad_ok(f(-1), {param({1, 6, 2}, -1, 1, 144), param({3, 2, 5}, -1, 1, 145), param({3}, -1, 1, 146)}));
  EXPECT_TRUE(grad_ok(f(-1), {param({2, 3, 4}, -1, 1, 147), param({3, 4, 1}, -1, 1, 148), Tensor()}));
  EXPECT_TRUE(grad_ok(f(0), {param({2, 5, 2}, -1, 1, 149), param({2, 2, 3}, -1, 1, 150), param({2}, -1, 1, 151)}));
  EXPECT_TRUE(grad_ok(f(2), {param({1, 3, 2}, -1, 1, 152), param({2, 2, 3}, -1, 1, 153), Tensor()}));
  EXPECT_TRUE(grad_ok(f(-1), {nc_param({2, 3, 5}, 1, 2, 154), nc_param({3, 2, 3}, 0, 1, 155), param({2}, -1, 1, 156)}));
}

TEST(Conv1d, ManyIm2colBlocksAndWidePadding) {
  // K·Cin = 360: the im2col buffer holds 2912 rows, so each length-3000 item takes two blocks.
  for (int64_t pad : {4, 11}) {
    const int64_t B = 2, L = 3000, Cin = 40, Cout = 6, K = 9, Lout = L + 2 * pad - K + 1;
    Tensor x = param({B, L, Cin}, -1, 1, 161), w = param({Cout, Cin, K}, -1, 1, 162), b = param({Cout}, -1, 1, 163);
    Tensor y = conv1d(x, w, b, pad);
    EXPECT_TRUE(allclose(y, conv1d_ref(x, w, b, pad), 1e-12, 1e-12));
    Tensor g = uniform({B, Lout, Cout}, -1, 1, 164);
    backward(sum(y * g));
    const V xv = vals(x), wv = vals(w), gv = vals(g);
    V gw(static_cast<size_t>(Cout * Cin * K), 0.0), gx(static_cast<size_t>(B * L * Cin), 0.0);
    for (int64_t bi = 0; bi < B; ++bi)
      for (int64_t l = 0; l < Lout; ++l)
        for (int64_t k = 0; k < K; ++k) {
          const int64_t j = l + k - pad;
          if (j < 0 || j >= L) continue;
          for (int64_t co = 0; co < Cout; ++co) {
            const double gg = gv[(bi * Lout + l) * Cout + co];
            for (int64_t ci = 0; ci < Cin; ++ci) {
              gw[(co * Cin + ci) * K + k] += gg * xv[(bi * L + j) * Cin + ci];
              gx[(bi * L + j) * Cin + ci] += gg * wv[(co * Cin + ci) * K + k];
            }
          }
        }
    EXPECT_TRUE(allclose(w.grad(), t64(gw, {Cout, Cin, K}), 1e-10, 1e-12));
    EXPECT_TRUE(allclose(x.grad(), t64(gx, {B, L, Cin}), 1e-12, 1e-12));
  }
}

TEST(Conv1d, EmptyInputs) {
  // Zero batch, zero length ('same' keeps 0; K=1 too), zero output channels.
  Tensor w = param({2, 3, 3}, -1, 1, 2), b = param({2}, -1, 1, 3);
  Tensor x = param({0, 4, 3});
  Tensor y = conv1d(x, w, b);
  EXPECT_EQ(y.sizes(), (Shape{0, 4, 2}));
  backward(sum(y));
  EXPECT_EQ(x.grad().sizes(), (Shape{0, 4, 3}));
  EXPECT_EQ(vals(w.grad()), V(18, 0.0));
  EXPECT_EQ(vals(b.grad()), V(2, 0.0));
  EXPECT_EQ(conv1d(ops::zeros({2, 0, 3}, DType::f64), ops::to(w, DType::f64), {}).sizes(), (Shape{2, 0, 2}));
  EXPECT_EQ(conv1d(ops::zeros({2, 4, 3}), ops::zeros({0, 3, 3}), {}).sizes(), (Shape{2, 4, 0}));
  // With padding 0 and K = L + 1 the output is empty too.
  EXPECT_EQ(conv1d(ops::zeros({1, 2, 3}), ops::zeros({2, 3, 3}), {}, 0).sizes(), (Shape{1, 0, 2}));
}

TEST(Conv1d, BadInput) {
  Tensor x = ops::zeros({2, 5, 3});
  EXPECT_TRUE(throws_with([&] { conv1d(x, ops::zeros({2, 3, 4})); }, {"conv1d", "odd kernel size", "4"}));
  EXPECT_TRUE(throws_with([&] { conv1d(x, ops::zeros({2, 4, 3})); }, {"conv1d", "3 channels", "[2, 4, 3]", "4"}));
  EXPECT_TRUE(throws_with([&] { conv1d(ops::zeros({5, 3}), ops::zeros({2, 3, 3})); }, {"conv1d", "[B, L, Cin]", "[5, 3]"}));
  EXPECT_TRUE(throws_with([&] { conv1d(x, ops::zeros({2, 3})); }, {"conv1d", "[Cout, Cin, K]", "[2, 3]"}));
  EXPECT_TRUE(throws_with([&] { conv1d(ops::zeros({1, 1, 3}), ops::zeros({2, 3, 5}), {}, 0); },
                          {"conv1d", "length 1", "kernel 5", "padding 0"}));
  EXPECT_TRUE(throws_with([&] { conv1d(x, ops::zeros({2, 3, 3}), ops::zeros({3})); }, {"conv1d", "bias", "[3]", "2"}));
  EXPECT_TRUE(throws_with([&] { conv1d(x, ops::zeros({2, 3, 3}, DType::f64)); }, {"conv1d", "f32", "f64"}));
}

// ============================== matmul ==============================

// a [..., M, K] @ b [..., K, N] with NumPy broadcasting of the batch dims (shapes assumed valid).
Tensor matmul_ref(const Tensor& a, const Tensor& b) {
  const Shape as = a.sizes(), bs = b.sizes();
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  const size_t nb = std::max(ab.size(), bb.size());
  ab.insert(ab.begin(), nb - ab.size(), 1);
  bb.insert(bb.begin(), nb - bb.size(), 1);
  Shape batch(nb);
  for (size_t i = 0; i < nb; ++i) batch[i] = std::max(ab[i], bb[i]);
  int64_t nbatch = 1;
  for (int64_t s : batch) nbatch *= s;
  const V av = vals(a), bv = vals(b);
  V out(static_cast<size_t>(nbatch * M * N));
  for (int64_t bi = 0; bi < nbatch; ++bi) {
    // Unravel bi over `batch`, then ravel over each operand's batch shape (size-1 dims broadcast).
    int64_t rem = bi, ia = 0, ib = 0, ma = 1, mb = 1;
    for (int64_t d = static_cast<int64_t>(nb) - 1; d >= 0; --d) {
      const int64_t i = rem % batch[d];
      rem /= batch[d];
      ia += (ab[d] == 1 ? 0 : i) * ma;
      ib += (bb[d] == 1 ? 0 : i) * mb;
      ma *= ab[d];
      mb *= bb[d];
    }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += av[(ia * M + m) * K + k] * bv[(ib * K + k) * N + n];
        out[(bi * M + m) * N + n] = s;
      }
  }
  Shape os = batch;
  os.push_back(M);
  os.push_back(N);
  return t64(out, os);
}

TEST(Matmul, HandComputed) {
  Tensor a = t64({1, 2, 3, 4}, {2, 2}), b = t64({5, 6, 7, 8}, {2, 2});
  EXPECT_TRUE(allclose(matmul(a, b), t64({19, 22, 43, 50}, {2, 2}), 0, 0));
  EXPECT_TRUE(allclose(matmul(ops::to(a, DType::f32), ops::to(b, DType::f32)), t64({19, 22, 43, 50}, {2, 2}), 0, 0));
  // aᵀ b through a transposed view: [[1,3],[2,4]] @ b
  EXPECT_TRUE(allclose(matmul(ops::transpose(a, 0, 1), b), t64({26, 30, 38, 44}, {2, 2}), 0, 0));
}

TEST(Matmul, ShapesAndDtypes) {
  struct Case {
    Shape a, b;
  };
  for (const Case& c : {Case{{3, 4}, {4, 2}}, Case{{1, 5}, {5, 1}}, Case{{2, 3, 4}, {2, 4, 5}}, Case{{2, 1, 3, 4}, {5, 4, 2}},
                        Case{{3, 4}, {2, 4, 5}}, Case{{2, 3, 4}, {4, 3}}, Case{{3, 1, 2, 3}, {1, 2, 3, 3}},
                        Case{{7, 5}, {5, 3}}}) {
    SCOPED_TRACE(shape_str(c.a) + " @ " + shape_str(c.b));
    Tensor a = uniform(c.a, -1, 1, 161), b = uniform(c.b, -1, 1, 162);
    expect_dtypes([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                  [](const std::vector<Tensor>& in) { return matmul_ref(in[0], in[1]); }, {a, b});
  }
  EXPECT_EQ(matmul(ops::zeros({2, 1, 3, 4}), ops::zeros({5, 4, 2})).sizes(), (Shape{2, 5, 3, 2}));
}

TEST(Matmul, NonContiguousOperands) {
  Tensor a0 = uniform({4, 3}, -1, 1, 171), b0 = uniform({2, 4}, -1, 1, 172);
  std::vector<std::pair<Tensor, Tensor>> cases = {
      {ops::transpose(a0, 0, 1), ops::transpose(b0, 0, 1)},                       // both transposed: [3,4] @ [4,2]
      {ops::transpose(a0, 0, 1), uniform({4, 2}, -1, 1, 173)},                    // a transposed only
      {ops::slice(uniform({6, 4}, -1, 1, 174), 0, 0, 6, 2), ops::slice(uniform({4, 6}, -1, 1, 175), 1, 1, 6, 2)},
      {ops::slice(ops::slice(uniform({6, 8}, -1, 1, 176), 0, 0, 6, 2), 1, 0, 8, 2), uniform({4, 3}, -1, 1, 177)},
      // Batch dims permuted out of order, and a matrix sliced from a larger one.
      {ops::permute(uniform({3, 2, 4}, -1, 1, 178), {1, 0, 2}), ops::narrow(uniform({2, 4, 5}, -1, 1, 179), 2, 1, 3)},
      // Batch-transposed in the matrix dims: [2, 3, 4] from [2, 4, 3].
      {ops::transpose(uniform({2, 4, 3}, -1, 1, 180), 1, 2), ops::transpose(uniform({2, 5, 4}, -1, 1, 181), 1, 2)},
      // Expanded (stride 0) operands.
      {ops::expand(uniform({1, 4}, -1, 1, 182), {3, 4}), uniform({4, 2}, -1, 1, 183)},
      {ops::expand(uniform({3, 4}, -1, 1, 184), {2, 3, 4}), ops::expand(uniform({4, 1}, -1, 1, 185), {4, 5})},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const auto& [a, b] = cases[i];
    EXPECT_TRUE(allclose(matmul(a, b), matmul_ref(a, b), 1e-12, 1e-12));
    EXPECT_TRUE(allclose(matmul(ops::to(a, DType::f32), ops::to(b, DType::f32)), matmul_ref(a, b), 1e-5, 1e-5));
  }
}

TEST(Matmul, Gradcheck) {
  auto f = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  EXPECT_TRUE(grad_ok(f, {param({3, 4}, -1, 1, 191), param({4, 2}, -1, 1, 192)}));
  EXPECT_TRUE(grad_ok(f, {param({2, 3, 4}, -1, 1, 193), param({2, 4, 3}, -1, 1, 194)}));
  EXPECT_TRUE(grad_ok(f, {param({2, 1, 3, 4}, -1, 1, 195), param({5, 4, 2}, -1, 1, 196)}));
  EXPECT_TRUE(grad_ok(f, {param({3, 4}, -1, 1, 197), param({2, 4, 3}, -1, 1, 198)}));
  EXPECT_TRUE(grad_ok(f, {nc_param({4, 3}, 0, 1, 199), nc_param({2, 4}, 0, 1, 200)}));
  EXPECT_TRUE(grad_ok(f, {nc_param({2, 4, 3}, 1, 2, 201), param({4, 2}, -1, 1, 202)}));
  // Only one operand differentiable.
  Tensor c = uniform({4, 2}, -1, 1, 203);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return matmul(in[0], c); }, {param({3, 4}, -1, 1, 204)}));
}

TEST(Matmul, EmptyDims) {
  EXPECT_EQ(matmul(ops::zeros({0, 4}), ops::zeros({4, 3})).sizes(), (Shape{0, 3}));
  EXPECT_EQ(matmul(ops::zeros({0, 2, 3}), ops::zeros({3, 4})).sizes(), (Shape{0, 2, 4}));
  // K = 0: an empty sum, so zeros (not uninitialised memory).
  Tensor a = param({3, 0}), b = param({0, 2});
  Tensor y = matmul(a, b);
  EXPECT_TRUE(allclose(y, ops::zeros({3, 2}, DType::f64), 0, 0));
  EXPECT_TRUE(allclose(matmul(ops::zeros({2, 3, 0}), ops::zeros({2, 0, 5})), ops::zeros({2, 3, 5}), 0, 0));
  backward(sum(y));
  EXPECT_EQ(a.grad().sizes(), (Shape{3, 0}));
  EXPECT_EQ(b.grad().sizes(), (Shape{0, 2}));
}

TEST(Matmul, BadInput) {
  EXPECT_TRUE(throws_with([] { matmul(ops::zeros({3, 4}), ops::zeros({5, 2})); }, {"matmul", "inner", "[3, 4]", "[5, 2]"}));
  EXPECT_TRUE(throws_with([] { matmul(ops::zeros({4}), ops::zeros({4, 2})); }, {"matmul", "2-D", "[4]"}));
  EXPECT_TRUE(throws_with([] { matmul(ops::zeros({2, 3, 4}), ops::zeros({3, 4, 5})); }, {"matmul", "broadcast", "[2]", "[3]"}));
  EXPECT_TRUE(throws_with([] { matmul(ops::zeros({3, 4}), ops::zeros({4, 2}, DType::f64)); }, {"matmul", "f32", "f64"}));
  EXPECT_TRUE(throws_with([] { matmul(ops::zeros({3, 4}, DType::i64), ops::zeros({4, 2}, DType::i64)); }, {"matmul", "i64"}));
}

// ============================== linear ==============================

Tensor linear_ref(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t in = w.size(1), out = w.size(0);
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  const V xv = vals(x), wv = vals(w), bv = bias.defined() ? vals(bias) : V(out, 0.0);
  V y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = bv[o];
      for (int64_t i = 0; i < in; ++i) s += xv[r * in + i] * wv[o * in + i];
      y[r * out + o] = s;
    }
  Shape os = x.sizes();
  os.back() = out;
  return t64(y, os);
}

TEST(Linear, HandComputed) {
  // y = x Wᵀ + b with x = (1, 2), W = [[1, 0], [1, 1], [0, -1]], b = (0.5, 0, 1)
  Tensor x = t64({1, 2}, {1, 2}), w = t64({1, 0, 1, 1, 0, -1}, {3, 2}), b = t64({0.5, 0, 1}, {3});
  EXPECT_TRUE(allclose(linear(x, w, b), t64({1.5, 3, -1}, {1, 3}), 0, 0));
  EXPECT_TRUE(allclose(linear(x, w), t64({1, 3, -2}, {1, 3}), 0, 0));
}

TEST(Linear, ShapesAndDtypes) {
  Tensor w = uniform({5, 4}, -1, 1, 211), b = uniform({5}, -1, 1, 212);
  for (const Shape& xs : {Shape{3, 4}, Shape{2, 3, 4}, Shape{4}, Shape{1, 1, 4}, Shape{7, 4}}) {
    SCOPED_TRACE(shape_str(xs));
    Tensor x = uniform(xs, -1, 1, 213);
    for (bool hb : {true, false}) {
      expect_dtypes([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                    [](const std::vector<Tensor>& in) { return linear_ref(in[0], in[1], in[2]); },
                    {x, w, hb ? b : Tensor()});
    }
  }
}

TEST(Linear, NonContiguousOperands) {
  Tensor x = ops::transpose(uniform({3, 4, 2}, -1, 1, 221), 1, 2);  // [3, 2, 4]
  Tensor w = ops::transpose(uniform({4, 5}, -1, 1, 222), 0, 1);     // [5, 4]
  Tensor b = ops::slice(uniform({10}, -1, 1, 223), 0, 1, 10, 2);    // [5], stride 2
  ASSERT_FALSE(x.is_contiguous());
  EXPECT_TRUE(allclose(linear(x, w, b), linear_ref(x, w, b), 1e-12, 1e-12));
  EXPECT_TRUE(allclose(linear(ops::to(x, DType::f32), ops::to(w, DType::f32), ops::to(b, DType::f32)),
                       linear_ref(x, w, b), 1e-5, 1e-5));
}

TEST(Linear, Gradcheck) {
  auto f = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
  EXPECT_TRUE(grad_ok(f, {param({2, 3, 4}, -1, 1, 231), param({5, 4}, -1, 1, 232), param({5}, -1, 1, 233)}));
  EXPECT_TRUE(grad_ok(f, {param({3, 4}, -1, 1, 234), param({2, 4}, -1, 1, 235), Tensor()}));
  EXPECT_TRUE(grad_ok(f, {param({4}, -1, 1, 236), param({3, 4}, -1, 1, 237), param({3}, -1, 1, 238)}));
  EXPECT_TRUE(grad_ok(f, {nc_param({2, 4, 3}, 1, 2, 239), nc_param({4, 3}, 0, 1, 240), param({3}, -1, 1, 241)}));
  // Only the weight and bias differentiable, as for a frozen input.
  Tensor x = uniform({3, 4}, -1, 1, 242);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return linear(x, in[0], in[1]); },
                      {param({2, 4}, -1, 1, 243), param({2}, -1, 1, 244)}));
}

TEST(Linear, EmptyInputs) {
  Tensor w = param({5, 4}, -1, 1, 2), b = param({5}, -1, 1, 3);
  Tensor x = param({0, 4});
  Tensor y = linear(x, w, b);
  EXPECT_EQ(y.sizes(), (Shape{0, 5}));
  backward(sum(y));
  EXPECT_EQ(vals(w.grad()), V(20, 0.0));
  EXPECT_EQ(vals(b.grad()), V(5, 0.0));
  EXPECT_EQ(linear(ops::zeros({2, 0, 4}), ops::zeros({5, 4})).sizes(), (Shape{2, 0, 5}));
  // Zero input features: the output is the bias.
  Tensor bb = uniform({3}, -1, 1, 4);
  EXPECT_TRUE(allclose(linear(ops::zeros({2, 0}, DType::f64), ops::zeros({3, 0}, DType::f64), bb),
                       linear_ref(ops::zeros({2, 0}, DType::f64), ops::zeros({3, 0}, DType::f64), bb), 0, 0));
  Tensor x0 = param({2, 0}), w0 = param({3, 0}), b0 = param({3}, -1, 1, 5);
  backward(sum(linear(x0, w0, b0)));
  EXPECT_EQ(x0.grad().sizes(), (Shape{2, 0}));
  EXPECT_EQ(w0.grad().sizes(), (Shape{3, 0}));
  EXPECT_EQ(vals(b0.grad()), V(3, 2.0));
  // Zero output features.
  Tensor x1 = param({2, 4}), w1 = param({0, 4});
  Tensor y1 = linear(x1, w1);
  EXPECT_EQ(y1.sizes(), (Shape{2, 0}));
  backward(sum(y1));
  EXPECT_EQ(vals(x1.grad()), V(8, 0.0));
}

TEST(Linear, BadInput) {
  Tensor x = ops::zeros({2, 4});
  EXPECT_TRUE(throws_with([&] { linear(x, ops::zeros({4})); }, {"linear", "weight", "[4]"}));
  EXPECT_TRUE(throws_with([&] { linear(x, ops::zeros({5, 3})); }, {"linear", "[2, 4]", "[5, 3]"}));
  EXPECT_TRUE(throws_with([&] { linear(x, ops::zeros({5, 4}), ops::zeros({4})); }, {"linear", "bias", "[4]", "5"}));
  EXPECT_TRUE(throws_with([&] { linear(x, ops::zeros({5, 4}, DType::f64)); }, {"linear", "f32", "f64"}));
  EXPECT_TRUE(throws_with([&] { linear(x, ops::zeros({5, 4}), ops::zeros({5}, DType::bf16)); }, {"linear", "f32", "bf16"}));
}

}  // namespace
}  // namespace strand

namespace strand {
namespace {
TEST(BatchNorm, RunningStatsComeInPairs) {
  Tensor x = ops::zeros({4, 3}), rm = ops::zeros({3});
  EXPECT_TRUE(test::throws_with([&] { ops::batch_norm(x, {}, {}, rm, {}, true, 0.1, 1e-5); },
                                {"running_mean and running_var"}));
}
TEST(Softmax, LogSoftmaxErrorsNameLogSoftmax) {
  EXPECT_TRUE(test::throws_with([] { ops::log_softmax(ops::zeros({2, 2}), 3); }, {"log_softmax", "dimension 3"}));
}
}  // namespace
}  // namespace strand
