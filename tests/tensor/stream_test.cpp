// The stream and event API where no GPU is involved: CPU streams, and the errors a side stream or
// an event gives without a usable GPU. tests/cuda/stream_test.cpp covers them on a GPU.
#include "tensor/stream.h"

#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "tests/test_util.h"

namespace strand {
namespace {

TEST(Streams, CpuStreamsAreTheDefaultAndSynchroniseTrivially) {
  const Stream s = current_stream(Device::cpu());
  EXPECT_EQ(s, Stream());
  EXPECT_EQ(s, default_stream(Device::cpu()));
  EXPECT_TRUE(s.is_default());
  EXPECT_TRUE(s.query());
  s.synchronize();
  {
    StreamGuard g(s);  // nothing to switch on a CPU
    EXPECT_EQ(current_stream(Device::cpu()), s);
  }
  Event e;
  EXPECT_FALSE(e.recorded());
  EXPECT_TRUE(e.query());  // never recorded: complete
  e.synchronize();
  s.wait(e);
  EXPECT_TRUE(test::throws_with([&] { e.record(s); }, {"Event::record", "cpu"}));
  // record_stream is a no-op for CPU tensors.
  record_stream(ops::zeros({4}), s);
}

TEST(Streams, SideStreamsNeedAUsableGpu) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present; tests/cuda/stream_test.cpp covers streams";
  EXPECT_TRUE(test::throws_with([] { (void)stream_from_pool(Device::cuda(0)); }, {"stream_from_pool"}));
  Event e(/*timing=*/true);
  EXPECT_TRUE(test::throws_with([&] { (void)e.elapsed_ms(e); }, {"elapsed_ms"}));
}

}  // namespace
}  // namespace strand
