// CUDA kernel benchmarks at the models' real shapes (fp32; TF32 only in the cases marked so):
// layer_norm, softmax, GEMM,
// fused attention, Enformer's relative-position attention, conv1d, batch_norm, AdamW. Each iteration is timed with CUDA events around the
// work (manual time), after one warm-up call; counters are bytes/s (the fewest bytes the op must
// move: each input read once, each output written once) or FLOP/s. tools/compare_gpu.py runs the
// same shapes through PyTorch on the same GPU and writes the ratios. Without a usable GPU every
// benchmark is skipped with a message.
//
// Shapes: Enformer trunk 2 x 1536 tokens x 1536 wide (8 heads over 1536 keys), its first tower
// conv (2 x 98,304 x 768, k5) and stem (2 x 196,608 x 4 -> 768, k15); AIDO.RNA-1.6B (hidden 2048,
// FFN 5632, 32 heads of 64) at 2 x 1024 tokens; ESM2-150M (hidden 640, FFN 2560, 20 heads of 32) at
// 2 x 1024 tokens.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cmath>
#include <functional>

#include "autograd/functional.h"
#include "kernels/ops.h"

namespace {
using namespace strand;

const Device kGpu = Device::cuda(0);
TensorOptions gpu_f32() { return TensorOptions(DType::f32, kGpu); }
Tensor randn_gpu(const Shape& s, bool grad = false) {
  Tensor t = ops::to(ops::randn(s), kGpu);
  if (grad) t.set_requires_grad(true);
  return t;
}

// Times f with CUDA events; one warm-up call first. Returns false (and skips) without a GPU.
bool time_gpu(benchmark::State& st, const std::function<void()>& f) {
  if (!cuda_available()) {
    st.SkipWithError("no usable CUDA GPU");
    return false;
  }
  f();
  cuda_rt::synchronize();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (auto _ : st) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    st.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return true;
}
void rate(benchmark::State& st, const char* name, double per_iteration) {
  st.counters[name] = benchmark::Counter(per_iteration, benchmark::Counter::kIsIterationInvariantRate);
}

// ---- row kernels ----
void BM_LayerNorm(benchmark::State& st) {
  const int64_t rows = st.range(0), n = st.range(1);
  if (!cuda_available()) return (void)time_gpu(st, {});
  Tensor x = randn_gpu({rows, n}), w = randn_gpu({n}), b = randn_gpu({n});
  if (time_gpu(st, [&] { benchmark::DoNotOptimize(ops::layer_norm(x, w, b, 1e-5).y.raw_data()); }))
    rate(st, "bytes/s", 2.0 * rows * n * 4);
}
void BM_LayerNormBackward(benchmark::State& st) {
  const int64_t rows = st.range(0), n = st.range(1);
  if (!cuda_available()) return (void)time_gpu(st, {});
  Tensor x = randn_gpu({rows, n}), w = randn_gpu({n}), b = randn_gpu({n}), g = randn_gpu({rows, n});
  auto f = ops::layer_norm(x, w, b, 1e-5);
  if (time_gpu(st, [&] { benchmark::DoNotOptimize(ops::layer_norm_backward(g, x, w, f.mean, f.rstd)); }))
    rate(st, "bytes/s", 3.0 * rows * n * 4);  // read g and x, write gx
}
void BM_Softmax(benchmark::State& st) {
  const int64_t rows = st.range(0), n = st.range(1);
  if (!cuda_available()) return (void)time_gpu(st, {});
  Tensor x = randn_gpu({rows, n});
  if (time_gpu(st, [&] { benchmark::DoNotOptimize(ops::softmax(x, -1).raw_data()); }))
    rate(st, "bytes/s", 2.0 * rows * n * 4);
}
void BM_SoftmaxBackward(benchmark::State& st) {
  const int64_t rows = st.range(0), n = st.range(1);
  if (!cuda_available()) return (void)time_gpu(st, {});
  Tensor y = ops::softmax(randn_gpu({rows, n}), -1), g = randn_gpu({rows, n});
  if (time_gpu(st, [&] { benchmark::DoNotOptimize(ops::softmax_backward(g, y, -1).raw_data()); }))
    rate(st, "bytes/s", 3.0 * rows * n * 4);
}
// rows x n: Enformer attention logits (2 x 8 heads x 1536 queries, 1536 keys) / AIDO-1.6B (2 x 32 x 1024)
#define STRAND_ROW_SHAPES ->Args({3072, 1536})->Args({2048, 2048})->Args({2048, 640})
BENCHMARK(BM_LayerNorm) STRAND_ROW_SHAPES->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LayerNormBackward) STRAND_ROW_SHAPES->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Softmax)->Args({24576, 1536})->Args({65536, 1024})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SoftmaxBackward)->Args({24576, 1536})->Args({65536, 1024})->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- GEMM: linear(x [M, K], w [N, K]); last arg 0 = fp32, 1 = TF32 (ops::set_allow_tf32),
// 2 = bf16 operands and result (the bf16-mixed GEMM: tensor cores, f32 accumulation) ----
// last arg: 0 f32, 1 TF32, 2 bf16; 3 f32 and 4 bf16 with a bias through cuBLASLt's epilogue, 5 bf16
// with a bias the old way (bias pre-filled, cuBLAS GEMM onto it)
void BM_Linear(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2), mode = st.range(3);
  const ops::SwitchScope tf32(ops::set_allow_tf32, ops::allow_tf32, mode == 1);
  if (!cuda_available()) return (void)time_gpu(st, {});
  Tensor x = randn_gpu({M, K}), w = randn_gpu({N, K}), b = mode >= 3 ? randn_gpu({N}) : Tensor();
  if (mode == 2 || mode == 4 || mode == 5) {
    x = ops::to(x, DType::bf16), w = ops::to(w, DType::bf16);
    if (b.defined()) b = ops::to(b, DType::bf16);
  }
  const ops::SwitchScope lt(ops::set_cublaslt_bias, ops::cublaslt_bias, mode == 3 || mode == 4);
  if (time_gpu(st, [&] { benchmark::DoNotOptimize(ops::linear(x, w, b).raw_data()); }))
    rate(st, "FLOP/s", 2.0 * M * N * K);
}
BENCHMARK(BM_Linear)
    ->Args({3072, 1536, 1536, 0})   // Enformer trunk projection
    ->Args({2048, 5632, 2048, 0})   // AIDO.RNA-1.6B FFN up
    ->Args({2048, 2560, 640, 0})    // ESM2-150M FFN up
    ->Args({4096, 4096, 4096, 0})   // square reference
    ->Args({2048, 5632, 2048, 1})   // the same in TF32
    ->Args({4096, 4096, 4096, 1})
    ->Args({3072, 1536, 1536, 2})   // bf16
    ->Args({2048, 5632, 2048, 2})
    ->Args({4096, 4096, 4096, 2})
    ->Args({2048, 5632, 2048, 3})   // with a bias: cuBLASLt epilogue (f32, bf16) and the pre-fill (bf16)
    ->Args({2048, 5632, 2048, 4})
    ->Args({2048, 5632, 2048, 5})
    ->Args({2048, 2560, 640, 4})
    ->Args({2048, 2560, 640, 5})
    ->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- fused attention: q/k/v [B, H, T, D]; last arg 2: bf16 on the tensor-core kernels ----
