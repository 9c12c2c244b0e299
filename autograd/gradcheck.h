#pragma once
// Finite-difference gradient check (central differences, f64). Analytic gradients come from one
// backward pass of <f(inputs), v> for a fixed random v; numeric ones perturb each element of each
// input that requires grad by ±eps. Used by every op's test.
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace strand {

struct GradcheckResult {
  bool ok = true;
  std::string message;  // the first mismatch: input, element, analytic vs numeric
  double max_abs_error = 0;
};

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          double eps = 1e-6, double atol = 1e-6, double rtol = 1e-5);

}  // namespace strand
