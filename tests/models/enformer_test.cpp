// Enformer (models/enformer/) against enformer-pytorch 0.8.12 golden fixtures
// (tools/golden/enformer.py): eval forward, train-mode forward (dropout off, BatchNorm batch
// statistics), gradients of every parameter and running statistics after one step, on two tiny
// random configs; positional features; one-hot encoding; loading by name (canonical and _trunk
// aliases); checkpointing; the official parameter count; a toy training run.
//
// Tolerances (|x - ref| <= atol + rtol * |ref|), written down, not tuned:
//   eval / train forward: rtol 1e-4, atol 1e-5 * max|ref|
//   gradients:            rtol 1e-3, atol 1e-5 * max|ref| (per parameter)
//   running statistics:   rtol 1e-4, atol 1e-6
//   positional features:  rtol 1e-4, atol 1e-6 (T <= 128); rtol 1e-5, atol 1e-6 at T = 1536
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/autocast.h"
#include "models/enformer/enformer.h"
#include "models/enformer/positional.h"
#include "nn/optim.h"
#include "tensor/safetensors.h"
#include "tests/models/model_test_util.h"

namespace strand::models::enformer {
namespace {

using test::throws_with;
namespace fs = std::filesystem;

const std::string kFix = std::string(STRAND_FIXTURES) + "/enformer";

struct Dev {
  double max_abs = 0, max_rel = 0, ref_max = 0;  // max |a-b|, max |a-b| / max|b|, max|b|
  bool ok = true;
};

// Elementwise check with the tolerance above; also returns the worst deviations for the log.
Dev compare(const Tensor& got, const Tensor& ref, double rtol, double atol_scale, double atol_abs = 0) {
  Dev d;
  EXPECT_EQ(got.sizes(), ref.sizes());
  if (got.sizes() != ref.sizes()) {
    d.ok = false;
    return d;
  }
  auto a = ops::to_vector<double>(got), b = ops::to_vector<double>(ref);
  double mx = 0;
  for (double v : b) mx = std::max(mx, std::fabs(v));
  const double atol = atol_abs + atol_scale * mx;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(a[i] - b[i]);
    d.max_abs = std::max(d.max_abs, e);
    if (!(e <= atol + rtol * std::fabs(b[i]))) d.ok = false;
  }
  d.max_rel = mx > 0 ? d.max_abs / mx : d.max_abs;
  d.ref_max = mx;
  return d;
}

std::vector<std::string> sequences(const std::string& config) {
  std::ifstream f(kFix + "/" + config + "/inputs.json");
  auto j = nlohmann::json::parse(f);
  return j["sequences"].get<std::vector<std::string>>();
}

Tensor loss_of(const Tensor& y) {
  std::vector<float> w(static_cast<size_t>(y.numel()));
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(std::cos(0.37 * static_cast<double>(i)));
  Tensor wt = ops::from_vector<float>(w, y.sizes());
  return mean(y * y) + mean(y * wt);
}

TEST(EnformerConfig, OfficialWidthsAndValidation) {
  auto c = EnformerConfig::official();
  EXPECT_EQ(c.filter_list(), (std::vector<int64_t>{768, 768, 896, 1024, 1152, 1280, 1536}));
  EXPECT_EQ(c.trunk_length(196608), 1536);
  EXPECT_EQ(c.output_length(196608), 896);
  EXPECT_EQ(exponential_linspace_int(24, 48, 3, 8), (std::vector<int64_t>{24, 32, 48}));
  EnformerConfig bad;
  bad.heads = 7;
  EXPECT_TRUE(throws_with([&] { bad.validate(); }, {"dim 1536", "heads 7"}));
  bad = {};
  bad.dim = 64;
  bad.heads = 2;
  EXPECT_TRUE(throws_with([&] { bad.validate(); }, {"32", "divisible by 6"}));
  bad = {};
  bad.num_downsamples = 2;
  EXPECT_TRUE(throws_with([&] { bad.validate(); }, {"num_downsamples", "2"}));
  EXPECT_TRUE(throws_with([] { EnformerConfig::from_json_string(R"({"model_type": "esm"})"); }, {"model_type", "esm"}));
  EXPECT_TRUE(throws_with([] { EnformerConfig::from_json_string(R"({"dim": "big"})"); }, {"dim", "wrong type"}));
  auto fc = EnformerConfig::from_json_file(kFix + "/tiny_b/config.json");
  EXPECT_EQ(fc.dim, 48);
  EXPECT_EQ(fc.heads, 2);
  EXPECT_EQ(fc.output_heads.at("human"), 7);
  EXPECT_EQ(fc.output_length(1536), 80);  // 96 bins, target 81: the reference's floor keeps 80
}

TEST(EnformerOneHot, MatchesModelGeneratorEncoding) {
  Tensor x = one_hot_dna({"ACGTacgtN.x", "nNTTGGCCAA-"});
  EXPECT_EQ(x.sizes(), (Shape{2, 11, 4}));
  auto v = ops::to_vector<float>(x);
  const std::vector<float> first = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0,
                                    0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, .25f, .25f, .25f, .25f, 0, 0, 0, 0};
  EXPECT_EQ(std::vector<float>(v.begin(), v.begin() + 44), first);
  EXPECT_EQ(v[44 + 0], 0.0f);  // n
  EXPECT_EQ(v[44 + 4 * 10 + 0] + v[44 + 4 * 10 + 1] + v[44 + 4 * 10 + 2] + v[44 + 4 * 10 + 3], 0.0f);  // '-'
  EXPECT_TRUE(throws_with([] { one_hot_dna({"ACGT", "ACG"}); }, {"sequence 1", "3 bp", "4 bp"}));
  EXPECT_TRUE(throws_with([] { one_hot_dna({}); }, {"empty batch"}));
}

