/* A thread's cache of one size class, the same for Tiny and Pool: a singly linked list
 * through the blocks' first word (encoded, internal/link.h), 16 bytes so the fast paths index
 * an array of them with one shift. It holds cap - room blocks; counting the room down
 * lets a push test for overflow with the flags of its own decrement. Owner thread only,
 * except `align`, which never changes after the heap's initialisation. */
#ifndef HAK_ALLOCATOR_HEAP_CACHE_H
#define HAK_ALLOCATOR_HEAP_CACHE_H

#include <stdint.h>

#include "allocator/internal/config.h"
#include "allocator/internal/link.h"

typedef struct {
  void *head;   /* the list */
  int32_t room; /* blocks that still fit; negative once it holds more than cap */
  uint16_t cap; /* capacity in blocks (the tier adapts it, at most HAK_CACHE_MAX_CAP) */
  /* Address bits every block start of the class has clear (the largest power of two
   * dividing the class size, as far as the tier's layout guarantees it, less one): the
   * fast frees refuse a pointer with any of them set, so that an interior pointer such as
   * p + 16 of a 64-byte block goes to the slow path, which refuses it (hak_cache_aligned).
   * 0 in the tiers' empty heaps, whose caches own no block. */
  uint16_t align;
} hak_cache_t;

#define HAK_CACHE_MAX_CAP 0xffff

HAK_STATIC_ASSERT(sizeof(hak_cache_t) == 16, "a cache is 16 bytes: indexed with a shift");

/* What the n caches of another thread hold, as a hash of their heads and rooms: the idle
 * flush's sign that the thread used none of them since the last look (heap/heap.h). Read
 * racily, while the owner may be changing them: a torn reading only looks like use. */
HAK_INLINE uint64_t hak_cache_fingerprint(const hak_cache_t *caches, unsigned n) {
  uint64_t h = 0;
  for (unsigned i = 0; i < n; i++) {
    uintptr_t head = (uintptr_t)__atomic_load_n(&caches[i].head, __ATOMIC_RELAXED);
    uint32_t room = (uint32_t)__atomic_load_n(&caches[i].room, __ATOMIC_RELAXED);
    h = (h ^ head ^ ((uint64_t)room << 48)) * 0x9e3779b97f4a7c15ull;
  }
  return h;
}

/* How the tiers' size tables store a class c: 8 * c, which hak_cache_at8 scales by 2 to
 * the offset of c's 16-byte cache (and / HAK_CACHE_C8(1) turns back into c). */
#define HAK_CACHE_C8(c) (8 * (c))

/* The cache of class c in an array of caches, from HAK_CACHE_C8(c): scaled by 2 in the
 * address itself, where the class would take a shift. */
HAK_INLINE hak_cache_t *hak_cache_at8(hak_cache_t *caches, unsigned c8) {
  return (hak_cache_t *)((char *)caches + 2 * (uintptr_t)c8);
}

/* The fast paths' pop: the first block, or NULL when the cache is empty. The link to the
 * next block is checked against `mask` (the tier's hak_link_*_mask) before it becomes the
 * head; one that fails leaves the cache as it is and returns NULL, a miss: the slow path
 * pops the same block with hak_cache_pop, which reports it. The fast paths so make no
 * call but tail calls and need no stack frame (a call to the reporting function cost
 * malloc and free one each). */
HAK_INLINE void *hak_cache_take(hak_cache_t *c, uintptr_t mask) {
  void *p = c->head;
  if (HAK_LIKELY(p != NULL)) {
    void *next = hak_link_read(p);
    if (hak_link_bad(p, next, mask)) return NULL;
    c->head = next;
    c->room++;
  }
  return p;
}

/* The slow paths' pop: as hak_cache_take, but a link that fails its check aborts with a
 * message naming the block. */
HAK_INLINE void *hak_cache_pop(hak_cache_t *c, uintptr_t mask) {
  void *p = hak_cache_take(c, mask);
  if (HAK_UNLIKELY(p == NULL) && c->head != NULL) {
    hak_link_corrupt("corrupted free list link in block", c->head);
  }
  return p;
}

/* Pushes the chain head .. tail of `count` blocks (linked as a free list, tail's link
 * written here) in front of the cache. A head that already is the cache's first block is
 * a double free: caught here for the price of a compare with a value the push loads
 * anyway. Returns nonzero when the cache now holds more than its capacity (the caller
 * trims it). Fast paths test hak_cache_is_head first and leave such a block to their
 * slow path, so that they make no call that needs a stack frame. */
HAK_INLINE int hak_cache_push_chain(hak_cache_t *c, void *head, void *tail, uint32_t count) {
  if (HAK_HARDENING && HAK_UNLIKELY(head == c->head)) hak_link_double_free(head);
  hak_link_write(tail, c->head);
  c->head = head;
  c->room -= (int32_t)count;
  return c->room < 0;
}

