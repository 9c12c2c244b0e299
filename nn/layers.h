#pragma once
// Layers, each with PyTorch's parameter names and default initialisation. Sequences are
// channels-last ([B, L, C]) throughout, so Conv1d and BatchNorm1d take [..., C] inputs.
#include <cmath>
#include <memory>

#include "nn/module.h"

namespace strand::nn {

struct LayerOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
};

// y = x Wᵀ + b. weight [out, in] kaiming-uniform(a=√5) = U(±1/√in); bias U(±1/√in).
class Linear : public UnaryModule {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, LayerOptions o = {});
  Tensor forward(const Tensor& x) override;
  int64_t in_features, out_features;
  Tensor weight, bias;
};

// Lookup table [num_embeddings, dim] ~ N(0, 1); the padding row (if any) starts at zero and
// receives no gradient.
class Embedding : public UnaryModule {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, int64_t padding_idx = -1, LayerOptions o = {});
  Tensor forward(const Tensor& indices) override;
  int64_t padding_idx;
  Tensor weight;
};

class LayerNorm : public UnaryModule {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool affine = true, bool bias = true, LayerOptions o = {});
  Tensor forward(const Tensor& x) override;
  double eps;
  Tensor weight, bias;
};

class RMSNorm : public UnaryModule {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6, LayerOptions o = {});
  Tensor forward(const Tensor& x) override;
  double eps;
  Tensor weight;
};

// Channels-last BatchNorm1d: statistics over every dim but the last. eps 1e-5, momentum 0.1;
// buffers running_mean, running_var, num_batches_tracked as PyTorch names them. Training mode
// normalises with batch statistics and updates the running ones (unbiased variance).
class BatchNorm1d : public UnaryModule {
 public:
  explicit BatchNorm1d(int64_t channels, double eps = 1e-5, double momentum = 0.1, LayerOptions o = {});
  Tensor forward(const Tensor& x) override;
  double eps, momentum;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};

// Channels-last Conv1d: x [B, L, Cin] -> [B, L', Cout]; weight [Cout, Cin, K] (PyTorch layout),
// stride 1, padding -1 = "same" (K/2, odd K). Init as PyTorch: U(±1/√(Cin·K)) for both.
class Conv1d : public UnaryModule {
 public:
  Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t padding = -1, bool bias = true,
         LayerOptions o = {});
  Tensor forward(const Tensor& x) override;
  int64_t padding;
  Tensor weight, bias;
};

class Dropout : public UnaryModule {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override;
  double p;
};

// Activations as modules (for Sequential and configurable heads).
enum class Activation { identity, relu, gelu, gelu_sigmoid, tanh, sigmoid, silu, softplus };
Activation activation_from_string(const std::string& name);  // "relu", "gelu", "tanh", ...
Tensor apply_activation(Activation a, const Tensor& x);

class ActivationModule : public UnaryModule {
 public:
  explicit ActivationModule(Activation a);
  Tensor forward(const Tensor& x) override { return apply_activation(act, x); }
  Activation act;
};

}  // namespace strand::nn
