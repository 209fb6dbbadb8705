// Stress with every byte verified: producer/consumer pipelines and a larson-style load
// (threads replacing random blocks and handing whole slot arrays to each other), at
// 2 to 32 threads. The suite runs each for a few seconds (//tests:stress_test); the
// long version runs each for STRESS_SECONDS (//tests:stress_long_test, tagged manual:
// `bazel test //tests:stress_long_test --test_env=STRESS_SECONDS=600`). Its twin on the
// hak_* API (//tests:stress_api_test) runs under --config=tsan.
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "gtest/gtest.h"
#include "tests/system/api_twin.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::NextRandom;
using hak_test::Stamp;
using hak_test::StampIntact;
using Clock = std::chrono::steady_clock;

double Seconds() {
  const char *s = getenv("STRESS_SECONDS");
  double v = s ? atof(s) : 0;
  return v > 0 ? v : 1.0;
}

// Mostly small, some Pool, a few Large.
size_t RandomSize(uint64_t *rng) {
  uint64_t r = NextRandom(rng);
  if (r % 64 == 0) return 65537 + (r >> 8) % (512 << 10);
  if (r % 8 == 0) return 1025 + (r >> 8) % 64512;
  return 1 + (r >> 8) % 1024;
}

struct Block {
  void *p;
  size_t n;
  uint64_t seed;
};

// Stamps cover at most the first 4 KiB and, past that, the last byte: enough to see a
// block handed out twice or overwritten, cheap enough for millions of blocks.
void Mark(const Block &b) {
  Stamp(b.p, b.n < 4096 ? b.n : 4096, b.seed);
  if (b.n > 4096) static_cast<unsigned char *>(b.p)[b.n - 1] = static_cast<unsigned char>(b.seed);
}
bool Intact(const Block &b) {
  return StampIntact(b.p, b.n < 4096 ? b.n : 4096, b.seed) &&
         (b.n <= 4096 ||
          static_cast<unsigned char *>(b.p)[b.n - 1] == static_cast<unsigned char>(b.seed));
}

// A bounded queue between producers and consumers.
class Queue {
 public:
  void Push(const Block &b) {
    std::unique_lock<std::mutex> g(mu_);
    room_.wait(g, [this] { return q_.size() < 4096; });
    q_.push_back(b);
    ready_.notify_one();
  }
  bool Pop(Block *b, const std::atomic<bool> &done) {
    std::unique_lock<std::mutex> g(mu_);
    ready_.wait(g, [&] { return !q_.empty() || done.load(); });
    if (q_.empty()) return false;
    *b = q_.front();
    q_.pop_front();
    room_.notify_one();
    return true;
  }
  void Wake() {
    std::lock_guard<std::mutex> g(mu_);
    ready_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_, room_;
  std::deque<Block> q_;
};

// `pairs` producers allocate and stamp; as many consumers check and free.
void ProducerConsumer(int pairs, double seconds, uint64_t *blocks, uint64_t *damaged) {
  Queue queue;
  std::atomic<bool> stop{false}, done{false};
  std::atomic<uint64_t> made{0}, bad{0};
  std::vector<std::thread> producers, consumers;
  for (int t = 0; t < pairs; t++) {
    producers.emplace_back([&, t] {
      uint64_t rng = 0x9e3779b97f4a7c15u * (t + 1), i = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        size_t n = RandomSize(&rng);
        Block b{malloc(n), n, (uint64_t(t) << 40) | i++};
        Mark(b);
        queue.Push(b);
      }
      made += i;
    });
    consumers.emplace_back([&] {
      Block b;
      while (queue.Pop(&b, done)) {
        if (!Intact(b)) bad++;
        free(b.p);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto &t : producers) t.join();
  done = true;
  queue.Wake();
  for (auto &t : consumers) t.join();
  *blocks = made;
  *damaged = bad;
}

// Each thread replaces random blocks of its slot array; now and then it swaps the whole
// array with another thread's (through an exchange slot), so blocks die far from home.
void Larson(int threads, double seconds, uint64_t *ops, uint64_t *damaged) {
  constexpr int kSlots = 256;
  std::atomic<std::vector<Block> *> exchange{nullptr};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total{0}, bad{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; t++) {
    pool.emplace_back([&, t] {
      uint64_t rng = 0x2545f4914f6cdd1du * (t + 7), i = 0;
      auto *slots = new std::vector<Block>(kSlots, Block{nullptr, 0, 0});
      while (!stop.load(std::memory_order_relaxed)) {
        Block &b = (*slots)[NextRandom(&rng) % kSlots];
        if (b.p) {
          if (!Intact(b)) bad++;
          free(b.p);
        }
        size_t n = RandomSize(&rng);
        b = Block{malloc(n), n, (uint64_t(t) << 40) | i};
        Mark(b);
        if (++i % 1024 == 0)
          slots = exchange.exchange(slots) ?: new std::vector<Block>(kSlots, Block{nullptr, 0, 0});
      }
      total += i;
      for (Block &b : *slots) {
        if (b.p && !Intact(b)) bad++;
        free(b.p);
      }
      delete slots;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto &t : pool) t.join();
  if (auto *left = exchange.load()) {
    for (Block &b : *left) {
      if (b.p && !Intact(b)) bad++;
      free(b.p);
    }
    delete left;
  }
  *ops = total;
  *damaged = bad;
}

class StressTest : public ::testing::TestWithParam<int> {};

TEST_P(StressTest, ProducersAndConsumersLoseNothing) {
  uint64_t blocks = 0, damaged = 0;
  ProducerConsumer(GetParam() / 2, Seconds(), &blocks, &damaged);
  EXPECT_EQ(damaged, 0u);
  EXPECT_GT(blocks, 1000u);
  printf("%d threads: %llu blocks passed from producers to consumers\n", GetParam(),
         static_cast<unsigned long long>(blocks));
}

TEST_P(StressTest, LarsonStyleExchangesLoseNothing) {
  uint64_t ops = 0, damaged = 0;
  Larson(GetParam(), Seconds(), &ops, &damaged);
  EXPECT_EQ(damaged, 0u);
  EXPECT_GT(ops, 1000u);
  printf("%d threads: %llu blocks replaced\n", GetParam(), static_cast<unsigned long long>(ops));
}

INSTANTIATE_TEST_SUITE_P(Threads, StressTest, ::testing::Values(2, 8, 32));

}  // namespace
