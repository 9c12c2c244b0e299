// The fused attention op: shape/dtype/mask checks, half types through f32 (or, on a GPU with
// tensor_core_attention on, as they are through the tensor-core kernels), outputs laid out
// [B, T, H, D] (so the models' transpose-then-reshape back to [B, T, H·D] is free).
#include <atomic>
#include <string>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/dispatch.h"
#include "kernels/ops.h"

namespace strand::ops {

namespace {
// [B, T, H, D] contiguous storage, returned as its [B, H, T, D] view.
Tensor empty_bhtd(int64_t B, int64_t H, int64_t T, int64_t D, DType dt, Device dev) {
  return transpose(empty({B, T, H, D}, TensorOptions(dt, dev)), 1, 2);
}

Tensor mask_bytes(const Tensor& m, const Tensor& q, int64_t B, int64_t T, const char* what) {
  if (!m.defined()) return m;
  STRAND_CHECK(m.dtype() == DType::b8 || m.dtype() == DType::u8, "attention: ", what,
               " must be bool or u8, got ", dtype_name(m.dtype()));
  STRAND_CHECK(m.dim() == 2 && m.size(0) == B && m.size(1) == T, "attention: ", what, " must be [", B, ", ", T,
               "], got ", shape_str(m.sizes()));
  check_same_device(m, q, "attention");
  return contiguous(m);
}
cpu::AttentionMasks masks_of(const Tensor& kp, const Tensor& qp, bool zero_padded_queries, double dropout,
                             uint64_t seed, uint64_t offset) {
  return {kp.defined() ? static_cast<const uint8_t*>(kp.raw_data()) : nullptr,
          qp.defined() ? static_cast<const uint8_t*>(qp.raw_data()) : nullptr, zero_padded_queries,
          {dropout, seed, offset}};
}
void check_dropout(double p, const char* op) { STRAND_CHECK(p >= 0 && p < 1, op, ": dropout must be in [0, 1), got ", p); }
// The mask of a dropout p: one generator offset (none when p = 0), as ops::dropout_mask takes one.
cpu::DropoutMask draw_dropout(double p, Generator* g) {
  if (p <= 0) return {};
  Generator& gen = g ? *g : default_generator();
  return {p, gen.seed, gen.next_offset()};
}
void check_qkv(const Tensor& q, const Tensor& k, const Tensor& v) {
  for (const Tensor* t : {&q, &k, &v})
    STRAND_CHECK(t->defined() && t->dim() == 4, "attention: q, k and v must be 4-D [B, H, T, D], got ",
                 t->defined() ? shape_str(t->sizes()) : std::string("an undefined tensor"));
  check_same_dtype(q, k, "attention");
  check_same_dtype(q, v, "attention");
  check_floating(q, "attention");
  check_same_device(q, k, "attention");
  check_same_device(q, v, "attention");
  STRAND_CHECK(k.sizes() == v.sizes(), "attention: k ", shape_str(k.sizes()), " and v ", shape_str(v.sizes()),
               " differ");
  STRAND_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3), "attention: q ",
               shape_str(q.sizes()), " does not match k ", shape_str(k.sizes()),
               " (batch, heads and head dim must agree)");
}
// Whether this call runs on the tensor-core kernels (bf16/f16 operands kept as they are).
bool use_tensor_cores(const Tensor& q, const Tensor& k) {
#ifdef STRAND_WITH_CUDA
  return q.is_cuda() && tensor_core_attention() && cuda::attention_tc_supported(q, k);
#else
  (void)q, (void)k;
  return false;
#endif
}
}  // namespace

STRAND_OPT_IN_SWITCH(set_tensor_core_attention, tensor_core_attention, "STRAND_TC_ATTENTION")

