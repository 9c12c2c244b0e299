// CUDA kernels against their CPU twins. Every test skips when no usable GPU is present (a driver
// error from cudaGetDeviceCount counts as none), so this binary runs everywhere.
#include <cstdlib>
#include <string>

#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::throws_with;

const Device kGpu = Device::cuda(0);

Tensor gpu(const Tensor& t) { return ops::to(t, kGpu); }
Tensor cpu(const Tensor& t) { return ops::to(t, Device::cpu()); }

TEST(CudaParity, CopiesRoundTripEveryDtypeAndLayout) {
  STRAND_SKIP_WITHOUT_GPU();
  Tensor x = test::uniform({3, 5, 7}, -4, 4, 81);
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i64, DType::i32, DType::b8}) {
    Tensor h = ops::to(x, dt);
    Tensor d = gpu(h);
    EXPECT_TRUE(d.is_cuda());
    EXPECT_EQ(ops::to_vector<double>(d), ops::to_vector<double>(h)) << dtype_name(dt);
    // casts on the device equal casts on the host
    for (DType to : {DType::f32, DType::f64, DType::bf16, DType::i64, DType::b8})
      EXPECT_EQ(ops::to_vector<double>(ops::to(d, to)), ops::to_vector<double>(ops::to(h, to)))
          << dtype_name(dt) << " -> " << dtype_name(to);
  }
  Tensor p = ops::permute(x, {2, 0, 1});  // non-contiguous host -> device
  EXPECT_EQ(ops::to_vector<double>(gpu(p)), ops::to_vector<double>(p));
  Tensor dp = ops::permute(gpu(x), {1, 2, 0});  // non-contiguous device -> host
  EXPECT_EQ(ops::to_vector<double>(dp), ops::to_vector<double>(ops::permute(x, {1, 2, 0})));
  Tensor dst = ops::zeros({4, 7}, TensorOptions(DType::f32, kGpu));
  ops::copy_(ops::narrow(dst, 0, 1, 3), ops::to(ops::select(x, 1, 0), DType::f32));  // host -> device view
  auto v = ops::to_vector<float>(dst);
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_EQ(v[7], static_cast<float>(ops::to_vector<double>(x)[0]));
}

TEST(CudaParity, UnaryOpsAndDerivativesMatchCpu) {
  STRAND_SKIP_WITHOUT_GPU();
  const UnaryOp all[] = {UnaryOp::neg, UnaryOp::exp, UnaryOp::log, UnaryOp::sqrt, UnaryOp::rsqrt, UnaryOp::abs,
                         UnaryOp::sign, UnaryOp::tanh, UnaryOp::sigmoid, UnaryOp::relu, UnaryOp::softplus,
                         UnaryOp::silu, UnaryOp::gelu, UnaryOp::gelu_sigmoid, UnaryOp::clamp, UnaryOp::pow,
                         UnaryOp::add_scalar, UnaryOp::mul_scalar, UnaryOp::div_scalar, UnaryOp::rsub_scalar};
  Tensor x = test::uniform({33, 65}, 0.1, 3, 82);  // positive: valid for log/sqrt/pow
  Tensor g = test::uniform({33, 65}, -1, 1, 83);
  for (UnaryOp op : all) {
    double a = op == UnaryOp::softplus ? 1.0 : (op == UnaryOp::clamp ? 0.5 : 1.7), b = op == UnaryOp::clamp ? 2.0 : 20;
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
      Tensor h = ops::to(x, dt), hg = ops::to(g, dt);
      // Device libm may differ from the host's in the last bits: 2 ulp-ish tolerances per dtype.
      const double tol = dt == DType::f64 ? 1e-14 : (dt == DType::f32 ? 1e-6 : 1e-2);
      EXPECT_TRUE(allclose(ops::unary(op, gpu(h), a, b), ops::unary(op, h, a, b), tol, tol))
          << unary_op_name(op) << " " << dtype_name(dt);
      EXPECT_TRUE(allclose(ops::unary_backward(op, gpu(hg), gpu(h), a, b), ops::unary_backward(op, hg, h, a, b), tol, tol))
          << unary_op_name(op) << " backward " << dtype_name(dt);
    }
  }
  // non-contiguous input
  Tensor t = ops::transpose(x, 0, 1);
  EXPECT_TRUE(allclose(ops::unary(UnaryOp::gelu, ops::transpose(gpu(x), 0, 1)), ops::unary(UnaryOp::gelu, t), 1e-14, 1e-14));
}

