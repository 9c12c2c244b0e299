#pragma once
// bf16 autocast: the "bf16-mixed" precision (PyTorch's torch.autocast(dtype=torch.bfloat16), as
// Lightning's precision="bf16-mixed" uses it). While it is on (thread-local, off by default), the
// differentiable API (autograd/functional.h) casts at op boundaries, recording each cast so the
// gradient returns in the source's dtype:
//   - matmul, linear, conv1d, attention and rel_attention take their f32 operands in bf16 and give
//     bf16 (the GEMM accumulates in f32 and rounds once, as cuBLAS does);
//   - layer_norm, rms_norm, softmax, log_softmax, mse_loss, sum, exp, log, rsqrt, pow and softplus
//     take bf16 operands in f32 and give f32 (from PyTorch's CUDA autocast "fp32" lists:
//     statistics, sums and the loss in full precision);
//   - batch_norm of a bf16 input with f32 parameters normalises in f32 and gives bf16 (as PyTorch's
//     GPU batch_norm, which autocast leaves alone), keeping the bf16 input for backward;
//   - everything else runs in its inputs' dtype (dropout on bf16 scales in f32 and rounds once, as
//     PyTorch's), mixed floating operands promoting to the wider one.
// f64 tensors are never cast (as in PyTorch). Parameters stay f32 (the master weights); backward
// needs no autocast: each recorded op differentiates in the dtypes its forward used.
namespace strand {

bool autocast_enabled();
void set_autocast_enabled(bool on);

class AutocastGuard {
 public:
  explicit AutocastGuard(bool on) : prev_(autocast_enabled()) { set_autocast_enabled(on); }
  ~AutocastGuard() { set_autocast_enabled(prev_); }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace strand
