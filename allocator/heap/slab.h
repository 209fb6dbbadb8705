/* The slab header both tiers share, and the slab operations of the engine: a Tiny slab
 * (64 KiB, header inside it) and a Pool span (1..4 pages, header in the page registry)
 * both begin with HAK_SLAB_FIELDS, so one avail list, one return of a block and one
 * take from a free list serve both. Owner-only: every function here is called by the
 * thread that owns the slab (or the collector holding its dead heap BUSY).
 *
 * Counting: a slab's blocks are carved or not; a carved block is on `free`, or it is
 * counted in `used` (held by the user, in a thread cache, or on the remote queue). So
 * used + |free| = carved <= capacity, and a slab whose `used` drops to 0 while it is
 * not its heap's current slab has every carved block on `free`: the tier releases it. */
#ifndef HAK_ALLOCATOR_HEAP_SLAB_H
#define HAK_ALLOCATOR_HEAP_SLAB_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "allocator/internal/config.h"
#include "allocator/internal/link.h"
#include "allocator/internal/list.h"
#include "allocator/internal/log.h"

/* Where a slab stands with its heap. */
enum {
  HAK_SLAB_FULL = 0,    /* on no list: no free block, or not owned */
  HAK_SLAB_CURRENT = 1, /* the heap's current slab of its class (refills come from it) */
  HAK_SLAB_AVAIL = 2,   /* on the heap's avail list of its class: has free blocks */
};

/* Debug builds: the byte freed and never-used blocks are filled with. */
#define HAK_FILL_FREE 0xdf

struct hak_slab;

/* 56 bytes, the start of every tier's slab header (declare a tier header as
 * `union { hak_slab_t slab; struct { HAK_SLAB_FIELDS }; };` then its own fields). */
#define HAK_SLAB_FIELDS                                                               \
  void *owner;       /* owning tier heap; NULL while the slab is free */              \
  void *free;        /* owner-only free list of carved blocks, oldest return first */ \
  void *free_tail;   /* its last block (meaningless while free is NULL) */            \
  uint32_t used;     /* carved blocks not on `free` (see the counting above) */       \
  uint32_t carved;   /* blocks ever carved; grows only; read by other threads' frees  \
                        (relaxed atomics) to refuse blocks never handed out */        \
  uint32_t capacity; /* blocks the slab can hold */                                   \
  uint16_t cls;      /* size class in the tier's table */                             \
  uint8_t state;     /* HAK_SLAB_FULL / _CURRENT / _AVAIL */                          \
  uint8_t kind;      /* the tier's (Pool: registry entry kind) */                     \
  struct hak_slab *avail_prev, *avail_next; /* avail list, or a tier's free-slab list */

typedef struct hak_slab {
  HAK_SLAB_FIELDS
} hak_slab_t;

HAK_STATIC_ASSERT(sizeof(hak_slab_t) == 56, "the shared slab header is 56 bytes");

/* The second cache line of every slab header, the one other threads write: a tier header
 * puts `uintptr_t remote; <slab pointer> pending_next;` at HAK_SLAB_REMOTE_OFFSET (and
 * asserts it), so the owner's first line is never shared. */
#define HAK_SLAB_REMOTE_OFFSET 64
typedef struct {
  uintptr_t remote;   /* remote-free queue (internal/remote.h) */
  void *pending_next; /* the owner's pending list of slabs with remote frees */
} hak_slab_remote_t;

HAK_INLINE hak_slab_remote_t *hak_slab_remote(hak_slab_t *s) {
  return (hak_slab_remote_t *)((char *)s + HAK_SLAB_REMOTE_OFFSET);
}

HAK_INLINE void hak_slab_avail_push(hak_slab_t **list, hak_slab_t *s) {
  HAK_LIST_PUSH(list, s);
  s->state = HAK_SLAB_AVAIL;
}

HAK_INLINE void hak_slab_avail_remove(hak_slab_t **list, hak_slab_t *s) {
  HAK_LIST_REMOVE(list, s);
  s->state = HAK_SLAB_FULL;
}

/* Whether `next`, a link read from a block of the slab whose blocks lie in
 * [lo, lo + len), fails its check: outside the slab or not 16-byte aligned (NULL, the end
 * of the list, passes; nothing fails with HAKMEM_HARDEN=0 or in HARDENING=0 builds). */
HAK_INLINE int hak_slab_link_bad(const void *next, uintptr_t lo, uintptr_t len) {
  return HAK_HARDENING && HAK_UNLIKELY(((uintptr_t)next - lo >= len) | ((uintptr_t)next & 15)) &&
         next != NULL && hak_link_on;
}

/* The chain head .. tail of `count` blocks of s (linked as a free list, tail's link
 * unread) goes onto the end of s's free list at once, so that blocks are taken again in
 * the order they came back (see hak_slab_take_free); `avail` is the owner's avail list
 * of the slab's class, and its blocks lie in [lo, lo + len). Returns 1 when the slab has
 * no block out any more and is on no list: the tier then releases it. A slab that gets
 * its first free blocks joins the list. */
