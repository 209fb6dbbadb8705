// The Large tier on its own (linked without the front end): blocks, the page map that
// proves ownership, the page heap (split, coalescing, best fit, purge, growth, fallback to
// mappings, realloc), faults, threads, and the limits on sizes and alignments. The first
// tests run before the tier has a region (every block a mapping of its own).
#include "allocator/large/large.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "allocator/os_boundary/os.h"
#include "allocator/os_boundary/os_testing.h"
#include "gtest/gtest.h"
#include "tests/system/proc_util.h"

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
  EXPECT_EQ(hak_large_free(p), -1) << "a freed block is a double free, and touches nothing";
  EXPECT_EQ(hak_large_freed(p), 1);
  EXPECT_EQ(hak_large_freed(global), 0);
}

// Without a region (this suite) every block is a mapping of its own: a second free is
// told while the freed mapping is kept in the cache.
TEST(LargeTest, ADoubleFreeOfAMappedBlockIsToldWhileItsMappingIsCached) {
  char *a = static_cast<char *>(hak_large_malloc(1 << 20, 16, 0));
  char *b = static_cast<char *>(hak_large_malloc(1 << 20, 16, 0));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(hak_large_free(a), 1);
  EXPECT_EQ(hak_large_free(b), 1);
  EXPECT_EQ(hak_large_free(b), -1);
  EXPECT_EQ(hak_large_free(a), -1);
  EXPECT_EQ(hak_large_free(b + 16), 0) << "not page aligned: no block could start there";
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

// ---- The page heap: the tier given a region of its own (512 MiB: eight 64 MiB arenas,
// blocks above 16 MiB get mappings of their own). Each test frees what it allocates, and
// SetUp purges everything, so the calling thread's arena is one clean free span. ----

constexpr size_t kPage = 4096;
constexpr size_t kRegion = size_t{512} << 20;
uintptr_t region_base;

class LargeHeapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (region_base) return;
    void *base;
    ASSERT_EQ(hak_os_claim(kRegion, size_t{2} << 20, &base), 0);
    region_base = reinterpret_cast<uintptr_t>(base);
    hak_large_init(region_base, kRegion);
  }
  void SetUp() override { hak_large_maintain(1); }

  static bool InRegion(const void *p) {
    auto a = reinterpret_cast<uintptr_t>(p);
    return a >= region_base && a < region_base + kRegion;
  }
  static char *Pages(size_t n) {
    auto *p = static_cast<char *>(hak_large_malloc(n * kPage, 16, 0));
    EXPECT_NE(p, nullptr);
    EXPECT_TRUE(InRegion(p));
    EXPECT_EQ(hak_large_usable(p), n * kPage);
    return p;
  }
  static uint64_t OsCalls() {
    hak_os_counters_t c;
    hak_os_counters(&c);
    return hak_os_total_calls(&c);
  }
};

TEST_F(LargeHeapTest, ASplitServesTheFrontAndKeepsTheRestFree) {
  char *a = Pages(40);
  hak_large_free(a);
  char *b = Pages(10);
  EXPECT_EQ(b, a) << "the front of the freed span";
  char *c = Pages(30);
  EXPECT_EQ(c, a + 10 * kPage) << "the rest of it";
  hak_large_free(b);
  hak_large_free(c);
}

TEST_F(LargeHeapTest, FreedNeighboursCoalesceIntoOneSpan) {
  char *a = Pages(20), *b = Pages(20), *c = Pages(20), *fence = Pages(20);
  ASSERT_EQ(b, a + 20 * kPage);
  ASSERT_EQ(c, b + 20 * kPage);
  hak_large_free(a);
  hak_large_free(c);
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_EQ(s.cached_bytes, 40 * kPage) << "two dirty spans";
  hak_large_free(b);  // joins both
  hak_large_stats(&s);
  EXPECT_EQ(s.cached_bytes, 60 * kPage);
  EXPECT_EQ(s.cached_blocks, 1u) << "one span of 60 pages";
  char *d = Pages(60);
  EXPECT_EQ(d, a);
  hak_large_free(d);
  hak_large_free(fence);
}

