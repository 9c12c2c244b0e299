#pragma once
// CUDA kernels behind the op layer (compiled only with STRAND_CUDA=ON). Same contracts as the
// cpu:: kernels of the same name; ops.cpp dispatches to them for CUDA tensors.
#include "kernels/cpu/cpu_kernels.h"  // cpu::AttentionMasks
#include "kernels/elementwise_math.h"
#include "tensor/tensor.h"

namespace strand::cuda {

void unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b);
void unary_backward(UnaryOp op, const Tensor& grad, const Tensor& v, const Tensor& out, double a, double b);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void compare(CompareOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);
void copy(const Tensor& src, const Tensor& dst);  // both on the same GPU; broadcast + cast
void fill(const Tensor& dst, double value);
void add_(const Tensor& dst, const Tensor& src, double alpha);
void rand_uniform(const Tensor& out, uint64_t seed, uint64_t offset);
void bernoulli(const Tensor& out, double p, double value, uint64_t seed, uint64_t offset);

// nn_rows.cu
void softmax(const Tensor& x, const Tensor& out, int64_t n, int64_t inner, bool log);
void softmax_backward(const Tensor& grad, const Tensor& y, const Tensor& out, int64_t n, int64_t inner, bool log);
void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y, const Tensor& mean,
                const Tensor& rstd);
void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gx, const Tensor& gw, const Tensor& gb);
void rms_norm(const Tensor& x, const Tensor& w, double eps, const Tensor& y, const Tensor& rstd);
void rms_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& gx,
                       const Tensor& gw);
void rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out, bool backward);
void softmax_pool(const Tensor& x, const Tensor& logits, const Tensor& out, int64_t window);
void softmax_pool_backward(const Tensor& grad, const Tensor& x, const Tensor& logits, const Tensor& gx,
                           const Tensor& gl, int64_t window);

// matmul_reduce.cu — cuBLAS GEMM (f32/f64, TF32 on request; bf16/f16 on the tensor cores with f32
// accumulation) and deterministic reductions
void matmul(const cpu::MatDesc& a, const cpu::MatDesc& b, const Tensor& out, const Shape& batch, int64_t M, int64_t N,
            int64_t K, const Tensor* bias_rows);
using cpu::RowReduce;
void reduce_rows(RowReduce r, const Tensor& x, int64_t rows, int64_t n, const Tensor& out);
void reduce_middle(RowReduce r, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out);
void max_rows(const Tensor& x, int64_t rows, int64_t n, const Tensor& values, const Tensor& indices);

// index.cu — index: i64, contiguous, on the device, already validated
void index_select(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);
void gather(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

// conv_norm.cu — cpu::conv1d / batch_norm contracts (statistics and sums in double, deterministic)
void conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t padding, const Tensor& out);
void conv1d_backward(const Tensor& grad, const Tensor& x, const Tensor& w, int64_t padding, const Tensor& gx,
                     const Tensor& gw, const Tensor& gb);
double batch_norm_stats(const Tensor& x, const Tensor& mean, const Tensor& var, const cpu::StatsReducer* reduce);
void batch_norm_apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& rstd,
                      const Tensor& y);
void batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         bool training, const Tensor& gx, const Tensor& gw, const Tensor& gb,
                         const cpu::StatsReducer* reduce);

// optim.cu — fused AdamW (cpu::adamw's contract), as multi-tensor launches; Σ x² of each
// (contiguous, floating) tensor in double, in one pass per dtype
void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamWStep& s);
void adamw_multi(const std::vector<AdamWParam>& params);
std::vector<double> sum_squares(const std::vector<Tensor>& xs);

// gemm_lt.cu — how many GEMMs have taken the cuBLASLt bias epilogue (tests check that it ran)
int64_t gemm_bias_lt_calls();

// attention.cu — the contract of cpu::attention_forward / attention_backward (f32/f64, head dim
// up to 256; masks are device pointers)
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const cpu::AttentionMasks& m, double scale,
                       const Tensor& out, const Tensor& lse);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const cpu::AttentionMasks& m, double scale, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv);

// attention_tc.cu — the same contract on the tensor cores for bf16/f16 q, k, v, out, dq, dk, dv
// (lse f32): head dims up to 128, sm_80 or newer; attention_tc_supported says whether a call fits.
bool attention_tc_supported(const Tensor& q, const Tensor& k);
void attention_forward_tc(const Tensor& q, const Tensor& k, const Tensor& v, const cpu::AttentionMasks& m,
                          double scale, const Tensor& out, const Tensor& lse);
void attention_backward_tc(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                           const Tensor& lse, const cpu::AttentionMasks& m, double scale, const Tensor& dq,
                           const Tensor& dk, const Tensor& dv);
// rel_attention.cu — the contract of cpu::rel_attention_forward / rel_attention_backward (f32/f64):
// blocks of queries through cuBLAS GEMMs batched over heads, row kernels for the shifted add,
// softmax, dropout and dS; memory bounded by the block, not by T².
void rel_attention_forward(const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r, const Tensor& v,
                           const cpu::DropoutMask& d, const Tensor& out, const Tensor& lse);
void rel_attention_backward(const Tensor& dout, const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r,
                            const Tensor& v, const Tensor& out, const Tensor& lse, const cpu::DropoutMask& d,
                            const Tensor& dqc, const Tensor& dqr, const Tensor& dk, const Tensor& dr, const Tensor& dv);

}  // namespace strand::cuda