TEST(EnformerPositional, MatchesEnformerPytorch) {
  auto f = safetensors::load(kFix + "/posfeat.safetensors");
  for (auto [T, F] : {std::pair<int64_t, int64_t>{128, 12}, {96, 24}, {7, 6}}) {
    Tensor ref = f.tensors.at("T" + std::to_string(T) + "_F" + std::to_string(F));
    Dev d = compare(positional_features(T, F), ref, 1e-4, 0, 1e-6);
    EXPECT_TRUE(d.ok) << "T=" << T << " max abs dev " << d.max_abs;
    std::cout << "[ posfeat T=" << T << " F=" << F << " ] max |dev| " << d.max_abs << "\n";
  }
  // The official length, where the float32 gamma cancels ~3e4-sized terms (lgamma(4096)): matching
  // needs torch's operation order, a correctly rounded lgamma and no FMA contraction (measured
  // max |dev| 2.1e-7; with glibc's lgammaf and contraction it was 2.8e-3).
  Tensor rows = f.tensors.at("T1536_F192_rows");
  Tensor ref = f.tensors.at("T1536_F192");
  Tensor mine = ops::index_select(positional_features(1536, 192), 0, rows);
  Dev d = compare(mine, ref, 1e-5, 0, 1e-6);
  EXPECT_TRUE(d.ok) << "T=1536 max abs dev " << d.max_abs;
  std::cout << "[ posfeat T=1536 F=192 ] max |dev| " << d.max_abs << "\n";
  EXPECT_TRUE(throws_with([] { positional_features(8, 10); }, {"10", "divisible"}));
}

TEST(EnformerPositional, TfGammaTableReplacesComputedGamma) {
  const int64_t T = 5, F = 2;
  std::vector<float> g(static_cast<size_t>((2 * T - 1) * F));
  for (size_t i = 0; i < g.size(); ++i) g[i] = 0.01f * static_cast<float>(i + 1);
  Tensor table = ops::from_vector<float>(g, {2 * T - 1, F});
  const std::string path = std::string(STRAND_BINARY_DIR) + "/enformer_test_gamma.safetensors";
  safetensors::save(path, {{"tf_gammas", table}});
  Tensor loaded = load_gamma_table(path);
  Tensor p = positional_features(T, 6 * F, loaded);
  Tensor computed = positional_features(T, 6 * F);
  EXPECT_TRUE(test::allclose(ops::narrow(p, 1, 2 * F, F), table, 0, 0));
  EXPECT_TRUE(test::allclose(ops::narrow(p, 1, 0, 2 * F), ops::narrow(computed, 1, 0, 2 * F), 0, 0));
  // asymmetric half: sign(d) * gamma
  auto pv = ops::to_vector<float>(p);
  EXPECT_EQ(pv[0 * 12 + 3 * F + 2 * F], -g[0]);
  EXPECT_EQ(pv[(T - 1) * 12 + 3 * F + 2 * F], 0.0f);
  EXPECT_TRUE(throws_with([&] { positional_features(6, 6 * F, loaded); }, {"[9, 2]", "[11, 2]", "T = 6"}));
  // through the model config
  EnformerConfig c = EnformerConfig::from_json_file(kFix + "/tiny_a/config.json");
  c.use_tf_gamma = true;
  EXPECT_TRUE(throws_with([&] { c.validate(); }, {"tf_gamma_path"}));
  fs::remove(path);
}

