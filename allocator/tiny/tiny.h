/* The Tiny tier (1 B .. 1 KiB): the only header other layers may include.
 * Size classes, SuperSlab geometry, the per-thread heap with its class caches, and the
 * inline fast paths. The Tiny region is a grid of SuperSlabs, one column per class, so the
 * class of a pointer is arithmetic on its address (HEADER_CLASSIDX=1) or one load from
 * the page registry (HEADER_CLASSIDX=0). */
#ifndef HAK_ALLOCATOR_TINY_TINY_H
#define HAK_ALLOCATOR_TINY_TINY_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/heap/cache.h"
#include "allocator/heap/heap.h"
#include "allocator/heap/slab.h"
#include "allocator/internal/config.h"
#include "allocator/internal/log.h"
#include "allocator/internal/trace.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HAK_TINY_MAX 1024
#define HAK_TINY_CLASSES 20
#define HAK_TINY_CLASS_SLOTS 32 /* grid columns; a power of two >= HAK_TINY_CLASSES */
#define HAK_TINY_SLAB_SHIFT 16  /* 64 KiB slabs */
#define HAK_TINY_SLAB_SIZE ((size_t)1 << HAK_TINY_SLAB_SHIFT)
#define HAK_TINY_SS_SHIFT 21 /* 2 MiB SuperSlabs: the commit and decommit unit */
#define HAK_TINY_SS_SIZE ((size_t)1 << HAK_TINY_SS_SHIFT)
#define HAK_TINY_SLABS_PER_SS (HAK_TINY_SS_SIZE / HAK_TINY_SLAB_SIZE)
/* The grid: row k holds the k-th SuperSlab of every class slot, side by side, so class c's
 * k-th SuperSlab starts at offset (k * HAK_TINY_CLASS_SLOTS + c) << HAK_TINY_SS_SHIFT.
 * The memory a thread uses most, the first SuperSlabs of every class, thus lies within
 * 64 MiB. With a region per class, 1 GiB apart by default, random_mixed ran 1.10x slower
 * than with the regions 16 MiB apart: TLB misses spread over many gigabytes cost more
 * than the same number of misses close together (allocator/README.md). */
#define HAK_TINY_ROW_SHIFT (HAK_TINY_SS_SHIFT + 5)
#define HAK_TINY_MAX_ROWS 2048 /* so at most 128 GiB of address space */
/* The slab header sits at a "colour" offset of 0..15 x 128 bytes into its slab, and the
 * blocks start right after it; one stride (the class size) is used by carving, refill and
 * capacity alike. Without colours every header would be 64 KiB aligned, all in the same
 * L1 cache set, and the owner check of free() would miss the cache every time. */
#define HAK_TINY_SLAB_HEADER 128
#define HAK_TINY_COLOURS 16
/* A free slab's decay keeps its first page: the header (at most 15 colours in) and the
 * links of its list live there. */
#define HAK_TINY_FIRST_PAGE 4096
HAK_STATIC_ASSERT(HAK_TINY_COLOURS *HAK_TINY_SLAB_HEADER <= HAK_TINY_FIRST_PAGE,
                  "every header lies in its slab's first page");
#define HAK_TINY_PREWARM_BUDGET (32 * 1024) /* bytes of blocks per thread at start */

extern HAK_HIDDEN const uint16_t hak_tiny_class_size[HAK_TINY_CLASSES];
extern HAK_HIDDEN const uint8_t hak_tiny_size_class8[HAK_TINY_MAX + 1]; /* by size */

/* 8 times the class of a size (hak_cache_at8), and the class. */
HAK_INLINE unsigned hak_tiny_class8_of(size_t n) { return hak_tiny_size_class8[n]; }
HAK_INLINE unsigned hak_tiny_class_of(size_t n) { return hak_tiny_class8_of(n) / HAK_CACHE_C8(1); }

/* A thread's cache of one class: the engine's (heap/cache.h). */
typedef hak_cache_t hak_tiny_cache_t;

struct hak_tiny_slab;