void BM_Attention(benchmark::State& st) {
  const int64_t B = st.range(0), H = st.range(1), T = st.range(2), D = st.range(3);
  const bool bwd = st.range(4) != 0, half = st.range(5) == 2;
  if (!cuda_available()) return (void)time_gpu(st, {});
  auto in = [&](bool grad) {
    Tensor t = randn_gpu({B, H, T, D});
    if (half) t = ops::to(t, DType::bf16);
    if (grad) t.set_requires_grad(true);
    return t;
  };
  Tensor q = in(bwd), k = in(bwd), v = in(bwd), g = in(false);
  const ops::AttentionParams p{1.0 / std::sqrt(static_cast<double>(D))};
  const ops::SwitchScope tc(ops::set_tensor_core_attention, ops::tensor_core_attention, half);
  auto step = [&] {
    if (!bwd) {
      NoGradGuard ng;
      benchmark::DoNotOptimize(attention(q, k, v, p).raw_data());
      return;
    }
    backward(attention(q, k, v, p), g);
    for (Tensor* t : {&q, &k, &v}) t->set_grad(Tensor());
  };
  const double fwd_flop = 4.0 * B * H * T * T * D;
  if (time_gpu(st, step)) rate(st, "FLOP/s", bwd ? 3.5 * fwd_flop : fwd_flop);  // backward = 2.5 forwards
}
BENCHMARK(BM_Attention)
    ->Args({2, 32, 1024, 64, 0, 0})->Args({2, 32, 1024, 64, 1, 0})   // AIDO.RNA-1.6B
    ->Args({2, 20, 1024, 32, 0, 0})->Args({2, 20, 1024, 32, 1, 0})   // ESM2-150M
    ->Args({2, 32, 1024, 64, 0, 2})->Args({2, 32, 1024, 64, 1, 2})   // bf16, tensor cores
    ->Args({2, 20, 1024, 32, 0, 2})->Args({2, 20, 1024, 32, 1, 2})
    ->UseManualTime()->Unit(benchmark::kMillisecond);