// ---- golden parity ----

class EnformerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(EnformerGolden, EvalForward) {
  auto m = load_enformer(kFix + "/" + GetParam());
  auto exp = safetensors::load(kFix + "/" + GetParam() + "/expected.safetensors").tensors;
  NoGradGuard ng;
  Tensor y = m->embed(sequences(GetParam()));
  Dev d = compare(y, exp.at("eval_out"), 1e-4, 1e-5);
  EXPECT_TRUE(d.ok) << "max abs dev " << d.max_abs;
  std::cout << "[ " << GetParam() << " eval ] out " << shape_str(y.sizes()) << " max |dev| " << d.max_abs
            << " (" << d.max_rel << " of max|ref|)\n";
}

TEST_P(EnformerGolden, TrainForwardGradientsAndRunningStats) {
  for (bool ckpt : {false, true}) {
    auto m = load_enformer(kFix + "/" + GetParam());
    m->set_dropout(0, 0, 0);
    m->set_checkpointing(ckpt, ckpt);
    m->train();
    auto exp = safetensors::load(kFix + "/" + GetParam() + "/expected.safetensors").tensors;
    Tensor y = m->embed(sequences(GetParam()));
    Dev dy = compare(y, exp.at("train_out"), 1e-4, 1e-5);
    EXPECT_TRUE(dy.ok) << "train forward max abs dev " << dy.max_abs;
    Tensor loss = loss_of(y);
    EXPECT_NEAR(item(loss), item(exp.at("loss")), 1e-5 * std::fabs(item(exp.at("loss"))));
    backward(loss);
    double worst_grad = 0;
    std::string worst_name;
    int n_grads = 0;
    for (const auto& [name, p] : m->named_parameters()) {
      if (name.rfind("_heads.", 0) == 0) {
        EXPECT_FALSE(p.grad().defined()) << name;
        continue;
      }
      ASSERT_TRUE(exp.count("grad." + name)) << name;
      ASSERT_TRUE(p.grad().defined()) << name;
      // atol 1e-7 absolute besides: a conv bias feeding a train-mode BatchNorm has exactly zero true
      // gradient, where both implementations return ~1e-8 rounding noise.
      Dev d = compare(p.grad(), exp.at("grad." + name), 1e-3, 1e-5, 1e-7);
      ++n_grads;
      if (d.ref_max < 1e-6) continue;  // rounding-noise gradients: not counted in the worst relative deviation
      EXPECT_TRUE(d.ok) << name << " max abs dev " << d.max_abs << " (" << d.max_rel << " of max|ref|)";
      if (d.max_rel > worst_grad) {
        worst_grad = d.max_rel;
        worst_name = name;
      }
    }
    int n_stats = 0;
    double worst_stat = 0;
    for (const auto& [name, b] : m->named_buffers()) {
      ASSERT_TRUE(exp.count("after." + name)) << name;
      if (b.dtype() == DType::i64) {
        EXPECT_EQ(item(b), item(exp.at("after." + name))) << name;
      } else {
        Dev d = compare(b, exp.at("after." + name), 1e-4, 0, 1e-6);
        EXPECT_TRUE(d.ok) << name << " max abs dev " << d.max_abs;
        worst_stat = std::max(worst_stat, d.max_abs);
      }
      ++n_stats;
    }
    EXPECT_GT(n_grads, 30);
    EXPECT_GT(n_stats, 10);
    std::cout << "[ " << GetParam() << (ckpt ? " train+ckpt" : " train") << " ] out max |dev| " << dy.max_abs
              << "; " << n_grads << " grads, worst " << worst_grad << " of max|ref| (" << worst_name
              << "); running stats max |dev| " << worst_stat << "\n";
  }
}

