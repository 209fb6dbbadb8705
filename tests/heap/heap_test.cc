// The heap engine's life cycle on a fake tier, without the allocator around it: adoption
// of retired heaps, collection by remote frees, decay flushes, and the fork child's
// repair of the registry; and the rules that size a thread cache.
#include "allocator/heap/heap.h"

#include "allocator/heap/cache.h"
#include "allocator/os_boundary/os.h"

#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace {

// A slab as the engine sees one: the shared header (its owner: the tier heap), and the
// remote line at HAK_SLAB_REMOTE_OFFSET.
struct FakeSlab {
  hak_slab_t slab{};
  char pad[HAK_SLAB_REMOTE_OFFSET - sizeof(hak_slab_t)];
  uintptr_t remote = 0;
  void *pending_next = nullptr;
};
static_assert(offsetof(FakeSlab, remote) == HAK_SLAB_REMOTE_OFFSET, "the remote line");

struct FakeHeap {
  int inits, drains, flushes, prewarms, reclaims, parks;
  int drained_blocks;
  long changes;  // changed by the owner inside own/disown and by reclaim: never both at once
  hak_heap_t base;
};

thread_local FakeHeap *g_bound;  // the fake tier's "TLS heap"

// A remote free into slab s of heap owner, the way a tier makes one.
void RemoteFree(hak_heap_registry_t *r, FakeHeap *owner, FakeSlab *s, void *block, size_t size) {
  s->slab.owner = owner;
  hak_heap_remote_free(r, &s->slab, block, size);
}

// A block size that makes every remote free a batch of its own, sent at once.
constexpr size_t kNow = HAK_REMOTE_BATCH_BYTES;

void Init(void *t) { static_cast<FakeHeap *>(t)->inits++; }
void Bind(void *t) { g_bound = static_cast<FakeHeap *>(t); }
void Prewarm(void *t) { static_cast<FakeHeap *>(t)->prewarms++; }

// Takes every pending slab and counts the blocks on its remote queue.
void Drain(void *t) {
  auto *h = static_cast<FakeHeap *>(t);
  h->drains++;
  for (auto *s = static_cast<FakeSlab *>(hak_pending_take(&h->base.pending)); s;) {
    auto *next = static_cast<FakeSlab *>(s->pending_next);
    for (void *b = hak_remote_take(&s->remote); b; b = hak_link_read(b)) h->drained_blocks++;
    s = next;
  }
}

// The purge's reclaim: drains like the owner would, and counts itself as a change.
void Reclaim(void *t) {
  auto *h = static_cast<FakeHeap *>(t);
  h->reclaims++;
  h->changes++;
  Drain(t);
}

void Flush(void *t) {
  Drain(t);
  static_cast<FakeHeap *>(t)->flushes++;
}

hak_heap_ops_t MakeOps() {
  hak_heap_ops_t ops = {};  // no idle flush unless a test sets one
  ops.heap_size = sizeof(FakeHeap);
  ops.heap_offset = offsetof(FakeHeap, base);
  ops.init = Init;
  ops.bind = Bind;
  ops.prewarm = Prewarm;
  ops.drain = Drain;
  ops.flush = Flush;
  ops.reclaim = Reclaim;
  return ops;
}

const hak_heap_ops_t kOps = MakeOps();

class HeapEngineTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(hak_heap_registry_init(&r_, &kOps, nullptr), 0); }
  // Attaches a heap; *created says whether it is new (initialised by this call).
  FakeHeap *Attach(int *created) {
    auto *h = static_cast<FakeHeap *>(hak_heap_attach(&r_));
    *created = h && h->inits == 1 && h->drains == 1 && !seen_.count(h);
    seen_.insert(h);
    return h;
  }
  std::set<FakeHeap *> seen_;
  hak_heap_registry_t r_;
};

