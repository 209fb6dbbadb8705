// Threads on hakmem: blocks handed between threads keep their data (the regression test
// for the drain-before-pop race), thread exit with blocks still out, free-only threads,
// thread churn, and fork from a multithreaded parent.
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "allocator/hakmem.h"
#include "gtest/gtest.h"
#include "tests/system/api_twin.h"
#include "tests/system/test_util.h"

namespace {

using hak_test::Stamp;
using hak_test::StampIntact;
using hak_test::Stats;

struct Block {
  void *p;
  size_t n;
  uint64_t id;
};

// A size drawn mostly from Tiny, often from Pool, sometimes from Large.
size_t DrawSize(absl::BitGen &gen) {
  unsigned r = absl::Uniform(gen, 0u, 100u);
  if (r < 70) return absl::Uniform<size_t>(gen, 0, 1025);
  if (r < 97) return absl::Uniform<size_t>(gen, 1025, 65537);
  return absl::Uniform<size_t>(gen, 65537, 400000);
}

class Inbox {
 public:
  void Put(Block b) {
    std::lock_guard<std::mutex> lock(mu_);
    blocks_.push_back(b);
  }
  std::vector<Block> TakeAll() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Block> out;
    out.swap(blocks_);
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<Block> blocks_;
};

// Every thread allocates and stamps blocks, keeps some, hands others to a random thread,
// and frees what it receives after checking it. The owner keeps allocating while others
// free its blocks, which is exactly when a block in both a remote queue and a free list
// would be handed out twice and its stamp overwritten.
TEST(SystemThreadsTest, HandedOffBlocksKeepTheirData) {
  constexpr int kThreads = 4;
#if defined(__SANITIZE_THREAD__)
  constexpr int kOps = 8000;  // ThreadSanitizer runs the twin some 20 times slower
#else
  constexpr int kOps = 60000;
#endif
  std::vector<Inbox> inboxes(kThreads);
  std::atomic<uint64_t> corrupt{0}, checked{0};
  std::atomic<int> done{0};
  auto worker = [&](int self) {
    absl::BitGen gen(std::seed_seq{self + 1});
    std::vector<Block> mine;
    uint64_t next_id = static_cast<uint64_t>(self) << 40;
    for (int op = 0; op < kOps; op++) {
      size_t n = DrawSize(gen);
      Block b{malloc(n), n, next_id++};
      ASSERT_NE(b.p, nullptr);
      Stamp(b.p, n, b.id);
      if (absl::Bernoulli(gen, 0.5)) {
        inboxes[absl::Uniform(gen, 0, kThreads)].Put(b);
      } else {
        mine.push_back(b);
      }
      if (mine.size() > 64) {
        size_t victim = absl::Uniform<size_t>(gen, 0, mine.size());
        if (!StampIntact(mine[victim].p, mine[victim].n, mine[victim].id)) corrupt++;
        free(mine[victim].p);
        mine[victim] = mine.back();
        mine.pop_back();
      }
      if (op % 16 == 0) {
        for (Block &r : inboxes[self].TakeAll()) {
          if (!StampIntact(r.p, r.n, r.id)) corrupt++;
          checked++;
          free(r.p);
        }
      }
    }
    for (Block &b : mine) {
      if (!StampIntact(b.p, b.n, b.id)) corrupt++;
      free(b.p);
    }
    done++;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) threads.emplace_back(worker, t);
  for (auto &t : threads) t.join();
  for (Inbox &inbox : inboxes) {
    for (Block &r : inbox.TakeAll()) {
      if (!StampIntact(r.p, r.n, r.id)) corrupt++;
      checked++;
      free(r.p);
    }
  }
  EXPECT_EQ(done.load(), kThreads);
  EXPECT_EQ(corrupt.load(), 0u);
  EXPECT_GT(checked.load(), static_cast<uint64_t>(kThreads * kOps / 3));
  EXPECT_GT(Stats().tiny_remote_frees, 0u);
}

// A thread exits with blocks still allocated; another thread frees them later; the next
// thread that needs the class reuses that memory instead of growing the heap.
TEST(SystemThreadsTest, BlocksOfAnExitedThreadAreFreedAndReused) {
  constexpr int kBlocks = 20000;
  std::vector<void *> blocks(kBlocks);
  std::thread([&] {
    for (int i = 0; i < kBlocks; i++) {
      blocks[i] = malloc(200);
      Stamp(blocks[i], 200, i);
    }
  }).join();
  for (int i = 0; i < kBlocks; i++) {
    ASSERT_TRUE(StampIntact(blocks[i], 200, i)) << i;
    free(blocks[i]);
  }
  uint64_t superslabs = Stats().tiny_superslabs;
  for (int round = 0; round < 5; round++) {
    std::thread([&] {
      for (int i = 0; i < kBlocks; i++) blocks[i] = malloc(200);
      for (int i = 0; i < kBlocks; i++) free(blocks[i]);
    }).join();
  }
  EXPECT_LE(Stats().tiny_superslabs, superslabs + 1) << "memory of exited threads is reused";
}

// A thread that only frees blocks other threads allocated must not make memory grow:
// the owners get their blocks back through the remote queues.
TEST(SystemThreadsTest, FreeOnlyThreadDoesNotGrowMemory) {
  constexpr int kRounds = 400;
  constexpr int kBatch = 1000;
  Inbox inbox;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> freed{0};
  std::thread freer([&] {
    while (!stop.load() || freed.load() < uint64_t{kRounds} * kBatch) {
      for (Block &b : inbox.TakeAll()) {
        free(b.p);
        freed++;
      }
    }
  });
  hak_stats_t start = Stats();
  for (int r = 0; r < kRounds; r++) {
    for (int i = 0; i < kBatch; i++) inbox.Put({malloc(48), 48, 0});
    while (freed.load() < uint64_t(r) * kBatch) std::this_thread::yield();
  }
  stop = true;
  freer.join();
  hak_stats_t end = Stats();
  // 400,000 blocks of 48 bytes went through (18 MiB, 300 slabs); reuse keeps it to a few.
  EXPECT_LE(end.tiny_slabs_in_use, start.tiny_slabs_in_use + 40);
  EXPECT_GE(end.tiny_remote_frees - start.tiny_remote_frees, uint64_t{kRounds} * kBatch);
}

// A thread that only frees sends other threads' blocks back in batches, one exchange per
// batch of up to 64; what it still holds when it exits goes then. Every block comes back
// to its owner, whose next allocations reuse them.
TEST(SystemThreadsTest, RemoteFreesGoInBatchesAndAllComeBack) {
  constexpr int kBlocks = 20000;
  std::thread([] {
    std::vector<void *> blocks(kBlocks);
    for (int i = 0; i < kBlocks; i++) {
      blocks[i] = malloc(64);
      ASSERT_NE(blocks[i], nullptr);
      Stamp(blocks[i], 64, i);
    }
    hak_stats_t before = Stats();
    std::thread([&] {
      for (int i = 0; i < kBlocks; i++) {
        ASSERT_TRUE(StampIntact(blocks[i], 64, i)) << i;
        free(blocks[i]);
      }
    }).join();  // its exit sends the batches it holds
    hak_stats_t after = Stats();
    EXPECT_GE(after.tiny_remote_frees - before.tiny_remote_frees, uint64_t{kBlocks});
    uint64_t batches = after.remote_batches - before.remote_batches;
    EXPECT_GE(batches, uint64_t{kBlocks} / 64);
    EXPECT_LE(batches, uint64_t{kBlocks} / 64 + 64) << "one exchange per batch, not per block";
    EXPECT_GE(after.remote_flushes - before.remote_flushes, 1u) << "the exit sent what was left";
    std::set<void *> freed(blocks.begin(), blocks.end());
    int reused = 0;
    for (int i = 0; i < kBlocks; i++) {
      blocks[i] = malloc(64);
      reused += static_cast<int>(freed.count(blocks[i]));
    }
    // All but what the current slab still carves (a slab holds 1,024 blocks of 64 bytes).
    EXPECT_GE(reused, kBlocks - 2048) << "freed blocks stuck on their way back";
    for (void *p : blocks) free(p);
  }).join();
}

// A producer's blocks freed by a consumer come back in the order the producer handed
// them out, round after round: carved in address order, each block is followed by the
// next one up, and a walk of them is a stream a prefetcher runs ahead of. Lists that reversed or
// cut their order at every refill and drain mixed it once rounds overlapped: the producer walked
// far-apart addresses, a cache miss per block (xbatch 4096 ran 3.6x slower). The producer hands
// batches of 4,096 blocks to a consumer with up to 8 batches in flight.
TEST(SystemThreadsTest, AConsumerFedProducerGetsItsBlocksBackInOrder) {
  constexpr int kBlocks = 4096, kDepth = 8, kRounds = 60;
  std::atomic<std::vector<char *> *> slot[kDepth] = {};
  std::thread consumer([&] {
    for (int round = 0; round < kRounds; round++) {
      std::vector<char *> *b;
      while ((b = slot[round % kDepth].load()) == nullptr) std::this_thread::yield();
      slot[round % kDepth] = nullptr;
      for (int i = 0; i < kBlocks; i++) {
        ASSERT_TRUE(StampIntact((*b)[i], 64, i + round)) << i;
        free((*b)[i]);
      }
      delete b;
    }
  });
  double in_order = 0;
  for (int round = 0; round < kRounds; round++) {
    auto *b = new std::vector<char *>(kBlocks);
    for (int i = 0; i < kBlocks; i++) {
      (*b)[i] = static_cast<char *>(malloc(64));
      ASSERT_NE((*b)[i], nullptr);
      Stamp((*b)[i], 64, i + round);
    }
    int next = 0;
    for (int i = 0; i + 1 < kBlocks; i++) next += (*b)[i + 1] - (*b)[i] == 64;
    in_order = static_cast<double>(next) / (kBlocks - 1);
    while (slot[round % kDepth].load() != nullptr) std::this_thread::yield();
    slot[round % kDepth] = b;
  }
  consumer.join();
  printf("last round: %.1f%% of blocks followed by the next one up\n", 100 * in_order);
  EXPECT_GE(in_order, 0.95);
}

TEST(SystemThreadsTest, ThreadChurnKeepsMemoryBounded) {
  std::vector<void *> leftovers;
  std::mutex mu;
  auto churn = [&](int seed) {
    absl::BitGen gen(std::seed_seq{seed});
    std::vector<void *> local;
    for (int i = 0; i < 2000; i++) local.push_back(malloc(DrawSize(gen)));
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < local.size(); i++) {
      if (i % 2)
        leftovers.push_back(local[i]);
      else
        free(local[i]);
    }
  };
  for (int i = 0; i < 20; i++) std::thread(churn, i).join();
  for (void *p : leftovers) free(p);
  leftovers.clear();
  uint64_t superslabs = Stats().tiny_superslabs;
  for (int i = 0; i < 200; i++) {
    std::thread a(churn, i), b(churn, i + 1000);
    a.join();
    b.join();
    for (void *p : leftovers) free(p);
    leftovers.clear();
  }
  EXPECT_LE(Stats().tiny_superslabs, superslabs + 4);
}

