/* Lock-free pieces shared by the Tiny and Pool tiers: the per-slab remote-free queue and
 * the per-heap list of slabs with pending remote frees, plus the life cycle of a heap.
 *
 * A slab's remote word holds the head of an intrusive chain of freed blocks, with bit 0
 * set while the slab sits in its owner's pending list. Flag and chain change in one atomic
 * operation, so a slab is queued exactly once per batch: the pusher that finds the flag
 * clear queues it; the owner's take clears the flag and empties the chain together. */
#ifndef HAK_ALLOCATOR_INTERNAL_REMOTE_H
#define HAK_ALLOCATOR_INTERNAL_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/internal/config.h"
#include "allocator/internal/link.h"

#define HAK_REMOTE_FLAG ((uintptr_t)1)

/* A remote queue is a stack of batches, each a chain of blocks of one slab linked through
 * their first words (internal/link.h). The first block of a batch also carries, in its
 * second word, the batch's descriptor: its tail and its length, encoded as a link is (so
 * the queue is never walked block by block to be counted: a drain reads two lines a
 * batch, not one a block, and the blocks stay in the order they were freed). Every block
 * of the tiers has at least 16 bytes. */
#define HAK_REMOTE_DESC_SHIFT 48 /* the length above any user-space address bit */

HAK_INLINE void hak_remote_desc_write(void *head, const void *tail, uint32_t count) {
  hak_link_write((char *)head + sizeof(void *),
                 (const void *)((uintptr_t)tail | (uintptr_t)count << HAK_REMOTE_DESC_SHIFT));
}

/* The tail of the batch that starts at head; its length in *count. */
HAK_INLINE void *hak_remote_desc_read(const void *head, uint32_t *count) {
  uintptr_t d = (uintptr_t)hak_link_read((const char *)head + sizeof(void *));
  *count = (uint32_t)(d >> HAK_REMOTE_DESC_SHIFT);
  return (void *)(d & (((uintptr_t)1 << HAK_REMOTE_DESC_SHIFT) - 1));
}

/* Pushes the batch head .. tail of `count` blocks in one exchange: the blocks are linked
 * as a free list; tail's link and head's descriptor are written here. Returns 1 when the
 * caller must queue the slab on its owner's pending list. Acquire as well as release: a
 * pusher that finds the flag clear must see everything the owner did before its take
 * (including its last read of the slab's pending link, which this pusher is about to
 * overwrite). */
HAK_INLINE int hak_remote_push_chain(uintptr_t *remote, void *head, void *tail, uint32_t count) {
  hak_remote_desc_write(head, tail, count);
  uintptr_t old = __atomic_load_n(remote, __ATOMIC_RELAXED);
  do {
    hak_link_write(tail, (void *)(old & ~HAK_REMOTE_FLAG));
  } while (!__atomic_compare_exchange_n(remote, &old, (uintptr_t)head | HAK_REMOTE_FLAG, 1,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
  return (old & HAK_REMOTE_FLAG) == 0;
}

/* Pushes one block: a batch of one. */
HAK_INLINE int hak_remote_push(uintptr_t *remote, void *block) {
  return hak_remote_push_chain(remote, block, block, 1);
}

/* Owner only: takes the whole chain and clears the flag. */
HAK_INLINE void *hak_remote_take(uintptr_t *remote) {
  return (void *)(__atomic_exchange_n(remote, 0, __ATOMIC_ACQ_REL) & ~HAK_REMOTE_FLAG);
}

/* Multi-producer push of `node` onto `*head`, linking through `*link` (a field of node). */
HAK_INLINE void hak_pending_push(void **head, void *node, void **link) {
  void *old = __atomic_load_n(head, __ATOMIC_RELAXED);
  do {
    *link = old;
  } while (!__atomic_compare_exchange_n(head, &old, node, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
}

/* Owner only: takes the whole pending list. */
HAK_INLINE void *hak_pending_take(void **head) {
  return __atomic_exchange_n(head, NULL, __ATOMIC_ACQ_REL);
}

/* Heap life cycle: LIVE (a thread uses it), DEAD (its thread exited; adoptable and
 * collectable), BUSY (another thread is draining its pending list), ORPHAN (a fork child
 * inherited it from a thread that does not exist there, possibly half-way through a
 * change: never adopted, never collected; frees into its slabs stay queued). */
enum { HAK_HEAP_LIVE = 1, HAK_HEAP_DEAD = 2, HAK_HEAP_BUSY = 3, HAK_HEAP_ORPHAN = 4 };

HAK_INLINE int hak_heap_transition(int *state, int from, int to) {
  return __atomic_compare_exchange_n(state, &from, to, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

#endif /* HAK_ALLOCATOR_INTERNAL_REMOTE_H */