TEST_F(HeapEngineTest, ARetiredHeapIsAdoptedBeforeANewOneIsMade) {
  int created = 0;
  FakeHeap *a = Attach(&created);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(created, 1);
  EXPECT_EQ(a->inits, 1);
  EXPECT_EQ(g_bound, a) << "made the thread's";
  EXPECT_EQ(a->drains, 1) << "drained at attach";
  EXPECT_EQ(a->prewarms, HAK_PREWARM ? 1 : 0) << "pre-warmed when new, with PREWARM=1";
  EXPECT_EQ(a->base.state, HAK_HEAP_LIVE);
  hak_heap_retire(&r_, a);
  EXPECT_EQ(a->base.state, HAK_HEAP_DEAD);
  FakeHeap *b = Attach(&created);
  EXPECT_EQ(b, a) << "adopted";
  EXPECT_EQ(created, 0);
  EXPECT_EQ(b->inits, 1) << "an adopted heap is not re-initialised";
  EXPECT_EQ(b->prewarms, HAK_PREWARM ? 1 : 0) << "nor pre-warmed again";
  EXPECT_EQ(b->drains, 2) << "but drained of what came while it was dead";
  FakeHeap *c = Attach(&created);
  EXPECT_NE(c, a);
  EXPECT_EQ(created, 1);
}

// A remote free queues the slab once per batch; into a dead heap it also collects it.
TEST_F(HeapEngineTest, RemoteFreesQueueOncePerBatchAndCollectADeadOwner) {
  int created;
  FakeHeap *owner = Attach(&created);
  FakeSlab slab;
  void *blocks[3][2];
  RemoteFree(&r_, owner, &slab, blocks[0], kNow);
  RemoteFree(&r_, owner, &slab, blocks[1], kNow);
  EXPECT_EQ(owner->base.pending, &slab) << "queued once";
  EXPECT_EQ(owner->drains, 1) << "only at attach: a live owner drains itself";
  Drain(owner);
  EXPECT_EQ(owner->drained_blocks, 2);
  hak_heap_retire(&r_, owner);
  RemoteFree(&r_, owner, &slab, blocks[2], kNow);
  EXPECT_EQ(owner->drained_blocks, 3) << "the freeing thread collected the dead heap";
  EXPECT_EQ(owner->base.pending, nullptr);
  EXPECT_EQ(owner->base.state, HAK_HEAP_DEAD);
}

uint64_t Batches() {
  uint64_t batches, flushes;
  hak_heap_remote_counts(&batches, &flushes);
  return batches;
}

// Remote frees of small blocks wait in the freeing thread's batch for their slab: nothing
// reaches the owner until the batch is full or the thread flushes, then all of it at once.
TEST_F(HeapEngineTest, RemoteFreesGoInBatchesPerSlab) {
  int created;
  FakeHeap *owner = Attach(&created);
  FakeSlab slab;
  void *blocks[8][2];
  const size_t size = HAK_REMOTE_BATCH_BYTES / 4;  // batches of 4
  const uint64_t batches = Batches();
  for (int i = 0; i < 3; i++) {
    RemoteFree(&r_, owner, &slab, blocks[i], size);
  }
  EXPECT_EQ(owner->base.pending, nullptr) << "a batch of 3 of 4 waits";
  EXPECT_EQ(slab.remote, 0u);
  RemoteFree(&r_, owner, &slab, blocks[3], size);
  EXPECT_EQ(owner->base.pending, &slab) << "the fourth sends it";
  EXPECT_EQ(Batches(), batches + 1);
  Drain(owner);
  EXPECT_EQ(owner->drained_blocks, 4);
  for (int i = 4; i < 6; i++) {
    RemoteFree(&r_, owner, &slab, blocks[i], size);
  }
  EXPECT_EQ(owner->base.pending, nullptr);
  hak_heap_remote_flush();  // what an allocation slow path of this thread does
  EXPECT_EQ(owner->base.pending, &slab);
  Drain(owner);
  EXPECT_EQ(owner->drained_blocks, 6);
  EXPECT_EQ(hak_remote_buf.used, 0u);
}

// A batch whose slot another slab needs goes first; a thread's exit sends what is left.
TEST_F(HeapEngineTest, ACollidingSlabOrTheThreadsExitSendsABatch) {
  int created;
  FakeHeap *owner = Attach(&created);
  constexpr int kSlabs = HAK_REMOTE_SLOTS + 1;  // two of them share a slot
  std::vector<FakeSlab> slabs(kSlabs);
  void *blocks[kSlabs][2];
  std::thread([&] {
    for (int i = 0; i < kSlabs; i++) {
      RemoteFree(&r_, owner, &slabs[i], blocks[i], 64);
    }
    EXPECT_NE(owner->base.pending, nullptr) << "a collision sent a batch";
    Drain(owner);
    EXPECT_GE(owner->drained_blocks, 1);
    EXPECT_LT(owner->drained_blocks, kSlabs);
  }).join();
  Drain(owner);
  EXPECT_EQ(owner->drained_blocks, kSlabs) << "the rest went when the thread exited";
}