// A block freed after its left neighbour joins it: its own page-map entry is stale then,
// and the free span around it still tells a double free; once the pages serve a new
// block, the old pointer lies inside that live block and is not taken for one.
TEST_F(LargeHeapTest, ADoubleFreeIsToldAfterTheSpanJoinedItsNeighbour) {
  char *a = Pages(20), *b = Pages(20), *fence = Pages(20);
  ASSERT_EQ(b, a + 20 * kPage);
  EXPECT_EQ(hak_large_free(a), 1);
  EXPECT_EQ(hak_large_free(b), 1);  // joins a
  EXPECT_EQ(hak_large_freed(b), 1);
  EXPECT_EQ(hak_large_free(b), -1);
  EXPECT_EQ(hak_large_free(a), -1);
  EXPECT_EQ(hak_large_free(b + 16), 0) << "not page aligned: no block could start there";
  char *d = Pages(40);
  ASSERT_EQ(d, a);
  EXPECT_EQ(hak_large_free(b), 0) << "inside a live block now";
  EXPECT_EQ(hak_large_usable(d), 40 * kPage) << "and it was left alone";
  hak_large_free(d);
  hak_large_free(fence);
}

TEST_F(LargeHeapTest, BestFitTakesTheSmallestSpanThatFits) {
  // Free spans of 23 and 21 pages (one size bin), the bigger one freed last.
  char *a = Pages(21), *f1 = Pages(1), *b = Pages(23), *f2 = Pages(1);
  hak_large_free(a);
  hak_large_free(b);
  EXPECT_EQ(Pages(21), a) << "the exact fit, not the most recent";
  EXPECT_EQ(Pages(22), b) << "then the 23-page span, split";
  hak_large_free(a);
  hak_large_free(b);
  hak_large_free(f1);
  hak_large_free(f2);
}

TEST_F(LargeHeapTest, FreedPagesAreReusedWithoutSystemCalls) {
  char *warm = Pages(256);
  hak_large_free(warm);
  uint64_t before = OsCalls();
  for (int i = 0; i < 1000; i++) {
    char *p = Pages(64 + i % 192);
    p[0] = static_cast<char>(i);
    hak_large_free(p);
  }
  EXPECT_EQ(OsCalls(), before);
}

TEST_F(LargeHeapTest, ThePurgeGivesPagesBackAndZeroedBlocksOfPurgedPagesAreNotCleared) {
  char *a = Pages(256);
  memset(a, 0x5a, 256 * kPage);
  hak_large_free(a);
  EXPECT_EQ(hak_os_resident(a, 256 * kPage), 256 * kPage) << "kept for the decay";
  auto *b = static_cast<unsigned char *>(hak_large_malloc(256 * kPage, 16, 1));
  ASSERT_EQ(static_cast<void *>(b), a) << "dirty pages serve a zeroed block";
  for (size_t i = 0; i < 256 * kPage; i += 509) ASSERT_EQ(b[i], 0) << i;
  hak_large_free(b);
  hak_large_maintain(1);
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_EQ(hak_os_resident(a, 256 * kPage), 0u) << "purged";
  auto *c = static_cast<unsigned char *>(hak_large_malloc(256 * kPage, 16, 1));
  ASSERT_EQ(static_cast<void *>(c), a);
  EXPECT_EQ(hak_os_resident(c, 256 * kPage), 0u) << "purged pages read as zero: no clearing";
  EXPECT_EQ(c[12345], 0);
  hak_large_free(c);
}

TEST_F(LargeHeapTest, TheDecayPurgesOnlyWhatIsDue) {
  char *old_block = Pages(32), *fence = Pages(1);
  hak_large_free(old_block);
  hak_large_maintain(0);  // the decay (1 s) is not due: nothing is given back
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_EQ(s.cached_bytes, 32 * kPage);
  hak_large_free(fence);
}

