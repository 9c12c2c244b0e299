#include "nn/layers.h"

#include "nn/init.h"

namespace strand::nn {

namespace {
TensorOptions opts(const LayerOptions& o) { return TensorOptions(o.dtype, o.device); }
void check_positive(int64_t v, const char* layer, const char* what) {
  STRAND_CHECK(v > 0, layer, ": ", what, " must be positive, got ", v);
}
}  // namespace

Linear::Linear(int64_t in, int64_t out, bool with_bias, LayerOptions o)
    : UnaryModule("Linear"), in_features(in), out_features(out) {
  check_positive(in, "Linear", "in_features");
  check_positive(out, "Linear", "out_features");
  weight = register_parameter("weight", ops::empty({out, in}, opts(o)));
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double b = 1.0 / std::sqrt(static_cast<double>(in));
    bias = register_parameter("bias", ops::empty({out}, opts(o)));
    init::uniform_(bias, -b, b);
  } else {
    register_parameter("bias", Tensor());
  }
}
Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

Embedding::Embedding(int64_t n, int64_t dim, int64_t pad, LayerOptions o) : UnaryModule("Embedding"), padding_idx(pad) {
  check_positive(n, "Embedding", "num_embeddings");
  check_positive(dim, "Embedding", "dim");
  STRAND_CHECK(pad < n && pad >= -1, "Embedding: padding_idx ", pad, " out of range for ", n, " embeddings");
  weight = register_parameter("weight", ops::empty({n, dim}, opts(o)));
  init::normal_(weight);
  if (pad >= 0) {
    NoGradGuard ng;
    ops::fill_(ops::select(weight, 0, pad), 0);
  }
}
Tensor Embedding::forward(const Tensor& indices) { return embedding(weight, indices, padding_idx); }

LayerNorm::LayerNorm(int64_t dim, double e, bool affine, bool with_bias, LayerOptions o) : UnaryModule("LayerNorm"), eps(e) {
  check_positive(dim, "LayerNorm", "dim");
  weight = register_parameter("weight", affine ? ops::ones({dim}, opts(o)) : Tensor());
  bias = register_parameter("bias", affine && with_bias ? ops::zeros({dim}, opts(o)) : Tensor());
}
Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t dim, double e, LayerOptions o) : UnaryModule("RMSNorm"), eps(e) {
  check_positive(dim, "RMSNorm", "dim");
  weight = register_parameter("weight", ops::ones({dim}, opts(o)));
}
Tensor RMSNorm::forward(const Tensor& x) { return rms_norm(x, weight, eps); }

BatchNorm1d::BatchNorm1d(int64_t c, double e, double m, LayerOptions o) : UnaryModule("BatchNorm1d"), eps(e), momentum(m) {
  check_positive(c, "BatchNorm1d", "channels");
  STRAND_CHECK(m >= 0 && m <= 1, "BatchNorm1d: momentum must be in [0, 1], got ", m);
  const DType stat = o.dtype == DType::f64 ? DType::f64 : DType::f32;
  weight = register_parameter("weight", ops::ones({c}, opts(o)));
  bias = register_parameter("bias", ops::zeros({c}, opts(o)));
  running_mean = register_buffer("running_mean", ops::zeros({c}, TensorOptions(stat, o.device)));
  running_var = register_buffer("running_var", ops::ones({c}, TensorOptions(stat, o.device)));
  num_batches_tracked = register_buffer("num_batches_tracked", ops::zeros({}, TensorOptions(DType::i64)));
}
Tensor BatchNorm1d::forward(const Tensor& x) {
  if (is_training()) {
    NoGradGuard ng;
    ops::add_(num_batches_tracked, ops::scalar_tensor(1, TensorOptions(DType::i64, num_batches_tracked.device())));
  }
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}

Conv1d::Conv1d(int64_t cin, int64_t cout, int64_t k, int64_t pad, bool with_bias, LayerOptions o)
    : UnaryModule("Conv1d"), padding(pad) {
  check_positive(cin, "Conv1d", "in_channels");
  check_positive(cout, "Conv1d", "out_channels");
  check_positive(k, "Conv1d", "kernel_size");
  STRAND_CHECK(pad >= 0 || k % 2 == 1, "Conv1d: 'same' padding needs an odd kernel size, got ", k);
  weight = register_parameter("weight", ops::empty({cout, cin, k}, opts(o)));
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double b = 1.0 / std::sqrt(static_cast<double>(cin * k));
    bias = register_parameter("bias", ops::empty({cout}, opts(o)));
    init::uniform_(bias, -b, b);
  } else {
    register_parameter("bias", Tensor());
  }
}
Tensor Conv1d::forward(const Tensor& x) { return conv1d(x, weight, bias, padding); }

Dropout::Dropout(double prob) : UnaryModule("Dropout"), p(prob) {
  STRAND_CHECK(p >= 0 && p < 1, "Dropout: probability must be in [0, 1), got ", p);
}
Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training()); }

Activation activation_from_string(const std::string& n) {
  if (n == "identity" || n == "none") return Activation::identity;
  if (n == "relu") return Activation::relu;
  if (n == "gelu") return Activation::gelu;
  if (n == "gelu_sigmoid") return Activation::gelu_sigmoid;
  if (n == "tanh") return Activation::tanh;
  if (n == "sigmoid") return Activation::sigmoid;
  if (n == "silu" || n == "swish") return Activation::silu;
  if (n == "softplus") return Activation::softplus;
  STRAND_CHECK(false, "unknown activation '", n,
               "' (expected identity, relu, gelu, gelu_sigmoid, tanh, sigmoid, silu, softplus)");
  return Activation::identity;
}

Tensor apply_activation(Activation a, const Tensor& x) {
  switch (a) {
    case Activation::identity: return x;
    case Activation::relu: return relu(x);
    case Activation::gelu: return gelu(x);
    case Activation::gelu_sigmoid: return gelu_sigmoid(x);
    case Activation::tanh: return tanh(x);
    case Activation::sigmoid: return sigmoid(x);
    case Activation::silu: return silu(x);
    case Activation::softplus: return softplus(x);
  }
  return x;
}

ActivationModule::ActivationModule(Activation a) : UnaryModule("Activation"), act(a) {}

}  // namespace strand::nn