TEST_F(HeapEngineTest, DeadHeapsAreFlushedOnceAfterTheDecay) {
  int created;
  FakeHeap *h = Attach(&created);
  hak_heap_retire(&r_, h);
  hak_heap_flush_dead(&r_, h->base.died_ms, 0);
  EXPECT_EQ(h->flushes, 0) << "not due yet";
  hak_heap_flush_dead(&r_, h->base.died_ms + 3600001, 0);
  EXPECT_EQ(h->flushes, 1);
  hak_heap_flush_dead(&r_, h->base.died_ms + 7200002, 1);
  EXPECT_EQ(h->flushes, 1) << "flushed once until adopted again";
  EXPECT_EQ(Attach(&created), h);
  hak_heap_retire(&r_, h);
  hak_heap_flush_dead(&r_, 0, 1);
  EXPECT_EQ(h->flushes, 2) << "a forced pass flushes whatever the time";
}

// The fork child's repair: the forking thread's heap stays, dead heaps stay adoptable
// (each once: the old list may have been mid-change), every other heap is an orphan.
TEST_F(HeapEngineTest, ForkChildKeepsDeadHeapsAndOrphansTheRest) {
  int created;
  FakeHeap *self = Attach(&created);
  FakeHeap *live = Attach(&created);
  FakeHeap *dead = Attach(&created);
  FakeHeap *busy = Attach(&created);
  hak_heap_retire(&r_, dead);
  hak_heap_retire(&r_, busy);
  busy->base.state = HAK_HEAP_BUSY;  // another thread was collecting it at the fork
  r_.dead = &busy->base;             // and the old dead list is garbage: a cycle
  busy->base.next_dead = &busy->base;
  hak_heap_fork_child(&r_, self);
  EXPECT_EQ(self->base.state, HAK_HEAP_LIVE);
  EXPECT_EQ(live->base.state, HAK_HEAP_ORPHAN);
  EXPECT_EQ(busy->base.state, HAK_HEAP_ORPHAN);
  EXPECT_EQ(dead->base.state, HAK_HEAP_DEAD);
  int on_list = 0;
  for (hak_heap_t *h = r_.dead; h && on_list < 10; h = h->next_dead) on_list++;
  EXPECT_EQ(on_list, 1) << "only the really dead heap, once";
  EXPECT_EQ(Attach(&created), dead);
  FakeHeap *fresh = Attach(&created);
  EXPECT_EQ(created, 1) << "orphans are never adopted";
  EXPECT_NE(fresh, live);
  EXPECT_NE(fresh, busy);
  // A remote free into an orphan only queues.
  FakeSlab slab;
  void *block[2];
  int drains = live->drains;
  RemoteFree(&r_, live, &slab, block, kNow);
  EXPECT_EQ(live->drains, drains) << "nobody drains an orphan";
}

// Threads that attach, free into each other's retired heaps in batches, and retire,
// concurrently: every block is drained exactly once (run under --config=tsan too).
TEST_F(HeapEngineTest, ConcurrentRetireAndRemoteFreeDrainEveryBlockOnce) {
  constexpr int kRounds = 200;
  constexpr int kBlocks = 60;
  std::vector<std::vector<void *>> storage(kRounds, std::vector<void *>(kBlocks * 2));
  std::vector<FakeSlab> slabs(kRounds);
  std::vector<FakeHeap *> owners(kRounds);
  for (int r = 0; r < kRounds; r++) {
    std::thread([&, r] {
      int created;
      owners[r] = Attach(&created);
      std::thread freer([&] {
        for (int b = 0; b < kBlocks; b++) {
          // Batches of 8: seven go when full, the last four when the thread exits.
          RemoteFree(&r_, owners[r], &slabs[r], &storage[r][b * 2], HAK_REMOTE_BATCH_BYTES / 8);
        }
      });
      hak_heap_retire(&r_, owners[r]);
      freer.join();
    }).join();
  }
  int total = 0;
  for (hak_heap_t *h = r_.all; h; h = h->next_all) {
    FakeHeap *f = static_cast<FakeHeap *>(hak_heap_tier(&r_, h));
    Drain(f);  // what a thread that adopts it would do
    total += f->drained_blocks;
  }
  EXPECT_EQ(total, kRounds * kBlocks);
}

