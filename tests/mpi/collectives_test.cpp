// Collectives of the world communicator (MPI under mpirun, local at world size 1): all-reduce sum
// and avg, broadcast and all-gather on odd sizes and every dtype, barrier, and clear errors.
#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "tests/test_util.h"
#include "train/dist/communicator.h"

namespace strand::dist {
namespace {

const std::vector<DType> kAllDtypes = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                       DType::i64, DType::i32, DType::u8,   DType::b8};

// Rank r's values: small integers so every dtype (bf16 included) holds sums exactly.
Tensor rank_values(const Shape& s, int rank, DType dt) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[i] = dt == DType::b8 ? static_cast<double>((i + rank) % 3 == 0) : static_cast<double>((i * 7 + rank * 3) % 11);
  return ops::to(ops::from_vector<double>(v, s), dt);
}

TEST(Collectives, AllReduceSumEveryDtypeOddSizes) {
  auto comm = world();
  const int W = comm->size();
  for (DType dt : kAllDtypes)
    for (const Shape& s : std::vector<Shape>{{1}, {7}, {3, 5}, {2, 3, 13}, {0}}) {
      Tensor t = rank_values(s, comm->rank(), dt);
      comm->all_reduce(t, ReduceOp::sum);
      Tensor expect = ops::zeros(s, TensorOptions(DType::f64));
      for (int r = 0; r < W; ++r) expect = ops::add(expect, ops::to(rank_values(s, r, dt), DType::f64));
      if (dt == DType::b8) expect = ops::to(ops::to(expect, DType::b8), DType::f64);  // logical or
      EXPECT_EQ(ops::to_vector<double>(t), ops::to_vector<double>(expect))
          << dtype_name(dt) << " " << shape_str(s) << " on rank " << comm->rank();
    }
}

TEST(Collectives, AllReduceAvgFloating) {
  auto comm = world();
  const int W = comm->size();
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    Tensor t = rank_values({5, 3}, comm->rank(), dt);
    comm->all_reduce(t, ReduceOp::avg);
    Tensor expect = ops::zeros({5, 3}, TensorOptions(DType::f64));
    for (int r = 0; r < W; ++r) expect = ops::add(expect, ops::to(rank_values({5, 3}, r, dt), DType::f64));
    expect = ops::to(ops::mul(expect, 1.0 / W), dt);
    EXPECT_TRUE(test::allclose(ops::to(t, DType::f64), ops::to(expect, DType::f64), 1e-6, 1e-2)) << dtype_name(dt);
  }
  Tensor i = ops::zeros({3}, TensorOptions(DType::i64));
  EXPECT_TRUE(test::throws_with([&] { comm->all_reduce(i, ReduceOp::avg); }, {"avg", "i64"}));
}

TEST(Collectives, AsyncAllReduceMatchesBlocking) {
  auto comm = world();
  Tensor a = rank_values({1001}, comm->rank(), DType::f32), b = ops::clone(a);
  auto work = comm->all_reduce_async(a, ReduceOp::sum);
  comm->all_reduce(b, ReduceOp::sum);  // a second collective while the first is in flight
  work->wait();
  EXPECT_EQ(ops::to_vector<float>(a), ops::to_vector<float>(b));
}

TEST(Collectives, BroadcastEveryDtypeFromEveryRoot) {
  auto comm = world();
  for (int root = 0; root < comm->size(); ++root)
    for (DType dt : kAllDtypes) {
      Tensor t = rank_values({3, 7}, comm->rank(), dt);
      comm->broadcast(t, root);
      EXPECT_EQ(ops::to_vector<double>(t), ops::to_vector<double>(rank_values({3, 7}, root, dt)))
          << dtype_name(dt) << " root " << root;
    }
  Tensor t = ops::zeros({2});
  EXPECT_TRUE(test::throws_with([&] { comm->broadcast(t, comm->size()); }, {"root"}));
}

TEST(Collectives, AllGatherEveryDtype) {
  auto comm = world();
  for (DType dt : kAllDtypes) {
    Tensor g = comm->all_gather(ops::slice(rank_values({10}, comm->rank(), dt), 0, 0, 10, 2));  // non-contiguous
    ASSERT_EQ(g.sizes(), (Shape{comm->size(), 5}));
    for (int r = 0; r < comm->size(); ++r)
      EXPECT_EQ(ops::to_vector<double>(ops::select(g, 0, r)),
                ops::to_vector<double>(ops::slice(rank_values({10}, r, dt), 0, 0, 10, 2)))
          << dtype_name(dt) << " from rank " << r;
  }
}