AttentionOut fused_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const AttentionParams& p) {
  check_qkv(q_in, k_in, v_in);
  check_dropout(p.dropout, "attention");
  const int64_t B = q_in.size(0), H = q_in.size(1), Tq = q_in.size(2), D = q_in.size(3), Tk = k_in.size(2);
  const DType ct = compute_dtype(q_in);
  Tensor kp = mask_bytes(p.key_pad, q_in, B, Tk, "key_pad"), qp = mask_bytes(p.query_pad, q_in, B, Tq, "query_pad");
  const Device dev = q_in.device();
  const cpu::DropoutMask d = draw_dropout(p.dropout, p.generator);
#ifdef STRAND_WITH_CUDA
  if (use_tensor_cores(q_in, k_in)) {  // out in the operands' type, lse in f32 (= ct)
    AttentionOut o{empty_bhtd(B, H, Tq, D, q_in.dtype(), dev), empty({B, H, Tq}, TensorOptions(ct, dev)), d.seed,
                   d.offset};
    const prof::Scope scope("attention_tc", true);
    cuda::attention_forward_tc(unit_last(q_in), unit_last(k_in), unit_last(v_in),
                               masks_of(kp, qp, p.zero_padded_queries, p.dropout, o.seed, o.offset), p.scale, o.out,
                               o.lse);
    return o;
  }
#endif
  Tensor q = unit_last(to(q_in, ct)), k = unit_last(to(k_in, ct)), v = unit_last(to(v_in, ct));
  AttentionOut o{empty_bhtd(B, H, Tq, D, ct, dev), empty({B, H, Tq}, TensorOptions(ct, dev))};
  o.seed = d.seed;
  o.offset = d.offset;
  if (o.out.numel())
    STRAND_DISPATCH(q, attention_forward, q, k, v, masks_of(kp, qp, p.zero_padded_queries, p.dropout, o.seed, o.offset),
                    p.scale, o.out, o.lse);
  else if (o.lse.numel()) fill_(o.lse, 0.0);
  if (ct != q_in.dtype()) o.out = to(o.out, q_in.dtype());
  return o;
}

std::tuple<Tensor, Tensor, Tensor> fused_attention_backward(const Tensor& grad, const Tensor& q_in, const Tensor& k_in,
                                                            const Tensor& v_in, const AttentionOut& fwd,
                                                            const AttentionParams& p) {
  const Tensor &out_in = fwd.out, &lse = fwd.lse;
  check_qkv(q_in, k_in, v_in);
  check_dropout(p.dropout, "attention_backward");
  STRAND_CHECK(grad.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(),
               "attention_backward: grad and out must have q's shape ", shape_str(q_in.sizes()));
  const int64_t B = q_in.size(0), H = q_in.size(1), Tq = q_in.size(2), D = q_in.size(3), Tk = k_in.size(2);
  const DType ct = compute_dtype(q_in);
  Tensor kp = mask_bytes(p.key_pad, q_in, B, Tk, "key_pad"), qp = mask_bytes(p.query_pad, q_in, B, Tq, "query_pad");
  const Device dev = q_in.device();
#ifdef STRAND_WITH_CUDA
  if (use_tensor_cores(q_in, k_in)) {
    const DType ht = q_in.dtype();
    Tensor dq = empty_bhtd(B, H, Tq, D, ht, dev), dk = empty_bhtd(B, H, Tk, D, ht, dev), dv = empty_bhtd(B, H, Tk, D, ht, dev);
    const prof::Scope scope("attention_tc_backward", true);
    cuda::attention_backward_tc(unit_last(to(grad, ht)), unit_last(q_in), unit_last(k_in), unit_last(v_in),
                                unit_last(to(out_in, ht)), contiguous(to(lse, DType::f32)),
                                masks_of(kp, qp, p.zero_padded_queries, p.dropout, fwd.seed, fwd.offset), p.scale, dq,
                                dk, dv);
    return {dq, dk, dv};
  }
#endif
  Tensor q = unit_last(to(q_in, ct)), k = unit_last(to(k_in, ct)), v = unit_last(to(v_in, ct));
  Tensor g = unit_last(to(grad, ct)), out = unit_last(to(out_in, ct)), l = contiguous(to(lse, ct));
  Tensor dq = empty_bhtd(B, H, Tq, D, ct, dev), dk = empty_bhtd(B, H, Tk, D, ct, dev), dv = empty_bhtd(B, H, Tk, D, ct, dev);
  if (Tq == 0 || D == 0) {
    fill_(dk, 0.0);
    fill_(dv, 0.0);
  }
  if (dq.numel() || (dk.numel() && Tq > 0))
    STRAND_DISPATCH(q, attention_backward, g, q, k, v, out, l,
                    masks_of(kp, qp, p.zero_padded_queries, p.dropout, fwd.seed, fwd.offset), p.scale, dq, dk, dv);
  if (ct != q_in.dtype()) return {to(dq, q_in.dtype()), to(dk, q_in.dtype()), to(dv, q_in.dtype())};
  return {dq, dk, dv};
}

