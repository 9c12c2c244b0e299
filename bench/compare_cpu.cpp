// strand's side of tools/compare_cpu.py: runs one named case (the same shapes and work as the
// PyTorch case of the same name there) and prints one JSON line:
//   {"case": ..., "times_s": [...], "peak_rss_delta_bytes": N, "peak_alloc_bytes": N}
// Methodology, identical on both sides: build the model and inputs (untimed); malloc_trim(0);
// reset the process's peak RSS (/proc/self/clear_refs "5") and read VmRSS as the base; run
// `warmup` then `reps` timed iterations; peak_rss_delta_bytes = VmHWM - base. peak_alloc_bytes is
// strand's own allocator peak above what was live before the first iteration; peak_live_bytes the
// same peak with what was live before (the weights) included, on the CPU the figure a GPU run
// reports as device_peak_bytes.
//
//   compare_cpu --case esm_fwd [--threads 2] [--reps 5] [--warmup 1]
//   compare_cpu --list
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "kernels/profile.h"
#include "kernels/threads.h"
#include "models/aido_rna/rnabert.h"
#include "models/enformer/enformer.h"
#include "models/esm2/esm2.h"
#include "models/peft.h"
#include "nn/clip_grad.h"
#include "nn/optim.h"
#include "train/config.h"
#include "train/task.h"

using namespace strand;

namespace {

Device g_dev = Device::cpu();  // --device: where models, inputs and leaves live
Tensor dev(const Tensor& t) { return ops::to(t, g_dev); }

using Step = std::function<void()>;
struct Case {
  std::string what;
  std::function<Step()> build;  // builds the model and inputs; returns one iteration
};

std::string random_string(int64_t n, const char* alphabet, int64_t k, uint64_t seed) {
  std::string s(static_cast<size_t>(n), alphabet[0]);
  uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& c : s) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    c = alphabet[(x >> 33) % static_cast<uint64_t>(k)];
  }
  return s;
}

// [B, L] ids: `first` and `last` at the ends, uniform in [lo, hi) between.
Tensor ids(int64_t B, int64_t L, int64_t lo, int64_t hi, int64_t first, int64_t last) {
  Tensor u = ops::rand({B, L});
  Tensor t = ops::to(ops::add(ops::mul(u, static_cast<double>(hi - lo)), static_cast<double>(lo)), DType::i64);
  int64_t* p = t.data<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    if (first >= 0) p[b * L] = first;
    if (last >= 0) p[b * L + L - 1] = last;
  }
  return t;
}

void clear_grads(nn::Module& m) {
  for (const Tensor& p : m.parameters()) p.set_grad(Tensor());
}
void clear_grads(const std::vector<Tensor>& ts) {
  for (const Tensor& t : ts) t.set_grad(Tensor());
}

models::RNABertConfig aido_4layer() {
  auto c = models::RNABertConfig::preset("aido_rna_650m");
  c.num_hidden_layers = 4;
  c.normalization_type = "LayerNorm";
  c.max_position_embeddings = 1024;
  return c;
}

models::enformer::EnformerConfig enformer_384() {
  models::enformer::EnformerConfig c;
  c.dim = 384;
  c.depth = 4;
  c.heads = 8;
  c.num_downsamples = 7;
  c.target_length = -1;
  return c;
}

// A backbone case: forward (eval, no grad) or forward+backward of mean(h^2) (train mode).
template <class M>
Step backbone_step(std::shared_ptr<M> m, Tensor in_ids, bool backward_too) {
  m->to(g_dev);
  in_ids = dev(in_ids);
  Tensor mask = ops::ones(in_ids.sizes(), TensorOptions(DType::i64, g_dev));
  if (!backward_too) {
    m->eval();
    return [=] {
      NoGradGuard ng;
      Tensor h = m->forward(in_ids, mask).last_hidden_state;
    };
  }
  m->train();
  return [=] {
    Tensor h = m->forward(in_ids, mask).last_hidden_state;
    backward(mean(h * h));
    clear_grads(*m);
  };
}

Step enformer_step(bool backward_too, models::enformer::EnformerConfig c = enformer_384(), int64_t B = 1,
                   int64_t L = 32768) {
  auto m = std::make_shared<models::enformer::Enformer>(c);
  m->to(g_dev);
  std::vector<std::string> seqs;
  for (int64_t b = 0; b < B; ++b) seqs.push_back(random_string(L, "ACGT", 4, 7 + b));
  Tensor x = dev(models::enformer::one_hot_dna(seqs));
  if (!backward_too) {
    m->eval();
    return [=] {
      NoGradGuard ng;
      Tensor y = m->forward(x);
    };
  }
  m->train();
  return [=] {
    Tensor y = m->forward(x);
    backward(mean(y * y));
    clear_grads(*m);
  };
}

