#pragma once
// Enformer's relative positional features, exactly as enformer-pytorch's get_positional_embed
// computes them (float32, the same operation order, use_tf_gamma = false), or with the gamma third
// taken from a precomputed table (use_tf_gamma = true).
#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace strand::models::enformer {

// [2T-1, feature_size] f32 for distances d = -(T-1) .. T-1 (row m <-> d = m-(T-1)):
// concat(S, sign(d)·S) with S = [exponential, central mask, gamma], feature_size/6 basis functions
// each. Gamma is normalised by its maximum over the feature axis (the port's torch.amax(dim=-1), not
// TF's distance axis) and computed in float32 like the port, cancellation included. With
// `tf_gamma` defined ([2T-1, feature_size/6]) that table replaces the computed gamma features.
Tensor positional_features(int64_t T, int64_t feature_size, const Tensor& tf_gamma = {});

// Reads a gamma table from a safetensors file holding exactly one 2-D floating tensor (the name
// does not matter; tools/golden/enformer.py --tf-gammas writes "tf_gammas"), as f32.
Tensor load_gamma_table(const std::string& path);

}  // namespace strand::models::enformer
