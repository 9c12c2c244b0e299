#pragma once
#include <algorithm>
// CPU kernels: raw compute on tensors the op layer has already validated and allocated. Inputs of
// the non-elementwise kernels are contiguous; elementwise kernels take any strides.
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/adamw_step.h"
#include "kernels/elementwise_math.h"
#include "tensor/tensor.h"

namespace strand::cpu {

// elementwise.cpp — out has the broadcast shape and is contiguous
void unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b);
void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& v, const Tensor& out, double a, double b);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void compare(CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);
void copy(const Tensor& src, const Tensor& dst);  // src broadcast to dst's shape, any strides, casts
void fill(const Tensor& dst, double value);
void add_(const Tensor& dst, const Tensor& src, double alpha);

// random.cpp — out contiguous
void rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset);
void randn(const Tensor& out, uint64_t seed, uint64_t offset);
// out = (u < p) ? value : 0
void bernoulli(const Tensor& out, double p, double value, uint64_t seed, uint64_t offset);

// reduce.cpp — x contiguous viewed as [rows, n]; out contiguous [rows]
enum class RowReduce { sum, mean, var };
void reduce_rows(RowReduce r, const Tensor& x, int64_t rows, int64_t n, const Tensor& out);
// x contiguous viewed as [outer, n, inner] (inner > 1), reduced over n -> out [outer, inner]: the
// reduced dims are a block in the middle (a bias gradient summing rows), read without a copy.
void reduce_middle(RowReduce r, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out);
void max_rows(const Tensor& x, int64_t rows, int64_t n, const Tensor& values, const Tensor& indices);

// matmul.cpp — C[b] = A[b] @ B[b] for broadcast batch offsets. Each operand's matrix is addressed
// by (row stride, col stride) with one of them 1, so transposed views need no copy.
struct MatDesc {
  const Tensor* t;
  Shape batch_strides;  // per batch dim, 0 where broadcast
  int64_t rs, cs;       // stride of rows and columns of the matrix
};
void matmul(const MatDesc& a, const MatDesc& b, const Tensor& out, const Shape& batch, int64_t M, int64_t N,
            int64_t K, const Tensor* bias_rows);
// Element offsets of a's and b's matrices for each batch index in row-major order (shared by the
// CPU and CUDA matmul loops).
inline std::vector<std::pair<int64_t, int64_t>> batch_offsets(const MatDesc& a, const MatDesc& b, const Shape& batch) {
  std::vector<std::pair<int64_t, int64_t>> r(static_cast<size_t>(shape_numel(batch)));
  std::vector<int64_t> idx(batch.size(), 0);
  for (auto& [oa, ob] : r) {
    oa = ob = 0;
    for (size_t d = 0; d < batch.size(); ++d) {
      oa += idx[d] * a.batch_strides[d];
      ob += idx[d] * b.batch_strides[d];
    }
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      if (++idx[d] < batch[d]) break;
      idx[d] = 0;
    }
  }
  return r;
}
// Plain GEMM on contiguous-ish buffers (row-major, leading dims), for float and double.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// softmax.cpp — over the middle dim of contiguous tensors viewed as [outer, n, inner]
void softmax(const Tensor& x, const Tensor& out, int64_t n, int64_t inner, bool log);
void softmax_backward(const Tensor& grad, const Tensor& y, const Tensor& out, int64_t n, int64_t inner, bool log);

// layer_norm.cpp / rms_norm.cpp — rows of the last dim; w/b may be undefined
void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                const Tensor& mean, const Tensor& rstd);
void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean,
                         const Tensor& rstd, const Tensor& gx, const Tensor& gw, const Tensor& gb);
void rms_norm(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd);
void rms_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       const Tensor& gx, const Tensor& gw);

