// Cross-thread frees through the hak_* API, without replacing the process allocator, so
// that ThreadSanitizer (--config=tsan) sees every access of the lock-free paths of Tiny
// and Pool: producers allocate and stamp, consumers verify and free, owners keep going.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::Stamp;
using hak_test::StampIntact;

struct Handoff {
  std::mutex mu;
  std::vector<std::pair<void *, uint64_t>> blocks;
};

void RunProducersAndConsumers(size_t size, int producers, int per_producer) {
  Handoff handoff;
  std::atomic<int> done{0};
  std::atomic<long> bad{0}, freed{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; p++) {
    threads.emplace_back([&, p] {
      std::vector<void *> kept;
      for (int i = 0; i < per_producer; i++) {
        uint64_t id = (uint64_t(p) << 32) | unsigned(i);
        void *b = hak_malloc(size);
        Stamp(b, size, id);
        if (i % 4 == 0) {
          kept.push_back(b);  // the owner keeps allocating and freeing its own too
          if (kept.size() > 16) {
            hak_free(kept.front());
            kept.erase(kept.begin());
          }
          continue;
        }
        std::lock_guard<std::mutex> lock(handoff.mu);
        handoff.blocks.emplace_back(b, id);
      }
      for (void *b : kept) hak_free(b);
      done++;
    });
  }
  threads.emplace_back([&] {
    for (;;) {
      std::vector<std::pair<void *, uint64_t>> got;
      {
        std::lock_guard<std::mutex> lock(handoff.mu);
        got.swap(handoff.blocks);
      }
      for (auto &[b, id] : got) {
        if (!StampIntact(b, size, id)) bad++;
        hak_free(b);
        freed++;
      }
      if (got.empty() && done.load() == producers) {
        std::lock_guard<std::mutex> lock(handoff.mu);
        if (handoff.blocks.empty()) break;
      }
    }
  });
  for (auto &t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(freed.load(), long{producers} * (per_producer - per_producer / 4));
}

TEST(TinyCrossThreadTest, RemoteFreesOfTinyBlocks) { RunProducersAndConsumers(64, 3, 20000); }

TEST(TinyCrossThreadTest, RemoteFreesOfPoolBlocks) { RunProducersAndConsumers(9000, 3, 3000); }

TEST(TinyCrossThreadTest, RemoteFreesOfLargeBlocks) { RunProducersAndConsumers(200000, 2, 300); }

// A thread's blocks freed in bulk, in random order, by another thread come back to their
// slabs; a slab all of whose blocks are back is carved again in address order, so the
// owner's next blocks follow one another in memory (a walk the prefetcher can follow)
// instead of keeping the order of the frees.
TEST(TinyCrossThreadTest, BlocksFreedInBulkElsewhereComeBackInAddressOrder) {
  constexpr size_t kSize = 208;  // a class of its own in this test
  constexpr int kBlocks = 3000;  // about ten slabs
  std::vector<char *> first, second;
  std::thread owner([&] {
    for (int i = 0; i < kBlocks; i++) first.push_back(static_cast<char *>(hak_malloc(kSize)));
    std::thread([&] {
      std::vector<char *> shuffled = first;
      std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
      for (char *b : shuffled) hak_free(b);
    }).join();
    for (int i = 0; i < kBlocks; i++) second.push_back(static_cast<char *>(hak_malloc(kSize)));
    for (char *b : second) hak_free(b);
  });
  owner.join();
  size_t stride = hak_malloc_usable_size(second[0]);
  int adjacent = 0;
  for (int i = 1; i < kBlocks; i++) {
    size_t d = second[i] > second[i - 1] ? second[i] - second[i - 1] : second[i - 1] - second[i];
    adjacent += d == stride;
  }
  EXPECT_GE(adjacent, kBlocks * 3 / 4) << "of " << kBlocks << " blocks, stride " << stride;
}

}  // namespace
