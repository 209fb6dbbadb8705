// The edges of the malloc family: sizes and alignments near 2^47, 2^48, 2^62, 2^63 and
// SIZE_MAX fail cleanly with glibc's errno; zero-size aligned blocks are real blocks;
// small over-aligned blocks cost no mapping each.
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <set>
#include <vector>

#include "absl/strings/str_format.h"
#include "allocator/hakmem.h"
#include "gtest/gtest.h"
#include "tests/system/proc_util.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::Opaque;
using hak_test::Stats;

constexpr size_t kP47 = size_t{1} << 47;
constexpr size_t kP48 = size_t{1} << 48;
constexpr size_t kP62 = size_t{1} << 62;
constexpr size_t kP63 = size_t{1} << 63;

bool Aligned(const void *p, size_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// Sizes no machine can serve, around every power of two where arithmetic could wrap.
std::vector<size_t> HugeSizes() {
  std::vector<size_t> out;
  for (size_t base : {kP47, kP48, kP62, kP63}) {
    for (size_t delta : {size_t{0}, size_t{1}, size_t{4096}, size_t{8192}}) {
      out.push_back(base + delta);
      out.push_back(base - delta);
    }
  }
  for (size_t delta : {size_t{0}, size_t{1}, size_t{15}, size_t{4095}, size_t{8191}, kP48 - 8192}) {
    out.push_back(SIZE_MAX - delta);
  }
  out.push_back(static_cast<size_t>(PTRDIFF_MAX));
  out.push_back(static_cast<size_t>(PTRDIFF_MAX) + 2);
  out.push_back(3 * kP62 + 8192);
  return out;
}

std::vector<size_t> HugeAlignments() {
  return {kP47, kP48, kP62, kP63, size_t{1} << 46, size_t{1} << 40};
}

TEST(SystemLimitsTest, HugeSizesFailWithEnomemInEveryFunction) {
  void *small = malloc(32);
  ASSERT_NE(small, nullptr);
  for (size_t n : HugeSizes()) {
    n = Opaque(n);
    SCOPED_TRACE(absl::StrFormat("n = %#x", n));
    errno = 0;
    EXPECT_EQ(malloc(n), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    errno = 0;
    EXPECT_EQ(calloc(1, n), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    errno = 0;
    EXPECT_EQ(realloc(small, n), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    errno = 0;
    EXPECT_EQ(valloc(n), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    errno = 0;
    EXPECT_EQ(pvalloc(n), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    for (size_t a : {size_t{16}, size_t{64}, size_t{4096}, size_t{1} << 20}) {
      void *p = reinterpret_cast<void *>(0x1);
      errno = 0;
      EXPECT_EQ(posix_memalign(&p, a, n), ENOMEM) << a;
      EXPECT_EQ(errno, ENOMEM) << "posix_memalign sets errno too, as glibc does";
      EXPECT_EQ(p, reinterpret_cast<void *>(0x1));
      errno = 0;
      EXPECT_EQ(aligned_alloc(a, n), nullptr) << a;
      EXPECT_EQ(errno, ENOMEM) << a;
      errno = 0;
      EXPECT_EQ(memalign(a, n), nullptr) << a;
      EXPECT_EQ(errno, ENOMEM) << a;
    }
  }
  free(small);
}

// The review's crashes: huge alignments with sizes that wrap when the slack is added.
TEST(SystemLimitsTest, HugeAlignmentsFailWithEnomemInsteadOfCrashing) {
  for (size_t a : HugeAlignments()) {
    for (size_t n : {size_t{0}, size_t{16}, size_t{8192}, a + 8192, 0 - a + 8192, 3 * kP62 + 8192,
                     static_cast<size_t>(PTRDIFF_MAX) + 2, SIZE_MAX}) {
      n = Opaque(n);
      SCOPED_TRACE(absl::StrFormat("align %#x, n = %#x", a, n));
      void *p = reinterpret_cast<void *>(0x1);
      errno = 0;
      int r = posix_memalign(&p, a, n);
      if (r == 0) {  // a small size may well succeed where the kernel allows the mapping
        EXPECT_TRUE(Aligned(p, a));
        free(p);
      } else {
        EXPECT_EQ(r, ENOMEM);
        EXPECT_EQ(errno, ENOMEM);
      }
      for (int fn = 0; fn < 2; fn++) {
        errno = 0;
        void *q = fn == 0 ? aligned_alloc(a, n) : memalign(a, n);
        if (q) {
          EXPECT_TRUE(Aligned(q, a));
          free(q);
        } else {
          EXPECT_EQ(errno, ENOMEM) << (fn == 0 ? "aligned_alloc" : "memalign");
        }
      }
    }
  }
}

TEST(SystemLimitsTest, AlignmentsGlibcRejectsGiveEinval) {
  void *p = reinterpret_cast<void *>(0x1);
  EXPECT_EQ(posix_memalign(&p, kP63 + 8, 64), EINVAL);
  EXPECT_EQ(posix_memalign(&p, SIZE_MAX, 64), EINVAL);
  errno = 0;
  EXPECT_EQ(memalign(kP63 + 1, 64), nullptr);
  EXPECT_EQ(errno, EINVAL) << "memalign: alignments above SIZE_MAX / 2 + 1";
  errno = 0;
  EXPECT_EQ(memalign(kP63, Opaque(SIZE_MAX - 4096)), nullptr);
  EXPECT_EQ(errno, ENOMEM) << "2^63 is a valid alignment: the size is what fails";
}

// A zero-size aligned request gets a block of its own: aligned, inside its memory,
// freeable, resizable, and not confused with a neighbour.
TEST(SystemLimitsTest, ZeroSizeAlignedBlocksAreRealBlocks) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (size_t a : {page, size_t{65536}, size_t{1} << 20, size_t{4} << 20}) {
    SCOPED_TRACE(a);
    hak_stats_t before = Stats();
    std::vector<void *> blocks, zero;
    std::set<void *> seen;
    for (int i = 0; i < 8; i++) {
      void *big = malloc(300000);  // Large neighbours, so a stray page-map entry shows
      void *p = nullptr;
      if (i % 3 == 0) {
        ASSERT_EQ(posix_memalign(&p, a, 0), 0);
      } else if (i % 3 == 1) {
        p = aligned_alloc(a, 0);
      } else {
        p = a == page ? valloc(0) : memalign(a, 0);
      }
      ASSERT_NE(p, nullptr);
      EXPECT_TRUE(Aligned(p, a));
      EXPECT_TRUE(seen.insert(p).second) << "unique among live blocks";
      EXPECT_GT(malloc_usable_size(p), 0u);
      memset(p, 0x5a, malloc_usable_size(p));
      zero.push_back(p);
      blocks.push_back(big);
    }
    for (void *p : zero) {
      void *q = realloc(p, 100);
      ASSERT_NE(q, nullptr) << "a zero-size block can grow";
      blocks.push_back(q);
    }
    for (void *p : blocks) free(p);
    hak_stats_t after = Stats();
    EXPECT_EQ(after.foreign_frees, before.foreign_frees);
    EXPECT_EQ(after.large_live_blocks, before.large_live_blocks) << "nothing leaked";
  }
}

// 70,000 page-aligned 16-byte blocks: one mapping each would exceed vm.max_map_count
// (65,530); they belong in the Pool tier, a few spans, no system call per block.
TEST(SystemLimitsTest, SmallOverAlignedBlocksNeedNoMappingEach) {
  constexpr int kBlocks = 70000;
  const size_t maps_before = hak_test::MappingCount();
  hak_stats_t before = Stats();
  std::vector<void *> blocks(kBlocks);
  for (int i = 0; i < kBlocks; i++) {
    ASSERT_EQ(posix_memalign(&blocks[i], 4096, 16), 0) << i;
    ASSERT_TRUE(Aligned(blocks[i], 4096));
    memset(blocks[i], i & 0xff, 16);
  }
  const size_t maps_during = hak_test::MappingCount();
  for (int i = 0; i < kBlocks; i += 2) free(blocks[i]);
  for (int i = 1; i < kBlocks; i += 2) {
    ASSERT_EQ(static_cast<unsigned char *>(blocks[i])[15], i & 0xff);
    free(blocks[i]);
  }
  hak_stats_t after = Stats();
  EXPECT_LT(maps_during, maps_before + 200) << "mappings grew by one per block";
  EXPECT_LT(after.os_calls_total - before.os_calls_total, uint64_t{kBlocks} / 10);
  EXPECT_EQ(after.os_failures[HAK_STAT_OS_RELEASE], before.os_failures[HAK_STAT_OS_RELEASE]);
  // Alignments up to 64 KiB, at sizes around the Pool classes, stay in the tiers too.
  const uint64_t live_large = Stats().large_live_blocks;
  for (size_t a = 512; a <= 65536; a *= 2) {
    for (size_t n :
         {size_t{0}, size_t{1}, size_t{1000}, size_t{5000}, size_t{40000}, size_t{65536}}) {
      void *p = nullptr;
      ASSERT_EQ(posix_memalign(&p, a, n), 0);
      EXPECT_TRUE(Aligned(p, a)) << absl::StrFormat("posix_memalign(%d, %d) = %p", a, n, p);
      EXPECT_GE(malloc_usable_size(p), n);
      EXPECT_EQ(Stats().large_live_blocks, live_large) << "served by Pool: " << a << " " << n;
      memset(p, 1, n);
      free(p);
    }
  }
}

uint64_t MeminfoKb(const char *key) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[256];
  uint64_t kb = 0;
  size_t len = strlen(key);
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, key, len) == 0 && line[len] == ':')
      kb = strtoull(line + len + 1, nullptr, 10);
  }
  if (f) fclose(f);
  return kb;
}

// A request the kernel's overcommit policy refuses (far more than RAM + swap, under the
// default heuristic or strict accounting) is NULL with ENOMEM, not a pointer that gets the
// program killed when it is used. Mappings charged to no account (MAP_NORESERVE) made
// 64 GiB, 1 TiB and 32 TiB "succeed" on a 24 GiB machine.
TEST(SystemLimitsTest, RequestsTheKernelWouldRefuseFail) {
  FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
  int mode = -1;
  if (f) {
    if (fscanf(f, "%d", &mode) != 1) mode = -1;
    fclose(f);
  }
  if (mode != 0 && mode != 2) GTEST_SKIP() << "overcommit_memory is " << mode << ": never refused";
  const uint64_t backing = (MeminfoKb("MemTotal") + MeminfoKb("SwapTotal")) << 10;
  ASSERT_GT(backing, 0u);
  int tested = 0;
  for (size_t n : {size_t{64} << 30, size_t{1} << 40, size_t{32} << 40}) {
    if (n < 2 * backing) continue;  // a machine this big might serve it
    tested++;
    SCOPED_TRACE(absl::StrFormat("%d GiB", n >> 30));
    errno = 0;
    EXPECT_EQ(malloc(Opaque(n)), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    errno = 0;
    EXPECT_EQ(calloc(1, Opaque(n)), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    void *p = nullptr;
    EXPECT_EQ(posix_memalign(&p, 4096, Opaque(n)), ENOMEM);
    void *small = malloc(100000);
    errno = 0;
    EXPECT_EQ(realloc(small, Opaque(n)), nullptr);
    EXPECT_EQ(errno, ENOMEM);
    free(small);
  }
  if (tested == 0) GTEST_SKIP() << "this machine has more than 16 TiB of RAM and swap";
}

}  // namespace
