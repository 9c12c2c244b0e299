#pragma once
// Shared by the model tests: fixture paths, scratch folders, and deviation measurement that
// prints the worst error next to the tolerance so the numbers can be reported.
#include <filesystem>
#include <cmath>
#include <iostream>
#include <string>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tensor/safetensors.h"
#include "tests/test_util.h"

namespace strand::test {

inline std::string fixture(const std::string& rel) { return std::string(STRAND_FIXTURES) + "/" + rel; }


struct Deviation {
  double max_abs = 0, max_rel = 0, max_ref = 0;  // max_rel = max |a-b| / |b| over |b| > 1e-3 * max|b|
};
inline Deviation deviation(const Tensor& a, const Tensor& b) {
  auto va = ops::to_vector<double>(a), vb = ops::to_vector<double>(b);
  Deviation d;
  for (double x : vb) d.max_ref = std::max(d.max_ref, std::abs(x));
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) {
    const double e = std::abs(va[i] - vb[i]);
    d.max_abs = std::max(d.max_abs, e);
    if (std::abs(vb[i]) > 1e-3 * d.max_ref) d.max_rel = std::max(d.max_rel, e / std::abs(vb[i]));
  }
  return d;
}
// allclose with atol = rtol = tol (DESIGN.md: |x-ref| <= atol + rtol*|ref|), printing the measured deviation.
inline ::testing::AssertionResult close_to_reference(const Tensor& got, const Tensor& ref, double tol,
                                                     const std::string& what) {
  Deviation d = deviation(got, ref);
  std::cout << "[deviation] " << what << ": max|x-ref| " << d.max_abs << ", max rel " << d.max_rel << ", max|ref| "
            << d.max_ref << " (tolerance " << tol << " abs + " << tol << " rel)\n";
  return allclose(got, ref, tol, tol);
}

// bf16-mixed against PyTorch's bf16 autocast (tools/golden/*_bf16.py): both errors (test::bf16_error)
// are measured against the fp64 computation.
inline void expect_within_twice_pytorch(const Bf16Error& ours, const nlohmann::json& errors, const std::string& what,
                                 const std::string& name) {
  Bf16Error torch{1e30, 1e30};
  EXPECT_FALSE(errors.empty()) << name << ": the fixture holds no PyTorch bf16 errors";
  for (const auto& [variant, e] : errors.items()) {
    torch.rel_l2 = std::min(torch.rel_l2, e.at(what).at("rel_l2").get<double>());
    torch.max_abs = std::min(torch.max_abs, e.at(what).at("max_abs").get<double>());
  }
  std::cout << "[bf16] " << name << " " << what << ": strand rel L2 " << ours.rel_l2 << ", max abs " << ours.max_abs
            << " | PyTorch bf16 rel L2 " << torch.rel_l2 << ", max abs " << torch.max_abs << "\n";
  EXPECT_LE(ours.rel_l2, 2 * torch.rel_l2) << name << " " << what;
  EXPECT_LE(ours.max_abs, 2 * torch.max_abs) << name << " " << what;
}

}  // namespace strand::test
