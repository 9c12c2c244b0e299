// strand-embed: sequence embeddings from an ESM-2 or AIDO.RNA model folder.
//   strand-embed --model-dir DIR --input FILE --output OUT.safetensors [--batch-size N]
//                [--max-length N] [--device cpu|cuda] [--precision fp32|bf16-mixed] [--pool none|mean] [...]
// Output (safetensors, written atomically): last_hidden_state f32 [N, L, D] padded with zeros to
// the longest tokenised sequence (or [N, D] with --pool mean: the masked mean over the tokens,
// special tokens included, as ModelGenerator pools), and attention_mask i64 [N, L]. The rows keep
// the input order; metadata holds the sequence names (FASTA headers, or line numbers).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "autograd/autocast.h"
#include "models/enformer/enformer.h"
#include "models/enformer/one_hot.h"
#include "models/hf_dir.h"
#include "tensor/safetensors.h"

using namespace strand;

namespace {

const char* kUsage = R"(usage: strand-embed --model-dir DIR --input FILE --output OUT.safetensors [options]

Embeds protein (ESM-2), RNA (AIDO.RNA) or DNA (Enformer) sequences with a Hugging Face model folder
(config.json + model.safetensors, or sharded safetensors with their index; model_type "enformer" (DNA), "esm" or
"rnabert"). PyTorch .bin folders: convert them first with tools/convert_checkpoint.py.

  --model-dir DIR      the model folder
  --input FILE         FASTA (records start with '>') or one sequence per line
  --output FILE        output .safetensors: last_hidden_state f32 [N, L, D] (zero-padded to the
                       longest) or [N, D] with --pool mean, and attention_mask i64 [N, L]
  --batch-size N       sequences per forward pass (default 8)
  --max-length N       truncate to N tokens including the 2 special tokens (default 1024, as the
                       ModelGenerator recipes; 0 = no truncation)
  --device cpu|cuda    where to run (default cpu)
  --precision P        fp32 (default) or bf16-mixed: the forward under bf16 autocast, as
                       trainer.precision (GEMMs in bf16, norms and softmax in f32); the output
                       is f32 either way
  --pool none|mean     none (default): per-token states; mean: masked mean, specials included
  --allow-unknown      map characters outside the alphabet to <unk>/[UNK] (default: an error
                       naming the sequence and position)
  --rna-exact-input    AIDO.RNA: feed the text as is, as ModelGenerator does (default: upper-case
                       and U->T, since AIDO.RNA was pre-trained on DNA letters)
  --quiet              no progress line
  --help               this text
)";

struct Args {
  std::string model_dir, input, output, device = "cpu", pool = "none", precision = "fp32";
  int64_t batch_size = 8, max_length = 1024;
  bool allow_unknown = false, rna_exact = false, quiet = false;
};

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "strand-embed: error: " << msg << "\n";
  std::exit(2);
}

int64_t parse_int(const std::string& flag, const std::string& v, int64_t min) {
  size_t pos = 0;
  int64_t x = 0;
  try {
    x = std::stoll(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v.size() || v.empty() || x < min)
    fail(flag + " expects an integer >= " + std::to_string(min) + ", got '" + v + "'");
  return x;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(f + " needs a value (see --help)");
      return argv[++i];
    };
    if (f == "--help" || f == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (f == "--model-dir") a.model_dir = value();
    else if (f == "--input") a.input = value();
    else if (f == "--output") a.output = value();
    else if (f == "--batch-size") a.batch_size = parse_int(f, value(), 1);
    else if (f == "--max-length") a.max_length = parse_int(f, value(), 0);
    else if (f == "--device") a.device = value();
    else if (f == "--precision") a.precision = value();
    else if (f == "--pool") a.pool = value();
    else if (f == "--allow-unknown") a.allow_unknown = true;
    else if (f == "--rna-exact-input") a.rna_exact = true;
    else if (f == "--quiet") a.quiet = true;
    else fail("unknown argument '" + f + "' (see --help)");
  }
  if (a.model_dir.empty()) fail("--model-dir is required (see --help)");
  if (a.input.empty()) fail("--input is required (see --help)");
  if (a.output.empty()) fail("--output is required (see --help)");
  if (a.pool != "none" && a.pool != "mean") fail("--pool must be 'none' or 'mean', got '" + a.pool + "'");
  if (a.device != "cpu" && a.device != "cuda") fail("--device must be 'cpu' or 'cuda', got '" + a.device + "'");
  if (a.precision != "fp32" && a.precision != "bf16-mixed")
    fail("--precision must be 'fp32' or 'bf16-mixed', got '" + a.precision + "'");
  if (a.max_length == 1) fail("--max-length must be 0 (none) or >= 2 (it counts the 2 special tokens), got 1");
  return a;
}