// ---- Enformer's relative-position attention: qc, qr, k [B, H, T, Dk], r [H, 2T-1, Dk], v [B, H, T, Dv] ----
void BM_RelAttention(benchmark::State& st) {
  const int64_t B = st.range(0), H = st.range(1), T = st.range(2), Dk = st.range(3), Dv = st.range(4);
  const bool bwd = st.range(5) != 0;
  if (!cuda_available()) return (void)time_gpu(st, {});
  Tensor qc = randn_gpu({B, H, T, Dk}, bwd), qr = randn_gpu({B, H, T, Dk}, bwd), k = randn_gpu({B, H, T, Dk}, bwd);
  Tensor r = randn_gpu({H, 2 * T - 1, Dk}, bwd), v = randn_gpu({B, H, T, Dv}, bwd), g = randn_gpu({B, H, T, Dv});
  auto step = [&] {
    if (!bwd) {
      NoGradGuard ng;
      benchmark::DoNotOptimize(rel_attention(qc, qr, k, r, v).raw_data());
      return;
    }
    backward(rel_attention(qc, qr, k, r, v), g);
    for (Tensor* t : {&qc, &qr, &k, &r, &v}) t->set_grad(Tensor());
  };
  // content and position logits (2 B H T (T + T) Dk, the window counted once per row) and P v
  const double fwd_flop = 2.0 * B * H * T * T * (2 * Dk + Dv);
  if (time_gpu(st, step)) rate(st, "FLOP/s", bwd ? 3.5 * fwd_flop : fwd_flop);
}
BENCHMARK(BM_RelAttention)
    ->Args({2, 8, 1536, 64, 192, 0})->Args({2, 8, 1536, 64, 192, 1})  // official Enformer, 196,608 bp
    ->UseManualTime()->Unit(benchmark::kMillisecond);