HAK_INLINE int hak_slab_return_chain(hak_slab_t **avail, hak_slab_t *s, void *head, void *tail,
                                     uint32_t count, uintptr_t lo, uintptr_t len) {
  /* More blocks back than out: a block came back twice (each copy went through a cache). */
  if (HAK_UNLIKELY(s->used < count) && hak_link_on) hak_link_double_free(head);
  hak_link_write(tail, NULL);
  if (s->free) {
    /* Written through: checked as the head is (a Tiny header is in reach of an overflow). */
    if (s->free_tail == NULL || hak_slab_link_bad(s->free_tail, lo, len))
      hak_link_corrupt("corrupted free list tail of slab", s);
    hak_link_write(s->free_tail, head);
  } else {
    s->free = head;
  }
  s->free_tail = tail;
  s->used -= count;
  if (s->used == 0 && s->state != HAK_SLAB_CURRENT) {
    if (s->state == HAK_SLAB_AVAIL) hak_slab_avail_remove(avail, s);
    return 1;
  }
  if (s->state == HAK_SLAB_FULL) hak_slab_avail_push(avail, s);
  return 0;
}

/* One block b back: a chain of one. */
HAK_INLINE int hak_slab_return_block(hak_slab_t **avail, hak_slab_t *s, void *b, uintptr_t lo,
                                     uintptr_t len) {
  return hak_slab_return_chain(avail, s, b, b, 1, lo, len);
}

/* Moves up to `want` blocks from the front of s's free list onto the list at *head (a
 * thread cache or list), in their order; returns how many, already counted in `used`.
 * The slab's blocks lie in [lo, lo + len): each link is checked before it is followed.
 *
 * Order: a slab's blocks are carved in address order, and every list keeps the order
 * blocks come back in (a remote batch is built oldest first, the drain links batches
 * oldest first, a return appends, a take splices), so blocks are taken again in the
 * order they were freed. A thread fed by another one then gets its blocks back in the
 * order it handed them out, address order forever, and a walk of a free list is a run of
 * neighbouring lines the prefetcher streams in. Pushing each block onto the front, as
 * before, reversed some segments and cut others at every refill and drain: after a few
 * rounds a producer walked its blocks in nearly random order, a cache miss per block
 * (xbatch 4096: 98% of blocks came from such walks; 30 M ops/s, now 108 M). */
HAK_INLINE uint32_t hak_slab_take_free(hak_slab_t *s, void **head, uint32_t want, uintptr_t lo,
                                       uintptr_t len) {
  /* In a Tiny slab the head lies in the header, which an overflow can reach (tiny.h). */
  if (hak_slab_link_bad(s->free, lo, len)) hak_link_corrupt("corrupted free list head of slab", s);
  void *first = s->free, *last = NULL, *b = first;
  uint32_t got = 0;
  while (got < want && b) {
    void *next = hak_link_read(b);
    if (hak_slab_link_bad(next, lo, len)) hak_link_corrupt("corrupted free list link in block", b);
    last = b;
    b = next;
    got++;
  }
  if (got) {
    s->free = b;
    hak_link_write(last, *head);
    *head = first;
  }
  s->used += got;
  return got;
}

/* Carves up to `want` never-used blocks of s onto the list at *head: block i of the
 * slab is at base + i * stride. Debug builds fill the first `fill` bytes of each with
 * HAK_FILL_FREE (checked when the block is handed out). Returns how many, already
 * counted in `used`. */
HAK_INLINE uint32_t hak_slab_carve(hak_slab_t *s, char *base, size_t stride, size_t fill,
                                   void **head, uint32_t want) {
  uint32_t got = 0;
  char *first = base + (size_t)s->carved * stride, *b = first;
  while (got < want && s->carved < s->capacity) {
    __atomic_store_n(&s->carved, s->carved + 1, __ATOMIC_RELAXED);
    if (HAK_CHECKS) hak_fill_bytes(b, HAK_FILL_FREE, fill);
    if (got) hak_link_write(b - stride, b);
    b += stride;
    got++;
  }
  if (got) {
    hak_link_write(b - stride, *head);
    *head = first;
  }
  s->used += got;
  return got;
}

HAK_INLINE int hak_slab_exhausted(const hak_slab_t *s) {
  return s->free == NULL && s->carved == s->capacity;
}

/* Debug builds: checks the counting invariant above (walking the free list), at refill
 * and overflow; release builds compile it to nothing. */
HAK_INLINE void hak_slab_validate(const hak_slab_t *s) {
  if (!HAK_CHECKS) return;
  uint32_t on_free = 0;
  for (void *b = s->free; b && on_free <= s->capacity; b = hak_link_read(b)) on_free++;
  HAK_ASSERT(s->carved <= s->capacity, "slab carved past its capacity at", s);
  HAK_ASSERT(s->used + on_free == s->carved, "slab counts disagree (used + free != carved) at", s);
  HAK_ASSERT(s->state <= HAK_SLAB_AVAIL, "slab in no known state at", s);
}

#endif /* HAK_ALLOCATOR_HEAP_SLAB_H */
