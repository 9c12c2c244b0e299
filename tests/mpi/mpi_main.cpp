// main() of mpi_tests: every rank runs the same tests against the world communicator made from the
// launcher's environment (mpirun -np N; a plain start is world size 1). Every rank prints its
// results; a failure on any rank fails the job through mpirun's exit code.
#include <gtest/gtest.h>

#include <cstring>

#include "train/dist/communicator.h"

bool g_run_failure_test = false;

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--strand-run-failure-test") == 0) g_run_failure_test = true;
  auto comm = strand::dist::communicator_from_env("cpu");
  strand::dist::set_world(comm);
  const int rc = RUN_ALL_TESTS();
  // A rank whose test failed may have left the others mid-collective; the barrier is where a
  // mismatch would show as a timeout, so agree on the result first.
  comm->barrier();
  return rc;
}
