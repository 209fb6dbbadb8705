// The Pool tier on its own: class table, arena growth from the options (bad values fall
// back to the defaults with a warning), the page registry for every page an arena
// holds, and thread lists that adapt to a working set within their budget.
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "allocator/front/front.h"
#include "allocator/hakmem.h"
#include "allocator/internal/options.h"
#include "allocator/pool/pool.h"
#include "gtest/gtest.h"

namespace {

TEST(PoolTest, EverySizeFitsItsClassWithAtMostAQuarterWasted) {
  for (size_t n = HAK_POOL_MIN + 1; n <= HAK_POOL_MAX; n++) {
    unsigned cls = hak_pool_class_of(n);
    ASSERT_LT(cls, unsigned{HAK_POOL_CLASSES}) << n;
    // The fast path finds the class's list from the table's byte (8 times the class).
    hak_pool_list_t lists[HAK_POOL_CLASSES];
    ASSERT_EQ(hak_cache_at8(lists, hak_pool_class8_of(n)), &lists[cls]) << n;
    size_t size = hak_pool_class_size[cls];
    ASSERT_GE(size, n) << n;
    ASSERT_LE((size - n) * 4, size) << n;
    if (cls) {
      ASSERT_LT(hak_pool_class_size[cls - 1], n) << n;
    }
  }
  for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) EXPECT_EQ(hak_pool_class_size[c] % 256, 0u);
}

// A page and a header (SQLite's page cache asks for 4,368 and 4,104 bytes; 2 KiB buffers
// with a small header likewise) fit a class that wastes at most an eighth of the block,
// not the quarter of the next regular class.
TEST(PoolTest, APageAndItsHeaderFitAClassOfItsOwn) {
  for (size_t page : {size_t{2048}, size_t{4096}}) {
    for (size_t header = 8; header <= page / 8; header += 8) {
      size_t n = page + header, size = hak_pool_class_size[hak_pool_class_of(n)];
      EXPECT_LE((size - n) * 8, size) << n << " bytes take a block of " << size;
    }
  }
}

std::vector<size_t> Steps() {
  size_t steps[32];
  unsigned n = hak_pool_arena_steps(steps, 32);
  return std::vector<size_t>(steps, steps + n);
}

std::string LoadWithEnv(const char *init, const char *max, const char *levels) {
  static const char *values[3];
  values[0] = init;
  values[1] = max;
  values[2] = levels;
  FILE *f = tmpfile();
  hak_options_load(
      [](const char *name) -> const char * {
        std::string s(name);
        if (s == "HAKMEM_POOL_TLS_ARENA_MB_INIT") return values[0];
        if (s == "HAKMEM_POOL_TLS_ARENA_MB_MAX") return values[1];
        if (s == "HAKMEM_POOL_TLS_ARENA_GROWTH_LEVELS") return values[2];
        return nullptr;
      },
      fileno(f));
  std::string text(1024, '\0');
  rewind(f);
  text.resize(fread(&text[0], 1, text.size(), f));
  fclose(f);
  return text;
}

constexpr size_t kMiB = size_t{1} << 20;

TEST(PoolTest, ArenaChunksGrowAsTheOptionsSay) {
  LoadWithEnv(nullptr, nullptr, nullptr);
  EXPECT_EQ(Steps(), (std::vector<size_t>{1 * kMiB, 2 * kMiB, 4 * kMiB, 8 * kMiB}));
  LoadWithEnv("2", "64", "2");
  EXPECT_EQ(Steps(), (std::vector<size_t>{2 * kMiB, 4 * kMiB, 8 * kMiB}));
  LoadWithEnv("4", "4", "3");
  EXPECT_EQ(Steps(), (std::vector<size_t>{4 * kMiB}));
  LoadWithEnv("1", "8", "0");
  EXPECT_EQ(Steps(), (std::vector<size_t>{1 * kMiB}));
}

