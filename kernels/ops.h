#pragma once
// strand::ops — non-differentiable operations on Tensors. Each validates its inputs (a bad shape,
// dtype or device is a strand::Error naming them), allocates the output and dispatches to the
// cpu:: or cuda:: kernel for the inputs' device. The differentiable API over these is in
// autograd/functional.h. Binary ops broadcast like NumPy; operands must share dtype and device.
#include <functional>
#include <optional>
#include <tuple>
#include <vector>

#include "kernels/adamw_step.h"
#include "kernels/elementwise_math.h"
#include "tensor/generator.h"
#include "tensor/tensor.h"

namespace strand::ops {

// ---------------- factories ----------------
Tensor empty(const Shape& s, TensorOptions o = {});
Tensor zeros(const Shape& s, TensorOptions o = {});
Tensor ones(const Shape& s, TensorOptions o = {});
Tensor full(const Shape& s, double value, TensorOptions o = {});
Tensor scalar_tensor(double value, TensorOptions o = {});  // 0-d
Tensor arange(double start, double end, double step = 1, TensorOptions o = {DType::i64});
Tensor zeros_like(const Tensor& t);
Tensor empty_like(const Tensor& t);
template <class T>
Tensor from_vector(const std::vector<T>& v, const Shape& shape, Device device = Device::cpu());
template <class T>
std::vector<T> to_vector(const Tensor& t);  // any layout and device; converts element type
double item(const Tensor& t);               // the value of a one-element tensor
// Random: element i of the call is philox(seed, i, offset) with one generator offset per call.
Tensor rand(const Shape& s, TensorOptions o = {}, Generator* g = nullptr);      // U[0, 1)
Tensor randn(const Shape& s, TensorOptions o = {}, Generator* g = nullptr);     // N(0, 1), Box-Muller
Tensor bernoulli(const Shape& s, double p, TensorOptions o = {}, Generator* g = nullptr);  // 1 w.p. p

// ---------------- views (share storage, never copy) ----------------
Tensor view(const Tensor& x, Shape shape);     // one -1 allowed; error if strides do not allow it
Tensor reshape(const Tensor& x, Shape shape);  // a view when possible, else a contiguous copy
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x);  // all size-1 dims
Tensor expand(const Tensor& x, const Shape& shape);  // -1 keeps a dim; new leading dims allowed
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor detach(const Tensor& x);  // same storage, no autograd history

// ---------------- copies and casts ----------------
Tensor contiguous(const Tensor& x);  // x itself when already contiguous
Tensor clone(const Tensor& x);
Tensor to(const Tensor& x, DType dtype);    // x itself when the dtype already matches
Tensor to(const Tensor& x, Device device);  // x itself when already there
void copy_(const Tensor& dst, const Tensor& src);  // src broadcast to dst; casts dtype; any devices
void fill_(const Tensor& dst, double value);
void zero_(const Tensor& dst);

// ---------------- elementwise ----------------
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
Tensor unary(UnaryOp op, const Tensor& x, double a = 0, double b = 0);
// grad * d(op)/dx, where v is x (or y when unary_backward_uses_output(op)).
Tensor unary_backward(UnaryOp op, const Tensor& grad, const Tensor& v, double a = 0, double b = 0);
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor compare(CompareOp op, const Tensor& a, const Tensor& b);  // -> bool
Tensor compare(CompareOp op, const Tensor& a, double b);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
// In place: dst += alpha * src (src broadcast to dst). Used for gradient accumulation.
void add_(const Tensor& dst, const Tensor& src, double alpha = 1);

inline Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::add, a, b); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }
inline Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::div, a, b); }
inline Tensor add(const Tensor& a, double s) { return unary(UnaryOp::add_scalar, a, s); }
inline Tensor mul(const Tensor& a, double s) { return unary(UnaryOp::mul_scalar, a, s); }
inline Tensor neg(const Tensor& x) { return unary(UnaryOp::neg, x); }
inline Tensor exp(const Tensor& x) { return unary(UnaryOp::exp, x); }
inline Tensor log(const Tensor& x) { return unary(UnaryOp::log, x); }
inline Tensor sqrt(const Tensor& x) { return unary(UnaryOp::sqrt, x); }