TEST(CudaParity, BinaryCompareWhereFillAddMatchCpu) {
  STRAND_SKIP_WITHOUT_GPU();
  Tensor a = test::uniform({4, 1, 6}, 0.5, 2, 84), b = test::uniform({3, 6}, 0.5, 2, 85);
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div, BinaryOp::maximum, BinaryOp::minimum})
    for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i64}) {
      Tensor ha = ops::to(ops::mul(a, 3.0), dt), hb = ops::to(ops::mul(b, 3.0), dt);
      if (dt == DType::i64 && op == BinaryOp::div) continue;
      EXPECT_EQ(ops::to_vector<double>(ops::binary(op, gpu(ha), gpu(hb))), ops::to_vector<double>(ops::binary(op, ha, hb)))
          << binary_op_name(op) << " " << dtype_name(dt);
    }
  for (CompareOp op : {CompareOp::eq, CompareOp::ne, CompareOp::lt, CompareOp::le, CompareOp::gt, CompareOp::ge})
    EXPECT_EQ(ops::to_vector<int32_t>(ops::compare(op, gpu(a), gpu(b))), ops::to_vector<int32_t>(ops::compare(op, a, b)));
  Tensor c = ops::compare(CompareOp::gt, a, 1.2);
  EXPECT_EQ(ops::to_vector<double>(ops::where(gpu(c), gpu(a), gpu(b))), ops::to_vector<double>(ops::where(c, a, b)));
  EXPECT_EQ(ops::to_vector<double>(ops::masked_fill(gpu(a), gpu(c), -7)), ops::to_vector<double>(ops::masked_fill(a, c, -7)));
  Tensor d = gpu(ops::zeros({3, 6}, DType::f64)), h = ops::zeros({3, 6}, DType::f64);
  ops::add_(d, gpu(b), 0.5);
  ops::add_(h, b, 0.5);
  EXPECT_EQ(ops::to_vector<double>(d), ops::to_vector<double>(h));
  ops::fill_(ops::select(d, 1, 2), 9);
  ops::fill_(ops::select(h, 1, 2), 9);
  EXPECT_EQ(ops::to_vector<double>(d), ops::to_vector<double>(h));
  EXPECT_TRUE(throws_with([&] { ops::add(gpu(a), b); }, {"different devices", "cuda:0", "cpu"}));
}

// The vectorised elementwise path (one contiguous, 16-byte-aligned run per operand) against the CPU:
// lengths around the pack widths (tails of every size), views starting 0-3 elements into a buffer
// (misaligned starts take the strided path), every operand kind (unary, derivative, binary,
// compare, where, cast, fill, add_) and dtypes whose packs hold 2, 4, 8 or 16 elements (bool).
TEST(CudaParity, VectorisedElementwiseEqualsTheCpuAtEveryLengthAndAlignment) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    const Tensor buf_a = ops::to(test::uniform({5003}, 0.25, 2, 201), dt), buf_b = ops::to(test::uniform({5003}, 0.25, 2, 202), dt);
    const Tensor ga = gpu(buf_a), gb = gpu(buf_b);
    for (int64_t n : {1, 2, 3, 7, 8, 9, 15, 16, 17, 33, 1000, 4999}) {
      for (int64_t start : {0, 1, 2, 3}) {
        const Tensor a = ops::narrow(buf_a, 0, start, n), b = ops::narrow(buf_b, 0, start, n);
        const Tensor da = ops::narrow(ga, 0, start, n), db = ops::narrow(gb, 0, start, n);
        const std::string at = std::string(dtype_name(dt)) + " n=" + std::to_string(n) + " start=" + std::to_string(start);
        // Correctly rounded arithmetic only (no libm, no product a multiply-add could fuse), so the
        // two devices must agree exactly.
        EXPECT_EQ(ops::to_vector<double>(ops::unary(UnaryOp::mul_scalar, da, 1.7)),
                  ops::to_vector<double>(ops::unary(UnaryOp::mul_scalar, a, 1.7))) << at;
        EXPECT_EQ(ops::to_vector<double>(ops::unary_backward(UnaryOp::relu, db, ops::add(da, -1.0))),
                  ops::to_vector<double>(ops::unary_backward(UnaryOp::relu, b, ops::add(a, -1.0)))) << at;
        EXPECT_EQ(ops::to_vector<double>(ops::mul(da, db)), ops::to_vector<double>(ops::mul(a, b))) << at;
        const Tensor c = ops::compare(CompareOp::gt, a, b), dc = ops::compare(CompareOp::gt, da, db);
        EXPECT_EQ(ops::to_vector<int32_t>(dc), ops::to_vector<int32_t>(c)) << at;
        EXPECT_EQ(ops::to_vector<double>(ops::where(dc, da, db)), ops::to_vector<double>(ops::where(c, a, b))) << at;
        for (DType to : {DType::f32, DType::f64, DType::bf16, DType::b8})
          EXPECT_EQ(ops::to_vector<double>(ops::to(da, to)), ops::to_vector<double>(ops::to(a, to))) << at << " to " << dtype_name(to);
        Tensor h = ops::clone(a), d = ops::clone(da);
        ops::add_(h, b, -0.5);
        ops::add_(d, db, -0.5);
        EXPECT_EQ(ops::to_vector<double>(d), ops::to_vector<double>(h)) << at;
        Tensor hf = ops::clone(buf_a), df = ops::clone(ga);
        ops::fill_(ops::narrow(hf, 0, start, n), 3.5);
        ops::fill_(ops::narrow(df, 0, start, n), 3.5);
        EXPECT_EQ(ops::to_vector<double>(df), ops::to_vector<double>(hf)) << at;  // nothing outside the view written
      }
    }
  }
}

