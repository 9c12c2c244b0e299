// The kernel profile: off by default, every dispatched kernel counted under its name when on,
// nothing recorded once off again.
#include "kernels/profile.h"
#include "tests/test_util.h"

namespace strand {
namespace {

const prof::Entry* find(const std::vector<prof::Entry>& r, const std::string& name) {
  for (const auto& e : r)
    if (e.name == name) return &e;
  return nullptr;
}

TEST(KernelProfile, CountsEveryDispatchedKernelWhileOn) {
  const bool was = prof::enabled();
  prof::set_enabled(false);
  prof::reset();
  Tensor x = test::uniform({64, 96}, -1, 1, 3, DType::f32), w = test::uniform({32, 96}, -1, 1, 4, DType::f32);
  (void)ops::softmax(x, -1);
  EXPECT_TRUE(prof::report().empty());  // off: nothing recorded

  prof::set_enabled(true);
  (void)ops::softmax(x, -1);
  (void)ops::softmax(x, 0);
  (void)ops::linear(x, w);
  (void)ops::layer_norm(x, Tensor(), Tensor(), 1e-5);
  prof::set_enabled(false);
  (void)ops::softmax(x, -1);  // off again: not counted

  const auto r = prof::report();
  const prof::Entry* sm = find(r, "softmax");
  ASSERT_NE(sm, nullptr);
  EXPECT_EQ(sm->calls, 2);
  EXPECT_GE(sm->seconds, 0.0);
  ASSERT_NE(find(r, "matmul"), nullptr);
  EXPECT_EQ(find(r, "layer_norm")->calls, 1);
  for (size_t i = 1; i < r.size(); ++i) EXPECT_GE(r[i - 1].seconds, r[i].seconds);  // largest first
  const std::string text = prof::report_text();
  EXPECT_NE(text.find("softmax"), std::string::npos);
  EXPECT_NE(text.find("(all kernels)"), std::string::npos);
  prof::reset();
  EXPECT_TRUE(prof::report().empty());
  prof::set_enabled(was);
}

}  // namespace
}  // namespace strand