// Freed pages kept for reuse are bounded by what the arena recently served (1.5 times
// the recent peak of its live pages, at least 16 MiB; past the bound, trimmed to half of
// it): a working set freed at once is kept for the next cycle, but once the peak has
// decayed (its excess halves at every pass) the next free gives the excess back at once.
TEST_F(LargeHeapTest, FreedPagesBeyondTheRecentPeakGoBack) {
  std::vector<char *> blocks;
  for (int i = 0; i < 40; i++) {
    char *p = Pages(256);  // 1 MiB each
    memset(p, 1, 256 * kPage);
    blocks.push_back(p);
  }
  for (char *p : blocks) hak_large_free(p);
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_GE(s.cached_bytes, size_t{40} << 20) << "the working set is kept for the next cycle";
  for (int pass = 0; pass < 16; pass++) hak_large_maintain(0);  // not due: the peak decays
  hak_large_stats(&s);
  EXPECT_GE(s.cached_bytes, size_t{40} << 20) << "passes alone give nothing back early";
  hak_large_free(Pages(1));
  hak_large_stats(&s);
  EXPECT_LE(s.cached_bytes, size_t{16} << 20);
  EXPECT_GE(s.cached_bytes, size_t{7} << 20) << "the most recently freed are kept";
  size_t resident = 0;
  for (char *p : blocks) resident += hak_os_resident(p, 256 * kPage);
  EXPECT_LE(resident, size_t{16} << 20);
}

TEST_F(LargeHeapTest, AlignedBlocksComeFromTheRegion) {
  for (size_t align : {size_t{8192}, size_t{64} << 10, size_t{1} << 20, size_t{4} << 20}) {
    void *p = hak_large_malloc(100000, align, 0);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(InRegion(p)) << align;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << align;
    EXPECT_GE(hak_large_usable(p), 100000u);
    memset(p, 1, 100000);
    hak_large_free(p);
  }
  hak_large_maintain(1);
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_EQ(s.cached_bytes, 0u) << "the trimmed leads and tails were freed too";
}

TEST_F(LargeHeapTest, ReallocGrowsIntoFreeNeighboursShrinksInPlaceAndMovesOtherwise) {
  char *a = Pages(10);
  strcpy(a, "kept");
  uint64_t before = OsCalls();
  EXPECT_EQ(hak_large_realloc(a, 30 * kPage), a) << "into the free span after it";
  EXPECT_EQ(hak_large_usable(a), 30 * kPage);
  EXPECT_EQ(hak_large_realloc(a, 12 * kPage), a) << "shrinks in place";
  EXPECT_EQ(hak_large_usable(a), 12 * kPage);
  EXPECT_EQ(OsCalls(), before);
  char *fence = Pages(1);
  ASSERT_EQ(fence, a + 12 * kPage) << "the freed tail was served next";
  auto *b = static_cast<char *>(hak_large_realloc(a, 40 * kPage));
  ASSERT_NE(b, nullptr);
  EXPECT_NE(b, a) << "a block follows: it moves";
  EXPECT_STREQ(b, "kept");
  EXPECT_EQ(hak_large_usable(a), 0u) << "the old block is freed";
  hak_large_free(b);
  hak_large_free(fence);
}

// A block of 4 MiB or more that must move (a block follows it) moves its pages with one
// mremap; when the kernel refuses, its bytes are copied. Contents kept either way.
TEST_F(LargeHeapTest, BigBlocksMoveTheirPagesAndAreCopiedWhenTheKernelRefuses) {
  for (int refuse = 0; refuse < 2; refuse++) {
    auto *p = reinterpret_cast<unsigned char *>(Pages(1024));  // 4 MiB
    char *fence = Pages(1);
    ASSERT_EQ(fence, reinterpret_cast<char *>(p) + 1024 * kPage);
    for (size_t i = 0; i < 1024 * kPage; i += 512) p[i] = static_cast<unsigned char>(i >> 9);
    hak_os_counters_t before, after;
    hak_os_counters(&before);
    hak_os_fail_every(HAK_OS_REMAP, refuse);
    auto *q = static_cast<unsigned char *>(hak_large_realloc(p, size_t{10} << 20));
    hak_os_fail_every(HAK_OS_REMAP, 0);
    hak_os_counters(&after);
    ASSERT_NE(q, nullptr) << refuse;
    EXPECT_NE(q, p);
    EXPECT_TRUE(InRegion(q));
    EXPECT_EQ(after.calls[HAK_OS_REMAP] - before.calls[HAK_OS_REMAP], 1u) << refuse;
    EXPECT_EQ(after.failures[HAK_OS_REMAP] - before.failures[HAK_OS_REMAP],
              static_cast<uint64_t>(refuse));
    for (size_t i = 0; i < 1024 * kPage; i += 512) {
      ASSERT_EQ(q[i], static_cast<unsigned char>(i >> 9)) << refuse << " " << i;
    }
    EXPECT_GE(hak_large_usable(q), size_t{10} << 20);
    if (!refuse) {
      EXPECT_EQ(hak_os_resident(p, 1024 * kPage), 0u) << "the old range lost its pages";
    }
    EXPECT_EQ(hak_large_usable(p), 0u) << "the old block is freed";
    hak_large_free(q);
    hak_large_free(fence);
  }
}

