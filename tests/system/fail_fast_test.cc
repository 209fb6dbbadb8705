// Bad frees: debug-fail-fast aborts with one line naming what and where; release counts
// foreign pointers and carries on.
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
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
  EXPECT_DEATH(DoubleFree(5000), "hakmem: double free of 0x[0-9a-f]+ \\(pool class 10\\)");
}

// A freed Large block lies in a free span (or a cached mapping): every build says so,
// release too (HAKMEM_HARDEN=1, the default).
TEST(SystemFailFastDeathTest, DoubleFreeOfALargeBlock) {
  EXPECT_DEATH(DoubleFree(1 << 20), "^hakmem: double free of 0x[0-9a-f]+ \\(large\\)\n$");
  // Freed after its left neighbour: the two spans join, and the block's own page-map
  // entry goes stale; the free span around it still says what it is.
  EXPECT_DEATH(
      {
        void *a = malloc(1 << 20);
        void *b = malloc(1 << 20);
        free(a);
        free(b);
        free(b);
      },
      "^hakmem: double free of 0x[0-9a-f]+ \\(large\\)\n$");
}

// Release with HAKMEM_HARDEN=1: a block freed twice in a row is the head of its thread
// cache, caught before it is pushed again (it would be handed out twice).
TEST(SystemFailFastDeathTest, ReleaseCatchesADoubleFreeAtTheCacheHead) {
  if (!HAK_RELEASE) GTEST_SKIP() << "debug builds name it from their live bits (above)";
  EXPECT_DEATH(DoubleFree(64), "^hakmem: double free of 0x[0-9a-f]+ \\(tiny class 3\\)\n$");
  EXPECT_DEATH(DoubleFree(5000), "^hakmem: double free of 0x[0-9a-f]+ \\(pool class 10\\)\n$");
}

// The review's attack: 8 bytes written into a freed 64-byte block chose where the second
// following malloc(64) pointed. The link is encoded, so the plain pointer decodes to
// noise, which fails its check before it is followed: in every build.
void ForgeLink(size_t n) {
  static char target[4096] __attribute__((aligned(4096)));
  void **p = static_cast<void **>(malloc(n));
  free(p);
  *p = target + 256;   // a use after free overwrites the link
  g_sink = malloc(n);  // p again
  g_sink = malloc(n);  // would be target + 256 with a plain link
  if (g_sink == target + 256) _exit(3);
}

TEST(SystemFailFastDeathTest, AForgedLinkIsCaughtBeforeItIsFollowed) {
  EXPECT_DEATH(ForgeLink(64),
               "^hakmem: corrupted free list link in block 0x[0-9a-f]+ \\(tiny class 3\\)\n$");
  EXPECT_DEATH(ForgeLink(5000),
               "^hakmem: corrupted free list link in block 0x[0-9a-f]+ \\(pool class 10\\)\n$");
}

// Two blocks of 96 bytes freed by another thread: they wait on their slab's remote queue
// as one batch, in the order they were freed; `word` of its first block (0: its link, 1: the
// batch's descriptor) is overwritten with a pointer outside the heap, then the owner
// allocates until it has drained the queue and used the blocks.
void CorruptRemoteBatch(int word) {
  static char target[64] __attribute__((aligned(64)));
  std::vector<void *> blocks;
  for (int i = 0; i < 2; i++) blocks.push_back(malloc(96));
  std::thread([&] {
    for (void *b : blocks) free(b);
  }).join();
  static_cast<void **>(blocks[0])[word] = target;
  for (int i = 0; i < 10000; i++) g_sink = malloc(96);
}

// A write into a link waiting on a remote queue is caught before the link is followed:
// debug builds check every link of the queue at the drain; release builds check there
// each batch's tail and its link to the next batch, and a link inside a short batch as
// a link of the thread cache the batch joins (a pop checks the link it follows).
TEST(SystemFailFastDeathTest, ACorruptedRemoteQueueLinkIsCaughtBeforeItIsFollowed) {
  EXPECT_DEATH(
      CorruptRemoteBatch(0),
      HAK_CHECKS
          ? "^hakmem: corrupted remote free queue link in block 0x[0-9a-f]+ \\(tiny class 5\\)\n$"
          : "^hakmem: corrupted free list link in block 0x[0-9a-f]+ \\(tiny class 5\\)\n$");
}

// A batch's descriptor (its tail and length, in its first block's second word) is
// checked by every build at the drain, before the tail it names is followed.
TEST(SystemFailFastDeathTest, ACorruptedRemoteBatchIsCaughtAtTheDrain) {
  EXPECT_DEATH(
      CorruptRemoteBatch(1),
      "^hakmem: corrupted remote free queue link in block 0x[0-9a-f]+ \\(tiny class 5\\)\n$");
}

// With HAKMEM_HARDEN=0 the release checks are off: a double free goes unnoticed and
// the block is handed out twice (what the default prevents).
TEST(SystemFailFastTest, HardenOffLetsADoubleFreeThrough) {
  if (!HAK_RELEASE) GTEST_SKIP() << "debug builds always check";
  if (hak_test::InChild()) {
    void *p = malloc(64);
    free(p);
    free(p);
    void *a = malloc(64);
    void *b = malloc(64);
    _exit(a == p && b == p ? 0 : 4);
  }
  int status = hak_test::RunSelf("SystemFailFastTest.HardenOffLetsADoubleFreeThrough", 0,
                                 {{"HAKMEM_HARDEN", "0"}});
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SystemFailFastDeathTest, ReallocOfAFreedPointer) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check";
  for (size_t n : {size_t{64}, size_t{5000}, size_t{1} << 20}) {
    EXPECT_DEATH(
        {
          void *p = malloc(n);
          free(p);
          g_sink = realloc(p, n * 2);
        },
        "^hakmem: realloc of a freed pointer 0x[0-9a-f]+\n$")
        << n;
  }
}