// bf16-mixed (autograd/autocast.h) training step against PyTorch's bf16 autocast on the same
// model, batch and loss (tools/golden/enformer_bf16.py): measured against the fp64 step, strand's
// error of the output and of every trunk gradient (concatenated) may be at most twice PyTorch's,
// with and without checkpointing.
TEST_P(EnformerGolden, Bf16MixedStepStaysWithinTwicePyTorchsBf16Error) {
  auto ref = safetensors::load(kFix + "/" + GetParam() + "/bf16.safetensors");
  const auto errors = nlohmann::json::parse(ref.metadata.at("bf16_errors"));
  for (bool ckpt : {false, true}) {
    auto m = load_enformer(kFix + "/" + GetParam());
    m->set_dropout(0, 0, 0);
    m->set_checkpointing(ckpt, ckpt);
    m->train();
    Tensor y;
    {
      AutocastGuard bf16(true);
      y = m->embed(sequences(GetParam()));
    }
    backward(loss_of(y));
    std::vector<Tensor> got, want;
    for (const auto& [name, p] : m->named_parameters()) {
      if (name.rfind("_heads.", 0) == 0) continue;
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_EQ(p.grad().dtype(), DType::f32) << name;
      got.push_back(ops::flatten(p.grad()));
      want.push_back(ops::flatten(ref.tensors.at("grad_f64." + name)));
    }
    const std::string what = GetParam() + (ckpt ? " (checkpointing)" : "");
    test::expect_within_twice_pytorch(test::bf16_error(y, ref.tensors.at("train_out_f64")), errors, "train_out", what);
    test::expect_within_twice_pytorch(test::bf16_error(ops::concat(got, 0), ops::concat(want, 0)), errors, "grads", what);
  }
}

INSTANTIATE_TEST_SUITE_P(EnformerTiny, EnformerGolden, ::testing::Values("tiny_a", "tiny_b"));

// ---- loading ----

TEST(EnformerLoad, CanonicalAliasedAndBothNames) {
  // tiny_a's file holds the _trunk.* aliases (safetensors.torch.save_model), tiny_b the canonical names.
  auto hdr = safetensors::read_header(kFix + "/tiny_a/model.safetensors");
  EXPECT_TRUE(hdr.count("_trunk.1.0.weight"));
  EXPECT_FALSE(hdr.count("stem.0.weight"));
  auto a = load_enformer(kFix + "/tiny_a");
  EXPECT_FALSE(a->is_training());
  EXPECT_TRUE(a->state_dict().count("stem.0.weight"));

  // Both names present (a torch state_dict as pytorch_model.bin carries it): equal values load.
  auto sd = safetensors::load(kFix + "/tiny_a/model.safetensors").tensors;
  nn::StateDict both = sd;
  for (const auto& [k, v] : a->state_dict()) both[k] = ops::clone(v);
  auto canon = canonicalize_enformer_state_dict(both);
  EXPECT_EQ(canon.size(), a->state_dict().size());
  const std::string dir = std::string(STRAND_BINARY_DIR) + "/enformer_test_both";
  fs::create_directories(dir);
  fs::copy_file(kFix + "/tiny_a/config.json", dir + "/config.json", fs::copy_options::overwrite_existing);
  safetensors::save(dir + "/model.safetensors", both);
  auto b = load_enformer(dir);
  {
    NoGradGuard ng;
    Tensor x = one_hot_dna(sequences("tiny_a"));
    EXPECT_TRUE(test::allclose(a->forward(x), b->forward(x), 0, 0));
  }
  // A sharded folder (model.safetensors.index.json + shards) loads the same.
  fs::remove(dir + "/model.safetensors");
  safetensors::save_sharded(dir, sd, 64 * 1024);
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  auto sharded = load_enformer(dir);
  {
    NoGradGuard ng;
    Tensor x = one_hot_dna(sequences("tiny_a"));
    EXPECT_TRUE(test::allclose(a->forward(x), sharded->forward(x), 0, 0));
  }
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(kFix + "/tiny_a/config.json", dir + "/config.json", fs::copy_options::overwrite_existing);
  // ... but different values under the two names are an error naming both.
  both["stem.0.bias"] = ops::add(both["stem.0.bias"], 1.0);
  EXPECT_TRUE(throws_with([&] { canonicalize_enformer_state_dict(both); }, {"_trunk.1.0.bias", "stem.0.bias"}));
  // Strict: a missing key is named.
  auto missing = sd;
  missing.erase("_trunk.4.1.0.fn.1.to_q.weight");
  safetensors::save(dir + "/model.safetensors", missing);
  EXPECT_TRUE(throws_with([&] { load_enformer(dir); }, {"transformer.1.0.fn.1.to_q.weight", "missing"}));
  // An unexpected key is named.
  auto extra = sd;
  extra["_trunk.4.0.0.fn.1.bogus"] = ops::zeros({3});
  safetensors::save(dir + "/model.safetensors", extra);
  EXPECT_TRUE(throws_with([&] { load_enformer(dir); }, {"transformer.0.0.fn.1.bogus", "unexpected"}));
  // A wrongly shaped key is named with both shapes.
  auto shaped = sd;
  shaped["_trunk.1.0.bias"] = ops::zeros({23});
  safetensors::save(dir + "/model.safetensors", shaped);
  EXPECT_TRUE(throws_with([&] { load_enformer(dir); }, {"stem.0.bias", "[23]", "[24]"}));
  fs::remove_all(dir);
  EXPECT_TRUE(throws_with([] { load_enformer(kFix + "/no_such"); }, {"no_such", "not a directory"}));
}

