// Thread churn: thousands of short-lived threads, each allocating blocks of every tier
// and leaving half of them to a thread of the next wave, which checks and frees them.
// Memory must stay bounded by what is live, not grow with the number of threads that
// came and went (dead heaps are adopted by new threads, their blocks freed remotely).
#include <stdlib.h>
#include <string.h>

#include <thread>
#include <vector>

#include "allocator/hakmem.h"
#include "gtest/gtest.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::RssKib;
using hak_test::Stamp;
using hak_test::StampIntact;

constexpr int kWidth = 8;     // threads per wave
constexpr int kLeft = 32;     // blocks each thread leaves to the next wave
constexpr int kBlocks = 128;  // blocks each thread allocates

struct Left {
  void *p = nullptr;
  size_t n = 0;
  uint64_t seed = 0;
};

// left[wave parity][thread][k]: a wave reads its own half and fills the other.
Left g_left[2][kWidth][kLeft];
int g_damaged;

size_t SizeOf(int i) {
  switch (i % 8) {
    case 0:
      return 3000 + i * 37;  // Pool
    case 1:
      return 20000 + i * 11;  // Pool
    case 2:
      return i == 2 ? 300000 : 48;  // one Large block per thread
    default:
      return 16 + (i * 29) % 1000;  // Tiny
  }
}

void Life(int wave, int id) {
  int cur = wave & 1, next = cur ^ 1;
  for (Left &l : g_left[cur][id]) {  // the blocks a thread of the last wave left here
    if (!l.p) continue;
    if (!StampIntact(l.p, l.n, l.seed)) __atomic_fetch_add(&g_damaged, 1, __ATOMIC_RELAXED);
    free(l.p);
    l = Left{};
  }
  void *mine[kBlocks];
  for (int i = 0; i < kBlocks; i++) {
    size_t n = SizeOf(i);
    mine[i] = malloc(n);
    Stamp(mine[i], n, uint64_t(wave) * 1000 + i);
  }
  for (int i = 0; i < kBlocks; i++) {
    if (i < kLeft) {
      g_left[next][(id + 1) % kWidth][i] = Left{mine[i], SizeOf(i), uint64_t(wave) * 1000 + i};
    } else {
      free(mine[i]);
    }
  }
}

void Waves(int from, int to) {
  for (int w = from; w < to; w++) {
    std::vector<std::thread> wave;
    for (int id = 0; id < kWidth; id++) wave.emplace_back(Life, w, id);
    for (auto &t : wave) t.join();
  }
}

// 6,000 thread lifetimes: RSS after the first 800 (everything warm) and after the rest
// may differ by a few MiB of noise, not by the thousands of threads in between.
TEST(SystemChurnTest, ThousandsOfShortThreadsLeavingBlocksStayBounded) {
  Waves(0, 100);
  uint64_t warm = RssKib();
  Waves(100, 750);
  uint64_t end = RssKib();
  EXPECT_EQ(g_damaged, 0) << "a block left to the next wave lost its contents";
  EXPECT_LE(end, warm + 8 * 1024) << "KiB after 800 thread lifetimes: " << warm;
  printf("RSS after 800 thread lifetimes %llu KiB, after 6,000 %llu KiB\n",
         static_cast<unsigned long long>(warm), static_cast<unsigned long long>(end));
  for (auto &half : g_left) {
    for (auto &thread : half) {
      for (Left &l : thread) free(l.p);
    }
  }
}

}  // namespace
