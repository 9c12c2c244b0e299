// Enformer whole-model benchmarks (random weights; nothing is downloaded).
//
//   BM_EnformerOfficialForward   the CPU reality check: the official configuration (251 M
//                                parameters) in inference mode (eval, no grad) on one 196,608-bp
//                                sequence -> [1, 896, 3072]. Counters: peak_alloc_bytes (strand's
//                                CPU allocator, above the weights), max_rss_bytes (the process).
//   BM_EnformerTrainStepPeak     one training step (forward + backward) of the official widths on a
//                                shorter input (65,536 bp), with checkpointing off (mode 0), transformer only
//                                (1), transformer + stem/tower (2). Counter: peak_alloc_bytes above
//                                the weights.
// Run: build/bench/enformer_bench --benchmark_filter=Official   (minutes on 2 cores; not in CI)
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <string>
#include <vector>

#include "models/enformer/enformer.h"

namespace {
using namespace strand;
using namespace strand::models::enformer;

std::string random_dna(int64_t n, uint64_t seed) {
  std::string s(static_cast<size_t>(n), 'A');
  uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& c : s) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    c = "ACGT"[(x >> 33) % 4];
  }
  return s;
}

double max_rss_bytes() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return static_cast<double>(r.ru_maxrss) * 1024.0;  // Linux: kilobytes
}

void BM_EnformerOfficialForward(benchmark::State& st) {
  Enformer m(EnformerConfig::official());
  m.eval();
  const std::vector<std::string> seqs{random_dna(196608, 1)};
  int64_t peak = 0;
  for (auto _ : st) {
    NoGradGuard ng;
    reset_cpu_peak_bytes();
    const int64_t base = cpu_allocator_stats().live_bytes;
    Tensor y = m.embed(seqs);
    benchmark::DoNotOptimize(y.raw_data());
    peak = std::max(peak, cpu_allocator_stats().peak_bytes - base);
    if (y.size(1) != 896 || y.size(2) != 3072) st.SkipWithError("unexpected output shape");
  }
  st.counters["peak_alloc_bytes"] = static_cast<double>(peak);
  st.counters["weights_bytes"] = static_cast<double>(m.num_parameters()) * 4.0;
  st.counters["max_rss_bytes"] = max_rss_bytes();
}
BENCHMARK(BM_EnformerOfficialForward)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

void BM_EnformerTrainStepPeak(benchmark::State& st) {
  const int mode = static_cast<int>(st.range(0));
  const int64_t length = st.range(1);
  EnformerConfig c = EnformerConfig::official();
  c.target_length = -1;
  Enformer m(c);
  m.set_checkpointing(mode >= 1, mode == 2);
  m.train();
  const std::vector<std::string> seqs{random_dna(length, 2)};
  int64_t peak = 0;
  for (auto _ : st) {
    reset_cpu_peak_bytes();
    const int64_t base = cpu_allocator_stats().live_bytes;
    Tensor y = m.embed(seqs);
    backward(mean(y * y));
    peak = std::max(peak, cpu_allocator_stats().peak_bytes - base);
    st.PauseTiming();
    for (const Tensor& p : m.parameters()) p.set_grad(Tensor());
    st.ResumeTiming();
  }
  st.counters["peak_alloc_bytes"] = static_cast<double>(peak);
  // The parameter gradients (4 bytes x 251 M) are part of the peak whatever the checkpointing.
  st.counters["peak_minus_grads_bytes"] = static_cast<double>(peak) - static_cast<double>(m.num_parameters()) * 4.0;
  st.counters["checkpointing"] = mode;
}
BENCHMARK(BM_EnformerTrainStepPeak)
    ->ArgsProduct({{0, 1, 2}, {65536}})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