TEST(EnformerInput, LengthErrorsNameTheLengths) {
  auto m = load_enformer(kFix + "/tiny_a");  // 3 downsamplings, target 100 bins
  NoGradGuard ng;
  EXPECT_TRUE(throws_with([&] { m->embed({std::string(792, 'A')}); }, {"792 bp", "99 bins", "target_length 100", "793"}));
  EXPECT_EQ(m->embed({std::string(793, 'A')}).sizes(), (Shape{1, 100, 96}));  // odd lengths pool with padding
  EXPECT_TRUE(throws_with([&] { m->embed({std::string(1024, 'A'), std::string(1000, 'C')}); }, {"1000 bp", "1024 bp"}));
  EXPECT_TRUE(throws_with([&] { m->forward(ops::zeros({1, 1024, 5})); }, {"[1, 1024, 5]"}));
  EXPECT_TRUE(throws_with([&] { m->head("rat", ops::zeros({1, 2, 96})); }, {"rat"}));
  Tensor h = m->head("human", m->embed({std::string(1024, 'G')}));
  EXPECT_EQ(h.sizes(), (Shape{1, 100, 5}));
  EXPECT_GT(ops::to_vector<float>(h)[0], 0.0f);  // softplus
}

// ---- checkpointing and memory ----

TEST(EnformerMemory, CheckpointingReducesPeakBytesOfATrainingStep) {
  // A stem-heavy shape like the official one (6 downsamplings: the full-resolution stem and first
  // tower blocks hold most activations, as at 196,608 bp), tiny widths.
  EnformerConfig c;
  c.dim = 48;
  c.depth = 2;
  c.heads = 4;
  c.attn_dim_key = 8;
  c.num_downsamples = 6;
  c.dim_divisible_by = 4;
  c.target_length = -1;
  c.output_heads = {{"human", 3}};
  std::vector<std::string> seqs(2, std::string(4096, 'A'));
  for (size_t i = 0; i < seqs[0].size(); ++i) seqs[i % 2][i] = "ACGT"[(i * 7) % 4];
  int64_t peak[3] = {0, 0, 0};
  for (int mode = 0; mode < 3; ++mode) {  // none, transformer only, transformer + stem/tower
    Enformer m(c);
    m.set_checkpointing(mode >= 1, mode == 2);
    m.train();
    Tensor x = one_hot_dna(seqs);
    reset_cpu_peak_bytes();
    const int64_t base = cpu_allocator_stats().live_bytes;
    backward(mean(m.forward(x)));
    peak[mode] = cpu_allocator_stats().peak_bytes - base;
  }
  std::cout << "[ memory ] training-step peak bytes above baseline: no checkpointing " << peak[0]
            << ", transformer only " << peak[1] << ", transformer + stem/tower " << peak[2] << "\n";
  // Measured: 6.56 MB / 6.38 MB / 5.10 MB; what remains is the recomputation of one full-resolution
  // step (its ~4 tensors and their gradients) plus the stored segment inputs. (12.7 / 12.1 / 8.2 MB
  // before the batch-norm, activation and pooling outputs were recomputed rather than kept, which
  // shrank the step without checkpointing most.)
  EXPECT_LT(peak[2], 0.85 * static_cast<double>(peak[0]));
  EXPECT_LT(peak[2], 0.85 * static_cast<double>(peak[1]));
}