// Threads that block between bursts (in nanosleep and on a condition variable) while the
// purge thread flushes the caches of the ones blocked for the decay (4 ms here, in a
// process of its own): every block keeps its data across the flushes, handed between
// threads, through threads that exit parked and new ones, and through forks by a thread
// whose heap was parked (the child allocates in every tier).
TEST(SystemThreadsTest, BlocksKeepTheirDataWhileIdleThreadsCachesAreFlushed) {
  if (!hak_test::InChild()) {
    int status =
        hak_test::RunSelf("SystemThreadsTest.BlocksKeepTheirDataWhileIdleThreadsCachesAreFlushed",
                          0, {{"HAKMEM_DECAY_MS", "4"}});
    ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0);
    return;
  }
  constexpr int kThreads = 6;
  std::vector<Inbox> inbox(kThreads);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::mutex mu;
  std::condition_variable cv;
  auto worker = [&](int t, int generation) {
    absl::BitGen gen(std::seed_seq{t, generation});
    uint64_t id = uint64_t(t) << 48 | uint64_t(generation) << 32;
    for (int round = 0; round < 40 && !stop.load(); round++) {
      std::vector<Block> mine(absl::Uniform(gen, 1u, 200u));
      for (Block &b : mine) {
        b.n = DrawSize(gen);
        b.p = malloc(b.n);
        b.id = ++id;
        Stamp(b.p, b.n, b.id);
      }
      unsigned ms = absl::Uniform(gen, 0u, 16u);
      if (ms % 2) {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      } else {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(ms));
      }
      for (size_t i = 0; i < mine.size(); i++) {
        if (!StampIntact(mine[i].p, mine[i].n, mine[i].id)) bad++;
        if (i % 2) {
          inbox[absl::Uniform(gen, 0, kThreads)].Put(mine[i]);
        } else {
          free(mine[i].p);
        }
      }
      for (Block &b : inbox[t].TakeAll()) {
        if (!StampIntact(b.p, b.n, b.id)) bad++;
        free(b.p);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int generation = 0; generation < 3 && !stop.load(); generation++) {
        std::thread(worker, t, generation).join();  // exits, maybe parked
      }
    });
  }
  for (int i = 0; i < 10; i++) {
    std::vector<Block> kept;
    absl::BitGen gen(std::seed_seq{100 + i});
    for (int k = 0; k < 50; k++) {
      Block b{nullptr, DrawSize(gen), uint64_t(i) * 1000 + k};
      b.p = malloc(b.n);
      Stamp(b.p, b.n, b.id);
      kept.push_back(b);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // long enough to be parked
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int ok = 1;
      for (const Block &b : kept) ok &= StampIntact(b.p, b.n, b.id);
      for (size_t n : {size_t{8}, size_t{700}, size_t{5000}, size_t{60000}}) {
        for (int k = 0; k < 100; k++) {
          void *p = malloc(n);
          if (!p) _exit(3);
          Stamp(p, n, k);
          ok &= StampIntact(p, n, k);
          free(p);
        }
      }
      // (The kept blocks are not freed here: freeing Large ones could start a purge
      // thread, which a fork child of a multithreaded parent cannot do under the
      // sanitizers, tests/system/api_twin.h.)
      _exit(ok ? 0 : 4);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0) << "fork " << i;
    for (const Block &b : kept) {
      if (!StampIntact(b.p, b.n, b.id)) bad++;
      free(b.p);
    }
  }
  for (auto &t : threads) t.join();
  stop = true;
  for (Inbox &box : inbox) {
    for (Block &b : box.TakeAll()) {
      if (!StampIntact(b.p, b.n, b.id)) bad++;
      free(b.p);
    }
  }
  EXPECT_EQ(bad.load(), 0) << "blocks lost their data";