typedef struct hak_tiny_heap {
  hak_tiny_cache_t cache[HAK_TINY_CLASSES];
  hak_cache_adapt_t adapt[HAK_TINY_CLASSES];       /* what sizes each cache (heap/cache.h) */
  struct hak_tiny_slab *current[HAK_TINY_CLASSES]; /* where refills take blocks first */
  hak_slab_t *avail[HAK_TINY_CLASSES];             /* owned slabs with free blocks */
  uint64_t refills, overflows, remote_frees;       /* statistics */
  hak_heap_t base; /* the engine's part: life cycle, pending remote slabs (heap/heap.h) */
} hak_tiny_heap_t;

/* Slab header, at the start of every 64 KiB slab. The first line is the owner's; the
 * remote word is written by other threads. */
typedef struct hak_tiny_slab {
  union { /* the engine's slab header (heap/slab.h); owner is a hak_tiny_heap_t */
    hak_slab_t slab;
    struct {
      HAK_SLAB_FIELDS
    };
  };
  /* Blocks carved before the slab last forgot its free list (slab_forget_free): their
   * pages are resident, so carving them again is not held to the per-refill limit. */
  uint32_t recarve;
  char pad1[64 - 60];
  /* Remote frees: chain head with bit 0 set while the slab sits in its owner's pending
   * list, so that flag and chain change together in one atomic operation. */
  uintptr_t remote;
  struct hak_tiny_slab *pending_next; /* the owner's pending list */
  /* While on its class's free-slab list (no owner, so no remote writes to this line):
   * when it got there. */
  uint64_t released_ms;
  char pad2[64 - 24 - 16];
  /* Right below the first block: written when a heap takes the slab, checked by debug
   * builds at every free. A block 0 written below its start, or the block before a
   * header without colour written past its end (into `owner`, checked against the owner
   * table), is reported as an overflow into the header before anything in it is used. */
  uintptr_t guard[2];
} hak_tiny_slab_t;

HAK_STATIC_ASSERT(sizeof(hak_tiny_slab_t) == HAK_TINY_SLAB_HEADER, "slab header size");
HAK_STATIC_ASSERT(offsetof(hak_tiny_slab_t, guard) == HAK_TINY_SLAB_HEADER - 16,
                  "the guard ends where the first block starts");
HAK_STATIC_ASSERT(offsetof(hak_tiny_slab_t, remote) == HAK_SLAB_REMOTE_OFFSET &&
                      offsetof(hak_tiny_slab_t, pending_next) == HAK_SLAB_REMOTE_OFFSET + 8,
                  "the remote line where the engine's drain reads it");

/* The geometry of the Tiny region [base, base + size): zero (an empty region) until
 * hak_tiny_init succeeds, so the front end needs no "initialised" test. */
typedef struct {
  uintptr_t base; /* first byte of the Tiny region */
  uintptr_t size; /* rows << HAK_TINY_ROW_SHIFT */
  /* Each slab's owner, by slab number (offset >> HAK_TINY_SLAB_SHIFT), as the owner
   * heap's cache of the slab's class (hak_tiny_owner_cache): the free fast path's one
   * lookup, which is also the cache it pushes onto (hak_tiny_free). Mapped without
   * reservation, so entries never written read NULL and send the free to the checked
   * slow path. */
  hak_tiny_cache_t **owners;
  uint8_t *registry; /* page registry: class of each slab (HEADER_CLASSIDX=0 path) */
  uintptr_t rows[HAK_TINY_CLASS_SLOTS]; /* SuperSlabs (grid rows) handed out per slot */
} hak_tiny_geom_t;

extern HAK_HIDDEN hak_tiny_geom_t hak_tiny_geom;
extern HAK_HIDDEN hak_tiny_heap_t hak_tiny_empty_heap;
extern HAK_HIDDEN HAK_TLS hak_tiny_heap_t *hak_tiny_tls;

/* Takes [base, base+size) of the claimed range (size a power of two of 2 .. 2048 grid
 * rows, base aligned to a SuperSlab). Returns 0, EINVAL for a size out of those bounds,
 * or ENOMEM; on failure the region stays empty. Called once, before any other function. */
int hak_tiny_init(uintptr_t base, size_t size);

