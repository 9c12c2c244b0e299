// Fusion heads against ModelGenerator's own adapters (fixtures from tools/golden/fusion.py): the
// state dict loads strictly by ModelGenerator's key names, and the output and the gradient of every
// parameter and input match in f64.
#include <nlohmann/json.hpp>

#include "models/fusion/fusion.h"
#include "tensor/safetensors.h"
#include "tests/test_util.h"

namespace strand::models {
namespace {

using test::allclose;

class FusionGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(FusionGolden, MatchesModelGenerator) {
  auto file = safetensors::load(std::string(STRAND_FIXTURES) + "/fusion/" + GetParam() + ".safetensors");
  auto cfg = nlohmann::json::parse(file.metadata.at("config"));
  MLPOptions mlp;
  mlp.hidden_sizes = cfg["hidden"].get<std::vector<int64_t>>();
  mlp.dropout = 0.1;
  mlp.dropout_in_middle = false;
  const auto sizes = cfg["sizes"].get<std::vector<int64_t>>();
  FusionHead head(cfg["kind"], sizes, cfg["out"], mlp, cfg.value("project", 512), cfg.value("heads", 16));
  head.to(DType::f64);
  head.eval();
  nn::StateDict sd;
  for (auto& [k, t] : file.tensors)
    if (k.rfind("grad.", 0) != 0 && k[0] != 'h' && k[0] != 'm' && k != "out" && k != "r") sd[k] = t;
  nn::LoadReport rep = head.load_state_dict(sd);  // strict: every name must match ModelGenerator's
  EXPECT_EQ(rep.loaded.size(), head.state_dict().size());

  std::vector<Tensor> hs, ms;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor h = ops::clone(file.tensors.at("h" + std::to_string(i)));
    h.set_requires_grad(true);
    hs.push_back(h);
    ms.push_back(file.tensors.at("m" + std::to_string(i)));
  }
  Tensor out = head.forward(hs, ms);
  EXPECT_TRUE(allclose(out, file.tensors.at("out"), 1e-12, 1e-10));
  backward(sum(out * file.tensors.at("r")));
  for (auto& [k, p] : head.named_parameters())
    EXPECT_TRUE(allclose(p.grad(), file.tensors.at("grad." + k), 1e-12, 1e-9)) << k;
  for (size_t i = 0; i < hs.size(); ++i)
    EXPECT_TRUE(allclose(hs[i].grad(), file.tensors.at("grad.h" + std::to_string(i)), 1e-12, 1e-9)) << "h" << i;
}

INSTANTIATE_TEST_SUITE_P(Heads, FusionGolden, ::testing::Values("concat2", "concat3", "attention2", "attention3"));

TEST(Fusion, PoolingAndErrors) {
  Tensor h = ops::from_vector<double>({1, 2, 3, 4, 5, 6}, {1, 3, 2});
  Tensor m = ops::from_vector<int64_t>({1, 1, 0}, {1, 3});
  EXPECT_EQ(ops::to_vector<double>(masked_mean_pool(h, m)), (std::vector<double>{2, 3}));
  EXPECT_EQ(ops::to_vector<double>(masked_mean_pool(h, {})), (std::vector<double>{3, 4}));
  EXPECT_EQ(ops::to_vector<double>(pool(Pooling::cls, h, m)), (std::vector<double>{1, 2}));
  EXPECT_TRUE(test::throws_with([] { pooling_from_string("max"); }, {"unknown pooling 'max'"}));
  EXPECT_TRUE(test::throws_with([] { CrossAttentionBlock(10, 4, 3); }, {"10", "not divisible", "3"}));
  EXPECT_TRUE(test::throws_with([] { FusionHead("sum", {4, 4}, 2, {}); }, {"unknown fusion 'sum'"}));
  ConcatFusion cf({4, 3}, 2);
  EXPECT_TRUE(test::throws_with([&] { cf.forward({ops::zeros({1, 2, 4})}, {Tensor()}); }, {"expected 2 modalities"}));
}

}  // namespace
}  // namespace strand::models
