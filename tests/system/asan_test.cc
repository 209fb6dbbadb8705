// AddressSanitizer builds (`bazel test --config=asan //...`, run by CI): hakmem poisons
// the bytes of its blocks that a program must not touch — freed, never handed out, past
// the size requested — so ASan reports a use after free or an overflow inside hakmem's
// blocks (os_boundary/asan.h). Through the hak_* API: under ASan the sanitizer owns malloc.
// Other builds have no shadow memory to look at: every test here skips there.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "allocator/internal/config.h"
#include "tests/system/test_util.h"

#if HAK_ASAN_BUILD
#include <sanitizer/asan_interface.h>
#endif

namespace {

#if HAK_ASAN_BUILD
bool Poisoned(const void *p) { return __asan_address_is_poisoned(p) != 0; }
// Whether every byte of [p, p + n) is addressable.
bool Clean(const void *p, size_t n) {
  return __asan_region_is_poisoned(const_cast<void *>(p), n) == nullptr;
}
#else
bool Poisoned(const void *) { return false; }
bool Clean(const void *, size_t) { return true; }
#endif

#define SKIP_WITHOUT_ASAN() \
  if (!HAK_ASAN) GTEST_SKIP() << "needs --config=asan (no shadow memory in this build)"

volatile char g_sink;

// One size per tier, each below its usable size so that a tail exists: Tiny, Pool, a
// Large block of the page heap, a Large block of its own mapping.
const size_t kSizes[] = {20, 1000, 5000, 40000, (size_t{1} << 20) + 100, (size_t{80} << 20) + 8};

TEST(AsanTest, ABlockIsAddressableForItsRequestOnly) {
  SKIP_WITHOUT_ASAN();
  for (size_t n : kSizes) {
    char *p = static_cast<char *>(hak_malloc(n));
    ASSERT_NE(p, nullptr) << n;
    EXPECT_TRUE(Clean(p, n)) << n;
    EXPECT_TRUE(Poisoned(p + n)) << n;  // the granule after the request
    memset(p, 7, n);
    hak_free(p);
  }
}

TEST(AsanTest, AFreedBlockIsPoisonedWhole) {
  SKIP_WITHOUT_ASAN();
  for (size_t n : kSizes) {
    char *p = static_cast<char *>(hak_malloc(n));
    size_t usable = hak_malloc_usable_size(p);
    ASSERT_GE(usable, n);
    hak_free(p);
    // The first word holds the allocator's link: poisoned too (hakmem reads it uninstrumented).
    for (size_t at : {size_t{0}, size_t{8}, n / 2, usable - 1}) {
      EXPECT_TRUE(Poisoned(p + at)) << n << " at " << at;
    }
  }
}

TEST(AsanTest, BlocksNeverHandedOutArePoisoned) {
  SKIP_WITHOUT_ASAN();
  // A new thread's first block of a class comes from a slab (span) taken fresh for it:
  // none of the slab's other blocks was handed out, carved or not.
  for (size_t n : {size_t{48}, size_t{3072}}) {
    std::thread([n] {
      char *a = static_cast<char *>(hak_malloc(n));
      size_t usable = hak_malloc_usable_size(a);
      int poisoned = 0;
      for (int k = 1; k <= 3; k++) {
        // A whole block above it in its 64 KiB slab (page): of the same class. (Not
        // hak_malloc_usable_size: it would unpoison the block it asks about.)
        char *next = a + k * usable;
        uintptr_t page_end = (reinterpret_cast<uintptr_t>(a) | 0xffff) + 1;
        if (reinterpret_cast<uintptr_t>(next) + usable <= page_end) {
          EXPECT_TRUE(Poisoned(next)) << n << " +" << k;
          poisoned++;
        }
      }
      EXPECT_GT(poisoned, 0) << n;
      hak_free(a);
    }).join();
  }
}

TEST(AsanTest, UsableSizeMakesTheWholeBlockAddressable) {
  SKIP_WITHOUT_ASAN();
  for (size_t n : kSizes) {
    char *p = static_cast<char *>(hak_malloc(n));
    ASSERT_TRUE(Poisoned(p + n)) << n;
    size_t usable = hak_malloc_usable_size(p);
    EXPECT_TRUE(Clean(p, usable)) << n;
    memset(p, 1, usable);
    hak_free(p);
  }
}

TEST(AsanTest, ReallocKeepsContentsAndNarrowsToTheNewSize) {
  SKIP_WITHOUT_ASAN();
  const size_t steps[] = {10, 100, 3000, 100000, 5u << 20, 700, 24};
  char *p = nullptr;
  size_t have = 0;
  for (size_t n : steps) {
    char *q = static_cast<char *>(hak_realloc(p, n));
    ASSERT_NE(q, nullptr) << n;
    size_t kept = have < n ? have : n;
    for (size_t i = 0; i < kept; i++) ASSERT_EQ(q[i], static_cast<char>(i * 7)) << n << " at " << i;
    EXPECT_TRUE(Clean(q, n)) << n;
    EXPECT_TRUE(Poisoned(q + n)) << n;
    if (p && q != p) {
      EXPECT_TRUE(Poisoned(p)) << "the old place of a moved block, " << n;
    }
    for (size_t i = 0; i < n; i++) q[i] = static_cast<char>(i * 7);
    p = q;
    have = n;
  }
  hak_free(p);
}

TEST(AsanTest, CallocAndAlignedBlocksAreNarrowedToo) {
  SKIP_WITHOUT_ASAN();
  char *c = static_cast<char *>(hak_calloc(3, 100));
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(Clean(c, 300));
  for (int i = 0; i < 300; i++) ASSERT_EQ(c[i], 0);
  EXPECT_TRUE(Poisoned(c + 300));
  hak_free(c);
  for (size_t align : {size_t{64}, size_t{4096}, size_t{1} << 20}) {
    void *p = nullptr;
    ASSERT_EQ(hak_posix_memalign(&p, align, 100), 0) << align;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << align;
    EXPECT_TRUE(Clean(p, 100)) << align;
    EXPECT_TRUE(Poisoned(static_cast<char *>(p) + 100)) << align;
    hak_free(p);
    EXPECT_TRUE(Poisoned(p)) << align;
  }
}

// A block freed by a thread that does not own it waits on a remote queue: poisoned from
// the free on, and addressable again when its owner hands it out again.
TEST(AsanTest, BlocksFreedByAnotherThreadArePoisoned) {
  SKIP_WITHOUT_ASAN();
  for (size_t n : {size_t{64}, size_t{5000}}) {
    std::vector<char *> blocks;
    for (int i = 0; i < 64; i++) blocks.push_back(static_cast<char *>(hak_malloc(n)));
    std::thread([&] {
      for (char *b : blocks) hak_free(b);
    }).join();
    for (char *b : blocks) EXPECT_TRUE(Poisoned(b + 16)) << n;
    std::vector<char *> again;
    for (int i = 0; i < 256; i++) {
      again.push_back(static_cast<char *>(hak_malloc(n)));
      ASSERT_TRUE(Clean(again.back(), n)) << n;
      memset(again.back(), 3, n);
    }
    for (char *b : again) hak_free(b);
  }
}

// Shadow memory is an eighth of what it describes: a 4 GiB calloc the program touches in
// three places must not write 512 MiB of shadow to make the block addressable (nor to
// forget it when it is unmapped).
TEST(AsanTest, AHugeFreshBlockCostsNoShadow) {
  SKIP_WITHOUT_ASAN();
  const size_t n = size_t{4} << 30;
  const int64_t before = static_cast<int64_t>(hak_test::RssKib());
  for (int round = 0; round < 3; round++) {
    char *p = static_cast<char *>(hak_calloc(1, n));
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(Clean(p, 4096));
    EXPECT_TRUE(Clean(p + n - 4096, 4096));
    p[0] = p[n / 2] = p[n - 1] = 1;
    EXPECT_LT(static_cast<int64_t>(hak_test::RssKib()) - before, 64 * 1024)
        << "KiB of RSS gained, block live";
    hak_free(p);
  }
  EXPECT_LT(static_cast<int64_t>(hak_test::RssKib()) - before, 64 * 1024) << "KiB of RSS gained";
}

// What the program sees: ASan's report, at the first bad access, for each tier.
TEST(AsanDeathTest, AUseAfterFreeIsReported) {
  SKIP_WITHOUT_ASAN();
  for (size_t n : kSizes) {
    EXPECT_DEATH(
        {
          char *p = static_cast<char *>(hak_malloc(n));
          hak_free(p);
          g_sink = p[n / 2];
        },
        "AddressSanitizer: use-after-poison")
        << n;
  }
}

TEST(AsanDeathTest, AnOverflowPastTheRequestIsReported) {
  SKIP_WITHOUT_ASAN();
  for (size_t n : kSizes) {
    EXPECT_DEATH(
        {
          char *p = static_cast<char *>(hak_malloc(n));
          p[n] = 1;
        },
        "AddressSanitizer: use-after-poison")
        << n;
  }
}

// The allocator's own traffic through free blocks (links, debug fills) is never reported:
// a churn of every tier, blocks handed between threads, runs clean.
TEST(AsanTest, TheAllocatorsOwnAccessesAreNotReported) {
  SKIP_WITHOUT_ASAN();
  std::vector<void *> handed;
  for (int round = 0; round < 20; round++) {
    std::vector<void *> mine;
    for (int i = 0; i < 500; i++) {
      size_t n = (size_t{1} << (i % 17)) + static_cast<size_t>(i);
      void *p = hak_malloc(n);
      ASSERT_NE(p, nullptr);
      memset(p, i, n);
      mine.push_back(p);
    }
    std::thread([&] {
      for (size_t i = 0; i < mine.size(); i += 2) hak_free(mine[i]);
      for (void *p : handed) hak_free(p);
    }).join();
    handed.clear();
    for (size_t i = 1; i < mine.size(); i += 2) handed.push_back(mine[i]);
  }
  for (void *p : handed) hak_free(p);
}

}  // namespace