// The purge reclaims a live heap only once its owner has made no slow path for a whole
// pass, and then once until the owner's next slow path, unless remote frees wait again.
TEST_F(HeapEngineTest, APurgePassReclaimsOnlyIdleLiveHeaps) {
  int created;
  FakeHeap *h = Attach(&created);
  FakeSlab slab;
  void *blocks[2][2];
  RemoteFree(&r_, h, &slab, blocks[0], kNow);
  EXPECT_EQ(hak_heap_reclaim_idle(&r_, 0), 1) << "remote frees wait";
  EXPECT_EQ(h->reclaims, 0) << "the owner's attach was a slow path since the last pass";
  hak_heap_own(&h->base);  // the owner is active again
  hak_heap_disown(&h->base);
  hak_heap_reclaim_idle(&r_, 0);
  EXPECT_EQ(h->reclaims, 0);
  EXPECT_EQ(hak_heap_reclaim_idle(&r_, 0), 0) << "idle for a pass: reclaimed, nothing waits";
  EXPECT_EQ(h->reclaims, 1);
  EXPECT_EQ(h->drained_blocks, 1);
  hak_heap_reclaim_idle(&r_, 0);
  EXPECT_EQ(h->reclaims, 1) << "once per idle period";
  RemoteFree(&r_, h, &slab, blocks[1], kNow);
  hak_heap_reclaim_idle(&r_, 0);
  EXPECT_EQ(h->reclaims, 2) << "new remote frees into the idle heap";
  hak_heap_own(&h->base);  // a slow path in progress: the owner is marked busy
  hak_heap_reclaim_idle(&r_, 1);
  EXPECT_EQ(h->reclaims, 2) << "never while the owner is busy, even forced";
  hak_heap_disown(&h->base);
  hak_heap_reclaim_idle(&r_, 1);
  EXPECT_EQ(h->reclaims, 3) << "forced: whatever the owner did since";
  hak_heap_retire(&r_, h);
  hak_heap_reclaim_idle(&r_, 1);
  EXPECT_EQ(h->reclaims, 3) << "a dead heap is the collectors', not the purge's";
}

// The idle flush on the fake tier, whose bind records its TLS pointer: a forced pass parks
// the heap of a thread blocked in the kernel (here in read): its TLS pointer turns to the
// tier's parked heap and the park hook runs once; a thread on the CPU is left alone. The
// parked thread's next slow path binds its heap again.
FakeHeap g_parked;
void BindRecordingTls(void *t) {
  g_bound = static_cast<FakeHeap *>(t);
  g_bound->base.tls = reinterpret_cast<void **>(&g_bound);
}
void Park(void *t, uint64_t) { static_cast<FakeHeap *>(t)->parks++; }

// Attaches a heap and makes the slow paths after which its thread is identified (watched).
FakeHeap *AttachIdentified(hak_heap_registry_t *r) {
  auto *h = static_cast<FakeHeap *>(hak_heap_attach(r));
  for (int i = 0; i < HAK_HEAP_IDENTIFY_AFTER; i++) {
    hak_heap_own(&h->base);
    hak_heap_disown(&h->base);
  }
  return h;
}