/* Slow paths, out of line. */
void *hak_tiny_malloc_slow(unsigned cls);
void hak_tiny_overflow(hak_tiny_cache_t *c); /* c: one of the calling thread's caches */
void hak_tiny_free_remote(hak_tiny_slab_t *s, void *p);
/* Every free but the fast one, of a pointer in the Tiny region (it computes the offset
 * again, so that the fast path keeps only p for the call). */
void hak_tiny_free_slow(void *p);
HAK_COLD void hak_tiny_bad_free(const void *p);

/* Debug builds: whether the block start at `off` was handed out and is free now (its
 * live bit clear); 0 in release builds and for anything else. */
int hak_tiny_block_freed(const void *p, uintptr_t off);

/* Returns empty SuperSlabs past the LRU to the OS; `force` ignores the decay time. */
int hak_tiny_maintain(int force); /* 1: memory still waits for its decay */
/* malloc_trim: the calling thread's caches and pending remote frees go back to slabs. */
void hak_tiny_flush_thread(void);
/* In a fork child: keeps the forking thread's heap (unless the fork interrupted a change
 * of it), makes every other thread's heap an orphan, rebuilds the dead-heap list, and
 * stops reusing the SuperSlab lists if a thread was changing them (internal/fork.h). */
void hak_tiny_fork_child(void);

typedef struct {
  uint64_t slabs_in_use, superslabs, empty_superslabs, refills, overflows, remote_frees;
  uint64_t decommitted_superslabs;
  uint64_t resident_bytes; /* of SuperSlabs not decommitted, from mincore */
  uint64_t idle_flushes;   /* heaps of blocked threads whose caches the purge flushed */
} hak_tiny_stats_t;
void hak_tiny_stats(hak_tiny_stats_t *out);
/* Frees of pointers in the Tiny region that are not live blocks (release builds). */
uint64_t hak_tiny_foreign_frees(void);

/* The header of the slab holding p: the slab start plus its colour, a hash of the slab
 * number (three instructions, no load). */
HAK_INLINE hak_tiny_slab_t *hak_tiny_slab_of(const void *p) {
  uintptr_t base = (uintptr_t)p & ~(uintptr_t)(HAK_TINY_SLAB_SIZE - 1);
  uint32_t colour = ((uint32_t)(base >> HAK_TINY_SLAB_SHIFT) * 0x9e3779b1u) >> 28;
  return (hak_tiny_slab_t *)(base + colour * HAK_TINY_SLAB_HEADER);
}

/* The grid column of offset `off` in the Tiny region: the class slot of its SuperSlab. */
HAK_INLINE unsigned hak_tiny_slot_at(uintptr_t off) {
  return (unsigned)(off >> HAK_TINY_SS_SHIFT) & (HAK_TINY_CLASS_SLOTS - 1);
}

/* Class of a block at offset `off` in the Tiny region. */
HAK_INLINE unsigned hak_tiny_class_at(uintptr_t off) {
  if (HAK_CLASS_FROM_ADDRESS) return hak_tiny_slot_at(off);
  HAK_TRACE_ROUTE(HAK_ROUTE_REGISTRY, 0, 0);
  return hak_tiny_geom.registry[off >> HAK_TINY_SLAB_SHIFT];
}

/* Usable size of the block at offset `off`. */
HAK_INLINE size_t hak_tiny_usable(uintptr_t off) {
  return hak_tiny_class_size[hak_tiny_class_at(off)];
}

/* The cache of heap h for the block at offset `off`. With HEADER_CLASSIDX the grid column
 * scaled to the cache size is one shift and one mask of the offset. */
HAK_INLINE hak_tiny_cache_t *hak_tiny_cache_at(hak_tiny_heap_t *h, uintptr_t off) {
  HAK_STATIC_ASSERT(sizeof(hak_tiny_cache_t) == 16, "cache index is a shift by 4");
  if (HAK_CLASS_FROM_ADDRESS) {
    uintptr_t col = (off >> (HAK_TINY_SS_SHIFT - 4)) & ((HAK_TINY_CLASS_SLOTS - 1) << 4);
    return (hak_tiny_cache_t *)((char *)h->cache + col);
  }
  return &h->cache[hak_tiny_class_at(off)];
}

/* The owner table entry of the slab at offset `off`. With the grid, the entries of the
 * first slabs of every class share two pages of the table. */
