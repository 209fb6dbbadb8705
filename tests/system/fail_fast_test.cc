// Bad frees: debug-fail-fast aborts with one line naming what and where; release counts
// foreign pointers and carries on.
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <set>
#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "allocator/internal/config.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::Stats;

void *volatile g_sink;

void DoubleFree(size_t n) {
  void *p = malloc(n);
  free(p);
  free(p);
}

void WriteAfterFree(size_t n) {
  char *p = static_cast<char *>(malloc(n));
  free(p);
  p[20] = 'x';  // the next allocation of that class hands p out again
  for (int i = 0; i < 5000; i++) g_sink = malloc(n);
}

TEST(SystemFailFastDeathTest, DoubleFreeOfATinyBlockNamesItsClass) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check";
  EXPECT_DEATH(DoubleFree(64), "^hakmem: double free of 0x[0-9a-f]+ \\(tiny class 3\\)\n$");
}

TEST(SystemFailFastDeathTest, DoubleFreeOfAPoolBlock) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check";
  EXPECT_DEATH(DoubleFree(5000), "hakmem: double free of 0x[0-9a-f]+ \\(pool class 8\\)");
}

TEST(SystemFailFastDeathTest, DoubleFreeOfALargeBlockIsAForeignPointer) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check";
  EXPECT_DEATH(DoubleFree(1 << 20), "hakmem: free of a pointer hakmem does not own 0x[0-9a-f]+");
}

TEST(SystemFailFastDeathTest, InteriorPointer) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check";
  EXPECT_DEATH(
      {
        char *p = static_cast<char *>(malloc(100));
        free(p + 16);
      },
      "hakmem: free of a pointer that is not a block start: 0x[0-9a-f]+ \\(tiny class");
}

TEST(SystemFailFastDeathTest, StackPointer) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check";
  EXPECT_DEATH(
      {
        char local[64];
        g_sink = local;
        free(g_sink);
      },
      "hakmem: free of a pointer hakmem does not own 0x[0-9a-f]+");
}

TEST(SystemFailFastDeathTest, WriteAfterFreeIsCaughtOnReuse) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check";
  EXPECT_DEATH(WriteAfterFree(96),
               "hakmem: write after free to block 0x[0-9a-f]+ \\(tiny class 5\\)");
  EXPECT_DEATH(WriteAfterFree(3000),
               "hakmem: write after free to block 0x[0-9a-f]+ \\(pool class 5\\)");
}

TEST(SystemFailFastDeathTest, ReallocOfAForeignPointer) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check";
  static char not_ours[64];
  g_sink = not_ours;
  EXPECT_DEATH(g_sink = realloc(g_sink, 10), "hakmem: realloc of a pointer hakmem does not own");
}

// A block of class 1280 from a new thread's heap: its span is fresh, and only the four
// pre-warmed blocks of it are carved, so 40 blocks further on lies a block never handed out.
char *FreshPoolBlock() {
  char *p = nullptr;
  std::thread([&] { p = static_cast<char *>(malloc(1280)); }).join();
  return p;
}

// A block start inside a slab that was never handed out is not a block to free: accepted,
// it would later be handed out twice.
TEST(SystemFailFastDeathTest, FreeOfABlockNeverHandedOut) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds check it on their slow paths (below)";
  EXPECT_DEATH(
      {
        char *p = static_cast<char *>(malloc(16));
        free(p + 16 * 1500);
      },
      "^hakmem: free of a block that was never allocated: 0x[0-9a-f]+ \\(tiny class 0\\)\n$");
  EXPECT_DEATH(
      {
        char *p = FreshPoolBlock();
        free(p + 1280 * 40);
      },
      "hakmem: free of a block that was never allocated: 0x[0-9a-f]+ \\(pool class 0\\)");
}

// Release: a free that reaches the checked path (another thread's block) is refused when
// the pointer is not a block the slab handed out, and nothing is handed out twice.
TEST(SystemFailFastTest, ReleaseRefusesBlocksNeverHandedOut) {
  if (!HAK_RELEASE) GTEST_SKIP() << "debug builds abort instead";
  for (size_t n : {size_t{16}, size_t{1280}}) {
    char *p = n == 16 ? static_cast<char *>(malloc(n)) : FreshPoolBlock();
    uint64_t before = Stats().foreign_frees;
    std::thread([&] { free(p + (n == 16 ? 16 * 1500 : 1280 * 40)); }).join();
    EXPECT_EQ(Stats().foreign_frees - before, 1u) << n;
    std::set<void *> seen;
    std::vector<void *> blocks;
    for (int i = 0; i < 4000; i++) {
      void *q = malloc(n);
      ASSERT_TRUE(seen.insert(q).second) << "handed out twice: " << q;
      blocks.push_back(q);
    }
    for (void *q : blocks) free(q);
    free(p);
  }
}

// User data that happens to look like a freed block (zero link, free-fill bytes) is
// never taken for a double free: that is decided from the allocator's state.
TEST(SystemFailFastTest, DataThatLooksFreedIsNotADoubleFree) {
  for (size_t n : {size_t{64}, size_t{3000}}) {
    for (int i = 0; i < 100; i++) {
      char *p = static_cast<char *>(malloc(n));
      ASSERT_NE(p, nullptr);
      memset(p, 0xdf, n);
      memset(p, 0, 8);
      free(p);
    }
  }
}

TEST(SystemFailFastTest, ReleaseCountsForeignPointersAndCarriesOn) {
  if (!HAK_RELEASE) GTEST_SKIP() << "debug builds abort instead";
  char local[64];
  static char global[64];
  uint64_t before = Stats().foreign_frees;
  g_sink = local;
  free(g_sink);
  g_sink = global;
  free(g_sink);
  EXPECT_EQ(Stats().foreign_frees - before, 2u);
  errno = 0;
  EXPECT_EQ(realloc(g_sink, 10), nullptr);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(malloc_usable_size(g_sink), 0u);
  void *p = malloc(10);  // the allocator is unharmed
  ASSERT_NE(p, nullptr);
  free(p);
}

}  // namespace