// One AdamW training step of a task config's model (the trainer's step: forward, MSE, backward,
// gradient clipping, AdamW) on `n` random samples of the given lengths.
Step task_step(const std::string& config, int64_t n, int64_t dna, int64_t rna, int64_t prot) {
  const train::Config cfg = train::load_config(std::string(STRAND_SOURCE_DIR) + "/" + config);
  auto task = std::make_shared<train::RegressionTask>(cfg);
  task->to(g_dev);
  task->train();
  std::vector<Tensor> params;
  for (const Tensor& p : task->parameters())
    if (p.requires_grad()) params.push_back(p);
  auto opt = std::make_shared<nn::AdamW>(params, cfg.optim.lr, std::pair<double, double>{0.9, 0.999}, 1e-8,
                                         cfg.optim.weight_decay);
  std::vector<train::Sample> batch(static_cast<size_t>(n));
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].dna = random_string(dna, "ACGT", 4, 10 + i);
    batch[i].rna = random_string(rna, "ACGT", 4, 20 + i);
    batch[i].protein = random_string(prot, "ACDEFGHIKLMNPQRSTVWY", 20, 30 + i);
  }
  Tensor labels = dev(ops::randn({n, cfg.data.num_labels}));
  return [=] {
    opt->zero_grad();
    Tensor pred = task->forward(batch);
    backward(mse_loss(pred, labels));
    opt->step(nn::clip_coefficient(nn::grad_norm(params), cfg.trainer.grad_clip));  // as the trainer does
  };
}

Tensor leaf(const Shape& s, bool grad) {
  Tensor t = dev(ops::randn(s));
  if (grad) t.set_requires_grad(true);
  return t;
}

// softmax(q kᵀ / sqrt(d)) v through the fused op the models use.
Step attention_step(int64_t B, int64_t H, int64_t T, int64_t D, bool backward_too) {
  const ops::AttentionParams p{1.0 / std::sqrt(static_cast<double>(D))};
  Tensor q = leaf({B, H, T, D}, backward_too), k = leaf({B, H, T, D}, backward_too), v = leaf({B, H, T, D}, backward_too);
  if (!backward_too)
    return [=] {
      NoGradGuard ng;
      Tensor o = attention(q, k, v, p);
    };
  return [=] {
    Tensor o = attention(q, k, v, p);
    backward(mean(o * o));
    clear_grads({q, k, v});
  };
}

Step conv_step(bool backward_too) {
  // Channels-last (strand's layout): x [1, 16384, 192]; PyTorch's case is [1, 192, 16384].
  Tensor x = leaf({1, 16384, 192}, backward_too), w = leaf({192, 192, 5}, backward_too), b = leaf({192}, backward_too);
  if (!backward_too)
    return [=] {
      NoGradGuard ng;
      Tensor y = conv1d(x, w, b, 2);
    };
  return [=] {
    Tensor y = conv1d(x, w, b, 2);
    backward(mean(y * y));
    clear_grads({x, w, b});
  };
}

Step no_grad_step(std::function<Tensor()> f) {
  return [=] {
    NoGradGuard ng;
    Tensor y = f();
  };
}