// A block that cannot grow forward but has a free span before it slides down into it
// (one copy, no hole left behind), rather than moving to another place.
TEST_F(LargeHeapTest, ABlockSlidesIntoTheFreeSpanBeforeIt) {
  char *before = Pages(20), *a = Pages(10), *fence = Pages(1);
  ASSERT_EQ(a, before + 20 * kPage);
  ASSERT_EQ(fence, a + 10 * kPage);
  for (size_t i = 0; i < 10 * kPage; i++) a[i] = static_cast<char>(i * 7);
  hak_large_free(before);
  auto *b = static_cast<char *>(hak_large_realloc(a, 25 * kPage));
  ASSERT_EQ(b, before) << "slid down into the freed span";
  EXPECT_EQ(hak_large_usable(b), 25 * kPage);
  for (size_t i = 0; i < 10 * kPage; i++) ASSERT_EQ(b[i], static_cast<char>(i * 7)) << i;
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_EQ(s.cached_bytes, 5 * kPage) << "what is left between it and the fence";
  EXPECT_EQ(Pages(5), b + 25 * kPage);
  hak_large_free(b + 25 * kPage);
  hak_large_free(b);
  hak_large_free(fence);
}

// A growing buffer at an arena's top grows in place, the arena mapping more behind it.
TEST_F(LargeHeapTest, ReallocAtTheTopGrowsTheArena) {
  char *a = Pages(16);
  a[0] = 'x';
  char *p = a;
  int moves = 0;
  for (size_t n = 16 * kPage; n <= (size_t{12} << 20); n = n * 3 / 2) {
    char *q = static_cast<char *>(hak_large_realloc(p, n));
    ASSERT_NE(q, nullptr) << n;
    moves += q != p;
    ASSERT_EQ(q[0], 'x');
    q[n - 1] = 'y';
    p = q;
  }
  EXPECT_LE(moves, 1) << "the arena's top has nothing after it";
  hak_large_free(p);
}

TEST_F(LargeHeapTest, AFullRegionFallsBackToMappingsOfTheirOwn) {
  std::vector<void *> blocks;
  bool outside = false;
  for (int i = 0; i < 64 && !outside; i++) {  // 15 MiB each: four fit an arena
    void *p = hak_large_malloc(size_t{15} << 20, 16, 0);
    ASSERT_NE(p, nullptr) << i;
    static_cast<char *>(p)[0] = 1;
    outside = !InRegion(p);
    blocks.push_back(p);
  }
  EXPECT_TRUE(outside) << "every arena full: a mapping";
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_GE(s.huge_blocks, 1u);
  for (void *p : blocks) EXPECT_EQ(hak_large_free(p), 1);
}

TEST_F(LargeHeapTest, BlocksBeyondAQuarterOfAnArenaGetMappingsOfTheirOwn) {
  void *p = hak_large_malloc(size_t{20} << 20, 16, 0);
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(InRegion(p));
  hak_large_free(p);
}

