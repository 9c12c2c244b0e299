// Streams, events and the stream-aware caching allocator on a GPU (tensor/stream.h). The
// allocator's policy itself is tested without a GPU in tests/tensor/block_pool_test.cpp.
#include "tensor/stream.h"

#include <vector>

#include "autograd/functional.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::throws_with;

const Device kGpu = Device::cuda(0);

// A forward and backward through cuBLAS GEMMs, conv1d, layer_norm, softmax and fused attention,
// returning the loss and every gradient on the host.
std::vector<std::vector<double>> step(const std::vector<Tensor>& host_inputs) {
  std::vector<Tensor> in;
  for (const Tensor& h : host_inputs) in.push_back(ops::to(h, kGpu).set_requires_grad(true));
  const Tensor& x = in[0];  // [2, 16, 8]
  Tensor h = linear(x, in[1], in[2]);
  h = add(h, conv1d(h, in[3], {}, 1));  // channels-last
  h = layer_norm(h, in[4], in[5]);
  Tensor q = transpose(reshape(h, {2, 16, 2, 4}), 1, 2);
  ops::AttentionParams p;
  p.scale = 0.5;
  Tensor a = attention(q, q, q, p);
  Tensor loss = sum(mul(softmax(reshape(transpose(a, 1, 2), {2, 16, 8}), -1), h));
  backward(loss);
  std::vector<std::vector<double>> out{ops::to_vector<double>(loss)};
  for (const Tensor& t : in) out.push_back(ops::to_vector<double>(t.grad()));
  return out;
}

std::vector<Tensor> step_inputs() {
  return {test::uniform({2, 16, 8}, -1, 1, 1), test::uniform({8, 8}, -0.5, 0.5, 2), test::uniform({8}, -0.1, 0.1, 3),
          test::uniform({8, 8, 3}, -0.3, 0.3, 4), test::uniform({8}, 0.5, 1.5, 5), test::uniform({8}, -0.1, 0.1, 6)};
}

TEST(CudaStreams, WorkOnAPooledStreamEqualsTheDefaultStreamAndTheGuardRestores) {
  STRAND_SKIP_WITHOUT_GPU();
  const auto inputs = step_inputs();
  const auto on_default = step(inputs);
  EXPECT_TRUE(current_stream(kGpu).is_default());
  const Stream side = stream_from_pool(kGpu);
  EXPECT_FALSE(side.is_default());
  EXPECT_EQ(side.device(), kGpu);
  std::vector<std::vector<double>> on_side;
  {
    StreamGuard g(side);
    EXPECT_EQ(current_stream(kGpu), side);
    on_side = step(inputs);  // every kernel, GEMM, copy and allocation on `side`
    // The same cuBLAS, kernels and inputs: bitwise the same results.
  }
  EXPECT_TRUE(current_stream(kGpu).is_default());
  EXPECT_EQ(on_side, on_default);
  // The pool hands out distinct streams round robin, and high-priority ones from their own pool.
  std::vector<Stream> s;
  for (int i = 0; i < kStreamPoolSize; ++i) s.push_back(stream_from_pool(kGpu));
  EXPECT_EQ(s.front(), stream_from_pool(kGpu));
  EXPECT_NE(s[0], s[1]);
  EXPECT_NE(stream_from_pool(kGpu, true), s[0]);
}

