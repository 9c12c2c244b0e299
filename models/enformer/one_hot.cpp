#include "models/enformer/one_hot.h"

#include <array>
#include <cstring>

#include "kernels/ops.h"

namespace strand::models::enformer {

Tensor one_hot_dna(const std::vector<std::string>& seqs) {
  STRAND_CHECK(!seqs.empty(), "Enformer one-hot: empty batch (no sequences)");
  const int64_t L = static_cast<int64_t>(seqs[0].size());
  for (size_t b = 1; b < seqs.size(); ++b)
    STRAND_CHECK(static_cast<int64_t>(seqs[b].size()) == L, "Enformer one-hot: sequences in a batch must share one ",
                 "length; sequence 0 has ", L, " bp but sequence ", b, " has ", seqs[b].size(), " bp");
  static const auto table = [] {
    std::array<std::array<float, 4>, 256> t{};
    const char* bases = "ACGT";
    for (int c = 0; c < 4; ++c) {
      t[static_cast<unsigned char>(bases[c])][c] = 1.0f;
      t[static_cast<unsigned char>(bases[c] + ('a' - 'A'))][c] = 1.0f;
    }
    t[static_cast<unsigned char>('.')] = {0.25f, 0.25f, 0.25f, 0.25f};
    return t;
  }();
  const int64_t B = static_cast<int64_t>(seqs.size());
  Tensor out = ops::empty({B, L, 4}, DType::f32);
  float* o = out.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    const auto* s = reinterpret_cast<const unsigned char*>(seqs[b].data());
    for (int64_t l = 0; l < L; ++l) std::memcpy(o + (b * L + l) * 4, table[s[l]].data(), 4 * sizeof(float));
  }
  return out;
}

}  // namespace strand::models::enformer