TEST(EnformerTrain, DropoutIsActiveInTrainingAndReplayedByCheckpointing) {
  auto m = load_enformer(kFix + "/tiny_a");
  const auto seqs = sequences("tiny_a");
  m->train();
  manual_seed(5);
  Tensor a = m->embed(seqs);
  Tensor b = m->embed(seqs);
  EXPECT_FALSE(test::allclose(a, b, 1e-6, 1e-6)) << "dropout should make two train-mode forwards differ";
  // With dropout active, a checkpointed step recomputes with the same masks: identical loss and
  // gradients to the plain step from the same seed.
  std::vector<std::vector<float>> grads[2];
  double losses[2];
  for (int ck = 0; ck < 2; ++ck) {
    auto mm = load_enformer(kFix + "/tiny_a");
    mm->train();
    mm->set_checkpointing(ck == 1, ck == 1);
    manual_seed(11);
    Tensor loss = loss_of(mm->embed(seqs));
    backward(loss);
    losses[ck] = item(loss);
    for (const auto& [name, p] : mm->named_parameters())
      if (p.grad().defined()) grads[ck].push_back(ops::to_vector<float>(p.grad()));
  }
  EXPECT_EQ(losses[0], losses[1]);
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_EQ(grads[0][i], grads[1][i]) << "parameter " << i;
  m->eval();
  NoGradGuard ng;
  EXPECT_TRUE(test::allclose(m->embed(seqs), m->embed(seqs), 0, 0));
}

// ---- structure ----

TEST(EnformerStructure, OfficialConfigParameterCount) {
  Enformer m(EnformerConfig::official());
  EXPECT_EQ(m.num_parameters(), 251221292);
  EXPECT_EQ(m.num_trunk_parameters(), 229845504);
  EXPECT_EQ(m.named_buffers().size(), 14u * 3);
  EXPECT_EQ(m.embedding_dim(), 3072);
  auto sd = m.state_dict();
  EXPECT_EQ(sd.at("stem.0.weight").sizes(), (Shape{768, 4, 15}));
  EXPECT_EQ(sd.at("conv_tower.5.0.2.weight").sizes(), (Shape{1536, 1280, 5}));
  EXPECT_EQ(sd.at("transformer.10.0.fn.1.to_v.weight").sizes(), (Shape{1536, 1536}));
  EXPECT_EQ(sd.at("transformer.0.0.fn.1.rel_pos_bias").sizes(), (Shape{1, 8, 1, 64}));
  EXPECT_EQ(sd.at("transformer.0.0.fn.1.to_rel_k.weight").sizes(), (Shape{512, 192}));
  EXPECT_EQ(sd.at("final_pointwise.1.2.weight").sizes(), (Shape{3072, 1536, 1}));
  EXPECT_EQ(sd.at("_heads.human.0.weight").sizes(), (Shape{5313, 3072}));
  EXPECT_EQ(sd.at("stem.2.to_attn_logits.weight").sizes(), (Shape{768, 768, 1, 1}));
}

// ---- training ----

TEST(EnformerTrain, LossDecreasesOnAToyTarget) {
  EnformerConfig c = EnformerConfig::from_json_file(kFix + "/tiny_a/config.json");
  c.target_length = 16;
  c.depth = 1;
  Enformer m(c);
  m.train();
  nn::AdamW opt(m.trainable_parameters(), 3e-3, {0.9, 0.999}, 1e-8, 0.0);
  std::vector<std::string> seqs;
  for (int b = 0; b < 2; ++b) {
    std::string s(256, 'A');
    for (size_t i = 0; i < s.size(); ++i) s[i] = "ACGT"[(i * (3 + b) + i / 7) % 4];
    seqs.push_back(s);
  }
  Tensor x = one_hot_dna(seqs);
  Tensor target = ops::full({2, 16, 96}, 0.5);
  double first = 0, last = 0;
  for (int step = 0; step < 15; ++step) {
    opt.zero_grad();
    Tensor loss = mse_loss(m.forward(x), target);
    backward(loss);
    opt.step();
    if (step == 0) first = item(loss);
    last = item(loss);
  }
  std::cout << "[ train ] toy loss " << first << " -> " << last << "\n";
  EXPECT_LT(last, 0.5 * first);
}

}  // namespace
}  // namespace strand::models::enformer
