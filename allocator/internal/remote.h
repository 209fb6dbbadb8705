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

/* Pushes the chain head .. tail in one exchange (a batch of remote frees): the blocks are
 * linked through their first words, encoded as in internal/link.h; tail's link is written
 * here. Returns 1 when the caller must queue the slab on its owner's pending list. Acquire
 * as well as release: a pusher that finds the flag clear must see everything the owner did
 * before its take (including its last read of the slab's pending link, which this pusher
 * is about to overwrite). */
HAK_INLINE int hak_remote_push_chain(uintptr_t *remote, void *head, void *tail) {
  uintptr_t old = __atomic_load_n(remote, __ATOMIC_RELAXED);
  do {
    hak_link_write(tail, (void *)(old & ~HAK_REMOTE_FLAG));
  } while (!__atomic_compare_exchange_n(remote, &old, (uintptr_t)head | HAK_REMOTE_FLAG, 1,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
  return (old & HAK_REMOTE_FLAG) == 0;
}

/* Pushes one block. */
HAK_INLINE int hak_remote_push(uintptr_t *remote, void *block) {
  return hak_remote_push_chain(remote, block, block);
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
