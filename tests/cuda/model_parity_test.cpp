// Whole backbones on the GPU against the same weights on the CPU: tiny ESM-2 and AIDO.RNA (with a
// padded row) and Enformer (conv tower with batch_norm in training mode, attention pooling,
// relative-position attention), forward and the gradient of every parameter. This is what
// `--device cuda` rests on; skipped without a usable GPU. Also: the same under bf16 autocast, and
// attention dropout drawing the same masks on both devices.
#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "models/aido_rna/rnabert.h"
#include "models/enformer/enformer.h"
#include "models/esm2/esm2.h"
#include "tests/test_util.h"

namespace strand {
namespace {

const Device kGpu = Device::cuda(0);

// Every parameter's gradient (undefined where none reached it), cleared from the model.
std::vector<Tensor> take_grads(nn::Module& m) {
  std::vector<Tensor> grads;
  for (const Tensor& p : m.parameters()) {
    grads.push_back(p.grad().defined() ? ops::clone(p.grad()) : Tensor());
    p.set_grad(Tensor());
  }
  return grads;
}
// The model's (GPU) gradients against the CPU run's.
void expect_grads_close(nn::Module& m, const std::vector<Tensor>& cpu_grads, double tol) {
  const auto params = m.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    if (!cpu_grads[i].defined()) continue;
    EXPECT_TRUE(test::allclose(ops::to(params[i].grad(), Device::cpu()), cpu_grads[i], tol, tol)) << "parameter " << i;
  }
}

// Forward + backward of sum(h * w) on the CPU, then the same model moved to the GPU, from the same
// generator state (so dropout draws the same masks on both devices). bf16: both sides under bf16
// autocast; their roundings differ where the f32 sums' orders do, so outputs and gradients are
// compared by relative L2 (bf16 holds about 3 significant digits).
void expect_backbone_parity(models::Backbone& m, const Tensor& ids, const Tensor& mask, bool bf16 = false) {
  const Tensor w = test::uniform({ids.size(0), ids.size(1), m.hidden_size()}, -1, 1, 5, DType::f32);
  m.train();  // train mode exercises the training kernels (and dropout, where a config has it)
  const Generator start = default_generator();
  Tensor h;
  {
    AutocastGuard autocast(bf16);
    h = m.forward(ids, mask).last_hidden_state;
  }
  backward(sum(h * w));
  const std::vector<Tensor> grads = take_grads(m);
  m.to(kGpu);
  default_generator() = start;
  Tensor hg;
  {
    AutocastGuard autocast(bf16);
    hg = m.forward(ops::to(ids, kGpu), ops::to(mask, kGpu)).last_hidden_state;
  }
  backward(sum(hg * ops::to(w, kGpu)));
  if (!bf16) {
    EXPECT_TRUE(test::allclose(ops::to(hg, Device::cpu()), h, 2e-5, 2e-5));
    expect_grads_close(m, grads, 1e-4);
    return;
  }
  EXPECT_EQ(hg.dtype(), h.dtype());
  EXPECT_LT(test::bf16_error(hg, h).rel_l2, 2e-2);
  const auto params = m.parameters();
  for (size_t i = 0; i < params.size(); ++i)
    if (grads[i].defined())
      EXPECT_LT(test::bf16_error(params[i].grad(), grads[i]).rel_l2, 3e-2) << "parameter " << i;
}

Tensor padded_mask() { return ops::from_vector<int64_t>({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, {2, 10}); }

// The tiny backbones and their batches (the second row padded).
std::shared_ptr<models::Esm2Model> tiny_esm(double attention_dropout = 0) {
  models::Esm2Config c;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 64;
  c.attention_probs_dropout_prob = attention_dropout;
  manual_seed(1);
  return std::make_shared<models::Esm2Model>(c);
}
Tensor esm_ids() {
  return ops::from_vector<int64_t>({0, 5, 6, 7, 8, 9, 10, 11, 12, 2, 0, 13, 14, 32, 2, 1, 1, 1, 1, 1}, {2, 10});
}
std::shared_ptr<models::RNABertModel> tiny_aido(const std::string& norm) {
  models::RNABertConfig c;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 48;
  c.normalization_type = norm;
  manual_seed(2);
  return std::make_shared<models::RNABertModel>(c);
}
Tensor aido_ids() { return ops::from_vector<int64_t>({2, 5, 6, 7, 8, 5, 6, 7, 8, 3, 2, 8, 7, 6, 3, 0, 0, 0, 0, 0}, {2, 10}); }

TEST(CudaModelParity, Esm2ForwardAndGradients) {
  STRAND_SKIP_WITHOUT_GPU();
  expect_backbone_parity(*tiny_esm(), esm_ids(), padded_mask());
}

// Attention dropout in training: fused on the CPU, composed on the GPU; the Philox masks are the
// same on both devices, so the results agree to fp32 rounding.
TEST(CudaModelParity, Esm2AttentionDropoutDrawsTheSameMasksOnBothDevices) {
  STRAND_SKIP_WITHOUT_GPU();
  expect_backbone_parity(*tiny_esm(0.2), esm_ids(), padded_mask());
}

TEST(CudaModelParity, Bf16MixedBackbonesAgreeAcrossDevices) {
  STRAND_SKIP_WITHOUT_GPU();
  expect_backbone_parity(*tiny_esm(), esm_ids(), padded_mask(), true);
  expect_backbone_parity(*tiny_aido("RMSNorm"), aido_ids(), padded_mask(), true);
}

TEST(CudaModelParity, AidoRnaForwardAndGradients) {
  STRAND_SKIP_WITHOUT_GPU();
  expect_backbone_parity(*tiny_aido("LayerNorm"), aido_ids(), padded_mask());
}

TEST(CudaModelParity, EnformerForwardGradientsAndRunningStats) {
  STRAND_SKIP_WITHOUT_GPU();
  models::enformer::EnformerConfig c;
  c.dim = 48;
  c.depth = 2;
  c.heads = 4;
  c.attn_dim_key = 8;
  c.num_downsamples = 3;
  c.dim_divisible_by = 8;
  c.target_length = -1;
  c.output_heads = {{"human", 3}};
  manual_seed(3);
  models::enformer::Enformer m(c);
  m.set_dropout(0, 0, 0);
  m.train();  // batch_norm in training mode: batch statistics and running-stat updates
  std::vector<std::string> seqs(2, std::string(256, 'A'));
  for (size_t i = 0; i < 256; ++i) seqs[i % 2][i] = "ACGTN"[(i * 7 + i / 3) % 5];
  const Tensor x = models::enformer::one_hot_dna(seqs);
  nn::StateDict start;
  for (const auto& [k, v] : m.state_dict()) start[k] = ops::clone(v);
  Tensor y = m.forward(x);
  const Tensor w = test::uniform(y.sizes(), -1, 1, 6, DType::f32);
  backward(sum(y * w));
  const std::vector<Tensor> grads = take_grads(m);
  const nn::NamedTensors stats = m.named_buffers();
  std::vector<Tensor> cpu_stats;
  for (const auto& kv : stats) cpu_stats.push_back(ops::clone(kv.second));
  m.load_state_dict(start);  // the CPU step moved the running statistics: start the GPU from the same state
  m.to(kGpu);
  Tensor yg = m.forward(ops::to(x, kGpu));
  backward(sum(yg * ops::to(w, kGpu)));
  EXPECT_TRUE(test::allclose(ops::to(yg, Device::cpu()), y, 1e-4, 1e-4));
  expect_grads_close(m, grads, 1e-3);
  const nn::NamedTensors gstats = m.named_buffers();
  ASSERT_EQ(gstats.size(), cpu_stats.size());
  for (size_t i = 0; i < gstats.size(); ++i)
    if (is_floating(cpu_stats[i].dtype()))
      EXPECT_TRUE(test::allclose(ops::to(gstats[i].second, Device::cpu()), cpu_stats[i], 1e-5, 1e-5)) << gstats[i].first;
}

}  // namespace
}  // namespace strand
