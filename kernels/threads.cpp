#include "kernels/threads.h"

#include <omp.h>

#include "tensor/error.h"

#ifdef STRAND_HAVE_CBLAS
#include <cblas.h>
#endif

namespace strand {

void set_num_threads(int n) {
  STRAND_CHECK(n >= 1, "set_num_threads: the thread count must be at least 1, got ", n);
  omp_set_num_threads(n);
#ifdef STRAND_HAVE_CBLAS
  openblas_set_num_threads(n);
#endif
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace strand
