// CUDA row kernels (softmax over any dim, layer_norm, rms_norm, rotary) and their gradients against
// the CPU kernels, through autograd with the same upstream gradient. Skipped without a usable GPU.
#include <functional>
#include <vector>

#include "autograd/functional.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
const Device kGpu = Device::cuda(0);

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f on the inputs (each a leaf requiring grad) on `dev`; returns the output and every input's
// gradient for the upstream gradient `up`, all copied to the CPU.
std::vector<Tensor> run(const Fn& f, const std::vector<Tensor>& inputs, const Tensor& up, Device dev) {
  std::vector<Tensor> in;
  for (const Tensor& t : inputs) {
    Tensor d = ops::to(t, dev);
    d.set_requires_grad(true);
    in.push_back(d);
  }
  Tensor y = f(in);
  backward(y, ops::to(up, dev));
  std::vector<Tensor> r{ops::to(y, Device::cpu())};
  for (const Tensor& t : in) r.push_back(ops::to(t.grad(), Device::cpu()));
  return r;
}

void expect_parity(const Fn& f, const std::vector<Tensor>& inputs, const Shape& out_shape, double tol) {
  const Tensor up = test::uniform(out_shape, -1, 1, 99, inputs[0].dtype());
  const auto c = run(f, inputs, up, Device::cpu()), g = run(f, inputs, up, kGpu);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_TRUE(allclose(g[i], c[i], tol, tol)) << (i ? "grad " : "value ") << i;
}

TEST(CudaNnParity, SoftmaxLastAndMiddleDims) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-12 : 2e-6;
    Tensor x = test::uniform({3, 5, 2, 37}, -6, 6, 1, dt);
    for (int64_t dim : {-1, 2, 1}) {
      expect_parity([dim](const std::vector<Tensor>& in) { return softmax(in[0], dim); }, {x}, x.sizes(), tol);
      expect_parity([dim](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); }, {x}, x.sizes(), tol);
    }
    Tensor wide = test::uniform({4, 3000}, -20, 20, 2, dt);  // rows longer than a block
    expect_parity([](const std::vector<Tensor>& in) { return softmax(in[0], -1); }, {wide}, wide.sizes(), tol);
  }
}

TEST(CudaNnParity, LayerNormAndRmsNormWithAndWithoutAffine) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f64 ? 1e-11 : 1e-5;
    Tensor x = test::uniform({7, 3, 333}, -3, 3, 3, dt), w = test::uniform({333}, 0.5, 1.5, 4, dt),
           b = test::uniform({333}, -1, 1, 5, dt);
    expect_parity([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); }, {x, w, b},
                  x.sizes(), tol);
    expect_parity([](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-5); }, {x},
                  x.sizes(), tol);
    expect_parity([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); }, {x, w}, x.sizes(), tol);
  }
}

TEST(CudaNnParity, RotaryOnATransposedView) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor c = test::uniform({9, 8}, -1, 1, 6, dt), s = test::uniform({9, 8}, -1, 1, 7, dt);
    Tensor x = test::uniform({2, 9, 3, 12}, -1, 1, 8, dt);  // [B, T, H, D]; rotary on the first 8 of 12
    auto f = [&](const std::vector<Tensor>& in) {
      Tensor xt = transpose(in[0], 1, 2);  // [B, H, T, D] view
      return rotary(xt, ops::to(c, in[0].device()), ops::to(s, in[0].device()));
    };
    expect_parity(f, {x}, {2, 3, 9, 12}, dt == DType::f64 ? 1e-14 : 1e-6);
  }
}

}  // namespace
}  // namespace strand
