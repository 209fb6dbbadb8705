// Conformance of the malloc family, with hakmem as the process allocator (malloc = ...):
// alignment, sizes 0..8 KiB and up to a few MiB, errno on every failure path, realloc
// across tier boundaries, usable sizes, and the hak_* names.
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "allocator/hakmem.h"
#include "allocator/os_boundary/os.h"
#include "allocator/os_boundary/os_testing.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

extern "C" void free_sized(void *p, size_t n);
extern "C" void free_aligned_sized(void *p, size_t align, size_t n);

namespace {

using hak_test::Opaque;
using hak_test::Stamp;
using hak_test::StampIntact;

// Sizes around every boundary that matters: tiny classes, the tier limits, pages.
std::vector<size_t> SweepSizes() {
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 8192; n += (n < 1100 ? 1 : 7)) sizes.push_back(n);
  for (size_t n : {65535, 65536, 65537, 100000, 1 << 20, (1 << 20) + 1, 3 << 20, 5 << 20}) {
    sizes.push_back(n);
  }
  return sizes;
}

bool Aligned(const void *p, size_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

TEST(SystemApiTest, EveryBlockIsSixteenByteAlignedAndFullyUsable) {
  std::vector<void *> live;
  for (size_t n : SweepSizes()) {
    void *p = malloc(n);
    ASSERT_NE(p, nullptr) << n;
    EXPECT_TRUE(Aligned(p, 16)) << absl::StrFormat("malloc(%d) = %p", n, p);
    size_t usable = malloc_usable_size(p);
    EXPECT_GE(usable, n) << n;
    memset(p, 0x5a, usable);  // all of it writable
    live.push_back(p);
  }
  for (void *p : live) free(p);
}

TEST(SystemApiTest, MallocZeroGivesUniqueFreeablePointers) {
  void *a = malloc(0), *b = malloc(0);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  free(a);
  free(b);
  free(nullptr);
}

TEST(SystemApiTest, ImpossibleSizesFailWithEnomemAndNoMapping) {
  hak_stats_t before, after;
  hak_stats_get(&before);
  for (size_t n : {SIZE_MAX, SIZE_MAX - 4095, SIZE_MAX / 2, size_t{1} << 62, size_t{1} << 48}) {
    n = Opaque(n);
    errno = 0;
    EXPECT_EQ(malloc(n), nullptr) << n;
    EXPECT_EQ(errno, ENOMEM) << n;
    errno = 0;
    EXPECT_EQ(calloc(1, n), nullptr) << n;
    EXPECT_EQ(errno, ENOMEM) << n;
    void *p = malloc(16);
    errno = 0;
    void *q = realloc(p, n);
    EXPECT_EQ(q, nullptr) << n;
    EXPECT_EQ(errno, ENOMEM) << n;
    free(q ? q : p);  // p is untouched by the failed realloc
  }
  hak_stats_get(&after);
  EXPECT_EQ(after.os_calls[HAK_STAT_OS_MAP], before.os_calls[HAK_STAT_OS_MAP])
      << "no mapping is attempted past the limit";
}

TEST(SystemApiTest, CallocAndReallocarrayOverflowGiveEnomem) {
  errno = 0;
  EXPECT_EQ(calloc(Opaque(SIZE_MAX / 2), 3), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  errno = 0;
  EXPECT_EQ(calloc(Opaque(size_t{1} << 33), size_t{1} << 33), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  void *p = malloc(10);
  errno = 0;
  void *failed = reallocarray(p, Opaque(SIZE_MAX / 4), 8);
  EXPECT_EQ(failed, nullptr);
  EXPECT_EQ(errno, ENOMEM);
  void *q = reallocarray(failed ? failed : p, 100, 8);
  ASSERT_NE(q, nullptr);
  EXPECT_GE(malloc_usable_size(q), 800u);
  free(q);
}

TEST(SystemApiTest, CallocZeroesEvenReusedMemory) {
  for (size_t n : SweepSizes()) {
    void *dirty = malloc(n ? n : 1);
    memset(dirty, 0xff, n ? n : 1);
    free(dirty);
    auto *p = static_cast<unsigned char *>(calloc(1, n));
    ASSERT_NE(p, nullptr) << n;
    for (size_t i = 0; i < n; i++) ASSERT_EQ(p[i], 0) << absl::StrFormat("calloc(%d)[%d]", n, i);
    free(p);
  }
}

TEST(SystemApiTest, PosixMemalignRejectsBadAlignmentsWithEinval) {
  void *p = reinterpret_cast<void *>(0x1);
  for (size_t a : {size_t{0}, size_t{1}, size_t{2}, size_t{4}, size_t{3}, size_t{24}, size_t{48},
                   size_t{100}, (size_t{1} << 20) + 8}) {
    EXPECT_EQ(posix_memalign(&p, a, 64), EINVAL) << a;
    EXPECT_EQ(p, reinterpret_cast<void *>(0x1)) << "out untouched on failure";
  }
  EXPECT_EQ(posix_memalign(&p, 64, Opaque(SIZE_MAX - 10)), ENOMEM);
  errno = 0;
  EXPECT_EQ(aligned_alloc(24, 64), nullptr);
  EXPECT_EQ(errno, EINVAL);
}

// Every function of the family honours alignments up to 64 MiB, for small and large sizes.
TEST(SystemApiTest, AlignmentsUpTo64MiBAreHonouredByEveryFunction) {
  for (size_t a = 8; a <= (size_t{64} << 20); a *= 2) {
    // Sizes whose natural class is not a multiple of the alignment (80, 200, 300) too.
    for (size_t n : {size_t{0}, size_t{1}, size_t{24}, size_t{80}, size_t{200}, size_t{300},
                     size_t{700}, size_t{5000}, size_t{70000}}) {
      void *p = nullptr;
      ASSERT_EQ(posix_memalign(&p, a, n), 0) << a << " " << n;
      EXPECT_TRUE(Aligned(p, a)) << absl::StrFormat("posix_memalign(%d, %d) = %p", a, n, p);
      EXPECT_GE(malloc_usable_size(p), n);
      memset(p, 1, n);
      void *q = aligned_alloc(a, n);
      ASSERT_NE(q, nullptr);
      EXPECT_TRUE(Aligned(q, a)) << absl::StrFormat("aligned_alloc(%d, %d) = %p", a, n, q);
      void *r = memalign(a, n);
      ASSERT_NE(r, nullptr);
      EXPECT_TRUE(Aligned(r, a)) << absl::StrFormat("memalign(%d, %d) = %p", a, n, r);
      free(p);
      free_aligned_sized(q, a, n);
      free(r);
    }
  }
}

TEST(SystemApiTest, MemalignRoundsABadAlignmentUpLikeGlibc) {
  void *p = memalign(48, 100);
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(Aligned(p, 64));
  free(p);
}

TEST(SystemApiTest, VallocAndPvallocArePageAligned) {
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void *v = valloc(10);
  ASSERT_NE(v, nullptr);
  EXPECT_TRUE(Aligned(v, page));
  void *pv = pvalloc(page + 1);
  ASSERT_NE(pv, nullptr);
  EXPECT_TRUE(Aligned(pv, page));
  EXPECT_GE(malloc_usable_size(pv), 2 * page);
  memset(pv, 3, 2 * page);
  free(v);
  free(pv);
  errno = 0;
  EXPECT_EQ(pvalloc(Opaque(SIZE_MAX - 10)), nullptr);
  EXPECT_EQ(errno, ENOMEM);
}

// Contents survive realloc across every tier boundary, growing and shrinking.
TEST(SystemApiTest, ReallocKeepsContentsAcrossEveryTierBoundary) {
  const size_t steps[] = {1,      16,      17,      1000,   1024,  1025, 4096, 65536, 65537,
                          200000, 1 << 20, 3 << 20, 100000, 65536, 2000, 500,  8,     1};
  void *p = nullptr;
  size_t have = 0;
  uint64_t seed = 7;
  for (size_t n : steps) {
    void *q = realloc(p, n);
    ASSERT_NE(q, nullptr) << n;
    size_t keep = have < n ? have : n;
    EXPECT_TRUE(StampIntact(q, keep, seed)) << absl::StrFormat("realloc %d -> %d", have, n);
    seed++;
    Stamp(q, n, seed);
    p = q;
    have = n;
  }
  free(p);
}

TEST(SystemApiTest, ReallocNullIsMallocAndZeroFreesLikeGlibc) {
  void *p = realloc(nullptr, 100);
  ASSERT_NE(p, nullptr);
  EXPECT_GE(malloc_usable_size(p), 100u);
  EXPECT_EQ(realloc(p, 0), nullptr);  // glibc: frees p, returns NULL
}

// A buffer grown from 1 MiB to 8 MiB in 1.5x steps, the pattern of a growing array:
// every step keeps the contents; with a free span or the arena's top after it, it grows
// where it is, and it never needs more than a few moves (each with headroom) or memory
// system calls.
TEST(SystemApiTest, LargeReallocGrowsFrom1To8MiBKeepingItsContents) {
  hak_stats_t before, after;
  size_t n = size_t{1} << 20;
  auto *p = static_cast<unsigned char *>(malloc(n));
  ASSERT_NE(p, nullptr);
  Stamp(p, n, 42);
  hak_stats_get(&before);
  int moves = 0, steps = 0;
  while (n < (size_t{8} << 20)) {
    size_t next = n * 3 / 2;
    auto *q = static_cast<unsigned char *>(realloc(p, next));
    ASSERT_NE(q, nullptr) << next;
    ASSERT_TRUE(StampIntact(q, size_t{1} << 20, 42)) << "step " << steps;
    moves += q != p;
    steps++;
    memset(q + n, 0x33, next - n);  // the new part is the caller's to use
    p = q;
    n = next;
  }
  hak_stats_get(&after);
  EXPECT_EQ(steps, 6);
  EXPECT_LE(moves, 3) << "growth in place or into headroom";
  EXPECT_LE(after.os_calls_total - before.os_calls_total, 4u) << "no mapping per step";
  for (size_t i = size_t{1} << 20; i < n; i += 4096) ASSERT_EQ(p[i], 0x33) << i;
  free(p);
}

// Growth to 4 GiB while the kernel refuses every new mapping and commit: each step is
// served from memory hakmem holds, or fails with ENOMEM leaving the block as it was.
TEST(SystemApiTest, LargeReallocUnderRefusedMemoryKeepsTheBlock) {
  size_t n = size_t{1} << 20;
  auto *p = static_cast<unsigned char *>(malloc(n));
  ASSERT_NE(p, nullptr);
  Stamp(p, n, 7);
  hak_os_fail_every(HAK_OS_MAP, 1);
  hak_os_fail_every(HAK_OS_COMMIT, 1);
  int refused = 0;
  for (size_t next = n * 2; next <= (size_t{4} << 30); next *= 2) {
    errno = 0;
    auto *q = static_cast<unsigned char *>(realloc(p, next));
    if (!q) {
      EXPECT_EQ(errno, ENOMEM);
      refused++;
      continue;  // p is untouched
    }
    p = q;
  }
  hak_os_fail_every(HAK_OS_MAP, 0);
  hak_os_fail_every(HAK_OS_COMMIT, 0);
  // Up to a quarter of an arena (1 GiB) a free span the arena already holds may serve it;
  // beyond, a block needs a mapping of its own, which is refused.
  EXPECT_GT(refused, 0) << "no mapping of 2 GiB or more can be had";
  EXPECT_TRUE(StampIntact(p, n, 7));
  free(p);
}

TEST(SystemApiTest, FreeSizedAndUsableSizeOfNull) {
  EXPECT_EQ(malloc_usable_size(nullptr), 0u);
  void *p = malloc(300);
  free_sized(p, 300);
  free_sized(nullptr, 0);
}

TEST(SystemApiTest, MalloptTrimAndStatsAnswer) {
  EXPECT_EQ(mallopt(M_MMAP_THRESHOLD, 1 << 20), 1);
  EXPECT_EQ(mallopt(-12345, 1), 0);
  void *big = malloc(8 << 20);
  free(big);
  EXPECT_EQ(malloc_trim(0), 1) << "a cached mapping was there to release";
}

TEST(SystemApiTest, HakNamesServeTheSameAllocator) {
  void *p = hak_malloc(100);
  ASSERT_NE(p, nullptr);
  EXPECT_GE(hak_malloc_usable_size(p), 100u);
  EXPECT_EQ(malloc_usable_size(p), hak_malloc_usable_size(p));
  p = hak_realloc(p, 5000);
  ASSERT_NE(p, nullptr);
  free(p);  // hak_* and the standard names share one heap
  void *q = nullptr;
  EXPECT_EQ(hak_posix_memalign(&q, 4096, 10), 0);
  hak_free(q);
  EXPECT_NE(strstr(hak_variant(), "HEADER_CLASSIDX="), nullptr);
}

// hak_variant() names the variant this test target was built as, from the build's own
// label (HAK_TEST_EXPECT_<VARIANT>), not from the allocator's config.
TEST(SystemApiTest, VariantStringNamesTheVariantUnderTest) {
  std::string expected;
#if defined(HAK_TEST_EXPECT_DEBUG)
  expected =
      "debug-fail-fast HEADER_CLASSIDX=1 POOL_TLS_PHASE1=1 PREWARM=1 BUILD_RELEASE=0 HARDENING=1";
#elif defined(HAK_TEST_EXPECT_TRACE)
  expected = "trace HEADER_CLASSIDX=1 POOL_TLS_PHASE1=1 PREWARM=1 BUILD_RELEASE=1 HARDENING=1";
#elif defined(HAK_TEST_EXPECT_NOHEADER)
  expected = "release HEADER_CLASSIDX=0 POOL_TLS_PHASE1=1 PREWARM=1 BUILD_RELEASE=1 HARDENING=1";
#elif defined(HAK_TEST_EXPECT_NOTLS)
  expected = "release HEADER_CLASSIDX=1 POOL_TLS_PHASE1=0 PREWARM=1 BUILD_RELEASE=1 HARDENING=1";
#elif defined(HAK_TEST_EXPECT_NOPREWARM)
  expected = "release HEADER_CLASSIDX=1 POOL_TLS_PHASE1=1 PREWARM=0 BUILD_RELEASE=1 HARDENING=1";
#elif defined(HAK_TEST_EXPECT_NOHARDEN)
  expected = "release HEADER_CLASSIDX=1 POOL_TLS_PHASE1=1 PREWARM=1 BUILD_RELEASE=1 HARDENING=0";
#else
  expected = "release HEADER_CLASSIDX=1 POOL_TLS_PHASE1=1 PREWARM=1 BUILD_RELEASE=1 HARDENING=1";
#endif
  EXPECT_EQ(std::string(hak_variant()), expected);
}

TEST(SystemApiTest, TheProcessRunsOnHakmem) {
  hak_stats_t s;
  hak_stats_get(&s);
  // GoogleTest itself allocated before main: hakmem served it.
  EXPECT_GT(s.tiny_refills + s.pool_refills, 0u);
  EXPECT_GT(s.reserved_bytes, 0u);
}

}  // namespace