TEST(HeapEngineParkTest, AForcedPassParksBlockedThreadsOnly) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "no idle flush under ThreadSanitizer";
#endif
  static hak_heap_ops_t ops = MakeOps();
  ops.bind = BindRecordingTls;
  ops.park = Park;
  ops.fingerprint = [](void *) -> uint64_t { return 0; };  // caches never change
  ops.parked = &g_parked;
  static hak_heap_registry_t r;
  ASSERT_EQ(hak_heap_registry_init(&r, &ops, nullptr), 0);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::atomic<FakeHeap *> blocked_heap{nullptr}, spinning_heap{nullptr};
  std::atomic<bool> spin{true};
  std::atomic<int> in_read{0};
  FakeHeap *bound_after_wake = nullptr, *rebound = nullptr, *bound_after_rebind = nullptr;
  std::thread blocked([&] {
    blocked_heap = AttachIdentified(&r);
    in_read = 1;
    char c;
    ASSERT_EQ(read(fds[0], &c, 1), 1);
    bound_after_wake = g_bound;
    rebound = static_cast<FakeHeap *>(hak_heap_rebind(&r, nullptr));
    bound_after_rebind = g_bound;
  });
  std::thread unidentified([&] {  // blocked too, but after its attach alone
    hak_heap_attach(&r);
    char c;
    ASSERT_EQ(read(fds[0], &c, 1), 1);
  });
  std::thread spinning([&] {
    spinning_heap = AttachIdentified(&r);
    while (spin.load()) {
    }
  });
  while (!in_read.load() || !spinning_heap.load()) std::this_thread::yield();
  hak_os_thread_t t;
  for (int i = 0; i < 2000; i++) {  // until the kernel shows it waiting in read
    if (hak_os_thread_state(blocked_heap.load()->base.tid, &t) == 0 && t.call == SYS_read) break;
    usleep(1000);
  }
  hak_heap_reclaim_idle(&r, 1);
  EXPECT_EQ(blocked_heap.load()->parks, 1) << "blocked in read: parked and flushed";
  EXPECT_EQ(spinning_heap.load()->parks, 0) << "on the CPU: left alone";
  int parks = 0;
  for (hak_heap_t *h = r.all; h; h = h->next_all)
    parks += hak_heap_tier(&r, h) == blocked_heap.load()
                 ? 0
                 : static_cast<FakeHeap *>(hak_heap_tier(&r, h))->parks;
  EXPECT_EQ(parks, 0) << "a thread not identified yet (one slow path) is not watched";
  hak_heap_reclaim_idle(&r, 1);
  EXPECT_EQ(blocked_heap.load()->parks, 1) << "parked once";
  spin = false;
  spinning.join();
  ASSERT_EQ(write(fds[1], "xx", 2), 2);
  blocked.join();
  unidentified.join();
  EXPECT_EQ(bound_after_wake, &g_parked) << "the thread woke to the parked heap";
  EXPECT_EQ(rebound, blocked_heap.load());
  EXPECT_EQ(bound_after_rebind, blocked_heap.load()) << "and its slow path bound its own";
  EXPECT_EQ(hak_heap_rebind(&r, spinning_heap.load()), nullptr) << "never parked";
  close(fds[0]);
  close(fds[1]);
}

// An owner changing its heap in slow paths while the purge reclaims it, forced, in a
// loop: the busy mark, the request and the membarrier keep the two apart (every change
// counted once; run under --config=tsan, which sees any overlap of the unsynchronised
// counter).
TEST_F(HeapEngineTest, TheHandshakeKeepsOwnerAndReclaimerApart) {
  int created;
  FakeHeap *h = Attach(&created);
  std::atomic<bool> done{false};
  long owner_changes = 0;
  std::thread owner([&] {
    for (int i = 0; i < 20000; i++) {
      hak_heap_own(&h->base);
      h->changes++;
      owner_changes++;
      hak_heap_disown(&h->base);
    }
    done = true;
  });
  while (!done) hak_heap_reclaim_idle(&r_, 1);
  owner.join();
  // Under load the owner may finish before any attempt finds it outside its slow path, so
  // reclaims during the run may be none; once it is done, a reclaim must succeed.
  long during = h->reclaims;
  hak_heap_reclaim_idle(&r_, 1);
  EXPECT_GT(h->reclaims, during) << "an owner outside its slow path is reclaimed";
  EXPECT_EQ(h->changes, owner_changes + h->reclaims);
}

// The capacity rules of heap/cache.h, on a cache alone (only cap and room change).
struct AdaptedCache {
  hak_cache_t c{nullptr, 0, 0, 0};
  hak_cache_adapt_t a{0, 0};
  explicit AdaptedCache(uint32_t cap) { hak_cache_set_cap(&c, cap); }
  void Miss(uint32_t max) { hak_cache_adapt_miss(&c, &a, max); }
  void Overflow(uint32_t min, uint32_t max) { hak_cache_adapt_overflow(&c, &a, min, max); }
};

