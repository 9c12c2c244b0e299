#include <gtest/gtest.h>

#include <sstream>

#include "autograd/functional.h"
#include "tensor/philox.h"
#include "tests/test_util.h"

namespace strand {
namespace {

using test::allclose;
using test::throws_with;

TEST(Tensor, EmptyHasContiguousStridesAndStats) {
  auto before = cpu_allocator_stats();
  {
    Tensor t = Tensor::empty({2, 3, 4});
    EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
    EXPECT_EQ(t.numel(), 24);
    EXPECT_EQ(t.nbytes(), 96u);
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
    EXPECT_EQ(cpu_allocator_stats().live_bytes, before.live_bytes + 96);
    EXPECT_GE(cpu_allocator_stats().peak_bytes, before.live_bytes + 96);
  }
  EXPECT_EQ(cpu_allocator_stats().live_bytes, before.live_bytes);
}

TEST(Tensor, EmptyTensorsAreContiguous) {
  EXPECT_TRUE(ops::zeros({3, 0, 2}).is_contiguous());
  EXPECT_TRUE(ops::transpose(ops::zeros({3, 0, 2}), 0, 2).is_contiguous());
}

TEST(Tensor, NegativeShapeIsAnError) {
  EXPECT_TRUE(throws_with([] { Tensor::empty({2, -1}); }, {"negative dimension", "[2, -1]"}));
}

TEST(Tensor, FactoriesFillValues) {
  EXPECT_EQ(ops::to_vector<float>(ops::full({3}, 2.5)), (std::vector<float>{2.5f, 2.5f, 2.5f}));
  EXPECT_EQ(ops::to_vector<int64_t>(ops::arange(0, 5)), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(ops::to_vector<double>(ops::arange(1, 2, 0.25, DType::f64)), (std::vector<double>{1, 1.25, 1.5, 1.75}));
  EXPECT_EQ(ops::to_vector<float>(ops::zeros({2})), (std::vector<float>{0, 0}));
  EXPECT_EQ(ops::item(ops::ones({1, 1}, DType::i32)), 1.0);
  Tensor v = ops::from_vector<int64_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(v.dtype(), DType::i64);
  EXPECT_EQ(v.sizes(), (Shape{2, 3}));
  EXPECT_TRUE(throws_with([] { ops::from_vector<float>({1, 2, 3}, {2, 2}); }, {"3 values", "[2, 2]"}));
}

TEST(Tensor, Bf16AndF16RoundToNearestEven) {
  EXPECT_EQ(static_cast<float>(bf16(1.0f)), 1.0f);
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1).
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_EQ(static_cast<float>(f16(1.0f + 1.0f / 2048)), 1.0f);
  EXPECT_EQ(static_cast<float>(f16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(static_cast<float>(f16(70000.0f))));
  EXPECT_EQ(static_cast<float>(f16(5.9604644775390625e-8f)), 5.9604644775390625e-8f);  // smallest subnormal
  EXPECT_EQ(static_cast<float>(f16(-2.0f)), -2.0f);
  EXPECT_TRUE(std::isnan(static_cast<float>(bf16(NAN))));
  EXPECT_TRUE(std::isnan(static_cast<float>(f16(NAN))));
  // Every f16 value round-trips through float exactly.
  for (uint32_t b = 0; b < 0x7c00; ++b) {
    f16 h;
    h.bits = static_cast<uint16_t>(b);
    ASSERT_EQ(f16(static_cast<float>(h)).bits, h.bits) << b;
  }
}

TEST(Tensor, CastsBetweenDtypes) {
  Tensor x = ops::from_vector<float>({1.5f, -2.25f, 0.0f, 3.0f}, {4});
  EXPECT_EQ(ops::to_vector<int64_t>(ops::to(x, DType::i64)), (std::vector<int64_t>{1, -2, 0, 3}));
  Tensor b = ops::to(x, DType::b8);
  EXPECT_EQ(ops::to_vector<int32_t>(b), (std::vector<int32_t>{1, 1, 0, 1}));
  EXPECT_EQ(ops::to_vector<float>(ops::to(ops::to(x, DType::bf16), DType::f32)), ops::to_vector<float>(x));
  EXPECT_EQ(ops::to_vector<float>(ops::to(ops::to(x, DType::f16), DType::f64)), ops::to_vector<float>(x));
  EXPECT_TRUE(ops::to(x, DType::f32).is_same(x));
}

TEST(Tensor, ViewsShareStorage) {
  Tensor x = ops::to(ops::arange(0, 24), DType::f32);
  Tensor v = ops::view(x, {2, 3, 4});
  EXPECT_EQ(v.storage(), x.storage());
  Tensor p = ops::permute(v, {2, 0, 1});
  EXPECT_EQ(p.sizes(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.strides(), (Shape{1, 12, 4}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(ops::to_vector<float>(ops::select(ops::select(p, 0, 1), 0, 1)), (std::vector<float>{13, 17, 21}));
  Tensor n = ops::narrow(v, 2, 1, 2);
  EXPECT_EQ(ops::to_vector<float>(ops::select(ops::select(n, 0, 0), 0, 0)), (std::vector<float>{1, 2}));
  Tensor s = ops::slice(x, 0, 1, 10, 3);
  EXPECT_EQ(ops::to_vector<float>(s), (std::vector<float>{1, 4, 7}));
  Tensor u = ops::unsqueeze(ops::view(x, {4, 6}), 1);
  EXPECT_EQ(u.sizes(), (Shape{4, 1, 6}));
  EXPECT_EQ(ops::squeeze(u).sizes(), (Shape{4, 6}));
  EXPECT_EQ(ops::squeeze(u, 1).sizes(), (Shape{4, 6}));
  Tensor e = ops::expand(ops::view(ops::narrow(x, 0, 0, 3), {3, 1}), {2, 3, 4});
  EXPECT_EQ(e.strides(), (Shape{0, 1, 0}));
  EXPECT_EQ(ops::to_vector<float>(ops::select(ops::select(e, 0, 1), 0, 2)), (std::vector<float>{2, 2, 2, 2}));
  // Writing through a view changes the base.
  ops::fill_(ops::select(v, 0, 1), -1);
  EXPECT_EQ(ops::item(ops::select(x, 0, 12)), -1.0);
  EXPECT_EQ(ops::item(ops::select(x, 0, 11)), 11.0);
}

TEST(Tensor, ViewVersusReshape) {
  Tensor x = ops::view(ops::to(ops::arange(0, 6), DType::f32), {2, 3});
  Tensor t = ops::transpose(x, 0, 1);
  EXPECT_TRUE(throws_with([&] { ops::view(t, {6}); }, {"view", "[3, 2]", "reshape"}));
  Tensor r = ops::reshape(t, {6});
  EXPECT_NE(r.storage(), x.storage());
  EXPECT_EQ(ops::to_vector<float>(r), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(ops::view(x, {-1}).sizes(), (Shape{6}));
  EXPECT_TRUE(throws_with([&] { ops::view(x, {4, -1}); }, {"[4, -1]", "6 elements"}));
  Tensor c = ops::contiguous(t);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(ops::to_vector<float>(c), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_TRUE(ops::contiguous(x).is_same(x));
}

TEST(Tensor, ViewErrorsNameTheValues) {
  Tensor x = ops::zeros({2, 3});
  EXPECT_TRUE(throws_with([&] { ops::permute(x, {0, 0}); }, {"permute", "repeated"}));
  EXPECT_TRUE(throws_with([&] { ops::narrow(x, 1, 2, 2); }, {"narrow", "[2, 4)", "size 3"}));
  EXPECT_TRUE(throws_with([&] { ops::select(x, 0, 5); }, {"select", "index 5"}));
  EXPECT_TRUE(throws_with([&] { ops::expand(x, {2, 4}); }, {"expand", "[2, 3]", "[2, 4]"}));
  EXPECT_TRUE(throws_with([&] { ops::transpose(x, 0, 2); }, {"transpose", "dimension 2", "[2, 3]"}));
}

TEST(Tensor, PrintShowsShapeDtypeDeviceAndValues) {
  std::ostringstream os;
  os << ops::from_vector<float>({1, 2, 3, 4}, {2, 2});
  EXPECT_NE(os.str().find("Tensor[2, 2] f32 cpu"), std::string::npos) << os.str();
  EXPECT_NE(os.str().find("[[1, 2],\n [3, 4]]"), std::string::npos) << os.str();
  std::ostringstream big;
  big << ops::zeros({100});
  EXPECT_NE(big.str().find("..."), std::string::npos);
}

TEST(Tensor, CudaWithoutGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present";
  EXPECT_TRUE(throws_with([] { ops::zeros({2}, TensorOptions(DType::f32, Device::cuda())); }, {"CUDA"}));
  EXPECT_TRUE(throws_with([] { Device::parse("gpu"); }, {"bad device 'gpu'"}));
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
}

TEST(Random, PhiloxMatchesTheReferenceVector) {
  // Known-answer test from Random123 (kat_vectors: philox4x32_10, counter=0, key=0).
  auto r = philox::philox4x32_10(0, 0, 0);
  EXPECT_EQ(r.x, 0x6627e8d5u);
  EXPECT_EQ(r.y, 0xe169c58du);
  EXPECT_EQ(r.z, 0xbc57ac4cu);
  EXPECT_EQ(r.w, 0x9b00dbd8u);
}

TEST(Random, StreamsAreReproducibleAndDistinct) {
  Generator a{42, 0}, b{42, 0};
  Tensor x = ops::rand({1000}, {}, &a), y = ops::rand({1000}, {}, &b);
  EXPECT_EQ(ops::to_vector<float>(x), ops::to_vector<float>(y));
  Tensor z = ops::rand({1000}, {}, &a);  // next offset: a different stream
  EXPECT_NE(ops::to_vector<float>(x), ops::to_vector<float>(z));
  auto v = ops::to_vector<double>(x);
  double m = 0;
  for (double e : v) {
    EXPECT_GE(e, 0.0);
    EXPECT_LT(e, 1.0);
    m += e;
  }
  EXPECT_NEAR(m / 1000, 0.5, 0.05);
  Generator c{7, 0};
  auto n = ops::to_vector<double>(ops::randn({20000}, DType::f64, &c));
  double s = 0, ss = 0;
  for (double e : n) {
    s += e;
    ss += e * e;
  }
  EXPECT_NEAR(s / 20000, 0.0, 0.03);
  EXPECT_NEAR(ss / 20000, 1.0, 0.05);
  Generator d{9, 0};
  auto bern = ops::to_vector<double>(ops::bernoulli({20000}, 0.3, DType::f32, &d));
  double ones = 0;
  for (double e : bern) ones += e;
  EXPECT_NEAR(ones / 20000, 0.3, 0.02);
}

}  // namespace
}  // namespace strand

namespace strand {
namespace {

TEST(Tensor, FromBlobWrapsExternalMemoryWithoutCopy) {
  auto buf = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4, 5, 6});
  const int64_t live = cpu_allocator_stats().live_bytes;
  Tensor t = Tensor::from_blob(buf->data(), {2, 3}, DType::f32, buf);
  EXPECT_EQ(cpu_allocator_stats().live_bytes, live);  // not counted: the owner holds the memory
  std::weak_ptr<std::vector<float>> w = buf;
  buf.reset();
  EXPECT_FALSE(w.expired());  // the tensor keeps its owner alive
  EXPECT_EQ(ops::to_vector<float>(ops::select(t, 0, 1)), (std::vector<float>{4, 5, 6}));
  t = Tensor();
  EXPECT_TRUE(w.expired());
}

TEST(Tensor, SetDataKeepsHandlesAndAutogradState) {
  Tensor p = ops::zeros({2}, DType::f32);
  p.set_requires_grad(true);
  Tensor alias = p;  // e.g. held by an optimizer
  p.set_grad(ops::ones({2}));
  p.set_data(ops::from_vector<double>({1.5, 2.5}, {2}));
  EXPECT_EQ(alias.dtype(), DType::f64);
  EXPECT_EQ(ops::to_vector<double>(alias), (std::vector<double>{1.5, 2.5}));
  EXPECT_TRUE(alias.requires_grad());
  EXPECT_FALSE(alias.grad().defined());  // the f32 gradient no longer matches
  EXPECT_TRUE(test::throws_with([&] { p.set_data(ops::arange(0, 2)); }, {"set_data", "i64"}));
}

}  // namespace
}  // namespace strand