// batch_norm.cpp — x [N, C]. A reducer sums a buffer in place across processes (SyncBatchNorm);
// null: statistics of this process's rows only.
using StatsReducer = std::function<void(std::vector<double>&)>;
// Population var; returns the (global) row count.
double batch_norm_stats(const Tensor& x, const Tensor& mean, const Tensor& var, const StatsReducer* reduce = nullptr);
// SyncBatchNorm's exchanges, shared by the CPU and CUDA kernels: per-channel sums `a` (and `b`)
// and the row count, summed across processes in one call; returns the global count.
inline double reduce_channel_sums(const StatsReducer& r, double count, std::vector<double>& a,
                                  std::vector<double>* b = nullptr) {
  std::vector<double> buf(a);
  if (b) buf.insert(buf.end(), b->begin(), b->end());
  buf.push_back(count);
  r(buf);
  std::copy(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(a.size()), a.begin());
  if (b) std::copy(buf.begin() + static_cast<std::ptrdiff_t>(a.size()), buf.end() - 1, b->begin());
  return buf.back();
}
// The weight, bias (and weight/bias gradients) are of x's dtype or, for a bf16/f16 x, f32
// (bf16-mixed); the statistics of compute_dtype(x); y, grad and gx of x's dtype.
inline DType batch_norm_param_dtype(const Tensor& x, const Tensor& w, const Tensor& b) {
  return w.defined() ? w.dtype() : b.defined() ? b.dtype() : x.dtype();
}
void batch_norm_apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean,
                      const Tensor& rstd, const Tensor& y);
void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean,
                         const Tensor& rstd, bool training, const Tensor& gx, const Tensor& gw,
                         const Tensor& gb, const StatsReducer* reduce = nullptr);

// conv1d.cpp — x [B, L, Cin], w [Cout, Cin, K], out [B, Lout, Cout]
void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t padding, const Tensor& out);
void conv1d_backward(const Tensor& grad, const Tensor& x, const Tensor& w, int64_t padding, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb);

// attention.cpp — q [B, H, Tq, D], k/v [B, H, Tk, D], out/dq/dk/dv likewise (any strides with a
// unit last one); lse [B, H, Tq] contiguous, of q's dtype. Masks: u8, contiguous, or null.
// Dropout on attention probabilities (p > 0): probability (b, h, i, j) is kept when
// philox(seed, ((b·H + h)·Tq + i)·Tk + j, offset) falls below 1 - p and scaled by 1/(1-p): the
// mask ops::dropout_mask draws for a contiguous [B, H, Tq, Tk] tensor with that offset, so a fused
// kernel reproduces the composed dropout(softmax(...)) exactly (keep_factors in attention_common.h).
struct DropoutMask {
  double p = 0;
  uint64_t seed = 0, offset = 0;
};
struct AttentionMasks {
  const uint8_t* key_pad = nullptr;    // [B, Tk], 1 = padded key
  const uint8_t* query_pad = nullptr;  // [B, Tq], 1 = padded query
  bool zero_padded_queries = true;     // its output row is 0; otherwise every key is masked for it
  DropoutMask dropout;                 // on the probabilities
};
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMasks& m, double scale,
                       const Tensor& out, const Tensor& lse);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const AttentionMasks& m, double scale, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv);

// rel_attention.cpp — Enformer's attention fused (ops::rel_attention): logits
// S[i, j] = qc_i · k_j + qr_i · r[T-1 + j - i] (the content term and the relative-shifted position
// term), P = softmax(S), out = dropout(P) v. qc, qr, k [B, H, T, Dk], r [H, 2T-1, Dk],
// v/out [B, H, T, Dv] (unit last stride, other strides read as given), lse [B, H, T] contiguous;
// dropout as DropoutMask says. dr is written whole (the sum over the batch, in order).
void rel_attention_forward(const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r, const Tensor& v,
                           const DropoutMask& d, const Tensor& out, const Tensor& lse);
void rel_attention_backward(const Tensor& dout, const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r,
                            const Tensor& v, const Tensor& out, const Tensor& lse, const DropoutMask& d,
                            const Tensor& dqc, const Tensor& dqr, const Tensor& dk, const Tensor& dr, const Tensor& dv);

// rotary.cpp — x/out [..., T, hd] (any strides, unit last), cos/sin [T, rd] contiguous, rd <= hd
// even; backward applies the transposed map (x is then the incoming gradient).
void rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out, bool backward);

// softmax_pool.cpp — x, logits [rows * W, C] contiguous, out [rows, C]: out = sum over each window
// of W rows of x weighted by the softmax of logits; backward writes gx, gl like x (f32/f64)
void softmax_pool(const Tensor& x, const Tensor& logits, const Tensor& out, int64_t window);
void softmax_pool_backward(const Tensor& grad, const Tensor& x, const Tensor& logits, const Tensor& gx,
                           const Tensor& gl, int64_t window);

// optim.cpp — fused AdamW on contiguous tensors of one dtype
void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s);

// index.cpp — x/src/out contiguous, viewed as [outer, dim, inner]
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

}  // namespace strand::cpu