TEST(CacheAdaptTest, ASecondMissInARowDoublesTheCapacityUpToTheMax) {
  AdaptedCache t(16);
  t.Miss(100);
  EXPECT_EQ(t.c.cap, 16u) << "one miss is a cold start, not a pattern";
  t.Miss(100);
  EXPECT_EQ(t.c.cap, 32u);
  t.Miss(100);
  EXPECT_EQ(t.c.cap, 64u);
  t.Miss(100);
  EXPECT_EQ(t.c.cap, 100u) << "capped at the max";
  t.Miss(100);
  EXPECT_EQ(t.c.cap, 100u);
  EXPECT_EQ(t.c.room, 100) << "the room moves with the capacity";
}

TEST(CacheAdaptTest, AnOverflowAfterARefillDoublesTheCapacity) {
  AdaptedCache t(16);
  for (int swing = 0; swing < 3; swing++) {  // empty, then full, then empty ...
    t.Miss(1000);
    t.Overflow(16, 1000);
  }
  EXPECT_EQ(t.c.cap, 128u) << "each swing between empty and full doubles it";
  t.Miss(100);
  t.Overflow(16, 100);
  EXPECT_EQ(t.c.cap, 128u) << "never shrunk to a max below it by growth";
}

TEST(CacheAdaptTest, OverflowsWithNoRefillBetweenHalveTheCapacityDownToTheMin) {
  AdaptedCache t(16);
  t.Miss(1000);
  t.Miss(1000);
  t.Miss(1000);
  ASSERT_EQ(t.c.cap, 64u);
  t.Overflow(16, 1000);  // right after the misses: a swing, grows
  EXPECT_EQ(t.c.cap, 128u);
  t.Overflow(16, 1000);
  EXPECT_EQ(t.c.cap, 128u) << "one overflow alone is no pattern";
  t.Overflow(16, 1000);
  EXPECT_EQ(t.c.cap, 64u);
  for (int i = 0; i < 10; i++) t.Overflow(16, 1000);
  EXPECT_EQ(t.c.cap, 16u) << "never below the min";
  t.Miss(1000);
  t.Overflow(16, 1000);
  EXPECT_EQ(t.c.cap, 32u) << "a refill in between makes the next overflow a swing again";
}

TEST(CacheAdaptTest, TheCapacityStopsAtWhatTheCacheCanCount) {
  AdaptedCache t(HAK_CACHE_MAX_CAP + 100);
  EXPECT_EQ(t.c.cap, HAK_CACHE_MAX_CAP);
  EXPECT_EQ(t.c.room, HAK_CACHE_MAX_CAP) << "the room follows the capacity it got";
}

// The alignment the fast frees test: the largest power of two dividing the class size,
// at most the boundary the tier's blocks are laid out from.
TEST(CacheAlignTest, AClassIsAlignedToItsSizesPowerOfTwoUpToTheLayoutsBoundary) {
  EXPECT_EQ(hak_cache_align_of(16, 128), 15);
  EXPECT_EQ(hak_cache_align_of(48, 128), 15) << "48 = 3 x 16";
  EXPECT_EQ(hak_cache_align_of(64, 128), 63);
  EXPECT_EQ(hak_cache_align_of(96, 128), 31);
  EXPECT_EQ(hak_cache_align_of(256, 128), 127) << "Tiny blocks start on 128-byte steps";
  EXPECT_EQ(hak_cache_align_of(1280, 65536), 255);
  EXPECT_EQ(hak_cache_align_of(4096, 65536), 4095);
  EXPECT_EQ(hak_cache_align_of(65536, 65536), 65535);
}

TEST(CacheAlignTest, AFastFreeTakesOnlyPointersOnTheClasssAlignment) {
  hak_cache_t c{nullptr, 0, 0, hak_cache_align_of(64, 128)};
  alignas(128) static char block[256];
  EXPECT_TRUE(hak_cache_aligned(&c, block));
  EXPECT_TRUE(hak_cache_aligned(&c, block + 64));
  EXPECT_EQ(hak_cache_aligned(&c, block + 16), !HAK_HARDENING) << "refused when hardened";
  EXPECT_EQ(hak_cache_aligned(&c, block + 8), !HAK_HARDENING);
}

}  // namespace
