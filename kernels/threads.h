#pragma once
// The CPU thread count: one setting for strand's OpenMP loops and the BLAS underneath (OpenBLAS
// keeps its own pool). Defaults come from the environment (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS).
namespace strand {

void set_num_threads(int n);  // n >= 1; strand::Error otherwise
int num_threads();

}  // namespace strand
