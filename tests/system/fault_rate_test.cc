// Random fault injection: a fraction of every kind of memory system call fails while
// threads allocate, resize, hand blocks to each other and free them, with every byte
// checked. The API may only answer NULL with ENOMEM (a failed realloc leaves its block
// intact); nothing crashes, nothing is corrupted, and once the faults stop and the
// blocks are freed, malloc_trim brings the process back to what it held before.
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "allocator/os_boundary/os.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::InChild;
using hak_test::NextRandom;
using hak_test::RssKib;
using hak_test::RunSelf;
using hak_test::Stamp;
using hak_test::StampIntact;
using hak_test::Stats;

struct Block {
  unsigned char *p = nullptr;
  size_t n = 0;
  uint64_t seed = 0;
};

// What the threads count; a wrong errno or a damaged block fails the test at the end.
struct Outcome {
  std::atomic<uint64_t> served{0}, refused{0}, bad_errno{0}, damaged{0}, not_zero{0};
};

// Sizes across the tiers: 60% Tiny, 30% Pool, 10% Large (up to 2 MiB, 1 in 8 of those
// up to 24 MiB, so that arenas keep growing and new memory is asked for).
size_t RandomSize(uint64_t *rng) {
  uint64_t r = NextRandom(rng);
  switch (r % 10) {
    case 0:
      return 65537 + (r >> 8) % ((r >> 4) % 8 == 0 ? 24 << 20 : 2 << 20);
    case 1:
    case 2:
    case 3:
      return 1025 + (r >> 8) % 64512;
    default:
      return 1 + (r >> 8) % 1024;
  }
}

// Frees b after checking it.
void Release(Block *b, Outcome *out) {
  if (!b->p) return;
  if (!StampIntact(b->p, b->n, b->seed)) out->damaged++;
  free(b->p);
  *b = Block{};
}

void Served(Block *b, unsigned char *p, size_t n, uint64_t seed, Outcome *out) {
  out->served++;
  *b = Block{p, n, seed};
  Stamp(p, n, seed);
}

void Refused(Outcome *out) {
  out->refused++;
  if (errno != ENOMEM) out->bad_errno++;
}

constexpr int kThreads = 4;
constexpr int kSlots = 48;

// One thread's work: `iters` random calls of the family over its slots, and blocks
// swapped through `shared` so that other threads free them. Nothing here allocates but
// the calls under test (a refused operator new would throw): the slots and the records
// handed over (`holders`, one per iteration) are made before the faults start.
void Work(int id, int iters, std::atomic<Block *> *shared, Block *holders, Block *slots,
          const std::atomic<bool> *go, Outcome *out) {
  while (!go->load()) std::this_thread::yield();
  uint64_t rng = 0x9e3779b97f4a7c15u * (id + 1);
  for (int i = 0; i < iters; i++) {
    Block &b = slots[NextRandom(&rng) % kSlots];
    uint64_t seed = (uint64_t(id) << 32) | uint64_t(i);
    size_t n = RandomSize(&rng);
    errno = 0;
    switch (NextRandom(&rng) % 8) {
      case 0:
      case 1: {
        Release(&b, out);
        auto *p = static_cast<unsigned char *>(malloc(n));
        p ? Served(&b, p, n, seed, out) : Refused(out);
        break;
      }
      case 2: {
        Release(&b, out);
        auto *p = static_cast<unsigned char *>(calloc(1, n));
        if (!p) {
          Refused(out);
          break;
        }
        for (size_t k = 0; k < n; k += 61) out->not_zero += p[k] != 0;
        Served(&b, p, n, seed, out);
        break;
      }
      case 3: {  // resize: a refused realloc leaves the block as it was
        if (!b.p) break;
        auto *p = static_cast<unsigned char *>(realloc(b.p, n));
        if (!p) {
          Refused(out);
          if (!StampIntact(b.p, b.n, b.seed)) out->damaged++;
          break;
        }
        if (!StampIntact(p, n < b.n ? n : b.n, b.seed)) out->damaged++;
        Served(&b, p, n, seed, out);
        break;
      }
      case 4: {
        Release(&b, out);
        void *p = nullptr;
        size_t align = size_t{64} << (NextRandom(&rng) % 11);  // 64 B .. 64 KiB
        int err = posix_memalign(&p, align, n);
        if (err != 0) {
          errno = err;
          Refused(out);
          break;
        }
        if (reinterpret_cast<uintptr_t>(p) % align != 0) out->damaged++;
        Served(&b, static_cast<unsigned char *>(p), n, seed, out);
        break;
      }
      case 5: {  // hand the block over; free the one another thread left
        if (!b.p) break;
        holders[i] = b;
        b = Block{};
        Block *theirs = shared[NextRandom(&rng) % kSlots].exchange(&holders[i]);
        if (theirs) Release(theirs, out);
        break;
      }
      default:
        Release(&b, out);
    }
  }
  for (int k = 0; k < kSlots; k++) Release(&slots[k], out);
}

