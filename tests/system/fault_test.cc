// Failed memory system calls (injected through the OS boundary) surface as NULL with
// ENOMEM or are absorbed by another tier; the process keeps working and nothing leaks.
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "allocator/os_boundary/os.h"
#include "allocator/os_boundary/os_testing.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::Stamp;
using hak_test::StampIntact;
using hak_test::Stats;

TEST(SystemFaultTest, FailedMappingIsNullWithEnomemAndTheNextOneWorks) {
  hak_stats_t before = Stats();
  hak_os_fail_nth(HAK_OS_MAP, 1);
  errno = 0;
  void *p = malloc(40 << 20);  // too big for any cache: needs a new mapping
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(errno, ENOMEM);
  hak_stats_t after = Stats();
  EXPECT_EQ(after.os_failures[HAK_STAT_OS_MAP] - before.os_failures[HAK_STAT_OS_MAP], 1u);
  EXPECT_EQ(after.large_live_blocks, before.large_live_blocks) << "nothing half-made is left";
  void *q = malloc(40 << 20);
  ASSERT_NE(q, nullptr);
  memset(q, 7, 40 << 20);
  free(q);
}

TEST(SystemFaultTest, FailedCallocAndAlignedAllocationsReportEnomem) {
  hak_os_fail_nth(HAK_OS_MAP, 1);
  errno = 0;
  EXPECT_EQ(calloc(1, 50 << 20), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  hak_os_fail_nth(HAK_OS_MAP, 1);
  void *p = reinterpret_cast<void *>(0x1);
  EXPECT_EQ(posix_memalign(&p, 1 << 20, 50 << 20), ENOMEM);
  EXPECT_EQ(p, reinterpret_cast<void *>(0x1));
  hak_os_fail_nth(HAK_OS_MAP, 1);
  char *small = static_cast<char *>(malloc(100));
  ASSERT_NE(small, nullptr);
  strcpy(small, "kept");
  errno = 0;
  EXPECT_EQ(realloc(small, 60 << 20), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_STREQ(small, "kept") << "a failed realloc leaves the block alone";
  free(small);
}

// When Tiny or Pool cannot commit a new SuperSlab or span, the request is served by a
// Large mapping instead, and every block stays usable and freeable.
TEST(SystemFaultTest, FailedCommitFallsBackAndKeepsWorking) {
  for (size_t n : {size_t{900}, size_t{30000}}) {
    hak_stats_t before = Stats();
    std::vector<void *> blocks;
    hak_os_fail_nth(HAK_OS_COMMIT, 1);
    for (int i = 0; i < 6000; i++) {
      void *p = malloc(n);
      ASSERT_NE(p, nullptr) << n << " #" << i;
      Stamp(p, n, i);
      blocks.push_back(p);
    }
    hak_stats_t during = Stats();
    EXPECT_EQ(during.os_failures[HAK_STAT_OS_COMMIT] - before.os_failures[HAK_STAT_OS_COMMIT], 1u)
        << n;
    for (size_t i = 0; i < blocks.size(); i++) {
      ASSERT_TRUE(StampIntact(blocks[i], n, i)) << n << " #" << i;
      free(blocks[i]);
    }
    hak_stats_t after = Stats();
    EXPECT_EQ(after.large_live_blocks, before.large_live_blocks) << "fallback blocks are freed";
    EXPECT_EQ(after.foreign_frees, before.foreign_frees);
  }
}

TEST(SystemFaultTest, EveryNthMappingFailingNeverCrashes) {
  std::vector<void *> blocks;
  int failures = 0;
  for (int i = 0; i < 200; i++) {
    if (i % 3 == 0) hak_os_fail_nth(HAK_OS_MAP, 1);
    void *p = malloc(static_cast<size_t>(70000 + i * 40000));
    if (p == nullptr) {
      EXPECT_EQ(errno, ENOMEM);
      failures++;
    } else {
      blocks.push_back(p);
    }
  }
  hak_os_fail_nth(HAK_OS_MAP, 0);
  for (void *p : blocks) free(p);
  EXPECT_GT(failures, 0);
}

// munmap can fail (ENOMEM when splitting a merged area would pass vm.max_map_count). A
// freed Large mapping the kernel refused to unmap is decommitted, accounted and retried,
// never forgotten.
TEST(SystemFaultTest, RefusedUnmapIsKeptAccountedAndRetried) {
  const size_t n = size_t{80} << 20;  // beyond the BigCache's budget: unmapped on free
  char *p = static_cast<char *>(malloc(n));
  ASSERT_NE(p, nullptr);
  memset(p, 1, n);
  hak_stats_t before = Stats();
  hak_os_fail_nth(HAK_OS_RELEASE, 1);
  free(p);
  hak_stats_t refused = Stats();
  EXPECT_EQ(refused.os_failures[HAK_STAT_OS_RELEASE] - before.os_failures[HAK_STAT_OS_RELEASE], 1u);
  EXPECT_GT(refused.os_calls[HAK_STAT_OS_DECOMMIT], before.os_calls[HAK_STAT_OS_DECOMMIT])
      << "its pages went back at once";
  malloc_trim(0);  // the retry (the decay may already have made it)
  hak_stats_t retried = Stats();
  EXPECT_EQ(retried.large_unreleased_bytes, 0u);
  EXPECT_GE(retried.os_calls[HAK_STAT_OS_RELEASE] - before.os_calls[HAK_STAT_OS_RELEASE], 2u)
      << "the refused unmap was tried again";
}

// A refused decommit in the Tiny decay must leave the empty SuperSlab on the LRU: taking
// it off first and then reusing it (which takes it off again) corrupted the LRU.
TEST(SystemFaultTest, RefusedSuperSlabDecommitKeepsTheLruSound) {
  // 16 MB of class 1024: SuperSlabs of its own, whatever slabs other tests left pinned.
  constexpr int kBlocks = 16000;
  std::vector<void *> blocks(kBlocks);
  std::thread([&] {
    for (void *&p : blocks) p = malloc(1000);
    for (void *p : blocks) free(p);
  }).join();
  hak_stats_t before = Stats();
  hak_os_fail_nth(HAK_OS_DECOMMIT, 1);
  malloc_trim(0);  // flushes the dead heap, empties the SuperSlabs, decommits them
  hak_stats_t trimmed = Stats();
  ASSERT_EQ(trimmed.os_failures[HAK_STAT_OS_DECOMMIT] - before.os_failures[HAK_STAT_OS_DECOMMIT],
            1u);
  // Reuse every empty SuperSlab, the refused one included, empty them again, trim again.
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < kBlocks; i++) {
      blocks[i] = malloc(1000);
      ASSERT_NE(blocks[i], nullptr);
      Stamp(blocks[i], 1000, i);
    }
    for (int i = 0; i < kBlocks; i++) {
      ASSERT_TRUE(StampIntact(blocks[i], 1000, i)) << i;
      free(blocks[i]);
    }
    malloc_trim(0);
  }
  hak_stats_t end = Stats();
  EXPECT_GT(end.tiny_empty_superslabs, 0u);
  EXPECT_EQ(end.tiny_decommitted_superslabs, end.tiny_empty_superslabs)
      << "a forced trim decommits every empty SuperSlab (an LRU that lost count keeps some)";
  EXPECT_LE(end.tiny_superslabs, trimmed.tiny_superslabs + 1) << "empty SuperSlabs are reused";
}

}  // namespace
