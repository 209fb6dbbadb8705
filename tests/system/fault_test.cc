// Failed memory system calls (injected through the OS boundary) surface as NULL with
// ENOMEM or are absorbed by another tier; the process keeps working and nothing leaks.
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "allocator/internal/options.h"
#include "allocator/os_boundary/os.h"
#include "allocator/os_boundary/os_testing.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::Stamp;
using hak_test::StampIntact;
using hak_test::Stats;

// Makes every mapping and commit fail while it lives: memory that is not held already
// cannot be had.
struct NoNewMemory {
  NoNewMemory() {
    hak_os_fail_every(HAK_OS_MAP, 1);
    hak_os_fail_every(HAK_OS_COMMIT, 1);
  }
  ~NoNewMemory() {
    hak_os_fail_every(HAK_OS_MAP, 0);
    hak_os_fail_every(HAK_OS_COMMIT, 0);
  }
};

// kNeedsNewMemory is more than any arena holds free when the first test asks for it, less
// than a block of its own (a quarter of an arena): an arena must grow, then every other
// arena, then a mapping of its own is tried. kNeverHeld is beyond a quarter of an arena:
// only a mapping of its own can hold it (an arena may keep large free spans of address
// space), and none that big is ever freed in this process.
constexpr size_t kNeedsNewMemory = size_t{600} << 20;
constexpr size_t kNeverHeld = size_t{1536} << 20;

TEST(SystemFaultTest, FailedMappingIsNullWithEnomemAndTheNextOneWorks) {
  hak_stats_t before = Stats();
  void *p;
  {
    NoNewMemory refuse;
    errno = 0;
    p = malloc(kNeedsNewMemory);
  }
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(errno, ENOMEM);
  hak_stats_t after = Stats();
  // Every arena's growth (its page-map table or its pages) and then a mapping of its own.
  EXPECT_GE(after.os_failures[HAK_STAT_OS_COMMIT] + after.os_failures[HAK_STAT_OS_MAP] -
                before.os_failures[HAK_STAT_OS_COMMIT] - before.os_failures[HAK_STAT_OS_MAP],
            2u);
  EXPECT_EQ(after.large_live_blocks, before.large_live_blocks) << "nothing half-made is left";
  auto *q = static_cast<char *>(malloc(kNeedsNewMemory));
  ASSERT_NE(q, nullptr);
  memset(q, 7, 1 << 20);
  memset(q + kNeedsNewMemory - (1 << 20), 7, 1 << 20);
  free(q);
}