// ---- conv1d (channels last) ----
void BM_Conv1d(benchmark::State& st) {
  const int64_t B = st.range(0), L = st.range(1), Cin = st.range(2), Cout = st.range(3), K = st.range(4);
  const bool bwd = st.range(5) != 0;
  // last argument: 0 fp32, 1 TF32, 2 bf16 (operands and result) through im2col + cuBLAS; 3, 4, 5 the
  // same through cuDNN (ops::set_cudnn_conv)
  const int64_t mode = st.range(6), precision = mode % 3;
  const ops::SwitchScope tf32(ops::set_allow_tf32, ops::allow_tf32, precision == 1);
  if (!cuda_available()) return (void)time_gpu(st, {});
  const ops::SwitchScope dnn(ops::set_cudnn_conv, ops::cudnn_conv, mode >= 3);
  const DType dt = precision == 2 ? DType::bf16 : DType::f32;
  auto make = [&](const Shape& s, bool grad) {
    Tensor t = ops::to(ops::to(ops::randn(s), dt), kGpu);
    if (grad) t.set_requires_grad(true);
    return t;
  };
  Tensor x = make({B, L, Cin}, bwd), w = make({Cout, Cin, K}, bwd), b = make({Cout}, bwd);
  Tensor g = make({B, L, Cout}, false);
  auto step = [&] {
    if (!bwd) {
      NoGradGuard ng;
      benchmark::DoNotOptimize(conv1d(x, w, b, -1).raw_data());
      return;
    }
    backward(conv1d(x, w, b, -1), g);
    for (Tensor* t : {&x, &w, &b}) t->set_grad(Tensor());
  };
  const double flop = 2.0 * B * L * Cout * Cin * K;
  if (time_gpu(st, step)) rate(st, "FLOP/s", bwd ? 3 * flop : flop);
}
BENCHMARK(BM_Conv1d)
    ->Args({2, 98304, 768, 768, 5, 0, 0})->Args({2, 98304, 768, 768, 5, 1, 0})   // Enformer first tower conv
    ->Args({2, 196608, 4, 768, 15, 0, 0})                                        // Enformer stem
    ->Args({2, 98304, 768, 768, 5, 1, 1})                                        // tower conv, TF32
    ->Args({2, 98304, 768, 768, 5, 0, 2})->Args({2, 98304, 768, 768, 5, 1, 2})   // tower conv, bf16
    ->Args({2, 98304, 768, 768, 5, 0, 3})->Args({2, 98304, 768, 768, 5, 1, 3})   // the same through cuDNN
    ->Args({2, 196608, 4, 768, 15, 0, 3})
    ->Args({2, 98304, 768, 768, 5, 1, 4})
    ->Args({2, 98304, 768, 768, 5, 0, 5})->Args({2, 98304, 768, 768, 5, 1, 5})
    ->UseManualTime()->Unit(benchmark::kMillisecond);

// ---- batch_norm (training: batch statistics, then normalise) ----
void BM_BatchNormTrain(benchmark::State& st) {
  const int64_t rows = st.range(0), C = st.range(1);
  if (!cuda_available()) return (void)time_gpu(st, {});
  Tensor x = randn_gpu({rows, C}), w = randn_gpu({C}), b = randn_gpu({C});
  if (time_gpu(st, [&] { benchmark::DoNotOptimize(ops::batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5).y.raw_data()); }))
    rate(st, "bytes/s", 2.0 * rows * C * 4);
}
BENCHMARK(BM_BatchNormTrain)->Args({196608, 768})->Args({3072, 1536})->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- AdamW over one flat parameter (the ESM2-150M count) ----
void BM_AdamW(benchmark::State& st) {
  const int64_t n = st.range(0);
  if (!cuda_available()) return (void)time_gpu(st, {});
  Tensor p = randn_gpu({n}), g = randn_gpu({n}), m = ops::zeros({n}, gpu_f32()), v = ops::zeros({n}, gpu_f32());
  const AdamWStep s{1e-4, 0.9, 0.999, 1e-8, 0.01, 1e-4 / 0.1, std::sqrt(1 - 0.999)};
  if (time_gpu(st, [&] { ops::adamw_(p, g, m, v, s); })) rate(st, "bytes/s", 7.0 * n * 4);  // read p g m v, write p m v
}
BENCHMARK(BM_AdamW)->Arg(150'000'000)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
