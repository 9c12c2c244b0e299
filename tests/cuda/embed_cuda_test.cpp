// strand-embed --device cuda against the reference implementations' outputs (the golden fixtures
// written by tools/make_golden.py from transformers' EsmModel, ModelGenerator's RNABertModel and
// enformer-pytorch): the whole binary on the GPU, golden-tested. Skipped without a GPU.
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/models/model_test_util.h"

#ifndef STRAND_EMBED_BINARY  // the emulated device's build names its own (strand-embed-emu)
#define STRAND_EMBED_BINARY STRAND_BINARY_DIR "/strand-embed"
#endif

namespace strand {
namespace {

using test::fixture;

// Writes the sequences as FASTA, runs strand-embed on the GPU, returns the output file.
safetensors::File embed_on_gpu(const test::TempDir& tmp, const std::string& model_dir,
                               const std::vector<std::string>& seqs, const std::string& extra = "") {
  {
    std::ofstream fa(tmp.str("in.fa"));
    for (size_t i = 0; i < seqs.size(); ++i) fa << ">s" << i << "\n" << seqs[i] << "\n";
  }
  const std::string cmd = std::string(STRAND_EMBED_BINARY) + " --device cuda --quiet --batch-size 3 --model-dir " +
                          model_dir + " --input " + tmp.str("in.fa") + " --output " + tmp.str("out.safetensors") +
                          " " + extra + " 2> " + tmp.str("err.txt");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "see " << tmp.str("err.txt");
  return safetensors::load(tmp.str("out.safetensors"));
}

TEST(CudaEmbed, TransformerFoldersMatchTheReference) {
  STRAND_SKIP_WITHOUT_GPU();
  // the flags of the CPU golden tests (tests/models/embed_test.cpp): AIDO.RNA's fixture feeds the text as is
  for (const auto& [name, extra] : std::vector<std::pair<std::string, std::string>>{
           {"esm2/tiny_base", ""}, {"aido_rna/tiny_mlm", "--rna-exact-input --allow-unknown"}}) {
    test::TempDir tmp("cuda_embed");
    auto exp = safetensors::load(fixture(name + "/expected.safetensors"));
    const auto seqs = nlohmann::json::parse(exp.metadata.at("sequences")).get<std::vector<std::string>>();
    auto out = embed_on_gpu(tmp, fixture(name + "/model"), seqs, extra);
    const Tensor& mask = exp.tensors.at("attention_mask");
    EXPECT_EQ(ops::to_vector<int64_t>(out.tensors.at("attention_mask")), ops::to_vector<int64_t>(mask));
    const Tensor keep = ops::to(ops::unsqueeze(mask, -1), DType::f32);  // pads are zero in strand's output
    EXPECT_TRUE(test::close_to_reference(out.tensors.at("last_hidden_state"),
                                         ops::mul(exp.tensors.at("last_hidden_state"), keep), 1e-4,
                                         name + " strand-embed --device cuda"));
  }
}

TEST(CudaEmbed, EnformerFolderMatchesTheReference) {
  STRAND_SKIP_WITHOUT_GPU();
  test::TempDir tmp("cuda_embed_enformer");
  auto inputs = nlohmann::json::parse(std::ifstream(fixture("enformer/tiny_b/inputs.json")));
  auto out = embed_on_gpu(tmp, fixture("enformer/tiny_b"), inputs["sequences"].get<std::vector<std::string>>());
  auto exp = safetensors::load(fixture("enformer/tiny_b/expected.safetensors"));
  EXPECT_TRUE(test::close_to_reference(out.tensors.at("last_hidden_state"), exp.tensors.at("eval_out"), 1e-4,
                                       "enformer tiny_b strand-embed --device cuda"));
}

}  // namespace
}  // namespace strand