TEST_F(LargeHeapTest, RefusedGrowthAndPurgeKeepDataIntact) {
  std::vector<char *> blocks;
  for (int i = 0; i < 8; i++) {
    char *p = Pages(100);
    memset(p, i + 1, 100 * kPage);
    blocks.push_back(p);
  }
  // No arena may grow: what does not fit the free spans is a mapping or NULL.
  hak_os_fail_every(HAK_OS_COMMIT, 1);
  void *big = hak_large_malloc(size_t{15} << 20, 16, 0);
  hak_os_fail_every(HAK_OS_COMMIT, 0);
  if (big) {
    memset(big, 9, size_t{15} << 20);
    hak_large_free(big);
  }
  for (int i = 0; i < 8; i += 2) hak_large_free(blocks[i]);
  hak_os_fail_nth(HAK_OS_DECOMMIT, 1);
  hak_large_maintain(1);
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_GT(s.cached_bytes, 0u) << "a refused decommit leaves its span dirty";
  hak_large_maintain(1);
  hak_large_stats(&s);
  EXPECT_EQ(s.cached_bytes, 0u) << "and the next pass retries it";
  for (int i = 1; i < 8; i += 2) {
    for (size_t j = 0; j < 100 * kPage; j += 4093) ASSERT_EQ(blocks[i][j], i + 1);
    hak_large_free(blocks[i]);
  }
}

// Direct mappings grow with mremap; when the kernel refuses every remap, the block is
// copied instead and nothing is lost.
TEST_F(LargeHeapTest, MappedBlocksGrowByRemapOrByCopyWhenRemapFails) {
  for (int refuse = 0; refuse < 2; refuse++) {
    size_t n = size_t{20} << 20;
    auto *p = static_cast<unsigned char *>(hak_large_malloc(n, 16, 0));
    ASSERT_NE(p, nullptr);
    ASSERT_FALSE(InRegion(p));
    for (size_t i = 0; i < n; i += kPage) p[i] = static_cast<unsigned char>(i / kPage);
    hak_os_counters_t before, after;
    hak_os_counters(&before);
    hak_os_fail_every(HAK_OS_REMAP, refuse);
    auto *q = static_cast<unsigned char *>(hak_large_realloc(p, size_t{48} << 20));
    hak_os_fail_every(HAK_OS_REMAP, 0);
    hak_os_counters(&after);
    ASSERT_NE(q, nullptr) << refuse;
    EXPECT_GE(after.calls[HAK_OS_REMAP] - before.calls[HAK_OS_REMAP], 1u);
    if (refuse) {
      EXPECT_EQ(after.failures[HAK_OS_REMAP] - before.failures[HAK_OS_REMAP],
                after.calls[HAK_OS_REMAP] - before.calls[HAK_OS_REMAP]);
    }
    for (size_t i = 0; i < n; i += kPage) {
      ASSERT_EQ(q[i], static_cast<unsigned char>(i / kPage)) << refuse << " " << i;
    }
    EXPECT_GE(hak_large_usable(q), size_t{48} << 20);
    hak_large_free(q);
  }
}

// ---- New blocks take the resident pages of freed spans (span_fill): moved in 1 MiB
// pieces instead of faulting fresh pages in, so memory follows the live blocks. ----

constexpr size_t kMiB = size_t{1} << 20;

