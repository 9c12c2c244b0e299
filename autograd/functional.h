#pragma once
// The differentiable API (namespace strand). Each function computes through strand::ops and, when
// grad mode is on and an input requires grad, records one Node holding what its backward needs.
// Factories and non-differentiable ops are re-exported from strand::ops.
// Dtypes: unlike strand::ops, operands of mixed precision (bf16/f16 with f32) promote to f32 in
// the elementwise ops, where, concat/stack and rotary, as in PyTorch (f64 never mixes: that stays
// an error); under bf16 autocast the GEMM, norm, softmax and loss functions cast their operands as
// autograd/autocast.h lists. Every cast is recorded, so gradients return in each input's dtype.
#include <functional>
#include <tuple>
#include <vector>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "kernels/ops.h"

namespace strand {

using ops::arange;
using ops::bernoulli;
using ops::empty;
using ops::from_vector;
using ops::full;
using ops::item;
using ops::ones;
using ops::rand;
using ops::randn;
using ops::scalar_tensor;
using ops::to_vector;
using ops::zeros;
using ops::zeros_like;
using Reduction = ops::Reduction;

// ---- views and copies ----
Tensor view(const Tensor& x, Shape shape);
Tensor reshape(const Tensor& x, Shape shape);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor contiguous(const Tensor& x);
Tensor clone(const Tensor& x);
Tensor to(const Tensor& x, DType dtype);
Tensor to(const Tensor& x, Device device);
Tensor detach(const Tensor& x);

// ---- elementwise (binary ops broadcast) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);
Tensor rsub(double s, const Tensor& a);  // s - a
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor abs(const Tensor& x);
Tensor sign(const Tensor& x);
Tensor clamp(const Tensor& x, double min, double max);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor softplus(const Tensor& x, double beta = 1, double threshold = 20);
Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x);          // exact: x * Phi(x)
Tensor gelu_sigmoid(const Tensor& x);  // x * sigmoid(1.702 x)
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
// Comparisons give bool tensors and no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return div(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator-(const Tensor& x) { return neg(x); }

// ---- reductions ----
Tensor sum(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor var(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);  // population
std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);  // values, indices

// ---- linear algebra ----
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = {});

// ---- nn functions ----
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// Softmax pooling over windows of `window` positions (ops::softmax_pool): the sum of x over each
// window weighted by softmax(logits) over it, per channel. Enformer's AttentionPool.
Tensor softmax_pool(const Tensor& x, const Tensor& logits, int64_t window);
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps = 1e-6);
// Channels-last ([..., C]); updates running stats in place when training and they are given.
Tensor batch_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5);
Tensor conv1d(const Tensor& x, const Tensor& w, const Tensor& bias = {}, int64_t padding = -1);
// Rotate-half RoPE (ops::rotary) on the first cos.size(-1) features; cos/sin are constants.
Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin);
// Fused softmax(scale · q kᵀ + masks) v (ops::fused_attention): q [B, H, Tq, D], k/v [B, H, Tk, D]; the
// result is a [B, H, Tq, D] view of a contiguous [B, Tq, H, D] tensor. Attention dropout
// (p.dropout) draws the mask dropout() would draw for the [B, H, Tq, Tk] probabilities.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionParams& p = {});
// Enformer's attention fused (ops::rel_attention): dropout(softmax(qc kᵀ + rel_shift(qr rᵀ))) v,
// a [B, H, T, Dv] view of a contiguous [B, T, H, Dv] tensor; dropout p (> 0 only in training)
// draws the mask dropout() would draw for the [B, H, T, T] probabilities.
Tensor rel_attention(const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r, const Tensor& v,
                     double dropout = 0, Generator* g = nullptr);
Tensor embedding(const Tensor& weight, const Tensor& indices, int64_t padding_idx = -1);
Tensor dropout(const Tensor& x, double p, bool training, Generator* g = nullptr);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value = 0);
Tensor mse_loss(const Tensor& pred, const Tensor& target, Reduction r = Reduction::mean);

// ---- activation checkpointing ----
// Runs fn without recording its graph and recomputes it during backward (restoring the random
// state, so dropout masks match). Gradients reach `inputs` and any parameters fn captures.
using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs);

// Enformer's relative shift (see ops::rel_shift): x [..., T, 2T-1] -> [..., T, T] view; the
// gradient scatters back into a zero [..., T, 2T-1] tensor (one-to-one, so no accumulation).
Tensor rel_shift(const Tensor& x);

}  // namespace strand
