// The lock-free remote-free queue (internal/remote.h), hammered by several producers
// while one owner drains: nothing lost, nothing duplicated, and exactly one producer
// queues the slab per batch. Runs under --config=tsan too.
#include "allocator/internal/remote.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace {

struct FakeSlab {
  uintptr_t remote = 0;
  FakeSlab *pending_next = nullptr;
};

struct alignas(16) Node {
  void *link;
  void *batch;  // a batch's descriptor, when the node heads one (internal/remote.h)
  int producer;
  int seq;
};

TEST(InternalRemoteTest, ProducersAndOneOwnerLoseAndDuplicateNothing) {
  constexpr int kProducers = 3;
  constexpr int kPerProducer = 100000;
  FakeSlab slab;
  void *pending = nullptr;
  std::vector<std::vector<Node>> nodes(kProducers, std::vector<Node>(kPerProducer));
  std::vector<std::vector<char>> seen(kProducers, std::vector<char>(kPerProducer, 0));
  std::atomic<int> producers_done{0};
  std::atomic<long> queued{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; p++) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; i++) {
        Node *n = &nodes[p][i];
        n->producer = p;
        n->seq = i;
        if (hak_remote_push(&slab.remote, n)) {
          hak_pending_push(&pending, &slab, reinterpret_cast<void **>(&slab.pending_next));
          queued++;
        }
      }
      producers_done++;
    });
  }
  long drained = 0, taken_batches = 0, duplicates = 0;
  auto drain = [&] {
    auto *s = static_cast<FakeSlab *>(hak_pending_take(&pending));
    while (s) {
      FakeSlab *next = s->pending_next;
      taken_batches++;
      for (void *b = hak_remote_take(&s->remote); b;) {
        Node *n = static_cast<Node *>(b);
        b = hak_link_read(b);
        if (seen[n->producer][n->seq]++) duplicates++;
        drained++;
      }
      s = next;
    }
  };
  while (producers_done.load() < kProducers) drain();
  for (auto &t : producers) t.join();
  drain();
  EXPECT_EQ(drained, long{kProducers} * kPerProducer);
  EXPECT_EQ(duplicates, 0);
  EXPECT_EQ(queued.load(), taken_batches) << "one queueing per batch, each taken once";
  EXPECT_EQ(slab.remote, 0u);
  EXPECT_EQ(pending, nullptr);
}

TEST(InternalRemoteTest, FlagIsSetExactlyWhileTheChainIsNonEmpty) {
  uintptr_t remote = 0;
  Node a{}, b{};
  EXPECT_TRUE(hak_remote_push(&remote, &a));
  EXPECT_FALSE(hak_remote_push(&remote, &b));
  EXPECT_EQ(remote & HAK_REMOTE_FLAG, HAK_REMOTE_FLAG);
  void *chain = hak_remote_take(&remote);
  EXPECT_EQ(chain, &b);
  EXPECT_EQ(hak_link_read(&b), &a);
  EXPECT_EQ(hak_link_read(&a), nullptr);
  EXPECT_EQ(remote, 0u);
  EXPECT_TRUE(hak_remote_push(&remote, &a)) << "after a take the next push queues again";
}

}  // namespace