// Release: a misaligned pointer inside a slab is refused on the fast path too (a mask
// check sends it to the slow path, which refuses it); it is never handed out.
TEST(SystemFailFastTest, ReleaseRefusesAMisalignedPointer) {
  if (!HAK_RELEASE) GTEST_SKIP() << "debug builds abort instead";
  for (size_t n : {size_t{100}, size_t{5000}}) {
    char *p = static_cast<char *>(malloc(n));
    uint64_t before = Stats().foreign_frees;
    free(p + 8);
    EXPECT_EQ(Stats().foreign_frees - before, 1u) << n;
    std::vector<void *> blocks;
    for (int i = 0; i < 1000; i++) {
      blocks.push_back(malloc(n));
      ASSERT_NE(blocks.back(), p + 8) << n;
    }
    for (void *q : blocks) free(q);
    free(p);
  }
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
               "hakmem: write after free to block 0x[0-9a-f]+ \\(pool class 6\\)");
}

// The first block of a Tiny slab sits right after the slab's header. A fresh thread's
// first blocks of a class are carved from block 0 of a slab taken fresh: the lowest of
// them is block 0, and `bytes` before it lie in the header. Writes 8 bytes there.
void WriteBelowTheFirstBlock(ptrdiff_t bytes) {
  char *first = nullptr;
  std::thread([&] {
    std::vector<char *> blocks;
    for (int i = 0; i < 64; i++) blocks.push_back(static_cast<char *>(malloc(48)));
    first = *std::min_element(blocks.begin(), blocks.end());
  }).join();
  memset(first - bytes, 0x41, 8);
  free(first);
}

TEST(SystemFailFastDeathTest, AnOverflowIntoASlabHeaderIsCaught) {
  if (HAK_RELEASE) GTEST_SKIP() << "release builds do not check slab headers";
  // Block 0 written below its start: the guard words at the header's end.
  EXPECT_DEATH(WriteBelowTheFirstBlock(8),
               "^hakmem: overflow into the slab header at 0x[0-9a-f]+ \\(tiny class 2\\)\n$");
  // The owner, the header's first word (where the block before a header without colour
  // would write past its end): checked against the owner table.
  EXPECT_DEATH(WriteBelowTheFirstBlock(128),
               "^hakmem: overflow into the slab header at 0x[0-9a-f]+ \\(tiny class 2\\)\n$");
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

// Release: an aligned interior pointer of a class that is not a power of two, freed by
// another thread (the checked path: block index by multiply, then the remainder), is
// refused and never handed out.
TEST(SystemFailFastTest, ReleaseRefusesAnInteriorPointerFreedByAnotherThread) {
  if (!HAK_RELEASE) GTEST_SKIP() << "debug builds abort instead";
  for (size_t n : {size_t{48}, size_t{1000}}) {
    char *p = static_cast<char *>(malloc(n));
    uint64_t before = Stats().foreign_frees;
    std::thread([&] { free(p + 16); }).join();
    EXPECT_EQ(Stats().foreign_frees - before, 1u) << n;
    std::vector<void *> blocks;
    for (int i = 0; i < 4000; i++) {
      blocks.push_back(malloc(n));
      ASSERT_NE(blocks.back(), p + 16) << n;
    }
    for (void *q : blocks) free(q);
    free(p);
  }
}

// Release: an interior pointer off its class's alignment, freed by the owning thread (the
// fast path), goes to the slow path, which refuses it: the fast free tests the alignment
// of the block's own class (64 bytes for a 64-byte Tiny block, at most 128 in Tiny; 2 KiB
// for a 2 KiB Pool block), not only the 16 or 256 bytes every block of the tier has.
TEST(SystemFailFastTest, ReleaseRefusesAnInteriorPointerOffItsClasssAlignment) {
  if (!HAK_RELEASE) GTEST_SKIP() << "debug builds abort instead (InteriorPointer)";
  if (!HAK_HARDENING) GTEST_SKIP() << "HARDENING=0 builds compile the fast free's test out";
  struct Case {
    size_t n, offset;
  };
  for (Case k : {Case{64, 16}, Case{64, 48}, Case{128, 32}, Case{256, 64}, Case{2048, 256},
                 Case{4096, 1024}, Case{65536, 4096}}) {
    char *p = static_cast<char *>(malloc(k.n));
    ASSERT_NE(p, nullptr);
    uint64_t before = Stats().foreign_frees;
    free(p + k.offset);
    EXPECT_EQ(Stats().foreign_frees - before, 1u) << k.n << " + " << k.offset;
    std::vector<void *> blocks;
    for (int i = 0; i < 64; i++) {
      blocks.push_back(malloc(k.n));
      ASSERT_NE(blocks.back(), p + k.offset) << k.n << " + " << k.offset << " handed out";
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
