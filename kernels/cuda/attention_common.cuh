#pragma once
// What the CUDA fused-attention kernels share (attention.cuh: row and tiled kernels on CUDA cores;
// attention_tc.cuh: tensor-core kernels for bf16/f16): the problem's geometry and masks, the dropout
// factor of a probability, the masked logit value and p from the saved logsumexp.
#include <cfloat>
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/dropout.cuh"

namespace strand::cuda {

constexpr int kMaxPerLane = 8;  // head dim up to 256 (32 lanes x 8) in the row kernels

struct Geometry {
  int64_t B, H, Tq, Tk, D;
  double scale;
  const uint8_t* key_pad;
  const uint8_t* query_pad;
  bool zero_padded_queries;
  DropFactor drop;  // dropout on the probabilities
};

// The dropout factor of probability (b, h, i, j), at its index in a contiguous [B, H, Tq, Tk] tensor.
template <class A>
__device__ A drop_factor(const Geometry& g, int64_t b, int64_t h, int64_t i, int64_t j) {
  return A(g.drop(((b * g.H + h) * g.Tq + i) * g.Tk + j));
}

template <class A>
__device__ A lowest() {
  return sizeof(A) == 8 ? A(-DBL_MAX) : A(-FLT_MAX);
}

// p(i, j) from the saved lse: +inf -> 0 (zeroed query), -inf -> 1/Tk (uniform row)
template <class A>
__device__ A prob(A s, A l, int64_t Tk) {
  if (isinf(l)) return l > 0 ? A(0) : A(1) / A(Tk);
  return exp(s - l);
}

inline Geometry geometry(const Tensor& q, const Tensor& k, const cpu::AttentionMasks& m, double scale) {
  STRAND_CHECK(q.size(3) <= 32 * kMaxPerLane, "CUDA attention supports head dims up to ", 32 * kMaxPerLane, ", got ",
               q.size(3));
  return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), scale, m.key_pad, m.query_pad, m.zero_padded_queries,
          DropFactor::of(m.dropout)};
}

}  // namespace strand::cuda