// ---------------- reductions ----------------
// dims empty = all dims. sum/mean of bool or integers give i64/f32 as PyTorch does not: here they
// are errors for mean (needs floating) and i64 for sum.
Tensor sum(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor var(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);  // population
std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);  // values, i64 argmax
Tensor amax(const Tensor& x);  // max over all elements, 0-d
// Sums a broadcast gradient back to `shape` (the inverse of expand).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---------------- linear algebra ----------------
// a [..., M, K] @ b [..., K, N], batch dims broadcast; both operands at least 2-D. Transposed
// views go to BLAS as transposes, without copies.
Tensor matmul(const Tensor& a, const Tensor& b);
// f32 GEMMs on CUDA (matmul, linear, conv1d) in TF32 on the tensor cores: inputs rounded to a
// 10-bit mantissa, fp32 accumulation; several times faster, about 1e-3 relative error. Off by
// default, as PyTorch's torch.backends.cuda.matmul.allow_tf32; no effect on the CPU or on f64.
void set_allow_tf32(bool on);
bool allow_tf32();
// bf16/f16 fused attention on a GPU (sm_80+, head dim <= 128) through the tensor-core kernels
// (kernels/cuda/attention_tc.cu: P and dS rounded to the operand type before their products, as
// FlashAttention does; in f16 that limits dS to f16's range, in bf16 it does not) instead of
// converting to f32 for the CUDA-core kernels. Off by default until
// its parity tests have run on a GPU; STRAND_TC_ATTENTION=1 in the environment turns it on at start.
void set_tensor_core_attention(bool on);
bool tensor_core_attention();
// linear with a bias on a GPU (f32, bf16, f16) as one cuBLASLt GEMM with the bias epilogue
// (kernels/cuda/gemm_lt.cu, PyTorch's path for F.linear) instead of a bias pre-fill plus a cuBLAS
// GEMM onto it. Off by default until its parity test has run on a GPU; STRAND_CUBLASLT_BIAS=1 in
// the environment turns it on at start.
void set_cublaslt_bias(bool on);
bool cublaslt_bias();
// conv1d on a GPU (f32/TF32, bf16, f16) through cuDNN (kernels/cuda/conv_cudnn.cu: NHWC with H = 1,
// deterministic algorithms only) instead of im2col + cuBLAS, where the build found cuDNN. Off by
// default until its parity test has run on a GPU and the benchmark says which is faster;
// STRAND_CUDNN_CONV=1 in the environment turns it on at start.
void set_cudnn_conv(bool on);
bool cudnn_conv();
// The models' attention on a GPU through the fused ops where it is still composed there: Enformer's
// relative-position attention (ops::rel_attention) and attention with dropout (ESM-2, AIDO.RNA).
// Off by default until the CUDA kernels' parity tests have run on a GPU;
// STRAND_FUSED_GPU_ATTENTION=1 in the environment turns it on at start.
void set_fused_gpu_attention(bool on);
bool fused_gpu_attention();
// One of the switches above (its set/get pair) set for a scope, then put back as it was (tests,
// benchmarks): SwitchScope tc(set_tensor_core_attention, tensor_core_attention, true).
class SwitchScope {
 public:
  SwitchScope(void (*set)(bool), bool (*get)(), bool on) : set_(set), was_(get()) { set_(on); }
  ~SwitchScope() { set_(was_); }
  SwitchScope(const SwitchScope&) = delete;
  SwitchScope& operator=(const SwitchScope&) = delete;

 private:
  void (*set_)(bool);
  bool was_;
};
// x [..., in] · wᵀ (w [out, in]) + bias [out] (bias optional).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = {});

// ---------------- normalisation and softmax (over the last dim unless said) ----------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim);
Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim);

struct NormOut {
  Tensor y, mean, rstd;  // mean/rstd: f32 (f64 for f64 input), shape = leading dims of x
};
NormOut layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps);
std::tuple<Tensor, Tensor, Tensor> layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w,
                                                       const Tensor& mean, const Tensor& rstd);
NormOut rms_norm(const Tensor& x, const Tensor& w, double eps);  // mean undefined
std::tuple<Tensor, Tensor> rms_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w,
                                             const Tensor& rstd);

// Channels-last batch norm: x [..., C], statistics over every dim but the last. In training the
// batch statistics normalise and running stats are updated in place (running_var with the
// unbiased variance, as PyTorch). NormOut.mean/rstd hold the statistics used (batch or running).
// w and b are of x's dtype or, beside a bf16/f16 x (bf16-mixed), f32: the kernels read the half
// input (and gradient) as they are, compute in f32 and round y and gx once; gw and gb come in w's
// dtype (gb without w: in compute_dtype(x)).
NormOut batch_norm(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& running_mean,
                   const Tensor& running_var, bool training, double momentum, double eps);
