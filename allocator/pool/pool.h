/* The Pool tier (1 KiB < size <= 64 KiB): the only header other layers may include.
 * Blocks are carved from spans inside per-thread arenas in the Pool half of the reserved
 * range; a page registry indexed by page number maps every page to its span, class and
 * owner. POOL_TLS_PHASE1=1 adds per-thread free lists per class (no lock, no atomic on
 * the fast path); POOL_TLS_PHASE1=0 serves every call from a shared sharded pool. */
#ifndef HAK_ALLOCATOR_POOL_POOL_H
#define HAK_ALLOCATOR_POOL_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "allocator/heap/cache.h"
#include "allocator/heap/heap.h"
#include "allocator/heap/slab.h"
#include "allocator/internal/config.h"
#include "allocator/internal/trace.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HAK_POOL_MIN 1024        /* sizes above this ... */
#define HAK_POOL_MAX (64 * 1024) /* ... up to this one are Pool's */
#define HAK_POOL_CLASSES 26
#define HAK_POOL_PAGE_SHIFT 16 /* the registry's unit: 64 KiB pages */
#define HAK_POOL_PAGE_SIZE ((size_t)1 << HAK_POOL_PAGE_SHIFT)

#define HAK_POOL_MAX_SPAN_PAGES 4

/* A TLS list's capacity starts at HAK_POOL_LIST_BYTES of blocks, and at least
 * HAK_POOL_LIST_MIN_BLOCKS, and adapts to the thread's traffic (heap/cache.h) up to
 * HAK_POOL_LIST_MAX_BYTES (at least HAK_POOL_LIST_MAX_BLOCKS); a thread's lists together
 * grow by at most HAK_POOL_LIST_BUDGET. A working set of mixed mid sizes swings each
 * class's free count by tens of blocks as a random walk: with a fixed 256 KiB a class,
 * mid_large_mt spent a sixth of its time trimming lists into spans and refilling them, and
 * pool_tls (every class) wanted more than a 4 MiB budget. The swing is counted in blocks,
 * whatever their size: a refill or a trim of a list of C blocks moves C / 2 of them
 * through their spans at about 12 ns a block, and a random walk reaches the ends of C
 * about once in (C / 2)^2 steps, so the cost per operation falls as 1 / C. A cap of 256 KiB
 * gave the 32-64 KiB classes 4-8 blocks: pool_tls spent a fifth of its time moving blocks
 * (78,000 refills and 48,000 trims in 20 million replacements); 32 blocks at least took
 * it to tcmalloc's speed with a lower peak RSS (fewer blocks travel to other spans). */
#define HAK_POOL_LIST_BYTES (256 * 1024)
#define HAK_POOL_LIST_MIN_BLOCKS 32
#define HAK_POOL_LIST_MAX_BYTES (1024 * 1024)
#define HAK_POOL_LIST_MAX_BLOCKS 64
#define HAK_POOL_LIST_BUDGET (8 * 1024 * 1024)

extern HAK_HIDDEN const uint32_t hak_pool_class_size[HAK_POOL_CLASSES];
extern HAK_HIDDEN const uint8_t hak_pool_size_class8[HAK_POOL_MAX / 256]; /* by (n - 1) / 256 */

/* Class of a size in (HAK_POOL_MIN, HAK_POOL_MAX]: every class size is a multiple of
 * 256, so one byte per 256 bytes of size names it (a load where the arithmetic of four
 * classes per power of two took nine instructions, and it lets the classes be any
 * multiples of 256: pool.c). The byte holds 8 times the class (hak_cache_at8). */
HAK_INLINE unsigned hak_pool_class8_of(size_t n) { return hak_pool_size_class8[(n - 1) >> 8]; }
HAK_INLINE unsigned hak_pool_class_of(size_t n) { return hak_pool_class8_of(n) / HAK_CACHE_C8(1); }

/* A TLS list's first capacity, and the most it may grow to, in blocks of a class of
 * `size` bytes (HAK_POOL_LIST_* above). */
HAK_INLINE uint32_t hak_pool_list_first(uint32_t size) {
  return hak_cache_blocks(HAK_POOL_LIST_BYTES, size, HAK_POOL_LIST_MIN_BLOCKS);
}
HAK_INLINE uint32_t hak_pool_list_limit(uint32_t size) {
  return hak_cache_blocks(HAK_POOL_LIST_MAX_BYTES, size, HAK_POOL_LIST_MAX_BLOCKS);
}