const std::map<std::string, Case>& cases() {
  static const std::map<std::string, Case> c = {
      {"esm_fwd", {"ESM-2 t6_8M shape, forward 16x256 (eval, no grad)", [] {
         return backbone_step(std::make_shared<models::Esm2Model>(models::Esm2Config::preset("esm2_t6_8M_UR50D")),
                              ids(16, 256, 4, 24, 0, 2), false);
       }}},
      {"esm_fwdbwd", {"ESM-2 t6_8M shape, forward+backward 16x256, all params", [] {
         return backbone_step(std::make_shared<models::Esm2Model>(models::Esm2Config::preset("esm2_t6_8M_UR50D")),
                              ids(16, 256, 4, 24, 0, 2), true);
       }}},
      {"aido_fwd", {"AIDO.RNA 650M shape, 4 layers, forward 4x512 (eval, no grad)", [] {
         return backbone_step(std::make_shared<models::RNABertModel>(aido_4layer()), ids(4, 512, 5, 9, -1, -1), false);
       }}},
      {"aido_lora_fwdbwd", {"AIDO.RNA 650M shape, 4 layers, LoRA r16 q/v, forward+backward 4x512", [] {
         auto m = std::make_shared<models::RNABertModel>(aido_4layer());
         models::apply_lora(*m, nn::LoRAConfig{16, 32.0, 0.0, {"query", "value"}});
         return backbone_step(m, ids(4, 512, 5, 9, -1, -1), true);
       }}},
      {"enformer_fwd", {"Enformer dim 384 depth 4, forward 32,768 bp (eval, no grad)", [] { return enformer_step(false); }}},
      {"enformer_fwdbwd", {"Enformer dim 384 depth 4, forward+backward 32,768 bp", [] { return enformer_step(true); }}},
      {"tiny_step", {"tiny_cpu.toml model, one AdamW training step, batch 8", [] {
         return task_step("configs/tiny_cpu.toml", 8, 512, 254, 126);
       }}},
      // GPU scale (run with --device cuda): the real backbones at the recipes' shapes, fp32.
      {"esm150m_fwdbwd", {"ESM2-150M, forward+backward 2x1024, all params", [] {
         return backbone_step(std::make_shared<models::Esm2Model>(models::Esm2Config::preset("esm2_t30_150M_UR50D")),
                              ids(2, 1024, 4, 24, 0, 2), true);
       }}},
      {"aido1b6_lora_fwdbwd", {"AIDO.RNA-1.6B, LoRA r32 q/v, forward+backward 2x1024", [] {
         auto m = std::make_shared<models::RNABertModel>(models::RNABertConfig::preset("aido_rna_1b600m"));
         models::apply_lora(*m, nn::LoRAConfig{32, 64.0, 0.0, {"query", "value"}});
         return backbone_step(m, ids(2, 1024, 5, 9, -1, -1), true);
       }}},
      {"enformer_official_fwdbwd", {"official Enformer, forward+backward 2x196,608 bp, checkpointing", [] {
         auto c = models::enformer::EnformerConfig::official();
         c.use_checkpointing = c.checkpoint_conv = true;
         c.target_length = -1;
         return enformer_step(true, c, 2, 196608);
       }}},
      {"dna_rna_concat_step", {"official Enformer + AIDO.RNA-1.6B LoRA + concat fusion, AdamW step, batch 2", [] {
         return task_step("bench/gpu_dna_rna_concat.toml", 2, 196608, 1022, 8);
       }}},
      {"gemm_esm_ffn", {"linear [4096,320] x [1280,320]^T", [] {
         Tensor x = leaf({4096, 320}, false), w = leaf({1280, 320}, false);
         return no_grad_step([=] { return linear(x, w); });
       }}},
      {"gemm_aido_ffn", {"linear [2048,1280] x [6784,1280]^T", [] {
         Tensor x = leaf({2048, 1280}, false), w = leaf({6784, 1280}, false);
         return no_grad_step([=] { return linear(x, w); });
       }}},
      {"gemm_1024", {"matmul 1024^3", [] {
         Tensor a = leaf({1024, 1024}, false), b = leaf({1024, 1024}, false);
         return no_grad_step([=] { return matmul(a, b); });
       }}},
      {"conv1d_enformer", {"conv1d 192->192 k5 over 16,384 (forward)", [] { return conv_step(false); }}},
      {"conv1d_enformer_fwdbwd", {"conv1d 192->192 k5 over 16,384 (forward+backward)", [] { return conv_step(true); }}},
      {"layer_norm_esm", {"layer_norm [4096,320]", [] {
         Tensor x = leaf({4096, 320}, false), w = leaf({320}, false), b = leaf({320}, false);
         return no_grad_step([=] { return layer_norm(x, w, b, 1e-5); });
       }}},
      {"layer_norm_aido", {"layer_norm [2048,1280]", [] {
         Tensor x = leaf({2048, 1280}, false), w = leaf({1280}, false), b = leaf({1280}, false);
         return no_grad_step([=] { return layer_norm(x, w, b, 1e-5); });
       }}},
      {"softmax_esm", {"softmax [16,20,256,256] over the last dim", [] {
         Tensor x = leaf({16, 20, 256, 256}, false);
         return no_grad_step([=] { return softmax(x, -1); });
       }}},
      {"attention_esm", {"attention B16 H20 T256 D16 (forward)", [] { return attention_step(16, 20, 256, 16, false); }}},
      {"attention_esm_fwdbwd", {"attention B16 H20 T256 D16 (forward+backward)", [] {
         return attention_step(16, 20, 256, 16, true);
       }}},
      {"attention_aido", {"attention B4 H20 T512 D64 (forward)", [] { return attention_step(4, 20, 512, 64, false); }}},
  };
  return c;
}

int64_t status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(f, line))
    if (line.rfind(k, 0) == 0) return std::atoll(line.c_str() + k.size());
  return -1;
}

