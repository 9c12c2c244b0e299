#include "tests/test_util.h"
TEST(P, P) {}