TEST(SystemFaultTest, FailedCallocAndAlignedAllocationsReportEnomem) {
  char *small = static_cast<char *>(malloc(100));
  ASSERT_NE(small, nullptr);
  strcpy(small, "kept");
  NoNewMemory refuse;
  errno = 0;
  EXPECT_EQ(calloc(1, kNeverHeld + (1 << 20)), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  void *p = reinterpret_cast<void *>(0x1);
  EXPECT_EQ(posix_memalign(&p, 1 << 20, kNeverHeld + (2 << 20)), ENOMEM);
  EXPECT_EQ(p, reinterpret_cast<void *>(0x1));
  errno = 0;
  EXPECT_EQ(realloc(small, kNeverHeld + (3 << 20)), nullptr);
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

// Every third request meets a kernel that refuses all new memory: it is served from what
// the arenas hold free, or is NULL with ENOMEM; every block served keeps its contents.
TEST(SystemFaultTest, EveryNthMappingFailingNeverCrashes) {
  struct Block {
    void *p;
    size_t n;
    int seed;
  };
  std::vector<Block> blocks;
  int failures = 0;
  for (int i = 0; i < 200; i++) {
    size_t n = static_cast<size_t>(70000 + i * 40000);
    void *p;
    errno = 0;
    if (i % 3 == 0) {
      NoNewMemory refuse;
      p = malloc(n);
    } else {
      p = malloc(n);
    }
    if (p == nullptr) {
      EXPECT_EQ(errno, ENOMEM);
      failures++;
    } else {
      Stamp(p, n, i);
      blocks.push_back({p, n, i});
    }
  }
  {
    NoNewMemory refuse;  // and one request that no free span can serve
    errno = 0;
    void *p = malloc(kNeverHeld);
    EXPECT_EQ(p, nullptr);
    EXPECT_EQ(errno, ENOMEM);
    failures += p == nullptr;
  }
  for (const Block &b : blocks) {
    EXPECT_TRUE(StampIntact(b.p, b.n, b.seed)) << b.seed;
    free(b.p);
  }
  EXPECT_GT(failures, 0);
}

// munmap can fail (ENOMEM when splitting a merged area would pass vm.max_map_count). A
// freed block with a mapping of its own (more than a quarter of an arena: 1 GiB here)
// that the kernel refused to unmap is decommitted, accounted and retried, never forgotten.
TEST(SystemFaultTest, RefusedUnmapIsKeptAccountedAndRetried) {
  const size_t n = size_t{1100} << 20;
  char *p = static_cast<char *>(malloc(n));
  ASSERT_NE(p, nullptr);
  for (size_t i = 0; i < n; i += size_t{1} << 20) p[i] = 1;
  hak_option_values[HAK_OPT_BIGCACHE_MB] = 0;  // not kept for reuse: unmapped on free
  hak_stats_t before = Stats();
  hak_os_fail_nth(HAK_OS_RELEASE, 1);
  free(p);
  hak_option_values[HAK_OPT_BIGCACHE_MB] = hak_option_table[HAK_OPT_BIGCACHE_MB].def;
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

// Free slabs of SuperSlabs that a live block keeps in use go back whole at a trim,
// headers included ("cold"), and are carved afresh when reused; a refused decommit
// leaves its slabs listed and resident, to be tried again; and once the last blocks go,
// the SuperSlabs empty, cold slabs and all, and are decommitted.
TEST(SystemFaultTest, ColdSlabsAreCarvedAfreshAndTheirSuperSlabsStillEmpty) {
  // Class 1024, about 63 blocks a slab: 8000 blocks fill some 127 slabs, 4 SuperSlabs;
  // every 1000th block stays.
  constexpr int kBlocks = 8000;
  std::vector<void *> blocks(kBlocks);
  std::thread([&] {
    for (int i = 0; i < kBlocks; i++) {
      blocks[i] = malloc(1000);
      ASSERT_NE(blocks[i], nullptr);
    }
    for (int i = 0; i < kBlocks; i++) {
      if (i % 1000 != 0) free(blocks[i]);
    }
  }).join();
  hak_stats_t before = Stats();
  hak_os_fail_nth(HAK_OS_DECOMMIT, 1);
  malloc_trim(0);  // flushes the dead heap; every free slab goes back but the refused run
  hak_stats_t trimmed = Stats();
  ASSERT_EQ(trimmed.os_failures[HAK_STAT_OS_DECOMMIT] - before.os_failures[HAK_STAT_OS_DECOMMIT],
            1u);
  EXPECT_LE(trimmed.tiny_resident_bytes + (size_t{4} << 20), before.tiny_resident_bytes)
      << "the 119 free slabs went back whole, bar the refused run of neighbours";
  malloc_trim(0);  // the refused run is still listed: tried again
  hak_stats_t retried = Stats();
  EXPECT_EQ(retried.os_failures[HAK_STAT_OS_DECOMMIT], trimmed.os_failures[HAK_STAT_OS_DECOMMIT]);
  EXPECT_GT(retried.os_calls[HAK_STAT_OS_DECOMMIT], trimmed.os_calls[HAK_STAT_OS_DECOMMIT]);
  // Reuse the cold slabs: their blocks are carved afresh, data intact, nothing lost.
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < kBlocks; i++) {
      if (i % 1000 == 0 && round == 0) continue;  // still live from the start
      blocks[i] = malloc(1000);
      ASSERT_NE(blocks[i], nullptr);
      Stamp(blocks[i], 1000, i);
    }
    for (int i = 0; i < kBlocks; i++) {
      if (i % 1000 == 0 && round == 0) continue;
      ASSERT_TRUE(StampIntact(blocks[i], 1000, i)) << i;
      free(blocks[i]);
    }
    if (round == 0) {
      for (int i = 0; i < kBlocks; i += 1000) free(blocks[i]);
    }
    malloc_trim(0);
  }
  hak_stats_t end = Stats();
  printf("tiny resident %llu -> %llu KiB at the trim; SuperSlabs %llu -> %llu\n",
         (unsigned long long)before.tiny_resident_bytes >> 10,
         (unsigned long long)trimmed.tiny_resident_bytes >> 10,
         (unsigned long long)before.tiny_superslabs, (unsigned long long)end.tiny_superslabs);
  EXPECT_LE(end.tiny_superslabs, before.tiny_superslabs + 1) << "cold slabs were reused";
  EXPECT_GT(end.tiny_empty_superslabs, 0u);
  EXPECT_EQ(end.tiny_decommitted_superslabs, end.tiny_empty_superslabs)
      << "SuperSlabs with cold slabs emptied and were decommitted";
}

// Free slabs and spans go back a run of neighbours per call: each call costs a TLB
// shootdown, and a call per 64 KiB slab or span made a 300 MiB burst take 185-900 ms of
// kernel time to return. A thread fills 127 Tiny slabs (4 SuperSlabs) and 100 Pool spans
// (3 pages each) and frees all but every 1000th and every 50th block, which keep the
// SuperSlabs in use and cut the free slabs and spans into about 20 runs; a trim
// returns them (a call each made 200).
TEST(SystemFaultTest, FreeSlabsAndSpansGoBackInRunsOfNeighbours) {
  constexpr int kTiny = 8000, kPool = 400;  // 1000 B: 63 a slab; 40,000 B: 4 a span
  std::vector<void *> tiny(kTiny), pool(kPool);
  malloc_trim(0);  // what earlier tests left
  std::thread([&] {
    for (void *&p : tiny) ASSERT_NE(p = malloc(1000), nullptr);
    for (void *&p : pool) ASSERT_NE(p = malloc(40000), nullptr);
    for (int i = 0; i < kTiny; i++)
      if (i % 1000 != 0) free(tiny[i]);
    for (int i = 0; i < kPool; i++)
      if (i % 50 != 0) free(pool[i]);
  }).join();
  hak_stats_t before = Stats();
  malloc_trim(0);  // flushes the dead heap's caches and returns every free slab and span
  hak_stats_t after = Stats();
  uint64_t calls = after.os_calls[HAK_STAT_OS_DECOMMIT] - before.os_calls[HAK_STAT_OS_DECOMMIT];
  uint64_t bytes = after.os_bytes[HAK_STAT_OS_DECOMMIT] - before.os_bytes[HAK_STAT_OS_DECOMMIT];
  printf("trim: %llu decommits of %llu KiB\n", (unsigned long long)calls,
         (unsigned long long)bytes >> 10);
  EXPECT_GE(bytes, uint64_t{24} << 20) << "119 slabs and 92 spans went back";
  EXPECT_LE(calls, 40u) << "a call per run of neighbours, not per slab or span";
  for (int i = 0; i < kTiny; i += 1000) free(tiny[i]);
  for (int i = 0; i < kPool; i += 50) free(pool[i]);
}

}  // namespace