TEST(CudaStreams, EventsOrderAConsumerStreamAfterItsProducer) {
  STRAND_SKIP_WITHOUT_GPU();
  const Stream producer = stream_from_pool(kGpu), consumer = stream_from_pool(kGpu);
  Tensor a = ops::to(test::uniform({512, 512}, -1, 1, 7), kGpu);
  Tensor x;
  Event made(/*timing=*/true), start(/*timing=*/true);
  {
    StreamGuard g(producer);
    start.record(producer);
    x = a;
    for (int i = 0; i < 20; ++i) x = ops::mul(ops::matmul(x, a), 1.0 / 13);  // long enough to race
    made.record(producer);
  }
  record_stream(x, consumer);
  Tensor y;
  {
    StreamGuard g(consumer);
    made.wait(consumer);
    y = ops::add(x, 1.0);
  }
  consumer.synchronize();
  EXPECT_TRUE(consumer.query());
  EXPECT_TRUE(made.query());
  EXPECT_GE(start.elapsed_ms(made), 0.0);
  producer.synchronize();
  const std::vector<double> xv = ops::to_vector<double>(x), yv = ops::to_vector<double>(y);
  // x and y are f64 (test::uniform's default): y holds x + 1 rounded once, as here
  ASSERT_EQ(x.dtype(), DType::f64);
  for (size_t i = 0; i < xv.size(); i += 997) ASSERT_EQ(yv[i], xv[i] + 1);
  Event untimed;
  untimed.record(consumer);
  untimed.synchronize();
  EXPECT_TRUE(throws_with([&] { (void)untimed.elapsed_ms(made); }, {"timing = true"}));
  EXPECT_TRUE(throws_with([&] { untimed.record(Stream()); }, {"needs a CUDA stream", "cpu"}));
}

TEST(CudaStreams, MemoryRecordedOnAnotherStreamWaitsForIt) {
  STRAND_SKIP_WITHOUT_GPU();
  cuda_rt::empty_cache(0);
  const Stream mine = stream_from_pool(kGpu), other = stream_from_pool(kGpu);
  StreamGuard g(mine);
  Tensor t = ops::zeros({1 << 20}, TensorOptions(DType::f32, kGpu));  // 4 MiB on `mine`
  void* where = t.raw_data();
  record_stream(t, other);
  record_stream(t, mine);  // its own stream: nothing to wait for
  const int64_t pending_before = cuda_rt::allocator_stats(0).pending_frees;
  t = Tensor();  // freed, but `other` may still use it
  EXPECT_EQ(cuda_rt::allocator_stats(0).pending_frees, pending_before + 1);
  other.synchronize();
  // The next allocation finds the event complete and returns the block to `mine`'s pool.
  Tensor u = ops::empty({1 << 20}, TensorOptions(DType::f32, kGpu));
  EXPECT_EQ(cuda_rt::allocator_stats(0).pending_frees, pending_before);
  EXPECT_EQ(u.raw_data(), where);
  // Another stream never gets `mine`'s free blocks.
  u = Tensor();
  {
    StreamGuard g2(other);
    Tensor w = ops::empty({1 << 20}, TensorOptions(DType::f32, kGpu));
    EXPECT_NE(w.raw_data(), where);
  }
  mine.synchronize();
}

// The hazard record_stream exists for: a tensor made on `mine`, read by queued work on `other`, and
// freed; a new tensor on `mine` must not take its memory while that read is pending. On the
// emulated device (label emu) the queued read runs only when `other` is synchronised, after `mine`'s
// later writes, so a reuse shows deterministically; on a GPU it would be a race.
TEST(CudaStreams, AFreedBlockIsNotReusedWhileAnotherStreamStillReadsIt) {
  STRAND_SKIP_WITHOUT_GPU();
  const Stream mine = stream_from_pool(kGpu), other = stream_from_pool(kGpu);
  const Tensor host = test::uniform({1 << 16}, -1, 1, 9, DType::f32);
  Tensor y;
  {
    StreamGuard g(mine);
    Tensor t = ops::to(host, kGpu);
    Event made;
    made.record(mine);
    {
      StreamGuard g2(other);
      made.wait(other);
      y = ops::add(t, 1.0);  // queued on `other`
    }
    record_stream(t, other);
    t = Tensor();
    for (int i = 0; i < 4; ++i) {  // same-size allocations on `mine`, written at once
      Tensor u = ops::empty({1 << 16}, TensorOptions(DType::f32, kGpu));
      ops::fill_(u, 7.0);
    }
  }
  mine.synchronize();
  other.synchronize();
  const std::vector<double> want = ops::to_vector<double>(ops::add(host, 1.0));
  EXPECT_EQ(ops::to_vector<double>(y), want);
}

}  // namespace
}  // namespace strand
