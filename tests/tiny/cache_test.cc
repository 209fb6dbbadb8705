// Tiny thread caches: capacity grows when a class keeps missing, the list never holds more
// than its capacity after a free, and a thread that only frees shrinks its cache back to
// the minimum. Runs through the hak_* API and reads the calling thread's cache.
#include <stdint.h>

#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "allocator/tiny/tiny.h"
#include "gtest/gtest.h"

namespace {

constexpr size_t kSize = 64;

const hak_tiny_cache_t &CacheOf(size_t n) { return hak_tiny_tls->cache[hak_tiny_class_of(n)]; }

uint32_t Listed(const hak_tiny_cache_t &c) {
  uint32_t n = 0;
  for (void *p = c.head; p != nullptr; p = hak_link_read(p)) n++;
  return n;
}

uint64_t Refills() {
  hak_stats_t s;
  hak_stats_get(&s);
  return s.tiny_refills;
}

uint64_t Traffic() {
  hak_stats_t s;
  hak_stats_get(&s);
  return s.tiny_refills + s.tiny_overflows;
}

// The room counter agrees with the list: cap - room blocks are linked.
void ExpectConsistent(const hak_tiny_cache_t &c) {
  EXPECT_GE(c.room, 0);
  EXPECT_LE(uint32_t(c.room), c.cap);
  EXPECT_EQ(Listed(c), c.cap - uint32_t(c.room));
}

// A freed block's first word links it to the next free block of its cache. Hardened
// builds (HARDENING=1, HAKMEM_HARDEN=1: the default) store the link encoded, so the word is
// not the next block's address; the noharden variant (HARDENING=0) stores it plain.
TEST(TinyCacheTest, LinksAreEncodedUnlessHardeningIsCompiledOut) {
  if (HAK_ASAN) GTEST_SKIP() << "freed blocks are poisoned";
  std::thread([] {
    void *a = hak_malloc(kSize), *b = hak_malloc(kSize);
    hak_free(a);
    hak_free(b);
    ASSERT_EQ(CacheOf(kSize).head, b);
    EXPECT_EQ(hak_link_read(b), a);
    uintptr_t word = *static_cast<const uintptr_t *>(b);
    if (HAK_HARDENING) {
      EXPECT_NE(word, reinterpret_cast<uintptr_t>(a));
    } else {
      EXPECT_EQ(word, reinterpret_cast<uintptr_t>(a));
    }
  }).join();
}

// The fast frees' owner test: an owner table's entry is one of the thread's caches
// exactly when it lies in its array — not one before or past it, not NULL (unowned), not
// another heap's.
TEST(TinyCacheTest, OwnerEntriesAreTheThreadsCachesOnlyInsideItsArray) {
  hak_cache_t mine[4], other[4];
  for (unsigned i = 0; i < 4; i++) {
    EXPECT_TRUE(hak_cache_in(&mine[i], mine, 4)) << i;
    EXPECT_FALSE(hak_cache_in(&other[i], mine, 4)) << i;
  }
  EXPECT_FALSE(hak_cache_in(mine + 4, mine, 4));
  // The cache just before the array, computed on the address (no pointer before an array).
  const auto *before = reinterpret_cast<const hak_cache_t *>(reinterpret_cast<uintptr_t>(mine) -
                                                             sizeof(hak_cache_t));
  EXPECT_FALSE(hak_cache_in(before, mine, 4));
  EXPECT_FALSE(hak_cache_in(nullptr, mine, 4));
  EXPECT_FALSE(hak_cache_in(mine, mine, 0));
}

// A block freed by its owner goes onto the cache its slab's owner entry names, which is
// the class's: the next malloc of the class returns it.
TEST(TinyCacheTest, TheOwnerEntryIsTheCacheAFreeGoesTo) {
  std::thread([] {
    for (unsigned c = 0; c < HAK_TINY_CLASSES; c++) {
      void *p = hak_malloc(hak_tiny_class_size[c]);
      ASSERT_NE(p, nullptr);
      uintptr_t off = reinterpret_cast<uintptr_t>(p) - hak_tiny_geom.base;
      EXPECT_EQ(*hak_tiny_owner_of(off), &hak_tiny_tls->cache[c]) << "class " << c;
      hak_free(p);
      EXPECT_EQ(hak_tiny_tls->cache[c].head, p) << "class " << c;
      EXPECT_EQ(hak_malloc(hak_tiny_class_size[c]), p) << "class " << c;
      hak_free(p);
    }
  }).join();
}

TEST(TinyCacheTest, CapacityGrowsWhileAClassKeepsMissing) {
  // A fresh thread, so that the counters and caches are its own.
  std::thread([] {
    std::vector<void *> blocks(4000);
    uint64_t first = 0, last = 0;
    uint32_t start_cap = 0, grown = 0;
    for (int round = 0; round < 6; round++) {
      uint64_t before = Refills();
      if (round == 0) {
        hak_free(hak_malloc(kSize));  // attach the heap: its caches start small
        start_cap = CacheOf(kSize).cap;
      }
      for (void *&p : blocks) p = hak_malloc(kSize);
      uint64_t used = Refills() - before;
      if (round == 0) first = used;
      last = used;
      if (CacheOf(kSize).cap > grown) grown = CacheOf(kSize).cap;
      ExpectConsistent(CacheOf(kSize));
      for (void *p : blocks) hak_free(p);
      ExpectConsistent(CacheOf(kSize));
    }
    EXPECT_LE(start_cap, 64u);
    EXPECT_GT(grown, start_cap) << "misses should have doubled the capacity";
    EXPECT_LE(grown * kSize, 32u * 1024) << "a cache holds at most 32 KiB of blocks";
    EXPECT_GT(first, 0u);
    EXPECT_LT(last, first) << "refills per round should fall as the capacity grows";
  }).join();
}

// random_mixed's pattern: 1,024 live blocks of 16 B-1 KiB replaced at random. A class's
// free count swings by blocks, not bytes: with caches of the big classes capped at 32 KiB
// (32 blocks of 1 KiB) a refill or a trim came every 625 replacements.
TEST(TinyCacheTest, CachesOfBigClassesAbsorbTheirSwings) {
  std::thread([] {
    constexpr int kOps = 400000;
    std::vector<void *> ring(1024, nullptr);
    uint64_t x = 88172645463325252ull, before = 0;
    for (int i = 0; i < 2 * kOps; i++) {
      if (i == kOps) before = Traffic();
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      size_t k = x % ring.size();
      hak_free(ring[k]);
      ring[k] = hak_malloc(16 + (x >> 32) % (HAK_TINY_MAX - 15));
      ASSERT_NE(ring[k], nullptr);
    }
    uint64_t traffic = Traffic() - before;
    for (void *p : ring) hak_free(p);
    EXPECT_LT(traffic, uint64_t{kOps} / 1500) << "refills + trims in " << kOps << " replacements";
  }).join();
}

TEST(TinyCacheTest, AThreadThatOnlyFreesShrinksItsCache) {
  std::vector<void *> blocks(20000);
  for (void *&p : blocks) p = hak_malloc(kSize);
  std::thread([&] {
    // The blocks belong to the main thread: these frees are remote and do not touch
    // this thread's cache. Allocate and free its own to give it a large cache first.
    std::vector<void *> own(20000);
    for (void *&p : own) p = hak_malloc(kSize);
    uint32_t grown = CacheOf(kSize).cap;
    for (void *p : own) hak_free(p);  // only frees: overflow after overflow, no refill
    const hak_tiny_cache_t &c = CacheOf(kSize);
    ExpectConsistent(c);
    EXPECT_EQ(c.cap, 16u) << "grown to " << grown << " while allocating";
    EXPECT_GT(grown, 16u);
    for (void *p : blocks) hak_free(p);
  }).join();
}

// Regression: a miss drained the remote frees into the cache (up to its room) and then
// refilled half a capacity on top, leaving more blocks listed than the capacity.
TEST(TinyCacheTest, RemoteFreesDoNotOverfillTheCache) {
  std::vector<void *> mine(3000);
  for (void *&p : mine) p = hak_malloc(kSize);
  std::thread([&] {
    for (void *p : mine) hak_free(p);  // remote: queued for this thread
  }).join();
  std::vector<void *> taken;
  while (CacheOf(kSize).head != nullptr) taken.push_back(hak_malloc(kSize));
  taken.push_back(hak_malloc(kSize));  // the miss: the drain refills the cache
  ExpectConsistent(CacheOf(kSize));
  EXPECT_GT(CacheOf(kSize).cap - uint32_t(CacheOf(kSize).room), 0u) << "the drain refilled nothing";
  for (void *p : taken) hak_free(p);
  ExpectConsistent(CacheOf(kSize));
}

// A slab all of whose blocks come back (here freed by another thread) forgets its free
// list and is carved again in address order; blocks it had carved before touch no new
// page, so one refill may carve as many of them as it wants, not the 4 KiB a refill
// carves of never-used memory.
TEST(TinyCacheTest, AnEmptiedSlabIsCarvedAgainInOneRefill) {
  constexpr size_t kSize96 = 96;  // a class no other test here uses: one slab of it
  std::thread([] {
    std::vector<void *> out;
    for (int i = 0; i < 600; i++) out.push_back(hak_malloc(kSize96));
    while (CacheOf(kSize96).head != nullptr) out.push_back(hak_malloc(kSize96));
    std::thread([&] {
      for (void *p : out) hak_free(p);  // every block out comes back, remotely
    }).join();
    void *p = hak_malloc(kSize96);  // the miss: drain, and a refill of the emptied slab
    uint32_t listed = Listed(CacheOf(kSize96));
    EXPECT_GT(listed * kSize96, 4096u) << listed << " blocks in one refill";
    hak_free(p);
  }).join();
}

TEST(TinyCacheTest, RoomStaysConsistentAcrossMixedTraffic) {
  std::vector<void *> live;
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < 200000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if (live.empty() || (x & 3) != 0) {
      live.push_back(hak_malloc(kSize));
    } else {
      size_t k = size_t(x >> 8) % live.size();
      hak_free(live[k]);
      live[k] = live.back();
      live.pop_back();
    }
    if (i % 20000 == 0) ExpectConsistent(CacheOf(kSize));
  }
  for (void *p : live) hak_free(p);
  ExpectConsistent(CacheOf(kSize));
}

}  // namespace
