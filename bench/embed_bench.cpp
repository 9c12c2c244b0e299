// Embedding throughput (tokens/s) of the sequence backbones on CPU, inference (no grad, eval):
//   BM_Esm2_t6_8M/B/L        the full ESM-2 t6_8M architecture (random weights: speed does not
//                            depend on their values)
//   BM_AidoRna650M_Layer/B/L one AIDO.RNA-650M-shaped layer (d 1280, 20 heads, SwiGLU 3392) plus
//                            the final norm; the full model is 33 such layers
// Tokens counted are B*L, i.e. including the special tokens. Compare ratios within one run only
// (DESIGN.md: absolute CPU times on shared machines are noise).
#include <benchmark/benchmark.h>

#include "models/aido_rna/rnabert.h"
#include "models/esm2/esm2.h"

using namespace strand;

namespace {

Tensor random_ids(int64_t B, int64_t L, int64_t lo, int64_t hi) {
  Tensor u = ops::rand({B, L});
  return ops::to(ops::add(ops::mul(u, static_cast<double>(hi - lo)), static_cast<double>(lo)), DType::i64);
}

void run(benchmark::State& state, models::Backbone& m, int64_t lo, int64_t hi) {
  const int64_t B = state.range(0), L = state.range(1);
  m.eval();
  Tensor ids = random_ids(B, L, lo, hi);
  Tensor mask = ops::ones({B, L}, DType::i64);
  NoGradGuard ng;
  for (auto _ : state) {
    Tensor h = m.forward(ids, mask).last_hidden_state;
    benchmark::DoNotOptimize(h.raw_data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * L * state.iterations()), benchmark::Counter::kIsRate);
}

void BM_Esm2_t6_8M(benchmark::State& state) {
  static models::Esm2Model m(models::Esm2Config::preset("esm2_t6_8M_UR50D"));
  run(state, m, 4, 24);  // amino-acid ids
}
BENCHMARK(BM_Esm2_t6_8M)->Args({1, 256})->Args({8, 256})->Args({4, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_AidoRna650M_Layer(benchmark::State& state) {
  static models::RNABertModel m([] {
    auto c = models::RNABertConfig::preset("aido_rna_650m");
    c.num_hidden_layers = 1;
    return c;
  }());
  run(state, m, 5, 9);  // A, G, C, T
}
BENCHMARK(BM_AidoRna650M_Layer)->Args({1, 256})->Args({4, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
