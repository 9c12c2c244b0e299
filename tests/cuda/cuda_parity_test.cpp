#include "tests/test_util.h"
namespace strand {
TEST(CudaPlaceholder, Skips) { STRAND_SKIP_WITHOUT_GPU(); }
}