/* Pushes block p: a chain of one. */
HAK_INLINE int hak_cache_push(hak_cache_t *c, void *p) { return hak_cache_push_chain(c, p, p, 1); }

/* Whether `c`, read from a tier's owner table, is one of the `count` caches at `caches`
 * (the calling thread's). The owner tables hold, for each slab or page, its owner heap's
 * cache of the block class (NULL when unowned), so the fast frees find the cache to push
 * onto in the same load that says whose block it is, and test it with one subtraction
 * and one compare: 3 instructions fewer in Pool than an owner with its class in the low
 * bits. (Tiny with HEADER_CLASSIDX=1 finds the cache from the address instead and
 * compares it with the entry, see hak_tiny_free.) */
HAK_INLINE int hak_cache_in(const hak_cache_t *c, const hak_cache_t *caches, unsigned count) {
  return (uintptr_t)c - (uintptr_t)caches < (uintptr_t)count * sizeof(hak_cache_t);
}

/* Whether p could start a block of the cache's class by its alignment (hardened builds;
 * always in HARDENING=0 ones). Read after the caller knows c is its own cache. */
HAK_INLINE int hak_cache_aligned(const hak_cache_t *c, const void *p) {
  /* In 16 bits, so that the test takes the mask as a memory operand: no extra load. */
  return !HAK_HARDENING || HAK_LIKELY(((uint16_t)(uintptr_t)p & c->align) == 0);
}

/* The alignment mask of blocks of `size` bytes whose starts lie `size` apart from a
 * boundary of `boundary` bytes (a power of two): what hak_cache_t.align holds. */
HAK_INLINE uint16_t hak_cache_align_of(uint32_t size, uint32_t boundary) {
  uint32_t a = size & -size; /* the lowest set bit: the largest power of two dividing size */
  return (uint16_t)((a < boundary ? a : boundary) - 1);
}

/* Whether p is the cache's first block: freeing it again is a double free. */
HAK_INLINE int hak_cache_is_head(const hak_cache_t *c, const void *p) {
  return HAK_HARDENING && HAK_UNLIKELY(p == c->head);
}

/* Changes the capacity; the room moves with it (it may go negative: the next push
 * reports the overflow). */
HAK_INLINE void hak_cache_set_cap(hak_cache_t *c, uint32_t cap) {
  if (cap > HAK_CACHE_MAX_CAP) cap = HAK_CACHE_MAX_CAP;
  c->room += (int32_t)cap - (int32_t)c->cap;
  c->cap = (uint16_t)cap;
}

/* A capacity in blocks of `size` bytes: `bytes` of them, but at least `min_blocks`. A
 * class's free count swings by blocks whatever their size, so the big classes need a
 * floor in blocks; the small ones are bounded by bytes. */
HAK_INLINE uint32_t hak_cache_blocks(uint32_t bytes, uint32_t size, uint32_t min_blocks) {
  uint32_t blocks = bytes / size;
  return blocks < min_blocks ? min_blocks : blocks;
}

/* What adapts a cache's capacity, kept beside it in the tier's heap and touched by the
 * slow paths only. The capacity follows the thread's pattern in the class:
 * - two refills with no overflow between them (it allocates more than it frees): double;
 * - an overflow after a refill (it swings between empty and full, each swing paying a
 *   refill and a trim that move half the cache through its slabs): double — this is what
 *   a working set of mixed sizes does, class by class, as a random walk around its mean;
 * - two overflows in a row with no refill (it frees more than it allocates: blocks should
 *   go back to their slabs, where other threads and the decay find them): halve. */
typedef struct {
  uint32_t misses; /* refills since the last overflow */
  uint32_t idle;   /* overflows since the last refill */
} hak_cache_adapt_t;

HAK_INLINE void hak_cache_grow(hak_cache_t *c, uint32_t max) {
  if (c->cap < max) hak_cache_set_cap(c, c->cap > max / 2 ? max : c->cap * 2);
}

/* A refill of c (empty), with capacities bounded by max. */
HAK_INLINE void hak_cache_adapt_miss(hak_cache_t *c, hak_cache_adapt_t *a, uint32_t max) {
  a->idle = 0;
  if (++a->misses >= 2) hak_cache_grow(c, max);
}

/* An overflow of c (the caller then trims it to half its capacity), with capacities in
 * [min, max]. */
HAK_INLINE void hak_cache_adapt_overflow(hak_cache_t *c, hak_cache_adapt_t *a, uint32_t min,
                                         uint32_t max) {
  if (a->misses > 0) {
    hak_cache_grow(c, max);
  } else if (++a->idle >= 2 && c->cap > min) {
    hak_cache_set_cap(c, c->cap / 2 < min ? min : c->cap / 2);
    a->idle = 0;
  }
  a->misses = 0;
}

#endif /* HAK_ALLOCATOR_HEAP_CACHE_H */