// ---------------- Enformer's relative-position attention ----------------
namespace {
struct RelOperands {
  Tensor qc, qr, k, r, v;
  DType ct;
};
RelOperands rel_operands(const Tensor& qc, const Tensor& qr, const Tensor& k, const Tensor& r, const Tensor& v,
                         double dropout) {
  const std::pair<const Tensor*, const char*> named[] = {{&qc, "qc"}, {&qr, "qr"}, {&k, "k"}, {&v, "v"}};
  for (const auto& [t, name] : named)
    STRAND_CHECK(t->defined() && t->dim() == 4, "rel_attention: ", name, " must be 4-D [B, H, T, D], got ",
                 t->defined() ? shape_str(t->sizes()) : std::string("an undefined tensor"));
  STRAND_CHECK(r.defined() && r.dim() == 3, "rel_attention: r must be 3-D [H, 2T-1, Dk], got ",
               r.defined() ? shape_str(r.sizes()) : std::string("an undefined tensor"));
  const int64_t B = qc.size(0), H = qc.size(1), T = qc.size(2), Dk = qc.size(3);
  STRAND_CHECK(qr.sizes() == qc.sizes() && k.sizes() == qc.sizes(), "rel_attention: qc ", shape_str(qc.sizes()),
               ", qr ", shape_str(qr.sizes()), " and k ", shape_str(k.sizes()), " must have one shape");
  STRAND_CHECK(v.size(0) == B && v.size(1) == H && v.size(2) == T, "rel_attention: v ", shape_str(v.sizes()),
               " does not match qc ", shape_str(qc.sizes()), " in batch, heads and length");
  STRAND_CHECK(r.size(0) == H && r.size(1) == 2 * T - 1 && r.size(2) == Dk, "rel_attention: r must be [", H, ", ",
               2 * T - 1, ", ", Dk, "] for qc ", shape_str(qc.sizes()), ", got ", shape_str(r.sizes()));
  for (const Tensor* t : {&qr, &k, &r, &v}) {
    check_same_dtype(qc, *t, "rel_attention");
    check_same_device(qc, *t, "rel_attention");
  }
  check_floating(qc, "rel_attention");
  check_dropout(dropout, "rel_attention");
  const DType ct = compute_dtype(qc);
  return {unit_last(to(qc, ct)), unit_last(to(qr, ct)), unit_last(to(k, ct)), contiguous(to(r, ct)),
          unit_last(to(v, ct)), ct};
}

// Zero head dims on a GPU (cuBLAS takes no zero leading dimension): the CPU computes, as it does
// any size.
bool degenerate_on_gpu(const Tensor& qc, const Tensor& v) { return qc.is_cuda() && (qc.size(3) == 0 || v.size(3) == 0); }
Tensor on_cpu(const Tensor& t) { return to(t, Device::cpu()); }
}  // namespace