TEST(PoolTest, BadArenaOptionsKeepTheDefaultsWithOneWarningEach) {
  std::string warnings = LoadWithEnv("zero", "100000", "-3");
  EXPECT_NE(warnings.find("HAKMEM_POOL_TLS_ARENA_MB_INIT=zero"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("HAKMEM_POOL_TLS_ARENA_MB_MAX=100000"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("HAKMEM_POOL_TLS_ARENA_GROWTH_LEVELS=-3"), std::string::npos) << warnings;
  EXPECT_EQ(Steps(), (std::vector<size_t>{1 * kMiB, 2 * kMiB, 4 * kMiB, 8 * kMiB}));
  LoadWithEnv(nullptr, nullptr, nullptr);
}

// Every page that a block of any class covers answers with that class in the registry;
// pages past the arenas answer "no span".
TEST(PoolTest, RegistryAnswersForEveryPageOfTheArena) {
  std::vector<void *> blocks;
  hak_free(hak_malloc(2000));  // initialises hakmem
  uintptr_t pool_base = hak_front.base + hak_tiny_geom.size;
  ASSERT_GT(hak_front.total, hak_tiny_geom.size);
  size_t pages = 0;
  for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) {
    for (int i = 0; i < 40; i++) {
      void *p = hak_malloc(hak_pool_class_size[c]);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(hak_malloc_usable_size(p), hak_pool_class_size[c]);
      uintptr_t off = reinterpret_cast<uintptr_t>(p) - pool_base;
      ASSERT_LT(off, hak_front.total - hak_tiny_geom.size) << "a Pool block";
      for (uintptr_t page = off & ~(HAK_POOL_PAGE_SIZE - 1); page < off + hak_pool_class_size[c];
           page += HAK_POOL_PAGE_SIZE) {
        ASSERT_EQ(hak_pool_registry_class(page), static_cast<int>(c)) << "page " << page;
        // Every page's owner word is the owner's list of the class (the fast free's push).
        hak_pool_list_t *owner = hak_pool_geom.owners[page >> HAK_POOL_PAGE_SHIFT];
        if (HAK_POOL_THREAD_CACHE) {
          ASSERT_EQ(owner, &hak_pool_tls->list[c]) << "page " << page;
        } else {
          ASSERT_NE(owner, nullptr) << "page " << page;
        }
        pages++;
      }
      blocks.push_back(p);
    }
  }
  EXPECT_GT(pages, 900u);
  EXPECT_EQ(hak_pool_registry_class(hak_front.total - hak_tiny_geom.size - 1), -1);
  for (void *p : blocks) hak_free(p);
}

// Pool list traffic (refills and overflows) of the whole process so far.
uint64_t ListTraffic() {
  hak_stats_t st;
  hak_stats_get(&st);
  return st.pool_refills + st.pool_overflows;
}

// A thread replaces random slots of a working set of `slots` blocks of [lo, hi] bytes
// (mid_large_mt's pattern) `ops` times after a warm-up of as many; returns the list
// traffic of the measured part, and the capacities its heap ended with.
struct RingResult {
  uint64_t traffic;
  uint64_t grown_bytes;
  uint32_t cap[HAK_POOL_CLASSES];
};

RingResult RunRing(size_t slots, size_t lo, size_t hi, int ops) {
  RingResult r{};
  std::thread([&] {
    std::vector<void *> ring(slots, nullptr);
    uint64_t x = 88172645463325252ull;
    uint64_t before = 0;
    for (int i = 0; i < 2 * ops; i++) {
      if (i == ops) before = ListTraffic();
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      size_t k = x % slots;
      hak_free(ring[k]);
      ring[k] = hak_malloc(lo + (x >> 32) % (hi - lo + 1));
      ASSERT_NE(ring[k], nullptr);
    }
    r.traffic = ListTraffic() - before;
    r.grown_bytes = hak_pool_tls->list_grown_bytes;
    for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) r.cap[c] = hak_pool_tls->list[c].cap;
    for (void *p : ring) hak_free(p);
  }).join();
  return r;
}

// With lists of a fixed 256 KiB a class, 8-32 KiB blocks in a working set of 256 made a
// refill or an overflow every 25 operations (mid_large_mt ran at half tcmalloc's speed);
// grown lists absorb the swings of each class's free count.
TEST(PoolTest, ThreadListsGrowToAbsorbAMixedWorkingSet) {
  if (!HAK_POOL_THREAD_CACHE) GTEST_SKIP() << "POOL_TLS_PHASE1=0: no thread lists";
  constexpr int kOps = 200000;
  RingResult r = RunRing(256, 8 * 1024, 32 * 1024, kOps);
  EXPECT_LT(r.traffic, uint64_t{kOps} / 200)
      << "refills + overflows in " << kOps << " replacements";
  unsigned grown = 0;
  for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) {
    if (r.cap[c] > hak_pool_list_first(hak_pool_class_size[c])) grown++;
  }
  EXPECT_GE(grown, 5u) << "of the 9 classes the working set uses";
}