void usage() {
  std::cout << "usage: compare_cpu --case NAME [--threads N] [--reps R] [--warmup W] [--device cpu|cuda] [--profile]\n"
               "                   [--bf16-mixed]\n"
               "       compare_cpu --list\n"
               "Runs one case of tools/compare_cpu.py (strand's side) and prints one JSON line.\n"
               "  --device cuda   models, inputs and leaves on the GPU (the GPU-scale cases: see --list)\n"
               "  --bf16-mixed    run each step under bf16 autocast (autograd/autocast.h), as\n"
               "                  trainer.precision = \"bf16-mixed\"\n"
               "  --profile       time every kernel of the timed iterations (kernels/profile.h); a table\n"
               "                  goes to stderr and \"profile\": {kernel: [calls, seconds]} into the JSON\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string name;
  int threads = 0, reps = 5, warmup = 1;
  bool profile = false, bf16_mixed = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "compare_cpu: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--case") name = next();
    else if (a == "--device") g_dev = Device::parse(next());
    else if (a == "--profile") profile = true;
    else if (a == "--bf16-mixed") bf16_mixed = true;
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--reps") reps = std::atoi(next().c_str());
    else if (a == "--warmup") warmup = std::atoi(next().c_str());
    else if (a == "--list") {
      for (const auto& [n, c] : cases()) std::cout << n << "\t" << c.what << "\n";
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else {
      std::cerr << "compare_cpu: unknown argument '" << a << "'\n";
      usage();
      return 2;
    }
  }
  const auto it = cases().find(name);
  if (it == cases().end()) {
    std::cerr << "compare_cpu: unknown case '" << name << "' (--list shows them)\n";
    return 2;
  }
  if (reps < 1 || warmup < 0) {
    std::cerr << "compare_cpu: --reps must be >= 1 and --warmup >= 0\n";
    return 2;
  }
  try {
    if (threads > 0) set_num_threads(threads);
    manual_seed(0);
    const Step step = it->second.build();
    malloc_trim(0);
    { std::ofstream("/proc/self/clear_refs") << "5"; }
    const int64_t base_kb = status_kb("VmRSS");
    reset_cpu_peak_bytes();
    const int64_t live0 = cpu_allocator_stats().live_bytes;
    if (g_dev.is_cuda()) cuda_rt::reset_peak_stats(g_dev.index);
    const int64_t dev0 = g_dev.is_cuda() ? cuda_rt::allocator_stats(g_dev.index).allocated_bytes : 0;
    std::vector<double> times;
    for (int i = 0; i < warmup + reps; ++i) {
      if (profile && i == warmup) {  // the timed iterations only (they run slower: see kernels/profile.h)
        prof::reset();
        prof::set_enabled(true);
      }
      const auto t0 = std::chrono::steady_clock::now();
      {
        AutocastGuard autocast(bf16_mixed);  // as trainer.precision = "bf16-mixed"
        step();
      }
      if (g_dev.is_cuda()) cuda_rt::synchronize();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (i >= warmup) times.push_back(s);
    }
    const int64_t peak_alloc = cpu_allocator_stats().peak_bytes - live0;
    const int64_t hwm_kb = status_kb("VmHWM");
    std::ostringstream js;
    js << "{\"case\": \"" << name << "\", \"times_s\": [";
    for (size_t i = 0; i < times.size(); ++i) js << (i ? ", " : "") << times[i];
    js << "], \"peak_rss_delta_bytes\": " << (hwm_kb - base_kb) * 1024 << ", \"peak_alloc_bytes\": " << peak_alloc
       << ", \"peak_live_bytes\": " << cpu_allocator_stats().peak_bytes
       << ", \"threads\": " << num_threads() << ", \"device\": \"" << g_dev.str() << "\""
       << ", \"precision\": \"" << (bf16_mixed ? "bf16-mixed" : "fp32") << "\"";
    if (g_dev.is_cuda()) {
      const auto st = cuda_rt::allocator_stats(g_dev.index);
      js << ", \"device_peak_bytes\": " << st.peak_allocated_bytes << ", \"device_peak_above_start_bytes\": "
         << st.peak_allocated_bytes - dev0 << ", \"device_peak_reserved_bytes\": " << st.peak_reserved_bytes;
    }
    if (profile) {
      prof::set_enabled(false);
      std::cerr << "compare_cpu: " << name << ": kernel time over " << reps << " timed iterations (profiled)\n"
                << prof::report_text();
      js << ", \"profile\": {";
      const auto r = prof::report();
      for (size_t i = 0; i < r.size(); ++i)
        js << (i ? ", " : "") << "\"" << r[i].name << "\": [" << r[i].calls << ", " << r[i].seconds << "]";
      js << "}";
    }
    js << "}";
    std::cout << js.str() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "compare_cpu: " << name << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