RelAttentionOut rel_attention(const Tensor& qc_in, const Tensor& qr_in, const Tensor& k_in, const Tensor& r_in,
                              const Tensor& v_in, double dropout, Generator* g) {
  if (degenerate_on_gpu(qc_in, v_in)) {
    RelAttentionOut c = rel_attention(on_cpu(qc_in), on_cpu(qr_in), on_cpu(k_in), on_cpu(r_in), on_cpu(v_in), dropout, g);
    return {to(c.out, qc_in.device()), to(c.lse, qc_in.device()), c.seed, c.offset};
  }
  const RelOperands o = rel_operands(qc_in, qr_in, k_in, r_in, v_in, dropout);
  const int64_t B = qc_in.size(0), H = qc_in.size(1), T = qc_in.size(2), Dv = v_in.size(3);
  RelAttentionOut res{empty_bhtd(B, H, T, Dv, o.ct, qc_in.device()), empty({B, H, T}, TensorOptions(o.ct, qc_in.device()))};
  const cpu::DropoutMask d = draw_dropout(dropout, g);
  res.seed = d.seed;
  res.offset = d.offset;
  if (res.out.numel()) STRAND_DISPATCH(o.qc, rel_attention_forward, o.qc, o.qr, o.k, o.r, o.v, d, res.out, res.lse);
  else if (res.lse.numel()) fill_(res.lse, 0.0);  // Dv = 0 (T = 0 leaves nothing)
  if (o.ct != qc_in.dtype()) res.out = to(res.out, qc_in.dtype());
  return res;
}

std::vector<Tensor> rel_attention_backward(const Tensor& grad, const Tensor& qc_in, const Tensor& qr_in,
                                           const Tensor& k_in, const Tensor& r_in, const Tensor& v_in,
                                           const RelAttentionOut& fwd, double dropout) {
  if (degenerate_on_gpu(qc_in, v_in)) {
    const RelAttentionOut f{on_cpu(fwd.out), on_cpu(fwd.lse), fwd.seed, fwd.offset};
    std::vector<Tensor> d = rel_attention_backward(on_cpu(grad), on_cpu(qc_in), on_cpu(qr_in), on_cpu(k_in),
                                                   on_cpu(r_in), on_cpu(v_in), f, dropout);
    for (Tensor& t : d) t = to(t, qc_in.device());
    return d;
  }
  const RelOperands o = rel_operands(qc_in, qr_in, k_in, r_in, v_in, dropout);
  STRAND_CHECK(grad.sizes() == fwd.out.sizes(), "rel_attention_backward: grad ", shape_str(grad.sizes()),
               " must have the output's shape ", shape_str(fwd.out.sizes()));
  const int64_t B = qc_in.size(0), H = qc_in.size(1), T = qc_in.size(2), Dk = qc_in.size(3), Dv = v_in.size(3);
  const Device dev = qc_in.device();
  Tensor g = unit_last(to(grad, o.ct)), out = unit_last(to(fwd.out, o.ct)), l = contiguous(to(fwd.lse, o.ct));
  std::vector<Tensor> d{empty_bhtd(B, H, T, Dk, o.ct, dev), empty_bhtd(B, H, T, Dk, o.ct, dev),
                        empty_bhtd(B, H, T, Dk, o.ct, dev), empty({H, 2 * T - 1, Dk}, TensorOptions(o.ct, dev)),
                        empty_bhtd(B, H, T, Dv, o.ct, dev)};
  if (T > 0 && (Dk > 0 || Dv > 0)) {
    STRAND_DISPATCH(o.qc, rel_attention_backward, g, o.qc, o.qr, o.k, o.r, o.v, out, l,
                    cpu::DropoutMask{dropout, fwd.seed, fwd.offset}, d[0], d[1], d[2], d[3], d[4]);
  } else {
    for (Tensor& t : d) fill_(t, 0.0);
  }
  if (o.ct != qc_in.dtype())
    for (Tensor& t : d) t = to(t, qc_in.dtype());
  return d;
}

}  // namespace strand::ops