enum { HAK_POOL_UNUSED = 0, HAK_POOL_HEAD = 1, HAK_POOL_TAIL = 2 };

struct hak_pool_heap;

/* One registry entry per 64 KiB page of the Pool region; the entry of a span's first page
 * holds the span's metadata, the others point to it. */
typedef struct hak_pool_span {
  union { /* the engine's slab header (heap/slab.h); owner is a hak_pool_heap_t, kind says
             HEAD (a span's first page), TAIL (another of its pages) or UNUSED */
    hak_slab_t slab;
    struct {
      HAK_SLAB_FIELDS
    };
  };
  uint32_t head;  /* page index of the span's first page */
  uint16_t pages; /* pages in the span */
  uint8_t committed, pad;
  uintptr_t remote;                   /* see internal/remote.h */
  struct hak_pool_span *pending_next; /* the owner's pending list */
  /* Debug builds: one bit per block, set while it is allocated (a span holds at most 51
   * blocks, checked at span creation). Other threads' frees write it: on the remote line. */
  uint64_t live_bits;
  uint64_t emptied_ms; /* when it last became free (decay) */
  uint32_t decay_pass; /* every page's: equal to a decay pass's number while that pass
                          has its span free, committed and due (arena lock) */
  char pad2[128 - 100];
} hak_pool_span_t;

HAK_STATIC_ASSERT(sizeof(hak_pool_span_t) == 128, "registry entry size");
HAK_STATIC_ASSERT(offsetof(hak_pool_span_t, remote) == HAK_SLAB_REMOTE_OFFSET &&
                      offsetof(hak_pool_span_t, pending_next) == HAK_SLAB_REMOTE_OFFSET + 8,
                  "the remote line where the engine's drain reads it");

/* A thread's free list of one class: the engine's cache (heap/cache.h). */
typedef hak_cache_t hak_pool_list_t;

typedef struct hak_pool_heap {
  hak_pool_list_t list[HAK_POOL_CLASSES];     /* the TLS free lists */
  hak_cache_adapt_t adapt[HAK_POOL_CLASSES];  /* what sizes them (heap/cache.h) */
  uint64_t list_grown_bytes;                  /* capacity they gained beyond their first, bytes */
  hak_pool_span_t *current[HAK_POOL_CLASSES]; /* where refills take blocks first */
  hak_slab_t *avail[HAK_POOL_CLASSES];        /* owned spans with free blocks */
  hak_pool_span_t *spare[HAK_POOL_MAX_SPAN_PAGES + 1]; /* one empty span per size */
  uintptr_t chunk_pos, chunk_end;                      /* the arena chunk spans are cut from */
  unsigned chunk_level, arena_chunks;
  uint64_t refills, overflows, remote_frees; /* statistics */
  hak_heap_t base; /* the engine's part: life cycle, pending remote spans (heap/heap.h) */
} hak_pool_heap_t;

typedef struct {
  uintptr_t base, size;      /* the Pool region */
  uintptr_t top;             /* bytes of it handed to arenas; registry valid below */
  hak_pool_span_t *registry; /* indexed by page number in the region */
  /* Indexed the same: the owner heap's list of the class of the page's span, NULL when
   * unowned — which also is the list the fast free pushes onto (heap/cache.h,
   * hak_cache_in). The fast free reads this word alone: 8 bytes a page keep a working
   * set's words in a few lines, where the 128-byte entries (each its own line, a second
   * one for a span's later pages) missed the cache on a quarter of pool_tls's frees.
   * Written with the entry's owner (pool.c). */
  hak_pool_list_t **owners;
} hak_pool_geom_t;

extern HAK_HIDDEN hak_pool_geom_t hak_pool_geom;
extern HAK_HIDDEN hak_pool_heap_t hak_pool_empty_heap;
extern HAK_HIDDEN HAK_TLS hak_pool_heap_t *hak_pool_tls;

/* Bytes of page registry a Pool region of `size` bytes needs (a page multiple). */
size_t hak_pool_registry_bytes(size_t size);

/* Takes [base, base+size) of the claimed range (64 KiB aligned) for blocks, and the
 * hak_pool_registry_bytes(size) bytes right after it for the page registry; both are
 * mapped as the arenas grow. Returns 0 or ENOMEM. */
int hak_pool_init(uintptr_t base, size_t size);

/* n in (HAK_POOL_MIN, HAK_POOL_MAX]; NULL with errno = ENOMEM when out of memory. */
void *hak_pool_malloc(size_t n);