// A block that no freed span fits grows the arena, and the pages of the freed span move
// into it: writing it faults in only its unaligned ends, the freed span reads as zero
// after (a zeroed block there is cleared), and a refused move leaves both as they were.
TEST_F(LargeHeapTest, ANewBlockTakesTheResidentPagesOfAFreedOne) {
  for (int refuse = 0; refuse < 2; refuse++) {
    SCOPED_TRACE(refuse);
    hak_large_maintain(1);
    char *a = Pages(1536);  // 6 MiB, at the arena's base: six whole 1 MiB pieces
    ASSERT_EQ(reinterpret_cast<uintptr_t>(a) % kMiB, 0u);
    char *fence = Pages(1);
    memset(a, 0x5a, 6 * kMiB);
    hak_large_free(a);
    hak_large_stats_t before, after;
    hak_large_stats(&before);
    hak_os_fail_every(HAK_OS_REMAP, refuse);
    auto *b = static_cast<unsigned char *>(hak_large_malloc(8 * kMiB, 16, 0));
    hak_os_fail_every(HAK_OS_REMAP, 0);
    ASSERT_NE(b, nullptr);
    ASSERT_GT(reinterpret_cast<char *>(b), fence) << "the freed span is too small for it";
    EXPECT_EQ(hak_large_usable(b), 8 * kMiB);
    size_t rss = hak_test::ResidentBytes();
    memset(b, 0x33, 8 * kMiB);
    size_t grown = hak_test::ResidentBytes() - rss;
    hak_large_stats(&after);
    if (!refuse) {
      EXPECT_EQ(after.moved_bytes - before.moved_bytes, 6 * kMiB);
      EXPECT_EQ(hak_os_resident(a, 6 * kMiB), 0u) << "the freed span gave its pages";
      // Under ASan the memset reads the block's shadow (an eighth of it), which hakmem
      // handed back to the kernel; a kernel without the shared zero page (this 2-core VM:
      // reading untouched memory faults real pages in) makes that megabyte resident.
      size_t shadow = HAK_ASAN ? 8 * kMiB / 8 : 0;
      EXPECT_LE(grown, 2 * kMiB + kMiB / 2 + shadow)
          << "only what the freed span could not give is new";
    } else {
      EXPECT_EQ(after.moved_bytes, before.moved_bytes);
      EXPECT_EQ(hak_os_resident(a, 6 * kMiB), 6 * kMiB) << "a refused move keeps the pages";
      EXPECT_GE(grown, 8 * kMiB - kMiB / 2);
    }
    for (size_t i = 0; i < 8 * kMiB; i += 4093) ASSERT_EQ(b[i], 0x33) << i;
    auto *c = static_cast<unsigned char *>(hak_large_malloc(6 * kMiB, 16, 1));
    ASSERT_EQ(static_cast<void *>(c), a) << "the freed span, still dirty, fits it";
    for (size_t i = 0; i < 6 * kMiB; i += 4093) ASSERT_EQ(c[i], 0) << i;
    hak_large_free(c);
    hak_large_free(b);
    hak_large_free(fence);
  }
}

// Big buffers of random sizes replaced at random (large 5-25M's pattern, scaled to a
// 64 MiB arena): what the region holds in RAM stays near the live bytes instead of the
// arena's extent, every block keeps its bytes, and the moves split the arena's mapping
// only on the 1 MiB grid.
TEST_F(LargeHeapTest, ReplacedBigBlocksKeepMemoryNearTheLiveBytesAndMappingsFew) {
  struct Block {
    unsigned char *p;
    size_t n;
    unsigned char tag;
  } live[4] = {};
  std::mt19937_64 rng(11);
  size_t maps = hak_test::MappingCount(), live_bytes = 0, peak_live = 0, peak_resident = 0;
  hak_large_stats_t before, after;
  hak_large_stats(&before);
  for (int i = 0; i < 400; i++) {
    Block &b = live[rng() % 4];
    if (b.p) {
      for (size_t j = 0; j < b.n; j += 4093) ASSERT_EQ(b.p[j], b.tag) << i << " " << j;
      ASSERT_EQ(b.p[b.n - 1], b.tag) << i;
      hak_large_free(b.p);
      live_bytes -= b.n;
    }
    b.n = (1024 + rng() % 2048) * kPage;  // 4-12 MiB
    b.p = static_cast<unsigned char *>(hak_large_malloc(b.n, 16, 0));
    ASSERT_NE(b.p, nullptr);
    ASSERT_TRUE(InRegion(b.p));
    b.tag = static_cast<unsigned char>(i + 1);
    memset(b.p, b.tag, b.n);
    live_bytes += b.n;
    peak_live = std::max(peak_live, live_bytes);
    peak_resident =
        std::max(peak_resident, hak_os_resident(reinterpret_cast<void *>(region_base), kRegion));
  }
  hak_large_stats(&after);
  EXPECT_GT(after.moved_bytes, before.moved_bytes);
  EXPECT_LE(peak_resident, peak_live + 4 * kMiB) << "peak of live bytes " << peak_live;
  EXPECT_LE(hak_test::MappingCount(), maps + 64) << "at most one split per MiB of the arena";
  for (Block &b : live) hak_large_free(b.p);
}

