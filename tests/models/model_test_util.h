#pragma once
// Shared by the model tests: fixture paths, scratch folders, and deviation measurement that
// prints the worst error next to the tolerance so the numbers can be reported.
#include <filesystem>
#include <iostream>
#include <string>
#include <unistd.h>

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

}  // namespace strand::test
