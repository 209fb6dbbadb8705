// Cross-thread frees through the hak_* API, without replacing the process allocator, so
// that ThreadSanitizer (--config=tsan) sees every access of the lock-free paths of Tiny
// and Pool: producers allocate and stamp, consumers verify and free, owners keep going.
#include <atomic>
#include <mutex>
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

}  // namespace