// The same over the whole Pool range (pool_tls's pattern): 26 classes of ~10 live blocks
// each. Lists sized in bytes gave the 32-64 KiB classes 4-16 blocks, less than their free
// counts swing, and a refill or an overflow came every 160 replacements.
TEST(PoolTest, ThreadListsOfLargeClassesAbsorbTheirSwingsToo) {
  if (!HAK_POOL_THREAD_CACHE) GTEST_SKIP() << "POOL_TLS_PHASE1=0: no thread lists";
  constexpr int kOps = 400000;
  RingResult r = RunRing(256, HAK_POOL_MIN + 1, HAK_POOL_MAX, kOps);
  EXPECT_LT(r.traffic, uint64_t{kOps} / 2000)
      << "refills + overflows in " << kOps << " replacements";
  for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) {
    EXPECT_GE(r.cap[c], uint32_t{HAK_POOL_LIST_MIN_BLOCKS}) << "class " << c;
  }
}

// A working set far beyond the budget (2,048 blocks across the whole Pool range, ~65 MiB)
// grows the lists no further than the budget and no list past its own limit.
TEST(PoolTest, ThreadListsStayWithinTheirBudget) {
  if (!HAK_POOL_THREAD_CACHE) GTEST_SKIP() << "POOL_TLS_PHASE1=0: no thread lists";
  RingResult r = RunRing(2048, HAK_POOL_MIN + 1, HAK_POOL_MAX, 100000);
  EXPECT_GT(r.grown_bytes, uint64_t{HAK_POOL_LIST_BUDGET} / 2) << "the lists should have grown";
  EXPECT_LE(r.grown_bytes, uint64_t{HAK_POOL_LIST_BUDGET});
  uint64_t sum = 0;
  for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) {
    uint32_t first = hak_pool_list_first(hak_pool_class_size[c]);
    EXPECT_LE(r.cap[c], hak_pool_list_limit(hak_pool_class_size[c])) << "class " << c;
    EXPECT_GE(r.cap[c], first) << "class " << c;
    sum += uint64_t{r.cap[c] - first} * hak_pool_class_size[c];
  }
  EXPECT_EQ(sum, r.grown_bytes) << "the budget's account agrees with the capacities";
}

// The fast free reads the owner and class from the entry of the block's own page, so a
// span's later pages carry them too: a span of 32 KiB blocks given back and cut again for
// 28 KiB blocks (both two pages) must send a block of its second page to the 28 KiB list.
TEST(PoolTest, ABlockOfASpansSecondPageGoesToItsSpansCurrentClass) {
  std::thread([] {
    constexpr size_t kOld = 32768, kNew = 28672;
    ASSERT_EQ(hak_pool_class_size[hak_pool_class_of(kNew)], kNew);
    void *old[4];
    for (void *&p : old) p = hak_malloc(kOld);
    for (void *p : old) hak_free(p);
    hak_malloc_trim(0);  // the lists go back: the emptied span goes to the free spans
    uintptr_t base = reinterpret_cast<uintptr_t>(*std::min_element(old, old + 4));  // 4 fill it
    std::vector<void *> cut;
    // A class takes the spans it emptied itself first, then the other classes' of its
    // size, newest first (other tests' threads may have left some newer), then new ones.
    void *tail = nullptr;
    for (int i = 0; i < 2000 && !tail; i++) {
      void *p = hak_malloc(kNew);
      ASSERT_NE(p, nullptr);
      cut.push_back(p);
      uintptr_t d = reinterpret_cast<uintptr_t>(p) - base;
      if (d >= HAK_POOL_PAGE_SIZE && d < 2 * HAK_POOL_PAGE_SIZE) tail = p;
    }
    if (!tail) GTEST_SKIP() << "the span was not reused for the new class";
    hak_free(tail);  // the owner's free of a second-page block
    void *again = hak_malloc(kNew);
    EXPECT_EQ(again, tail) << "the block should be on the 28 KiB list";
    void *big = hak_malloc(kOld);
    ASSERT_NE(big, nullptr);
    EXPECT_EQ(hak_malloc_usable_size(big), kOld) << "a 28 KiB block handed out as 32 KiB";
    hak_free(big);
    hak_free(again);
    for (void *p : cut) {
      if (p != tail) hak_free(p);
    }
  }).join();
}

// The spans a class emptied are its own to reuse first: reply buffers of redis at 20 KB
// drawn from the spans of the 24 KiB values LPOP had just freed ran through 26 times the
// blocks mimalloc's did, and each fresh one cost the kernel's first read of its pages
// (the Pool's lists of empty spans were by size, newest first).
constexpr size_t kClassA = 20480, kClassB = 24576;  // both in spans of two pages

std::vector<void *> AllocBlocks(size_t size, int n) {
  std::vector<void *> v;
  for (int i = 0; i < n; i++) {
    void *p = hak_malloc(size);
    EXPECT_NE(p, nullptr);
    memset(p, 1, 64);
    v.push_back(p);
  }
  return v;
}

