// Encoded free-list links (internal/link.h) through the engine's lists: a thread cache,
// a slab free list and a remote queue, without the rest of the allocator.
#include "allocator/internal/link.h"

#include <stdint.h>

#include "allocator/heap/cache.h"
#include "allocator/heap/heap.h"
#include "allocator/heap/slab.h"
#include "gtest/gtest.h"

namespace {

constexpr uintptr_t kKey = 0x5a5aa5a5f00dbeefu;
constexpr uintptr_t kMask = HAK_LINK_HIGH_BITS | 15;

// 16 blocks of 64 bytes, the slab of these tests.
alignas(4096) char g_blocks[16][64];

// An address `bytes` away from the first block (outside the array when negative).
uintptr_t Lo() { return reinterpret_cast<uintptr_t>(g_blocks[0]); }
void *Near(intptr_t bytes) {
  return reinterpret_cast<void *>(reinterpret_cast<uintptr_t>(g_blocks[0]) + bytes);
}

uintptr_t Raw(const void *block) { return *static_cast<const uintptr_t *>(block); }

class LinkTest : public ::testing::Test {
 protected:
  void SetUp() override { hak_links_init(kKey, 1, kMask, kMask); }
  void TearDown() override { hak_links_init(0, 0, 0, 0); }
};

TEST_F(LinkTest, ALinkIsStoredEncodedWithTheKeyAndItsOwnAddress) {
  hak_link_write(g_blocks[0], g_blocks[1]);
  EXPECT_NE(Raw(g_blocks[0]), reinterpret_cast<uintptr_t>(g_blocks[1]));
  EXPECT_EQ(Raw(g_blocks[0]), reinterpret_cast<uintptr_t>(g_blocks[1]) ^ kKey ^
                                  reinterpret_cast<uintptr_t>(g_blocks[0]));
  EXPECT_EQ(hak_link_read(g_blocks[0]), g_blocks[1]);
  // The same word copied into another block decodes to something else.
  *reinterpret_cast<uintptr_t *>(g_blocks[2]) = Raw(g_blocks[0]);
  EXPECT_NE(hak_link_read(g_blocks[2]), g_blocks[1]);
  hak_link_write(g_blocks[0], nullptr);
  EXPECT_EQ(hak_link_read(g_blocks[0]), nullptr);
}

TEST_F(LinkTest, ACacheKeepsItsBlocksInOrder) {
  hak_cache_t c = {nullptr, 16, 16, 0};
  for (int i = 0; i < 4; i++) EXPECT_FALSE(hak_cache_push(&c, g_blocks[i]));
  for (int i = 3; i >= 0; i--) EXPECT_EQ(hak_cache_pop(&c, kMask), g_blocks[i]);
  EXPECT_EQ(hak_cache_pop(&c, kMask), nullptr);
  EXPECT_EQ(c.room, 16);
}

void PopForgedLink() {
  static char target[64] __attribute__((aligned(64)));
  hak_cache_t c = {nullptr, 16, 16, 0};
  hak_cache_push(&c, g_blocks[0]);
  hak_cache_push(&c, g_blocks[1]);
  *reinterpret_cast<void **>(g_blocks[1]) = target;  // a plain pointer written
  hak_cache_pop(&c, kMask);
}

TEST_F(LinkTest, AForgedCacheLinkAbortsBeforeItIsFollowed) {
  EXPECT_DEATH(PopForgedLink(), "^hakmem: corrupted free list link in block 0x[0-9a-f]+\n$");
}

void PushTwice() {
  hak_cache_t c = {nullptr, 16, 16, 0};
  hak_cache_push(&c, g_blocks[0]);
  hak_cache_push(&c, g_blocks[0]);
}

TEST_F(LinkTest, ADoubleFreeAtTheHeadAborts) {
  EXPECT_DEATH(PushTwice(), "^hakmem: double free of 0x[0-9a-f]+\n$");
}

TEST_F(LinkTest, SlabLinksMustStayInTheirSlab) {
  uintptr_t lo = reinterpret_cast<uintptr_t>(g_blocks[0]);
  uintptr_t len = sizeof g_blocks;
  EXPECT_FALSE(hak_slab_link_bad(nullptr, lo, len));
  EXPECT_FALSE(hak_slab_link_bad(g_blocks[15], lo, len));
  EXPECT_TRUE(hak_slab_link_bad(Near(16 * 64), lo, len)) << "one past the slab";
  EXPECT_TRUE(hak_slab_link_bad(Near(-64), lo, len)) << "before the slab";
  EXPECT_TRUE(hak_slab_link_bad(g_blocks[3] + 8, lo, len)) << "misaligned";
  hak_links_init(0, 0, 0, 0);
  EXPECT_FALSE(hak_slab_link_bad(Near(16 * 64), lo, len)) << "HAKMEM_HARDEN=0";
}

TEST_F(LinkTest, TakingAForgedSlabFreeListAborts) {
  hak_slab_t s = {};
  s.capacity = 16;
  s.carved = 16;
  s.used = 16;
  hak_slab_t *avail = nullptr;
  for (int i = 0; i < 3; i++) hak_slab_return_block(&avail, &s, g_blocks[i], Lo(), sizeof g_blocks);
  EXPECT_EQ(s.used, 13u);
  uintptr_t lo = reinterpret_cast<uintptr_t>(g_blocks[0]);
  void *head = nullptr;
  EXPECT_EQ(hak_slab_take_free(&s, &head, 1, lo, sizeof g_blocks), 1u);
  EXPECT_EQ(head, g_blocks[0]) << "the first block returned is the first taken";
  EXPECT_DEATH(
      {
        hak_link_write(g_blocks[1], Near(16 * 64));  // well encoded, but off the slab
        hak_slab_take_free(&s, &head, 2, lo, sizeof g_blocks);
      },
      "^hakmem: corrupted free list link in block 0x[0-9a-f]+\n$");
}

// A Tiny slab's free-list head lives in its header, where an overflow from the block
// before can write it: the head is checked like every link before it is followed.
TEST_F(LinkTest, AForgedSlabFreeListHeadAborts) {
  hak_slab_t s = {};
  s.capacity = s.carved = s.used = 16;
  s.free = Near(16 * 64);  // what an overflow into the header could leave there
  uintptr_t lo = reinterpret_cast<uintptr_t>(g_blocks[0]);
  void *head = nullptr;
  EXPECT_DEATH(hak_slab_take_free(&s, &head, 1, lo, sizeof g_blocks),
               "^hakmem: corrupted free list head of slab 0x[0-9a-f]+\n$");
}

// Its tail too: a return writes through it.
TEST_F(LinkTest, AForgedSlabFreeListTailAborts) {
  hak_slab_t s = {};
  s.capacity = s.carved = s.used = 16;
  hak_slab_t *avail = nullptr;
  hak_slab_return_block(&avail, &s, g_blocks[0], Lo(), sizeof g_blocks);
  EXPECT_EQ(s.free_tail, g_blocks[0]);
  hak_slab_return_block(&avail, &s, g_blocks[1], Lo(), sizeof g_blocks);
  EXPECT_EQ(hak_link_read(g_blocks[0]), g_blocks[1]) << "appended";
  s.free_tail = Near(-64);
  EXPECT_DEATH(hak_slab_return_block(&avail, &s, g_blocks[2], Lo(), sizeof g_blocks),
               "^hakmem: corrupted free list tail of slab 0x[0-9a-f]+\n$");
  s.free_tail = nullptr;
  EXPECT_DEATH(hak_slab_return_block(&avail, &s, g_blocks[2], Lo(), sizeof g_blocks),
               "^hakmem: corrupted free list tail of slab 0x[0-9a-f]+\n$");
}

void ReturnTwice() {
  hak_slab_t s = {};
  s.capacity = s.carved = 16;
  s.used = 1;
  s.state = HAK_SLAB_CURRENT;
  hak_slab_t *avail = nullptr;
  hak_slab_return_block(&avail, &s, g_blocks[0], Lo(), sizeof g_blocks);
  hak_slab_return_block(&avail, &s, g_blocks[0], Lo(), sizeof g_blocks);
}

TEST_F(LinkTest, ASlabGettingMoreBlocksBackThanItGaveOutAborts) {
  EXPECT_DEATH(ReturnTwice(), "^hakmem: double free of 0x[0-9a-f]+\n$");
}

// The drain of a remote queue checks every link against its slab's bounds.
struct TestSlab {
  union {
    hak_slab_t slab;
    struct {
      HAK_SLAB_FIELDS
    };
  };
  char pad[HAK_SLAB_REMOTE_OFFSET - sizeof(hak_slab_t)];
  uintptr_t remote;
  void *pending_next;
};

int g_drained;
void *g_head, *g_tail;
void Put(void *, hak_slab_t *, void *head, void *tail, uint32_t count) {
  g_drained += static_cast<int>(count);
  g_head = head;
  g_tail = tail;
}
void Bounds(hak_slab_t *, uintptr_t *lo, uintptr_t *len) {
  *lo = reinterpret_cast<uintptr_t>(g_blocks[0]);
  *len = sizeof g_blocks;
}

TEST_F(LinkTest, ADrainFollowsGoodLinksAndAbortsOnABadOne) {
  static TestSlab ts;
  static hak_heap_t h;
  auto queue = [](int n) {
    for (int i = 0; i < n; i++) {
      if (hak_remote_push(&ts.remote, g_blocks[i])) {
        hak_pending_push(&h.pending, &ts, &ts.pending_next);
      }
    }
  };
  ts.capacity = 64;
  queue(4);
  g_drained = 0;
  hak_heap_drain(&h, nullptr, Put, Bounds);
  EXPECT_EQ(g_drained, 4);
  EXPECT_EQ(g_head, g_blocks[0]) << "the chain in the order the blocks were freed";
  EXPECT_EQ(g_tail, g_blocks[3]);
  EXPECT_EQ(hak_link_read(g_blocks[0]), g_blocks[1]) << "handed over linked as a free list";
  EXPECT_DEATH(
      {
        queue(4);
        hak_link_write(g_blocks[3], Near(-64));  // the head's link leaves the slab
        hak_heap_drain(&h, nullptr, Put, Bounds);
      },
      "^hakmem: corrupted remote free queue link in block 0x[0-9a-f]+\n$");
}

// Batches pushed whole: the drain reads each one's descriptor (tail and length) instead
// of walking its blocks, and hands the queue over as one chain.
TEST_F(LinkTest, ADrainReadsBatchesByTheirDescriptors) {
  static TestSlab ts;
  static hak_heap_t h;
  ts.capacity = 16;
  for (int i = 0; i < 3; i++) hak_link_write(g_blocks[i], g_blocks[i + 1]);  // 0 -> 1 -> 2 -> 3
  ASSERT_TRUE(hak_remote_push_chain(&ts.remote, g_blocks[0], g_blocks[3], 4));
  hak_pending_push(&h.pending, &ts, &ts.pending_next);
  hak_link_write(g_blocks[5], g_blocks[6]);  // 5 -> 6, then the first batch
  EXPECT_FALSE(hak_remote_push_chain(&ts.remote, g_blocks[5], g_blocks[6], 2));
  uint32_t n = 0;
  EXPECT_EQ(hak_remote_desc_read(g_blocks[5], &n), g_blocks[6]);
  EXPECT_EQ(n, 2u);
  g_drained = 0;
  hak_heap_drain(&h, nullptr, Put, Bounds);
  EXPECT_EQ(g_drained, 6);
  EXPECT_EQ(g_head, g_blocks[0]) << "the first batch pushed first";
  EXPECT_EQ(g_tail, g_blocks[6]);
  EXPECT_EQ(hak_link_read(g_blocks[3]), g_blocks[5]) << "one batch linked to the next";
}

// A descriptor that names a tail outside the slab, or more blocks than the slab holds,
// is refused before anything it names is followed.
TEST_F(LinkTest, ADrainAbortsOnABadDescriptor) {
  static TestSlab ts;
  static hak_heap_t h;
  ts.capacity = 16;
  auto drain_with = [](void *tail, uint32_t count) {
    ts.remote = 0;
    if (hak_remote_push(&ts.remote, g_blocks[8]))
      hak_pending_push(&h.pending, &ts, &ts.pending_next);
    hak_remote_desc_write(g_blocks[8], tail, count);
    hak_heap_drain(&h, nullptr, Put, Bounds);
  };
  EXPECT_DEATH(drain_with(Near(-64), 1),
               "^hakmem: corrupted remote free queue link in block 0x[0-9a-f]+\n$");
  EXPECT_DEATH(drain_with(g_blocks[8], 17),
               "^hakmem: corrupted remote free queue link in block 0x[0-9a-f]+\n$");
  EXPECT_DEATH(drain_with(g_blocks[8], 0),
               "^hakmem: corrupted remote free queue link in block 0x[0-9a-f]+\n$");
  g_drained = 0;
  drain_with(g_blocks[8], 1);
  EXPECT_EQ(g_drained, 1) << "the same batch, described truly";
}

}  // namespace