#if !defined(__SANITIZE_THREAD__)
  EXPECT_GE(Stats().idle_flushes, 20u) << "the flush ran while the threads worked";
#endif
  printf("idle flushes %llu\n", (unsigned long long)Stats().idle_flushes);
}

// A thread blocked inside a signal handler may have been interrupted in the middle of a
// fast path: the flush leaves alone a thread that waits in sigsuspend, and one that
// blocks a signal it did not block at its last slow path (a handler runs with its signal
// blocked). One that waits on a condition variable, as they did before, is flushed.
void SpinMs(int ms) {  // the main thread stays on the CPU: never seen blocked
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
  }
}

// Enough refills and trims (slow paths) for the heap's thread to be watched
// (HAK_HEAP_IDENTIFY_AFTER), and a cache left full.
void FillACache() {
  std::vector<void *> blocks(4000);
  for (void *&p : blocks) p = malloc(64);
  for (void *p : blocks) free(p);
}

void OnUsr1(int) {}

TEST(SystemThreadsTest, TheIdleFlushLeavesThreadsThatMayBeInsideASignalHandler) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "no idle flush under ThreadSanitizer";
#endif
  if (!hak_test::InChild()) {
    int status = hak_test::RunSelf(
        "SystemThreadsTest.TheIdleFlushLeavesThreadsThatMayBeInsideASignalHandler", 0,
        {{"HAKMEM_DECAY_MS", "20"}});
    ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0);
    return;
  }
  // The purge thread starts once 4 MiB of slabs and spans were emptied.
  std::vector<void *> burst(2048);
  for (void *&p : burst) memset(p = malloc(4096), 1, 4096);
  for (void *p : burst) free(p);
  struct sigaction sa = {};
  sa.sa_handler = OnUsr1;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::thread suspended([&] {
    FillACache();
    sigset_t all_but_usr1;
    sigfillset(&all_but_usr1);
    sigdelset(&all_but_usr1, SIGUSR1);
    ready++;
    while (!go.load()) sigsuspend(&all_but_usr1);
    FillACache();
  });
  std::thread masked([&] {
    FillACache();
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, nullptr);
    ready++;
    while (!go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    FillACache();
  });
  while (ready.load() < 2) std::this_thread::yield();
  SpinMs(400);  // 20 decays
  EXPECT_EQ(Stats().idle_flushes, 0u) << "a thread that may be in a handler was flushed";
  go = true;
  pthread_kill(suspended.native_handle(), SIGUSR1);
  suspended.join();
  masked.join();
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread waiting([&] {
    FillACache();
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
  });
  // Up to 150 decays: on a loaded machine the purge thread may wait for a core.
  for (int spun = 0; spun < 3000 && Stats().idle_flushes == 0; spun += 50) SpinMs(50);
  EXPECT_GE(Stats().idle_flushes, 1u) << "a thread waiting on a condition variable is flushed";
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_all();
  waiting.join();
}

