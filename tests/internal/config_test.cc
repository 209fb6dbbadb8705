// The compile-time flags reach the code as the variant table says (variants/variants.bzl):
// each test target is compiled with its variant's -D flags and checks the constants.
#include "allocator/internal/config.h"

#include <cstring>

#include "gtest/gtest.h"

namespace {

// The variant name is derived from the flags, so a mislabelled build cannot happen.
TEST(InternalConfigTest, VariantNameFollowsTheFlags) {
  if (!BUILD_RELEASE) {
    EXPECT_STREQ(HAK_VARIANT_NAME, "debug-fail-fast");
  } else if (HAKMEM_TRACE) {
    EXPECT_STREQ(HAK_VARIANT_NAME, "trace");
  } else {
    EXPECT_STREQ(HAK_VARIANT_NAME, "release");
  }
  EXPECT_NE(std::strstr(HAK_VARIANT_FLAGS, "HEADER_CLASSIDX="), nullptr);
}

// Per-variant test targets carry the variant in their tag; this pins the table's
// contents for the three product variants.
TEST(InternalConfigTest, ProductVariantsHaveTheirFlagBundles) {
#if defined(HAK_TEST_EXPECT_RELEASE)
  EXPECT_EQ(HEADER_CLASSIDX + POOL_TLS_PHASE1 + PREWARM + BUILD_RELEASE, 4);
  EXPECT_EQ(HAKMEM_TRACE, 0);
#elif defined(HAK_TEST_EXPECT_DEBUG)
  EXPECT_EQ(BUILD_RELEASE, 0);
  EXPECT_EQ(HEADER_CLASSIDX + POOL_TLS_PHASE1 + PREWARM, 3);
#elif defined(HAK_TEST_EXPECT_TRACE)
  EXPECT_EQ(HEADER_CLASSIDX + POOL_TLS_PHASE1 + PREWARM + BUILD_RELEASE, 4);
  EXPECT_EQ(HAKMEM_TRACE, 1);
#else
  GTEST_SKIP() << "not a product variant";
#endif
}

}  // namespace
