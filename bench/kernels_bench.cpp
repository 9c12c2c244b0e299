// CPU kernel microbenchmarks (the harness later issues extend): matmul in FLOP/s, softmax and
// layer_norm in bytes/s (one read + one write of the tensor).
#include <benchmark/benchmark.h>

#include "kernels/ops.h"

namespace {
using namespace strand;

void BM_Matmul(benchmark::State& st) {
  const int64_t n = st.range(0);
  Tensor a = ops::rand({n, n}), b = ops::rand({n, n});
  for (auto _ : st) benchmark::DoNotOptimize(ops::matmul(a, b).raw_data());
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Matmul)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);

void BM_Softmax(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1);
  Tensor x = ops::rand({rows, cols});
  for (auto _ : st) benchmark::DoNotOptimize(ops::softmax(x, -1).raw_data());
  st.counters["bytes/s"] = benchmark::Counter(2.0 * rows * cols * 4, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Softmax)->Args({4096, 1536})->Args({1024, 1024})->Unit(benchmark::kMicrosecond);

void BM_LayerNorm(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1);
  Tensor x = ops::rand({rows, cols}), w = ops::ones({cols}), b = ops::zeros({cols});
  for (auto _ : st) benchmark::DoNotOptimize(ops::layer_norm(x, w, b, 1e-5).y.raw_data());
  st.counters["bytes/s"] = benchmark::Counter(2.0 * rows * cols * 4, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LayerNorm)->Args({4096, 1536})->Args({2048, 1280})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
