// strand-embed end to end: the binary the build produced, on the golden fixtures' folders and
// sequences, compared with the reference hidden states; and its errors (exit code 2, one line).
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "models/backbone.h"
#include "tests/models/model_test_util.h"

namespace strand::models {
namespace {

using test::fixture;
using test::TempDir;

struct EmbedRun {
  int rc;
  std::string err;
};

EmbedRun embed(const TempDir& tmp, const std::string& args) {
  const std::string err = tmp.str("stderr.txt");
  const std::string cmd = std::string(STRAND_BINARY_DIR) + "/strand-embed " + args + " 2> " + err;
  const int status = std::system(cmd.c_str());
  std::ifstream f(err);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

std::vector<std::string> sequences(const safetensors::File& exp) {
  return nlohmann::json::parse(exp.metadata.at("sequences")).get<std::vector<std::string>>();
}

// Golden fixture -> FASTA, strand-embed (batch size 3: sorted, mixed batches), compare per token
// and pooled with the reference, pads zero.
void check_fixture(const std::string& name, const std::string& extra) {
  TempDir tmp("embed");
  auto exp = safetensors::load(fixture(name + "/expected.safetensors"));
  auto seqs = sequences(exp);
  {
    std::ofstream fa(tmp.str("in.fa"));
    for (size_t i = 0; i < seqs.size(); ++i) fa << ">s" << i << " some description\n" << seqs[i] << "\n";
  }
  const std::string base = "--model-dir " + fixture(name + "/model") + " --input " + tmp.str("in.fa") + " --batch-size 3 " + extra;
  EmbedRun r = embed(tmp, base + " --output " + tmp.str("out.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("sequences"), std::string::npos) << "progress line expected: " << r.err;
  auto out = safetensors::load(tmp.str("out.safetensors"));
  const Tensor& h = out.tensors.at("last_hidden_state");
  const Tensor& m = out.tensors.at("attention_mask");
  const Tensor& ref = exp.tensors.at("last_hidden_state");
  const Tensor& ref_mask = exp.tensors.at("attention_mask");
  EXPECT_EQ(h.dtype(), DType::f32);
  EXPECT_EQ(m.dtype(), DType::i64);
  EXPECT_EQ(ops::to_vector<int64_t>(m), ops::to_vector<int64_t>(ref_mask));
  // Pads: zero in the output; the reference's pad rows are replaced by zero for the comparison.
  Tensor keep = ops::to(ops::unsqueeze(ref_mask, -1), DType::f32);
  EXPECT_TRUE(test::close_to_reference(h, ops::mul(ref, keep), 1e-4, name + " strand-embed last_hidden_state"));
  EXPECT_EQ(nlohmann::json::parse(out.metadata.at("names"))[1], "s1");

  EmbedRun p = embed(tmp, base + " --pool mean --quiet --output " + tmp.str("pooled.safetensors"));
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_TRUE(p.err.empty()) << p.err;
  auto pooled = safetensors::load(tmp.str("pooled.safetensors"));
  EXPECT_TRUE(test::close_to_reference(pooled.tensors.at("last_hidden_state"), masked_mean(ref, ref_mask), 1e-4,
                                       name + " strand-embed --pool mean"));

  // bf16-mixed: f32 output within bf16's error of the reference (the golden models' bf16 error
  // against fp64 is 1-2% relative L2, see Bf16MixedStaysWithinTwicePyTorchsBf16Error), and not
  // the fp32 result.
  EmbedRun q = embed(tmp, base + " --precision bf16-mixed --quiet --output " + tmp.str("bf16.safetensors"));
  ASSERT_EQ(q.rc, 0) << q.err;
  const Tensor h16 = safetensors::load(tmp.str("bf16.safetensors")).tensors.at("last_hidden_state");
  EXPECT_EQ(h16.dtype(), DType::f32);
  const double err = test::bf16_error(h16, ops::mul(ref, keep)).rel_l2;
  std::cout << "[bf16] " << name << " strand-embed --precision bf16-mixed: rel L2 " << err << " against fp32\n";
  EXPECT_LT(err, 0.05);
  EXPECT_GT(err, 1e-4);
}

TEST(StrandEmbed, EsmFolderMatchesTheReference) { check_fixture("esm2/tiny_base", ""); }
TEST(StrandEmbed, AidoRnaFolderMatchesTheReference) {
  check_fixture("aido_rna/tiny_mlm", "--rna-exact-input --allow-unknown");
}

TEST(StrandEmbed, PlainLinesTruncationAndDnaLetters) {
  TempDir tmp("embed_lines");
  std::ofstream(tmp.str("in.txt")) << "acguacgu\n\nACGTACGT\r\n";
  EmbedRun r = embed(tmp, "--model-dir " + fixture("aido_rna/tiny_rms/model") + " --input " + tmp.str("in.txt") +
                         " --max-length 6 --quiet --output " + tmp.str("o.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  auto out = safetensors::load(tmp.str("o.safetensors"));
  EXPECT_EQ(out.tensors.at("last_hidden_state").sizes(), (Shape{2, 6, 30}));
  // Upper-cased and U->T by default: both lines are the same sequence.
  Tensor h = out.tensors.at("last_hidden_state");
  EXPECT_TRUE(test::allclose(ops::select(h, 0, 0), ops::select(h, 0, 1), 1e-6, 1e-6));
}

TEST(StrandEmbed, BadInputIsOneLineAndExitCode2) {
  TempDir tmp("embed_err");
  std::ofstream(tmp.str("in.txt")) << "MKT\n";
  const std::string out = " --output " + tmp.str("o.safetensors");
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    EmbedRun r = embed(tmp, args);
    EXPECT_EQ(r.rc, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find("strand-embed: error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
  };
  const std::string in = " --input " + tmp.str("in.txt");
  expect_error("--model-dir " + tmp.str("missing") + in + out, "does not exist");
  expect_error("--model-dir " + tmp.str() + in + out, "no config.json");
  std::ofstream(tmp.str("config.json")) << "{not json";
  expect_error("--model-dir " + tmp.str() + in + out, "not valid JSON");
  const std::string model = "--model-dir " + fixture("esm2/tiny_mlm/model");
  expect_error(model + " --input " + tmp.str("nope.fa") + out, "cannot open --input");
  expect_error(model + in, "--output is required");
  expect_error(model + in + out + " --batch-size 0", "--batch-size expects an integer >= 1, got '0'");
  expect_error(model + in + out + " --pool max", "--pool must be");
  expect_error(model + in + out + " --precision fp16", "--precision must be 'fp32' or 'bf16-mixed', got 'fp16'");
  expect_error(model + in + out + " --frobnicate", "unknown argument '--frobnicate'");
  std::ofstream(tmp.str("bad.txt")) << "MKT\nMKjT\n";
  expect_error(model + " --input " + tmp.str("bad.txt") + out, "sequence 1, position 2");
  if (!cuda_available()) expect_error(model + in + out + " --device cuda", "no usable CUDA GPU");
  expect_error(model + in + out + " --device tpu", "--device must be 'cpu' or 'cuda'");
  EXPECT_FALSE(std::filesystem::exists(tmp.str("o.safetensors")));
  EmbedRun help = embed(tmp, "--help > " + tmp.str("help.txt"));
  EXPECT_EQ(help.rc, 0);
}

}  // namespace
}  // namespace strand::models

namespace strand::models {
namespace {

// An enformer-pytorch folder: DNA in, the eval-mode trunk embedding out, equal to the reference.
TEST(StrandEmbed, EnformerFolderMatchesTheReference) {
  test::TempDir tmp("embed_enformer");
  auto inputs = nlohmann::json::parse(std::ifstream(test::fixture("enformer/tiny_b/inputs.json")));
  const auto seqs = inputs["sequences"].get<std::vector<std::string>>();
  {
    std::ofstream fa(tmp.str("in.fa"));
    for (size_t i = 0; i < seqs.size(); ++i) fa << ">s" << i << "\n" << seqs[i] << "\n";
  }
  EmbedRun r = embed(tmp, "--model-dir " + test::fixture("enformer/tiny_b") + " --input " + tmp.str("in.fa") +
                              " --output " + tmp.str("out.safetensors") + " --quiet");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto out = safetensors::load(tmp.str("out.safetensors"));
  auto exp = safetensors::load(test::fixture("enformer/tiny_b/expected.safetensors"));
  EXPECT_TRUE(strand::test::allclose(out.tensors.at("last_hidden_state"), exp.tensors.at("eval_out"), 1e-5, 1e-4));
  EXPECT_EQ(out.metadata.at("model_type"), "enformer");
  EXPECT_EQ(ops::item(ops::amax(ops::to(out.tensors.at("attention_mask"), DType::f64))), 1.0);
  // sequences of different lengths cannot share a batch
  {
    std::ofstream fa(tmp.str("bad.fa"));
    fa << ">a\n" << seqs[0] << "\n>b\n" << seqs[0].substr(0, 100) << "\n";
  }
  EmbedRun bad = embed(tmp, "--model-dir " + test::fixture("enformer/tiny_b") + " --input " + tmp.str("bad.fa") +
                                " --output " + tmp.str("bad.safetensors"));
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("one length"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace strand::models