// How many of `ps` lie in one of the blocks of `size` bytes at `blocks`.
int CountInside(const std::vector<void *> &ps, const std::vector<void *> &blocks, size_t size) {
  int n = 0;
  for (void *p : ps) {
    for (void *b : blocks) {
      if (reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(b) < size) {
        n++;
        break;
      }
    }
  }
  return n;
}

// The thread's lists and spare spans go back: emptied spans go to the free spans, still
// committed (malloc_trim would also decommit them).
void FreeAndFlush(const std::vector<void *> &blocks) {
  for (void *p : blocks) hak_free(p);
  hak_pool_flush_thread();
}

TEST(PoolTest, AClassReusesTheSpansItEmptiedBeforeAnotherClasss) {
  if (!HAK_POOL_THREAD_CACHE) GTEST_SKIP() << "POOL_TLS_PHASE1=0: freed blocks wait in shards";
  ASSERT_EQ(hak_pool_class_size[hak_pool_class_of(kClassA)], kClassA);
  ASSERT_EQ(hak_pool_class_size[hak_pool_class_of(kClassB)], kClassB);
  std::thread([] {
    std::vector<void *> a = AllocBlocks(kClassA, 30), b = AllocBlocks(kClassB, 80);
    FreeAndFlush(a);
    // No flush now: the list overflows, the first span of B's it empties stays with the
    // heap as its spare, the others are the newest empty spans of their size.
    for (void *p : b) hak_free(p);
    ASSERT_GE(hak_pool_free_spans_of(hak_pool_class_of(kClassA)), 5u);
    ASSERT_GE(hak_pool_free_spans_of(hak_pool_class_of(kClassB)), 1u);
    std::vector<void *> again = AllocBlocks(kClassA, 30);
    EXPECT_EQ(CountInside(again, b, kClassB), 0)
        << "blocks of 20 KiB cut from the spans 24 KiB blocks just left";
    for (void *p : again) hak_free(p);
  }).join();
}

// ... while they are committed: a resident span of another class costs no page fault and
// leaves no resident one waiting for its decay.
TEST(PoolTest, AClassTakesAResidentSpanBeforeItsOwnDecommittedOnes) {
  if (!HAK_POOL_THREAD_CACHE) GTEST_SKIP() << "POOL_TLS_PHASE1=0: freed blocks wait in shards";
  std::thread([] {
    std::vector<void *> a = AllocBlocks(kClassA, 30);
    for (void *p : a) hak_free(p);
    hak_malloc_trim(0);  // A's spans go back and are decommitted
    ASSERT_GE(hak_pool_free_spans_of(hak_pool_class_of(kClassA)), 5u);
    std::vector<void *> b = AllocBlocks(kClassB, 80);
    for (void *p : b) hak_free(p);  // B's first emptied span is the heap's spare
    std::vector<void *> again = AllocBlocks(kClassA, 30);
    EXPECT_GE(CountInside(again, b, kClassB), 6) << "the spare's six 20 KiB blocks";
    for (void *p : again) hak_free(p);
  }).join();
}

// ... and a class with none of its own takes another's of its size before new memory.
TEST(PoolTest, AClassWithoutEmptySpansTakesAnotherClasssOfItsSize) {
  if (!HAK_POOL_THREAD_CACHE) GTEST_SKIP() << "POOL_TLS_PHASE1=0: freed blocks wait in shards";
  std::thread([] {
    const unsigned cls_a = hak_pool_class_of(kClassA), cls_b = hak_pool_class_of(kClassB);
    std::vector<void *> a;
    while (hak_pool_free_spans_of(cls_a) > 0 && a.size() < 2000) {
      a.push_back(hak_malloc(kClassA));  // takes the empty spans A left in other tests
    }
    ASSERT_EQ(hak_pool_free_spans_of(cls_a), 0u);
    std::vector<void *> b = AllocBlocks(kClassB, 30);
    FreeAndFlush(b);
    unsigned b_spans = hak_pool_free_spans_of(cls_b);
    ASSERT_GE(b_spans, 6u);
    std::vector<void *> more = AllocBlocks(kClassA, 24);  // four spans' worth
    EXPECT_GT(CountInside(more, b, kClassB), 0)
        << "20 KiB blocks from new memory while 24 KiB spans were empty";
    EXPECT_LT(hak_pool_free_spans_of(cls_b), b_spans);
    for (void *p : a) hak_free(p);
    for (void *p : more) hak_free(p);
  }).join();
}

}  // namespace
