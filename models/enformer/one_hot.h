#pragma once
// DNA one-hot encoding as ModelGenerator's Enformer backbone does it (enformer-pytorch's
// str_to_one_hot): bytes A/C/G/T in either case -> [1,0,0,0] / [0,1,0,0] / [0,0,1,0] / [0,0,0,1];
// '.' -> [0.25]*4; N and every other byte -> zeros. No padding or truncation.
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace strand::models::enformer {

// [B, L, 4] f32. The batch must be non-empty and share one length (a strand::Error names the
// first sequence whose length differs, and both lengths).
Tensor one_hot_dna(const std::vector<std::string>& sequences);

}  // namespace strand::models::enformer