// Threads replace, grow and hand each other blocks (a free from another arena's thread);
// every block's stamp is checked before it is freed or after it moved.
TEST_F(LargeHeapTest, ThreadsSharingBlocksNeverCorruptThem) {
  hak_large_stats_t before;
  hak_large_stats(&before);
  constexpr int kThreads = 4, kSteps = 3000, kSlots = 16;
  std::mutex hand_lock;
  std::vector<std::pair<uint64_t *, size_t>> handed;  // blocks for any thread to free
  std::atomic<int> bad{0};
  auto stamp = [](uint64_t *p, size_t n, uint64_t v) {
    for (size_t i = 0; i < n / 8 - 1; i += 512) p[i] = v ^ i;
    p[n / 8 - 1] = v;
  };
  auto intact = [](const uint64_t *p, size_t n, uint64_t v) {
    for (size_t i = 0; i < n / 8 - 1; i += 512)
      if (p[i] != (v ^ i)) return false;
    return p[n / 8 - 1] == v;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      uint64_t *slot[kSlots] = {};
      size_t size[kSlots] = {};
      for (int step = 0; step < kSteps; step++) {
        int k = static_cast<int>(rng() % kSlots);
        uint64_t v = reinterpret_cast<uintptr_t>(slot[k]) ^ size[k];
        if (slot[k] && !intact(slot[k], size[k], v)) bad++;
        // 64 KiB-3 MiB, and one block in four of 4-8 MiB (whole 1 MiB pieces, filled
        // with the pages of freed ones while other threads free into the same arena).
        size_t n = rng() % 4 ? (size_t{64} << 10) + rng() % (size_t{3} << 20)
                             : (size_t{4} << 20) + rng() % (size_t{4} << 20);
        n &= ~size_t{7};
        switch (rng() % 3) {
          case 0:  // replace
            if (slot[k]) hak_large_free(slot[k]);
            slot[k] = static_cast<uint64_t *>(hak_large_malloc(n, 16, 0));
            break;
          case 1: {  // grow or shrink, keeping the stamped prefix
            if (!slot[k]) continue;
            auto *q = static_cast<uint64_t *>(hak_large_realloc(slot[k], n));
            if (!q) {
              bad++;
              continue;
            }
            size_t kept = n < size[k] ? n : size[k];
            for (size_t i = 0; i < kept / 8 - 1; i += 512)
              if (q[i] != (v ^ i)) bad++;
            slot[k] = q;
            break;
          }
          default: {  // hand it to another thread, take one
            std::lock_guard<std::mutex> g(hand_lock);
            if (slot[k]) handed.emplace_back(slot[k], size[k]);
            slot[k] = static_cast<uint64_t *>(hak_large_malloc(n, 16, 0));
            if (handed.size() > 8) {
              auto [p, m] = handed.front();
              handed.erase(handed.begin());
              if (!intact(p, m, reinterpret_cast<uintptr_t>(p) ^ m)) bad++;
              hak_large_free(p);
            }
          }
        }
        if (!slot[k]) {
          bad++;
          continue;
        }
        size[k] = n;
        stamp(slot[k], n, reinterpret_cast<uintptr_t>(slot[k]) ^ n);
      }
      for (int k = 0; k < kSlots; k++) {
        if (!slot[k]) continue;
        if (!intact(slot[k], size[k], reinterpret_cast<uintptr_t>(slot[k]) ^ size[k])) bad++;
        hak_large_free(slot[k]);
      }
    });
  }
  for (auto &th : threads) th.join();
  for (auto [p, m] : handed) {
    if (!intact(p, m, reinterpret_cast<uintptr_t>(p) ^ m)) bad++;
    hak_large_free(p);
  }
  EXPECT_EQ(bad.load(), 0);
  hak_large_stats_t s;
  hak_large_stats(&s);
  EXPECT_EQ(s.live_blocks, 0u);
  EXPECT_GT(s.moved_bytes, before.moved_bytes) << "new blocks took freed pages";
}

}  // namespace