TEST(CudaParity, RandomStreamsAreIdenticalToTheCpu) {
  STRAND_SKIP_WITHOUT_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    Generator g1{2024, 5}, g2{2024, 5};
    EXPECT_EQ(ops::to_vector<double>(ops::rand({1001}, TensorOptions(dt, kGpu), &g1)),
              ops::to_vector<double>(ops::rand({1001}, TensorOptions(dt), &g2)));
    EXPECT_EQ(ops::to_vector<double>(ops::dropout_mask({77, 13}, 0.1, TensorOptions(dt, kGpu), &g1)),
              ops::to_vector<double>(ops::dropout_mask({77, 13}, 0.1, TensorOptions(dt), &g2)));
    EXPECT_EQ(g1.offset, g2.offset);
  }
}

TEST(CudaParity, AutogradThroughElementwiseOpsMatchesCpu) {
  STRAND_SKIP_WITHOUT_GPU();
  auto run = [](Device dev) {
    Tensor x = ops::to(test::uniform({5, 8}, -1, 1, 86, DType::f32), dev);
    Tensor w = ops::to(test::uniform({5, 8}, -1, 1, 87, DType::f32), dev);
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    Tensor y = gelu(x * w) + tanh(x) * sigmoid(w) - exp(w * 0.5);
    backward(y, ops::to(ops::ones({5, 8}), dev));
    return std::make_pair(cpu(x.grad()), cpu(w.grad()));
  };
  auto c = run(Device::cpu()), g = run(kGpu);
  EXPECT_TRUE(allclose(g.first, c.first, 1e-6, 1e-6));
  EXPECT_TRUE(allclose(g.second, c.second, 1e-6, 1e-6));
}

TEST(CudaParity, CachingAllocatorReusesDeviceMemory) {
  STRAND_SKIP_WITHOUT_GPU();
  const int64_t base = cuda_rt::allocator_stats(0).allocated_bytes;
  const void* first;
  {
    Tensor a = ops::zeros({1 << 20}, TensorOptions(DType::f32, kGpu));  // 4 MiB
    first = a.raw_data();
    EXPECT_GE(cuda_rt::allocator_stats(0).allocated_bytes, base + (4 << 20));
  }
  EXPECT_EQ(cuda_rt::allocator_stats(0).allocated_bytes, base);
  const int64_t reserved = cuda_rt::allocator_stats(0).reserved_bytes;
  Tensor b = ops::zeros({1 << 20}, TensorOptions(DType::f32, kGpu));
  EXPECT_EQ(b.raw_data(), first);  // the cached block, no new cudaMalloc
  EXPECT_EQ(cuda_rt::allocator_stats(0).reserved_bytes, reserved);
  EXPECT_TRUE(throws_with([] { ops::empty({int64_t{1} << 45}, TensorOptions(DType::f32, kGpu)); },
                          {"out of memory on cuda:0", "allocating", "reserved"}));
}

TEST(CudaParity, ExpandableSegmentsGiveFreedPagesBackAndKeepValues) {
  STRAND_SKIP_WITHOUT_GPU();
  const char* asked = std::getenv("STRAND_EXPANDABLE_SEGMENTS");
  if (!asked || !*asked || std::string(asked) == "0")
    GTEST_SKIP() << "STRAND_EXPANDABLE_SEGMENTS is not set (ctest runs this binary once with it)";
  ASSERT_TRUE(cuda_rt::expandable_segments(0)) << "asked for, but the driver's virtual memory calls were not found";
  cuda_rt::empty_cache(0);  // no free ordinary segment left to be released below
  // ~12 MiB tensors: each spans pages and shares its first and last page with its neighbours.
  const Tensor x = test::uniform({3 * (1 << 20) + 7}, -1, 1, 71);
  Tensor a = gpu(x), b = gpu(ops::mul(x, 2.0)), c = gpu(ops::mul(x, 3.0));
  EXPECT_TRUE(allclose(cpu(b), ops::mul(x, 2.0), 0, 0));
  const BlockPoolStats before = cuda_rt::allocator_stats(0);
  b = Tensor();
  cuda_rt::empty_cache(0);  // b's own pages are unmapped; the pages it shares with a and c are not
  const BlockPoolStats after = cuda_rt::allocator_stats(0);
  EXPECT_GE(after.unmapped_bytes - before.unmapped_bytes, int64_t{8} << 20);
  EXPECT_EQ(before.reserved_bytes - after.reserved_bytes, after.unmapped_bytes - before.unmapped_bytes);
  Tensor d = gpu(ops::mul(x, 4.0));  // b's place again, its pages mapped anew
  EXPECT_TRUE(allclose(cpu(a), x, 0, 0));
  EXPECT_TRUE(allclose(cpu(c), ops::mul(x, 3.0), 0, 0));
  EXPECT_TRUE(allclose(cpu(d), ops::mul(x, 4.0), 0, 0));
  EXPECT_TRUE(allclose(cpu(ops::add(gpu(x), d)), ops::mul(x, 5.0), 1e-6, 1e-6));  // kernels read across pages
}

}  // namespace
}  // namespace strand