void hak_pool_overflow(hak_pool_list_t *l);

/* The fast path: a block from the thread's free list of the class of n, or NULL when the
 * list is empty or its first link is corrupt, without TLS lists (POOL_TLS_PHASE1=0) or in debug
 * builds: then call hak_pool_malloc. */
HAK_INLINE void *hak_pool_pop(size_t n) {
  if (!HAK_POOL_THREAD_CACHE || HAK_CHECKS || HAK_ASAN) return NULL;
  void *p =
      hak_cache_take(hak_cache_at8(hak_pool_tls->list, hak_pool_class8_of(n)), hak_link_pool_mask);
  if (p) HAK_TRACE_ROUTE(HAK_ROUTE_POOL_FAST, p, 0);
  return p;
}

/* The fast free: pushes a block of the calling thread's own span onto its free list and
 * returns 1; returns 0 for anything else (then call hak_pool_free). */
HAK_INLINE int hak_pool_push(void *p, uintptr_t off) {
  if (!HAK_POOL_THREAD_CACHE || HAK_CHECKS || HAK_ASAN) return 0;
  if (off >= __atomic_load_n(&hak_pool_geom.top, __ATOMIC_ACQUIRE)) return 0;
  /* Relaxed atomic (a plain load on x86): a purge pass may release an idle heap's empty
   * span and clear its words meanwhile; no block of such a span is out to be freed. */
  hak_pool_list_t *l =
      __atomic_load_n(&hak_pool_geom.owners[off >> HAK_POOL_PAGE_SHIFT], __ATOMIC_RELAXED);
  if (HAK_UNLIKELY(!hak_cache_in(l, hak_pool_tls->list, HAK_POOL_CLASSES))) return 0;
  /* Every Pool block start is aligned to the largest power of two dividing its class
   * size (sizes are multiples of 256, spans start on 64 KiB boundaries): anything else
   * (p + 256 of a 2 KiB block) goes to hak_pool_free, which refuses it. */
  if (!hak_cache_aligned(l, p)) return 0;
  if (hak_cache_is_head(l, p)) return 0; /* a double free: hak_pool_free says so */
  HAK_TRACE_ROUTE(HAK_ROUTE_POOL_FAST, p, 1);
  if (HAK_UNLIKELY(hak_cache_push(l, p))) hak_pool_overflow(l);
  return 1;
}

/* Frees a block at offset `off` of the Pool region; pointers that are not live block
 * starts are counted as foreign (release) or abort with a message (debug). */
void hak_pool_free(void *p, uintptr_t off);

/* Debug builds: whether the block start at `off` was handed out and is free now (its
 * live bit clear); 0 in release builds and for anything else. */
int hak_pool_block_freed(const void *p, uintptr_t off);

/* Usable size of the block at `off`, or 0 when it is not an allocated block. */
size_t hak_pool_usable(uintptr_t off);

/* Returns empty spans idle for HAKMEM_DECAY_MS to the OS (all of them with force). */
int hak_pool_maintain(int force);

/* Decommits empty spans waiting for their decay until `bytes` are given back (or none is
 * left): the relief of another tier about to grow (internal/purge.h). */
void hak_pool_give_back(uint64_t bytes);
/* malloc_trim: the calling thread's lists, spare spans and pending remote frees go back. */
void hak_pool_flush_thread(void); /* 1: memory still waits for its decay */
/* In a fork child: the same repair as hak_tiny_fork_child, for heaps, shards and the
 * free-span lists (internal/fork.h). */
void hak_pool_fork_child(void);

/* The arena chunk sizes (bytes) a thread's arena grows through, as the options give:
 * writes up to `max` entries and returns how many. */
unsigned hak_pool_arena_steps(size_t *out, unsigned max);

typedef struct {
  uint64_t refills, overflows, remote_frees, pages_in_use, arena_chunks, foreign_frees;
  uint64_t resident_bytes; /* of the arena, from mincore */
  uint64_t idle_flushes;   /* heaps of blocked threads whose lists the purge flushed */
} hak_pool_stats_t;
void hak_pool_stats(hak_pool_stats_t *out);

/* Registry entry of the page at `off` (tests): class, or -1 for a page outside any span. */
int hak_pool_registry_class(uintptr_t off);
/* Empty spans on the arena's free list of class `cls` (those it last held; tests). */
unsigned hak_pool_free_spans_of(unsigned cls);

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_POOL_POOL_H */
