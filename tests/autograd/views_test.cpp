// Gradients through views, copies and casts.
#include "tests/test_util.h"

namespace strand {
namespace {

using test::grad_ok;
using test::throws_with;

using Fn = std::function<Tensor(const Tensor&)>;

void check_view(const char* name, const Fn& f, const Shape& in_shape = {2, 3, 4}) {
  Tensor x = test::param(in_shape, -1, 1, 61);
  EXPECT_TRUE(grad_ok([&](const std::vector<Tensor>& in) { return f(in[0]); }, {x})) << name;
}

TEST(ViewGrad, EveryViewOpPassesGradcheck) {
  check_view("view", [](const Tensor& x) { return view(x, {6, 4}); });
  check_view("reshape_copy", [](const Tensor& x) { return reshape(transpose(x, 0, 2), {-1}); });
  check_view("permute", [](const Tensor& x) { return permute(x, {2, 0, 1}); });
  check_view("transpose", [](const Tensor& x) { return transpose(x, -1, 0); });
  check_view("narrow", [](const Tensor& x) { return narrow(x, 2, 1, 2); });
  check_view("narrow_neg", [](const Tensor& x) { return narrow(x, 1, -2, 2); });
  check_view("slice_step", [](const Tensor& x) { return slice(x, 2, 0, 4, 3); });
  check_view("select", [](const Tensor& x) { return select(x, 1, 2); });
  check_view("unsqueeze", [](const Tensor& x) { return unsqueeze(x, 1); });
  check_view("squeeze", [](const Tensor& x) { return squeeze(x, 1); }, {3, 1, 2});
  check_view("squeeze_all", [](const Tensor& x) { return squeeze(x); }, {1, 3, 1});
  check_view("expand", [](const Tensor& x) { return expand(x, {2, 3, 3, 4}); }, {3, 1, 4});
  check_view("flatten", [](const Tensor& x) { return flatten(x, 1); });
  check_view("contiguous", [](const Tensor& x) { return contiguous(permute(x, {1, 0, 2})); });
  check_view("clone", [](const Tensor& x) { return clone(x); });

  check_view("chain", [](const Tensor& x) { return sum(select(transpose(x, 0, 1), 0, 1) * narrow(x, 1, 1, 1), {0}); });
}

TEST(ViewGrad, CastGradientHasInputDtype) {
  Tensor x = test::param({3}, -1, 1, 62);
  Tensor y = to(x, DType::f32);
  backward(sum(y));
  EXPECT_EQ(x.grad().dtype(), DType::f64);
  EXPECT_EQ(ops::to_vector<double>(x.grad()), (std::vector<double>{1, 1, 1}));
}

TEST(ViewGrad, ContiguousAndSameDtypeCastReturnTheInput) {
  Tensor x = test::param({3}, -1, 1, 63);
  EXPECT_TRUE(contiguous(x).is_same(x));
  EXPECT_TRUE(to(x, DType::f64).is_same(x));
  EXPECT_TRUE(x.is_leaf());
}

TEST(ViewGrad, DetachCutsTheGraph) {
  Tensor x = test::param({3}, -1, 1, 64);
  Tensor d = detach(x * 2.0);
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(throws_with([&] { backward(sum(d)); }, {"does not require grad"}));
}

}  // namespace
}  // namespace strand