// Runs `threads` threads with `per_million` of every kind of memory call failing while
// they work (not while they start: thread creation allocates).
void RunUnderFaults(int threads, uint32_t per_million, int iters, Outcome *out) {
  std::vector<std::atomic<Block *>> shared(kSlots);
  std::vector<std::vector<Block>> holders(threads, std::vector<Block>(iters));
  std::vector<std::vector<Block>> slots(threads, std::vector<Block>(kSlots));
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; t++) {
    pool.emplace_back(Work, t, iters, shared.data(), holders[t].data(), slots[t].data(), &go, out);
  }
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) {
    hak_os_fail_rate(static_cast<hak_os_kind_t>(k), per_million);
  }
  go = true;
  for (auto &t : pool) t.join();
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) hak_os_fail_rate(static_cast<hak_os_kind_t>(k), 0);
  for (auto &s : shared) {
    Block *b = s.exchange(nullptr);
    if (b) Release(b, out);
  }
}

uint64_t Failures(const hak_stats_t &s) {
  uint64_t n = 0;
  for (int k = 0; k < HAK_STAT_OS_KINDS; k++) n += s.os_failures[k];
  return n;
}

// Three in four memory system calls fail, of every kind, under four threads. Each
// request has fallbacks (another arena, a mapping of its own, Large for a full Tiny or
// Pool), so at one in three hardly any refusal reached the API; at three in four some
// requests find every fallback refused, while most are served from memory already held.
// A last round refuses every call; then requests that only new memory could serve
// must come back NULL (the random rounds may not have met one: fallbacks absorb most).
TEST(SystemFaultRateTest, OnlyEnomemNoDamageAndMemoryBackToTheBaseline) {
  malloc_trim(0);
  hak_stats_t before = Stats();
  uint64_t rss_before = RssKib();
  Outcome out;
  RunUnderFaults(kThreads, 750000, 4000, &out);
  RunUnderFaults(kThreads, 1000000, 1000, &out);  // and no new memory at all
  // Requests that no memory already held can serve, with every call refused: NULL and
  // ENOMEM from each function, the block given to realloc intact.
  const size_t never_held = size_t{1536} << 20;  // a mapping of its own, never freed
  char *keep = static_cast<char *>(malloc(100000));
  ASSERT_NE(keep, nullptr);
  Stamp(keep, 100000, 7);
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) {
    hak_os_fail_rate(static_cast<hak_os_kind_t>(k), 1000000);
  }
  errno = 0;
  EXPECT_EQ(malloc(never_held), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  errno = 0;
  EXPECT_EQ(calloc(1, never_held), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  void *aligned = nullptr;
  EXPECT_EQ(posix_memalign(&aligned, 1 << 20, never_held), ENOMEM);
  errno = 0;
  EXPECT_EQ(realloc(keep, never_held), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  for (int k = 0; k < HAK_OS_KIND_COUNT; k++) hak_os_fail_rate(static_cast<hak_os_kind_t>(k), 0);
  EXPECT_TRUE(StampIntact(keep, 100000, 7));
  free(keep);
  hak_stats_t during = Stats();
  malloc_trim(0);
  hak_stats_t after = Stats();
  uint64_t rss_after = RssKib();

  printf("calls served %llu, refused %llu; memory calls failed %llu\n",
         static_cast<unsigned long long>(out.served.load()),
         static_cast<unsigned long long>(out.refused.load()),
         static_cast<unsigned long long>(Failures(during) - Failures(before)));
  EXPECT_EQ(out.bad_errno.load(), 0u) << "a refusal without ENOMEM";
  EXPECT_EQ(out.damaged.load(), 0u) << "a block lost its contents or alignment";
  EXPECT_EQ(out.not_zero.load(), 0u) << "calloc returned dirty memory";
  EXPECT_GT(out.served.load(), 5000u);
  EXPECT_GT(Failures(during), Failures(before) + 20);
  EXPECT_GT(during.os_failures[HAK_STAT_OS_COMMIT], before.os_failures[HAK_STAT_OS_COMMIT]);
  EXPECT_GT(during.os_failures[HAK_STAT_OS_DECOMMIT] + during.os_failures[HAK_STAT_OS_MAP],
            before.os_failures[HAK_STAT_OS_DECOMMIT] + before.os_failures[HAK_STAT_OS_MAP]);

  EXPECT_EQ(after.large_live_blocks, before.large_live_blocks);
  EXPECT_EQ(after.large_unreleased_bytes, 0u) << "refused unmaps are retried by the trim";
  EXPECT_LE(after.resident_bytes, before.resident_bytes + (size_t{8} << 20))
      << "before " << before.resident_bytes << ", after " << after.resident_bytes;
  EXPECT_LE(rss_after, rss_before + 16 * 1024) << "KiB: before " << rss_before;
}

// HAKMEM_FAULT_RATE sets a rate for the whole process from its start (one in ten here:
// low enough that the test framework's own allocations find a fallback).
TEST(SystemFaultRateTest, TheOptionInjectsFaultsFromTheStart) {
  if (InChild()) {
    bool intact = true;
    for (int i = 0; i < 200 && Failures(Stats()) == 0; i++) {
      size_t n = size_t{8} << 20;
      auto *p = static_cast<unsigned char *>(malloc(n));
      if (p) {
        Stamp(p, n, i);
        intact = intact && StampIntact(p, n, i);
      } else if (errno != ENOMEM) {
        intact = false;
      }
      free(p);
      malloc_trim(0);  // decommits: each new block needs new memory
    }
    _exit(Failures(Stats()) == 0 ? 3 : !intact ? 4 : 0);
  }
  int status = RunSelf("SystemFaultRateTest.TheOptionInjectsFaultsFromTheStart", 0,
                       {{"HAKMEM_FAULT_RATE", "100000"}});
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: no fault injected, 4: a wrong errno or damage";
}

}  // namespace