// fork() while other threads allocate: the child can allocate and free in every tier, and
// the parent goes on.
TEST(SystemThreadsTest, ForkFromAMultithreadedParent) {
#if !HAK_TEST_CHILD_THREADS
  // The children cannot start threads under the sanitizers (tests/system/api_twin.h),
  // and their frees would start hakmem's purge thread: run without it, in a process of
  // its own (options are read at start).
  if (!hak_test::InChild()) {
    int status = hak_test::RunSelf("SystemThreadsTest.ForkFromAMultithreadedParent", 0,
                                   {{"HAKMEM_PURGE_THREAD", "0"}});
    ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0);
    return;
  }
#endif
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int t = 0; t < 3; t++) {
    busy.emplace_back([&, t] {
      absl::BitGen gen(std::seed_seq{t});
      while (!stop.load()) {
        size_t n = DrawSize(gen);
        void *p = malloc(n);
        Stamp(p, n, n);
        if (!StampIntact(p, n, n)) abort();
        free(p);
      }
    });
  }
  for (int i = 0; i < 20; i++) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int ok = 1;
      for (size_t n : {size_t{8}, size_t{700}, size_t{5000}, size_t{60000}, size_t{3 << 20}}) {
        for (int k = 0; k < (n > 100000 ? 3 : 100); k++) {
          void *p = malloc(n);
          if (!p) _exit(3);
          Stamp(p, n, k);
          ok &= StampIntact(p, n, k);
          free(p);
        }
      }
      hak_test::RunOnChildThread([] { free(malloc(100)); });
      _exit(ok ? 0 : 4);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  stop = true;
  for (auto &t : busy) t.join();
}

}  // namespace
