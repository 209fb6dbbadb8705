// Options change what the allocator does: each case re-executes this binary with an
// environment variable set (options are read once, at load) and observes the effect in
// the counters, instead of comparing the options table with itself.
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <string>

#include "allocator/hakmem.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::InChild;
using hak_test::RunSelf;
using hak_test::Stats;

void ExpectChildPasses(const char *test, const char *name, const char *value) {
  int status = RunSelf(std::string("SystemOptionsChild.") + test, 0, {{name, value}});
  ASSERT_NE(status, -1) << test << " hung";
  ASSERT_TRUE(WIFEXITED(status)) << test << " died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << test << " failed (its output is above)";
}

// HAKMEM_RESERVE_GB=1: the claimed range is 1 GiB (the default is 64).
TEST(SystemOptionsChild, ReserveGbSizesTheRange) {
  if (!InChild()) GTEST_SKIP() << "runs with HAKMEM_RESERVE_GB=1, from SystemOptionsTest";
  free(malloc(100));
  EXPECT_EQ(Stats().reserved_bytes, uint64_t{1} << 30);
}

// HAKMEM_BIGCACHE_MB=0: a freed Large block's pages are given back at once, never kept.
TEST(SystemOptionsChild, BigCacheMbZeroCachesNothing) {
  if (!InChild()) GTEST_SKIP() << "runs with HAKMEM_BIGCACHE_MB=0, from SystemOptionsTest";
  hak_stats_t before = Stats();
  for (int i = 0; i < 10; i++) {
    void *p = malloc(1 << 20);
    ASSERT_NE(p, nullptr);
    memset(p, 1, 4096);
    free(p);
    EXPECT_EQ(Stats().large_cached_bytes, 0u);
  }
  hak_stats_t after = Stats();
  EXPECT_EQ(after.large_cached_bytes, 0u);
  EXPECT_GE(after.os_calls[HAK_STAT_OS_DECOMMIT] - before.os_calls[HAK_STAT_OS_DECOMMIT], 10u);
}

// The same two with the defaults: the range is bigger, freed pages are kept and reused.
TEST(SystemOptionsTest, DefaultsDifferFromTheVariablesEffects) {
  if (InChild()) GTEST_SKIP();
  EXPECT_GT(Stats().reserved_bytes, uint64_t{1} << 30);
  hak_stats_t before = Stats();
  for (int i = 0; i < 10; i++) {
    void *p = malloc(1 << 20);
    ASSERT_NE(p, nullptr);
    memset(p, 1, 4096);
    free(p);
  }
  EXPECT_GE(Stats().bigcache_hits - before.bigcache_hits, 9u) << "the freed span served again";
  EXPECT_GE(Stats().large_cached_bytes, uint64_t{1} << 20) << "kept for the decay";
}

TEST(SystemOptionsTest, ReserveGb) {
  if (InChild()) GTEST_SKIP();
  ExpectChildPasses("ReserveGbSizesTheRange", "HAKMEM_RESERVE_GB", "1");
}

TEST(SystemOptionsTest, BigCacheMb) {
  if (InChild()) GTEST_SKIP();
  ExpectChildPasses("BigCacheMbZeroCachesNothing", "HAKMEM_BIGCACHE_MB", "0");
}

}  // namespace