TEST(Collectives, AllGatherMismatchedSizesIsAnErrorOnEveryRank) {
  auto comm = world();
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  Tensor t = ops::zeros({comm->rank() + 1});
  EXPECT_TRUE(test::throws_with([&] { comm->all_gather(t); }, {"all_gather", "different numbers of elements"}));
}

TEST(Collectives, BarrierAndIdentity) {
  auto comm = world();
  comm->barrier();
  EXPECT_GE(comm->size(), 1);
  EXPECT_LT(comm->rank(), comm->size());
  EXPECT_EQ(comm->size(), env_world_size());
  EXPECT_EQ(comm->rank(), env_rank());
  EXPECT_EQ(comm->backend(), comm->size() > 1 ? "mpi" : "local");
}

}  // namespace
}  // namespace strand::dist

#ifdef STRAND_WITH_NCCL
namespace strand::dist {
namespace {
// The NCCL backend on CUDA tensors (a GPU machine; skipped elsewhere): the same collectives at the
// launch's world size (world size 1 on a single-GPU machine).
TEST(Collectives, NcclOnCudaTensors) {
  STRAND_SKIP_WITHOUT_GPU();
  // NCCL refuses two ranks on one GPU.
  if (cuda_device_count() < world()->size()) GTEST_SKIP() << "fewer GPUs than ranks";
  auto comm = make_nccl_communicator();
  const int W = comm->size();
  // the communicator's GPU, as the trainer picks it (train/cli.cpp): rank r's tensors live there
  const Device gpu = Device::cuda(env_local_rank() % cuda_device_count());
  auto sum_of = [&](const Shape& s, DType dt) {  // what every rank expects of a sum (b8: logical or)
    Tensor e = ops::zeros(s, TensorOptions(DType::f64));
    for (int r = 0; r < W; ++r) e = ops::add(e, ops::to(rank_values(s, r, dt), DType::f64));
    return dt == DType::b8 ? ops::to(ops::to(e, DType::b8), DType::f64) : e;
  };
  for (DType dt : kAllDtypes) {
    Tensor t = ops::to(rank_values({3, 7}, comm->rank(), dt), gpu);
    comm->all_reduce(t, ReduceOp::sum);
    EXPECT_EQ(ops::to_vector<double>(t), ops::to_vector<double>(sum_of({3, 7}, dt))) << dtype_name(dt);
    for (int root = 0; root < W; ++root) {
      Tensor b = ops::to(rank_values({5}, comm->rank(), dt), gpu);
      comm->broadcast(b, root);
      EXPECT_EQ(ops::to_vector<double>(b), ops::to_vector<double>(rank_values({5}, root, dt)))
          << dtype_name(dt) << " root " << root;
    }
    Tensor g = comm->all_gather(ops::to(rank_values({4}, comm->rank(), dt), gpu));
    ASSERT_EQ(g.sizes(), (Shape{W, 4}));
    for (int r = 0; r < W; ++r)
      EXPECT_EQ(ops::to_vector<double>(ops::select(g, 0, r)), ops::to_vector<double>(rank_values({4}, r, dt)))
          << dtype_name(dt) << " from rank " << r;
  }
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {  // avg, asynchronously
    Tensor a = ops::to(rank_values({1001}, comm->rank(), dt), gpu);
    auto w = comm->all_reduce_async(a, ReduceOp::avg);
    w->wait();
    const Tensor expect = ops::to(ops::mul(sum_of({1001}, dt), 1.0 / W), dt);
    EXPECT_TRUE(test::allclose(ops::to(ops::to(a, Device::cpu()), DType::f64), ops::to(expect, DType::f64), 1e-6,
                               1e-2))
        << dtype_name(dt);
  }
  Tensor host = rank_values({6}, comm->rank(), DType::f32);  // a CPU tensor goes through a device copy
  comm->all_reduce(host, ReduceOp::sum);
  EXPECT_EQ(ops::to_vector<double>(host), ops::to_vector<double>(sum_of({6}, DType::f32)));
  comm->barrier();
}
}  // namespace
}  // namespace strand::dist
#endif