// The normalisation alone, from given statistics: batch_norm's y, bit for bit, from its mean and
// rstd ([C], of x's compute dtype).
Tensor batch_norm_apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& rstd);
// sync: the forward summed its statistics through the reducer (which must still be set).
std::tuple<Tensor, Tensor, Tensor> batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w,
                                                       const Tensor& mean, const Tensor& rstd, bool training,
                                                       bool sync = false);
// SyncBatchNorm: while a reducer is set (train/dist installs one for multi-process runs),
// batch_norm in training mode sums its per-channel count, sums and squared deviations across
// processes, and its backward sums the gradient terms the same way, so statistics cover the global
// batch. The reducer sums a double buffer in place; every process must run the same batch norms in
// the same order. An empty function restores local statistics.
using BatchNormReducer = std::function<void(std::vector<double>&)>;
void set_batch_norm_reducer(BatchNormReducer r);
const BatchNormReducer& batch_norm_reducer();

// ---------------- fused attention ----------------
// softmax(scale · q kᵀ + masks) v without materialising the [B, H, Tq, Tk] logits (see
// kernels/cpu/attention.cpp). q [B, H, Tq, D], k and v [B, H, Tk, D], one dtype; views with any
// strides are read in place (the models pass transposed [B, T, H, D] projections).
struct AttentionParams {
  double scale = 1.0;
  Tensor key_pad;    // bool/u8 [B, Tk], true = padded key: logit -> lowest finite value (masked_fill)
  Tensor query_pad;  // bool/u8 [B, Tq], true = padded query, whose logits pass no gradient and whose
                    // output row is 0 (AIDO.RNA) or, with zero_padded_queries off, the uniform
                    // average of v (every key masked for it: ModelGenerator's cross-attention)
  bool zero_padded_queries = true;
  // Dropout on the probabilities: one generator offset is taken and the kept probabilities are those ops::dropout_mask would keep
  // for a contiguous [B, H, Tq, Tk] tensor with that offset (the composed dropout(softmax(...))).
  double dropout = 0;
  Generator* generator = nullptr;  // default_generator() when null
};
struct AttentionOut {
  Tensor out;  // [B, H, Tq, D]: a transposed view of a contiguous [B, Tq, H, D] tensor
  Tensor lse;  // [B, H, Tq] logsumexp of each row (+inf: padded query; -inf: every key padded)
  uint64_t seed = 0, offset = 0;  // the dropout mask's, for backward
};
AttentionOut fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p);
// Gradients of q, k, v (each laid out as fwd.out is).
std::tuple<Tensor, Tensor, Tensor> fused_attention_backward(const Tensor& grad, const Tensor& q, const Tensor& k,
                                                            const Tensor& v, const AttentionOut& fwd,
                                                            const AttentionParams& p);

// ---------------- Enformer's relative-position attention, fused ----------------
// dropout(softmax(qc kᵀ + rel_shift(qr rᵀ))) v without materialising the [B, H, T, T] logits or the
// [B, H, T, 2T-1] position logits (kernels/cpu/rel_attention.cpp; on a GPU kernels/cuda/
// rel_attention.cu, blocks of 256 queries, head dims above 0): qc = q + content bias and
// qr = q + position bias [B, H, T, Dk] (q already scaled), k [B, H, T, Dk], r [H, 2T-1, Dk] the
// projected relative positions (row m: distance m - (T-1)), v [B, H, T, Dv]. With dropout > 0 one
// generator offset is taken and the kept logits are those ops::dropout_mask would keep for a
// contiguous [B, H, T, T] tensor with that offset, so the composed computation is reproduced.
struct RelAttentionOut {
  Tensor out;  // [B, H, T, Dv]: a transposed view of a contiguous [B, T, H, Dv] tensor
  Tensor lse;  // [B, H, T] logsumexp of each row (before dropout)
  uint64_t seed = 0, offset = 0;  // the dropout mask's, for backward
};
RelAttentionOut rel_attention(const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r, const Tensor& v,
                              double dropout = 0, Generator* g = nullptr);
// Gradients of qc, qr, k, r, v (r's contiguous [H, 2T-1, Dk], the others laid out as `out`).
std::vector<Tensor> rel_attention_backward(const Tensor& grad, const Tensor& qc, const Tensor& qr, const Tensor& k,
                                           const Tensor& r, const Tensor& v, const RelAttentionOut& fwd, double dropout);

