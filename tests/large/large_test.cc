// The Large tier on its own (linked without the front end): blocks, the page map that
// proves ownership, the BigCache, realloc in place, and the limits on sizes and alignments.
#include "allocator/large/large.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "gtest/gtest.h"

namespace {

TEST(LargeTest, BlocksAreAlignedUsableAndOwned) {
  for (size_t align : {size_t{16}, size_t{4096}, size_t{1} << 20}) {
    void *p = hak_large_malloc(300000, align, 0);
    ASSERT_NE(p, nullptr) << align;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u);
    EXPECT_GE(hak_large_usable(p), 300000u);
    memset(p, 7, 300000);
    EXPECT_EQ(hak_large_free(p), 1);
  }
}

TEST(LargeTest, ForeignAndInteriorPointersAreNotLargeBlocks) {
  static char global[64];
  char local[64];
  void *p = hak_large_malloc(200000, 16, 0);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(hak_large_usable(global), 0u);
  EXPECT_EQ(hak_large_usable(local), 0u);
  EXPECT_EQ(hak_large_usable(static_cast<char *>(p) + 16), 0u) << "interior";
  EXPECT_EQ(hak_large_free(static_cast<char *>(p) + 4096), 0) << "touches nothing";
  EXPECT_EQ(hak_large_free(p), 1);
  EXPECT_EQ(hak_large_free(p), 0) << "a freed block is no longer owned";
}

TEST(LargeTest, AFreedBlockIsServedAgainFromTheCache) {
  hak_large_stats_t before, after;
  void *p = hak_large_malloc(1 << 20, 16, 0);
  ASSERT_NE(p, nullptr);
  memset(p, 0x5a, 1 << 20);
  hak_large_free(p);
  hak_large_stats(&before);
  auto *q = static_cast<unsigned char *>(hak_large_malloc(1 << 20, 16, 1));
  ASSERT_NE(q, nullptr);
  hak_large_stats(&after);
  EXPECT_EQ(after.cache_hits - before.cache_hits, 1u);
  for (size_t i = 0; i < (1 << 20); i += 4093) ASSERT_EQ(q[i], 0) << "zeroed on request";
  hak_large_free(q);
  hak_large_maintain(1);
  hak_large_stats(&after);
  EXPECT_EQ(after.cached_bytes, 0u) << "a forced pass empties the cache";
}

TEST(LargeTest, ReallocResizesInPlaceOrRefuses) {
  auto *p = static_cast<char *>(hak_large_malloc(1 << 20, 16, 0));
  ASSERT_NE(p, nullptr);
  strcpy(p, "kept");
  void *q = hak_large_realloc(p, (1 << 20) + 100);
  if (q == nullptr) {
    EXPECT_EQ(errno, ENOMEM);
    q = p;
  }
  EXPECT_STREQ(static_cast<char *>(q), "kept");
  EXPECT_GE(hak_large_usable(q), static_cast<size_t>((1 << 20) + 100));
  errno = 0;
  EXPECT_EQ(hak_large_realloc(q, size_t{1} << 50), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_STREQ(static_cast<char *>(q), "kept") << "a refused resize leaves the block";
  hak_large_free(q);
}

TEST(LargeTest, ImpossibleSizesAndAlignmentsFailBeforeAnyArithmetic) {
  for (size_t n : {SIZE_MAX, SIZE_MAX - 4096, size_t{1} << 63, size_t{1} << 47}) {
    errno = 0;
    EXPECT_EQ(hak_large_malloc(n, 16, 0), nullptr) << n;
    EXPECT_EQ(errno, ENOMEM);
  }
  for (size_t a : {size_t{1} << 63, size_t{1} << 48, size_t{1} << 47}) {
    errno = 0;
    EXPECT_EQ(hak_large_malloc(8192, a, 0), nullptr) << a;
    EXPECT_EQ(errno, ENOMEM);
  }
}

}  // namespace