struct Input {
  std::vector<std::string> names, seqs;
};

Input read_input(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("cannot open --input '" + path + "'");
  Input in;
  std::string line;
  bool fasta = false, first = true;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const bool blank = line.find_first_not_of(" \t") == std::string::npos;
    if (first && !blank) {
      fasta = line[0] == '>';
      first = false;
    }
    if (fasta) {
      if (!line.empty() && line[0] == '>') {
        std::string name = line.substr(1);
        name = name.substr(0, name.find_first_of(" \t"));
        in.names.push_back(name.empty() ? "seq" + std::to_string(in.names.size()) : name);
        in.seqs.emplace_back();
      } else if (!blank) {
        in.seqs.back() += line;
      }
    } else if (!blank) {
      if (line[0] == '>') fail(path + ":" + std::to_string(lineno) + ": a FASTA header in a one-sequence-per-line file");
      in.names.push_back("line" + std::to_string(lineno));
      in.seqs.push_back(line);
    }
  }
  if (in.seqs.empty()) fail("--input '" + path + "' holds no sequences");
  for (size_t i = 0; i < in.seqs.size(); ++i)
    if (in.seqs[i].empty()) fail("--input '" + path + "': FASTA record '" + in.names[i] + "' has no sequence");
  return in;
}

// Enformer folders: DNA in, the trunk embedding [N, T', 2*dim] out (all bins valid: mask of ones,
// as ModelGenerator builds it). Every sequence must have the same length.
void embed_enformer(const Args& a, const Input& in, Device device) {
  auto m = models::enformer::load_enformer(a.model_dir);
  m->eval();
  if (device.is_cuda()) m->to(device);
  const int64_t N = static_cast<int64_t>(in.seqs.size());
  for (int64_t i = 1; i < N; ++i)
    if (in.seqs[static_cast<size_t>(i)].size() != in.seqs[0].size())
      fail("--input '" + a.input + "': Enformer needs sequences of one length; '" + in.names[0] + "' has " +
           std::to_string(in.seqs[0].size()) + " bp but '" + in.names[static_cast<size_t>(i)] + "' has " +
           std::to_string(in.seqs[static_cast<size_t>(i)].size()));
  const bool pool = a.pool == "mean";
  NoGradGuard ng;
  AutocastGuard autocast(a.precision == "bf16-mixed");
  std::vector<Tensor> parts;
  for (int64_t s = 0; s < N; s += a.batch_size) {
    std::vector<std::string> batch(in.seqs.begin() + s, in.seqs.begin() + std::min(N, s + a.batch_size));
    Tensor h = m->forward(ops::to(models::enformer::one_hot_dna(batch), device));
    if (pool) h = ops::mean(h, {1});
    parts.push_back(ops::contiguous(ops::to(ops::to(h, DType::f32), Device::cpu())));
    if (!a.quiet && N > a.batch_size)
      std::fprintf(stderr, "\rstrand-embed: %lld/%lld sequences", static_cast<long long>(std::min(N, s + a.batch_size)),
                   static_cast<long long>(N));
  }
  if (!a.quiet && N > a.batch_size) std::fprintf(stderr, "\n");
  Tensor out = ops::concat(parts, 0);
  const int64_t T = pool ? 1 : out.size(1);
  nlohmann::json names = in.names;
  safetensors::save(a.output,
                    {{"last_hidden_state", out}, {"attention_mask", ops::ones({N, T}, TensorOptions(DType::i64))}},
                    {{"model_dir", a.model_dir}, {"model_type", "enformer"}, {"pool", a.pool}, {"names", names.dump()}});
  if (!a.quiet) std::cerr << "strand-embed: wrote " << a.output << " (" << N << " sequences, " << shape_str(out.sizes()) << ")\n";
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  try {
    Input in = read_input(a.input);
    const Device device = a.device == "cuda" ? Device::cuda() : Device::cpu();
    if (device.is_cuda() && !cuda_available())
      fail("--device cuda: no usable CUDA GPU here (or this build has no CUDA backend); use --device cpu");

    if (models::hf_model_type(a.model_dir) == "enformer") {
      embed_enformer(a, in, device);
      return 0;
    }
    models::HfLoadOptions lo;
    lo.rna_dna_letters = !a.rna_exact;
    models::HfBackbone b = models::load_hf_backbone(a.model_dir, lo);
    b.model->eval();
    if (device.is_cuda()) b.model->to(device);
    if (!a.quiet) {
      std::string report = b.report.str();
      std::cerr << "strand-embed: " << report << "\n";
    }

    models::TokenizeOptions to;
    to.allow_unknown = a.allow_unknown;
    to.max_length = a.max_length == 0 ? -1 : a.max_length;
    const int64_t N = static_cast<int64_t>(in.seqs.size()), D = b.model->hidden_size();
    // Tokenise everything first: bad input fails before any compute, and lengths give the output shape.
    std::vector<std::vector<int64_t>> ids(static_cast<size_t>(N));
    int64_t L = 0, total_tokens = 0;
    for (int64_t i = 0; i < N; ++i) {
      ids[static_cast<size_t>(i)] = b.tokenizer->encode(in.seqs[static_cast<size_t>(i)], to, i);
      L = std::max<int64_t>(L, static_cast<int64_t>(ids[static_cast<size_t>(i)].size()));
      total_tokens += static_cast<int64_t>(ids[static_cast<size_t>(i)].size());
    }
    // Batches of similar lengths (less padding); rows go back to input order in the output.
    std::vector<int64_t> order(static_cast<size_t>(N));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
      return ids[static_cast<size_t>(x)].size() > ids[static_cast<size_t>(y)].size();
    });

    const bool pool = a.pool == "mean";
    const double out_gib = static_cast<double>(N) * static_cast<double>(pool ? D : L * D) * 4.0 / (1ull << 30);
    if (out_gib > 32)
      fail("the output would hold " + std::to_string(static_cast<int64_t>(out_gib)) + " GiB (" + std::to_string(N) +
           " sequences x " + std::to_string(L) + " tokens x " + std::to_string(D) +
           " floats); use --pool mean or split the input");
    Tensor out = ops::zeros(pool ? Shape{N, D} : Shape{N, L, D});
    std::vector<int64_t> mask(static_cast<size_t>(N * L), 0);
    float* op = out.data<float>();
    NoGradGuard ng;
    AutocastGuard autocast(a.precision == "bf16-mixed");
    const bool progress = !a.quiet && N > a.batch_size;
    const auto t0 = std::chrono::steady_clock::now();
    int64_t done_tokens = 0;
    for (int64_t s = 0; s < N; s += a.batch_size) {
      const int64_t nb = std::min(a.batch_size, N - s);
      int64_t lb = 0;
      for (int64_t j = 0; j < nb; ++j) lb = std::max<int64_t>(lb, static_cast<int64_t>(ids[static_cast<size_t>(order[static_cast<size_t>(s + j)])].size()));
      std::vector<int64_t> bid(static_cast<size_t>(nb * lb), b.tokenizer->pad_id()), bm(static_cast<size_t>(nb * lb), 0);
      for (int64_t j = 0; j < nb; ++j) {
        const auto& t = ids[static_cast<size_t>(order[static_cast<size_t>(s + j)])];
        for (size_t k = 0; k < t.size(); ++k) {
          bid[static_cast<size_t>(j * lb) + k] = t[k];
          bm[static_cast<size_t>(j * lb) + k] = 1;
        }
      }
      Tensor tid = ops::to(ops::from_vector<int64_t>(bid, {nb, lb}), device);
      Tensor tm = ops::to(ops::from_vector<int64_t>(bm, {nb, lb}), device);
      Tensor h = b.model->forward(tid, tm).last_hidden_state;
      if (pool) h = models::masked_mean(h, tm);
      h = ops::contiguous(ops::to(ops::to(h, DType::f32), Device::cpu()));
      const float* hp = h.data<float>();
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t row = order[static_cast<size_t>(s + j)];
        const int64_t len = static_cast<int64_t>(ids[static_cast<size_t>(row)].size());
        for (int64_t k = 0; k < len; ++k) mask[static_cast<size_t>(row * L + k)] = 1;
        if (pool)
          std::copy(hp + j * D, hp + (j + 1) * D, op + row * D);
        else
          std::copy(hp + j * lb * D, hp + (j * lb + len) * D, op + row * L * D);  // pads stay zero
        done_tokens += len;
      }
      if (progress) {
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "\rstrand-embed: %lld/%lld sequences, %lld/%lld tokens, %.0f tokens/s",
                     static_cast<long long>(s + nb), static_cast<long long>(N), static_cast<long long>(done_tokens),
                     static_cast<long long>(total_tokens), sec > 0 ? static_cast<double>(done_tokens) / sec : 0.0);
        std::fflush(stderr);
      }
    }
    if (progress) std::fprintf(stderr, "\n");
    nlohmann::json names = in.names;
    safetensors::save(a.output,
                      {{"last_hidden_state", out}, {"attention_mask", ops::from_vector<int64_t>(mask, {N, L})}},
                      {{"model_dir", a.model_dir},
                       {"model_type", b.model->model_type()},
                       {"pool", a.pool},
                       {"names", names.dump()}});
    if (!a.quiet)
      std::cerr << "strand-embed: wrote " << a.output << " (" << N << " sequences, "
                << (pool ? shape_str({N, D}) : shape_str({N, L, D})) << ")\n";
  } catch (const Error& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    fail(e.what());
  }
  return 0;
}