HAK_INLINE hak_tiny_cache_t **hak_tiny_owner_of(uintptr_t off) {
  return &hak_tiny_geom.owners[off >> HAK_TINY_SLAB_SHIFT];
}

/* What the owner table holds for a slab of class `cls` owned by h (NULL: unowned). */
HAK_STATIC_ASSERT(offsetof(hak_tiny_heap_t, cache) == 0, "a heap's caches start it");
HAK_INLINE hak_tiny_cache_t *hak_tiny_owner_cache(hak_tiny_heap_t *h, unsigned cls) {
  return h ? &h->cache[cls] : NULL;
}

/* Whether `off` (< size) lies in a SuperSlab its class slot has handed out (so its slab
 * header may be read). Unused slots and rows not yet committed fail. */
HAK_INLINE int hak_tiny_owns(uintptr_t off) {
  return (off >> HAK_TINY_ROW_SHIFT) <
         __atomic_load_n(&hak_tiny_geom.rows[hak_tiny_slot_at(off)], __ATOMIC_ACQUIRE);
}

/* The fast path: a block of n (0 .. HAK_TINY_MAX) bytes from the thread cache, or NULL
 * when the cache of its class is empty or its first link is corrupt (then call
 * hak_tiny_malloc, which refills or reports). Debug and ASan builds always
 * take the slow path. */
HAK_INLINE void *hak_tiny_pop(size_t n) {
  if (HAK_CHECKS || HAK_ASAN) return NULL;
  void *p =
      hak_cache_take(hak_cache_at8(hak_tiny_tls->cache, hak_tiny_class8_of(n)), hak_link_tiny_mask);
  if (p) HAK_TRACE_ROUTE(HAK_ROUTE_TINY_FAST, p, 0);
  return p;
}

/* n in 0 .. HAK_TINY_MAX. Returns NULL with errno = ENOMEM when out of memory. */
HAK_INLINE void *hak_tiny_malloc(size_t n) {
  void *p = hak_tiny_pop(n);
  return HAK_LIKELY(p != NULL) ? p : hak_tiny_malloc_slow(hak_tiny_class_of(n));
}

/* p lies in the Tiny region at offset `off` (checked by the caller). A block of one of the
 * calling thread's slabs goes onto its cache; anything else (another thread's block, a
 * pointer into no live slab, every free in debug builds) takes the checked path. */
HAK_INLINE void hak_tiny_free(void *p, uintptr_t off) {
  /* The slab's owner, as its cache of the slab's class. With HEADER_CLASSIDX=1 the free
   * computes the calling thread's cache of the grid column from the address while the
   * entry loads, so that the cache head's read does not wait for that load, and the
   * block is the thread's when the two are equal (the entry alone, tested with
   * hak_cache_in, is one instruction less but made the head's read wait: random_mixed
   * ran 2.4% slower). With HEADER_CLASSIDX=0 the entry is the cache. */
  hak_tiny_cache_t *owner = __atomic_load_n(hak_tiny_owner_of(off), __ATOMIC_RELAXED);
  hak_tiny_cache_t *c = HAK_CLASS_FROM_ADDRESS ? hak_tiny_cache_at(hak_tiny_tls, off) : owner;
  int mine =
      HAK_CLASS_FROM_ADDRESS ? owner == c : hak_cache_in(c, hak_tiny_tls->cache, HAK_TINY_CLASSES);
  /* A pointer off its class's alignment (16 bytes, up to 128 for the classes whose size
   * has more factors of two: p + 16 of a 64-byte block) cannot be a block: the slow path
   * refuses it. An interior pointer on that alignment (p + 16 of a 48-byte block) is
   * caught there only: one modulo. */
  if (HAK_CHECKS || HAK_ASAN || HAK_UNLIKELY(!mine) || !hak_cache_aligned(c, p)) {
    hak_tiny_free_slow(p);
    return;
  }
  if (hak_cache_is_head(c, p)) { /* a double free: the slow path says so */
    hak_tiny_free_slow(p);
    return;
  }
  HAK_TRACE_ROUTE(HAK_ROUTE_TINY_FAST, p, 1);
  if (HAK_UNLIKELY(hak_cache_push(c, p))) hak_tiny_overflow(c);
}

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_TINY_TINY_H */
