// The CUDA elementwise family (kernels/cuda/elementwise.cuh) on the SIMT emulator against the CPU
// kernels: every unary op (and derivative), binary and compare op, where, casts, fill, add_ and the
// Philox fills, in f64/f32/bf16/f16, on each layout that picks a different path: contiguous and
// aligned (the 16-byte pack kernel, with a tail), transposed and broadcast (the strided kernel), and
// contiguous but misaligned or every other element (the strided kernel, one merged dim).
#include "tests/simt/simt.h"  // first: the CUDA built-ins on the emulator

#include "kernels/cuda/elementwise.cuh"
#include "tests/simt/simt_test_util.h"

namespace strand {
namespace {

using test::allclose;
constexpr simt::Launch kEmu{};

// An operand of `shape` in one of the layouts, values in [lo, hi).
enum class Layout { aligned, transposed, broadcast, misaligned, stepped };
Tensor operand(Layout l, const Shape& shape, DType dt, uint64_t seed, double lo = -2, double hi = 2) {
  switch (l) {
    case Layout::aligned:
      return test::uniform(shape, lo, hi, seed, dt);
    case Layout::transposed:
      return ops::transpose(test::uniform({shape[1], shape[0]}, lo, hi, seed, dt), 0, 1);
    case Layout::broadcast:
      return ops::expand(test::uniform({1, shape[1]}, lo, hi, seed, dt), shape);
    case Layout::misaligned: {  // one element past an aligned start
      const Tensor flat = test::uniform({shape[0] * shape[1] + 1}, lo, hi, seed, dt);
      return ops::reshape(ops::narrow(flat, 0, 1, shape[0] * shape[1]), shape);
    }
    case Layout::stepped:  // every other element: one merged dim of stride 2
      return ops::slice(test::uniform({shape[0], 2 * shape[1]}, lo, hi, seed, dt), 1, 0, 2 * shape[1], 2);
  }
  return {};
}

const Shape kShape{37, 29};  // 1073 elements: 4 blocks of 256 threads, packs plus a ragged tail
const DType kFloats[] = {DType::f64, DType::f32, DType::bf16, DType::f16};
const Layout kLayouts[] = {Layout::aligned, Layout::transposed, Layout::broadcast, Layout::misaligned, Layout::stepped};

::testing::AssertionResult same(const Tensor& emu, const Tensor& ref, bool exact) {
  const test::Tol t = test::tol_for(ref.dtype());
  return exact ? allclose(emu, ref, 0, 0) : allclose(emu, ref, t.atol, t.rtol);
}

TEST(SimtElementwise, UnaryOpsAndTheirDerivatives) {
  for (DType dt : kFloats)
    for (Layout l : kLayouts)
      for (int o = 0; o <= static_cast<int>(UnaryOp::rsub_scalar); ++o) {
        const UnaryOp op = static_cast<UnaryOp>(o);
        const bool positive = op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt || op == UnaryOp::pow;
        const double a = op == UnaryOp::clamp      ? -0.5
                         : op == UnaryOp::softplus ? 1.5
                                                   : 1.7,
                     b = op == UnaryOp::clamp ? 0.5 : 3;
        const Tensor x = operand(l, kShape, dt, 3 + o, positive ? 0.1 : -2, 2), g = operand(l, kShape, dt, 50 + o);
        Tensor ref = test::unwritten(kShape, dt), emu = test::unwritten(kShape, dt);
        cpu::unary(op, x, ref, a, b);
        cuda::ew::unary(kEmu, op, x, emu, a, b);
        EXPECT_TRUE(same(emu, ref, false)) << unary_op_name(op) << " " << dtype_name(dt) << " layout " << int(l);
        // the derivative, given the forward's output (or input: whichever the op saves)
        cpu::unary_backward(op, g, x, ref, a, b);
        cuda::ew::unary_backward(kEmu, op, g, x, emu, a, b);
        EXPECT_TRUE(same(emu, ref, false))
            << unary_op_name(op) << " backward " << dtype_name(dt) << " layout " << int(l);
      }
}

TEST(SimtElementwise, BinaryCompareWhereAndAdd) {
  for (DType dt : kFloats)
    for (Layout la : kLayouts)
      for (Layout lb : {Layout::aligned, Layout::broadcast}) {
        const Tensor a = operand(la, kShape, dt, 7), b = operand(lb, kShape, dt, 8);
        for (int o = 0; o <= static_cast<int>(BinaryOp::minimum); ++o) {
          const BinaryOp op = static_cast<BinaryOp>(o);
          Tensor ref = test::unwritten(kShape, dt), emu = test::unwritten(kShape, dt);
          cpu::binary(op, a, b, ref);
          cuda::ew::binary(kEmu, op, a, b, emu);
          EXPECT_TRUE(same(emu, ref, false)) << binary_op_name(op) << " " << dtype_name(dt) << " " << int(la);
        }
        for (int o = 0; o <= static_cast<int>(CompareOp::ge); ++o) {
          Tensor ref = test::unwritten(kShape, DType::b8), emu = test::unwritten(kShape, DType::b8);
          cpu::compare(static_cast<CompareOp>(o), a, b, ref);
          cuda::ew::compare(kEmu, static_cast<CompareOp>(o), a, b, emu);
          EXPECT_TRUE(same(emu, ref, true)) << "compare " << o << " " << dtype_name(dt) << " " << int(la);
        }
        Tensor cond = test::unwritten(kShape, DType::b8), ref = test::unwritten(kShape, dt),
               emu = test::unwritten(kShape, dt);
        cpu::compare(CompareOp::lt, a, b, cond);
        cpu::where(cond, a, b, ref);
        cuda::ew::where(kEmu, cond, a, b, emu);
        EXPECT_TRUE(same(emu, ref, true)) << "where " << dtype_name(dt) << " " << int(la);
        Tensor rd = ops::clone(operand(Layout::aligned, kShape, dt, 9)), ed = ops::clone(rd);
        cpu::add_(rd, a, -0.3);
        cuda::ew::add_(kEmu, ed, a, -0.3);
        EXPECT_TRUE(same(ed, rd, false)) << "add_ " << dtype_name(dt) << " " << int(la);
      }
}

TEST(SimtElementwise, CastsFillsAndPhiloxFills) {
  const DType all[] = {DType::f64, DType::f32, DType::bf16, DType::f16, DType::i64, DType::i32, DType::b8};
  for (DType from : all)
    for (DType to : all)
      for (Layout l : kLayouts) {
        const Tensor src = operand(l, kShape, from, 11, -3, 3);
        Tensor ref = test::unwritten(kShape, to), emu = test::unwritten(kShape, to);
        cpu::copy(src, ref);
        cuda::ew::copy(kEmu, src, emu);
        EXPECT_TRUE(same(emu, ref, true)) << dtype_name(from) << " -> " << dtype_name(to) << " layout " << int(l);
      }
  for (DType dt : kFloats) {
    Tensor ref = test::unwritten(kShape, dt), emu = test::unwritten(kShape, dt);
    cpu::fill(ref, 0.3);
    cuda::ew::fill(kEmu, emu, 0.3);
    EXPECT_TRUE(same(emu, ref, true)) << "fill " << dtype_name(dt);
    cpu::rand_uniform(ref, 42, 7);
    cuda::ew::rand_uniform(kEmu, emu, 42, 7);
    EXPECT_TRUE(same(emu, ref, true)) << "rand " << dtype_name(dt);
    cpu::bernoulli(ref, 0.3, 1 / 0.7, 42, 8);
    cuda::ew::bernoulli(kEmu, emu, 0.3, 1 / 0.7, 42, 8);
    EXPECT_TRUE(same(emu, ref, true)) << "bernoulli " << dtype_name(dt);
  }
}

}  // namespace
}  // namespace strand