// ---------------- rotary position embedding ----------------
// GPT-NeoX/ESM rotate-half RoPE on the first rd = cos.size(-1) features of x [..., T, hd]:
// x * cos + rotate_half(x) * sin, the rest passed through; cos/sin [T, rd] of x's dtype. The result
// keeps x's memory order (a transposed [B, T, H, D] view stays one). backward: the gradient of x.
Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin);
Tensor rotary_backward(const Tensor& grad, const Tensor& cos, const Tensor& sin);

// ---------------- softmax pooling ----------------
// Enformer's AttentionPool after its logits: x, logits [..., L, C] with L a multiple of `window`
// -> [..., L / window, C], each output the sum over a window of positions of x weighted by the
// softmax (over the window, per channel) of logits. Half types compute in f32; the output is of
// out_dtype (default x's: f32 is the autocast result, as the composed softmax and product give).
// backward: the gradients of x and logits, in their dtypes (half types rounded once).
Tensor softmax_pool(const Tensor& x, const Tensor& logits, int64_t window, std::optional<DType> out_dtype = std::nullopt);
std::pair<Tensor, Tensor> softmax_pool_backward(const Tensor& grad, const Tensor& x, const Tensor& logits,
                                                int64_t window);

// ---------------- convolution ----------------
// Channels-last 1-D convolution: x [B, L, Cin], w [Cout, Cin, K] (PyTorch layout), bias [Cout],
// stride 1, zero padding `padding` on both sides (-1 = K/2, "same" for odd K). -> [B, L', Cout].
Tensor conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t padding = -1);
std::tuple<Tensor, Tensor, Tensor> conv1d_backward(const Tensor& grad, const Tensor& x, const Tensor& w,
                                                   int64_t padding, bool need_bias);

// ---------------- indexing ----------------
Tensor embedding(const Tensor& weight, const Tensor& indices);
// Gradient of embedding: rows summed in index order (deterministic); padding_idx (>= 0) gets none.
Tensor embedding_backward(const Tensor& grad, const Tensor& indices, int64_t num_weights, int64_t padding_idx);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
void check_stack_shapes(const std::vector<Tensor>& xs);  // all equal, at least one
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out = zeros(shape); out.index_select(dim, index) += src (in index order).
Tensor index_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// out = zeros(shape); out[... index[i] ...] += src[i] along dim (torch.scatter_add semantics).
Tensor scatter_add(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);
// pads = {left, right} for the last dim, then {left, right} for the one before, ... (as torch's F.pad).
// Negative pads crop.
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value = 0);

// ---------------- dropout and losses ----------------
// Keep-mask scaled by 1/(1-p): values are 0 or 1/(1-p), of x's dtype and shape.
Tensor dropout_mask(const Shape& shape, double p, TensorOptions o, Generator* g = nullptr);
enum class Reduction { none, mean, sum };
Tensor mse_loss(const Tensor& pred, const Tensor& target, Reduction r = Reduction::mean);

// ---------------- optimizer ----------------
// One fused AdamW step, in place on p, m, v (and g when s.grad_scale != 1; their versions are
// bumped). All four tensors must be contiguous, of one shape, dtype and device; false (nothing
// done) when they are not, so the caller can fall back to the unfused ops.
bool adamw_(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s);
// adamw_ on every entry, with the same numbers. When every entry qualifies and all are on one GPU,
// the step is a few multi-tensor launches (up to 36 tensors or 320 chunks of 64Ki elements each)
// instead of one launch per parameter. False, changing nothing, when any entry does not qualify.
bool adamw_multi_(const std::vector<AdamWParam>& params);
// Σ x² of each tensor, in double: CPU tensors one by one (a sum over an f64 copy), and the CUDA
// tensors of one device in one multi-tensor pass per dtype (per-chunk partials summed on the host in
// a fixed order). Deterministic on both; the two can differ in the last bits (summation order).
std::vector<double> sum_squares(const std::vector<Tensor>& xs);

// ---------------- checks shared by the layers above ----------------
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);
void check_floating(const Tensor& a, const char* op);

// ---------------- Enformer relative shift ----------------
// x [..., T, 2T-1] (column m <-> relative distance m-(T-1)) -> [..., T, T] with
// out[..., i, j] = x[..., i, T-1 + j-i]: the Transformer-XL shift by index arithmetic, as a strided
// view (row stride 2T-2, offset T-1) of x — or of a contiguous copy when x's last two dims are not
// contiguous. The view never reads the same element twice.
Tensor rel_shift(const Tensor& x);

}  // namespace strand::ops
