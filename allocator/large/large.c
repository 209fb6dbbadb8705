/* Large tier: a page heap in a claimed region, cut into arenas, and direct mappings for
 * the blocks the region cannot hold.
 *
 * Call trees:
 *   hak_large_malloc -> arena_of_thread -> lock -> span_find (bins) | arena_grow (one
 *     fixed mapping at the arena's top) -> span_carve (split, page map) -> span_fill
 *     (a block on clean or hollow pieces takes freed pages: mremap) -> unlock
 *                    -> huge_malloc (no region, arena full, or too big: one mapping)
 *   hak_large_free   -> arena_of_address -> lock -> span_lookup -> span_release (coalesce
 *                       with both neighbours, bin, dirty list) -> unlock -> purge kick
 *                    -> huge_free (cache of freed mappings, or munmap)
 *   hak_large_maintain -> each arena: decommit dirty free spans past the decay, then
 *                         the huge cache
 *
 * Counting invariant of an arena (lock held): [base, top) is mapped and covered exactly by
 * its spans, each USED or FREE; live_pages is the sum of the USED spans' pages and
 * dirty_pages that of the dirty FREE ones (on the dirty list). Two FREE
 * spans that touch differ in dirtiness (like ones are coalesced at once): a dirty span's
 * pages may be resident, a clean one's read as zero, and neither guess is ever mixed. A
 * dirty span whose pages span_fill moved into a block stays dirty (dirty_pages counts it
 * whole); the arena's hollow map marks the pieces that may read as zero. */
#define _GNU_SOURCE
#include "allocator/large/large.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "allocator/internal/clock.h"
#include "allocator/internal/fork.h"
#include "allocator/internal/options.h"
#include "allocator/internal/purge.h"
#include "allocator/internal/trace.h"
#include "allocator/os_boundary/asan.h"
#include "allocator/os_boundary/os.h"

#define PAGE_SHIFT 12
#define PAGE ((size_t)1 << PAGE_SHIFT)
#define L1_BITS 17 /* address bits 47..30 */
#define L2_BITS 18 /* address bits 29..12 */
#define ARENAS_MAX 8
#define BINS 192                            /* exact below 16 pages, then 4 per power of two */
#define BIN_SCAN 32                         /* spans of a bin looked at for the best fit */
#define GROW_BYTES ((size_t)2 << 20)        /* an arena's top grows by at least this */
#define DIRTY_FLOOR ((size_t)16 << 20)      /* freed bytes an arena may always keep */
#define HUGE_SLOTS 8                        /* freed direct mappings kept for reuse */
#define LARGE_LIMIT ((size_t)1 << 46)       /* no size or alignment above this is served */
#define REALLOC_HEADROOM ((size_t)64 << 20) /* most extra bytes a moved block gets */
#define REMAP_MIN_PAGES 1024         /* blocks of 4 MiB and more move their pages, not bytes */
#define FILL_GRAIN ((size_t)1 << 20) /* pages move into new blocks in aligned pieces of this */
#define FILL_MIN ((size_t)4 << 20)   /* blocks from this size take whole pieces */
#define FILL_SCAN 64                 /* dirty spans looked at for them per allocation */
#define FILL_PROBES 256  /* hollow pieces looked at (mincore) per block, and 4 per piece of it */
#define FILL_SPLITS 2048 /* most mappings an arena's moves may make: extent / FILL_GRAIN */

typedef enum { SPAN_SPARE, SPAN_FREE, SPAN_USED, SPAN_MAPPED } span_state_t;

/* One record per span of an arena, and per direct mapping. Records live out of band (in
 * metadata memory, recycled through a spare list, never unmapped), so a stale page-map
 * entry only ever points at a record: a lookup checks that the record still describes the
 * page it came from. */
typedef struct span {
  uintptr_t start; /* first byte: the user address of a USED span or MAPPED block */
  size_t pages;    /* FREE/USED: length in pages; MAPPED: the mapping's size in bytes */
  uint8_t state;   /* span_state_t */
  uint8_t dirty;   /* FREE: pages may be resident (freed, not purged since) */
  uint8_t bin;     /* FREE: the bin it is on */
  uint8_t arena;   /* FREE/USED: its arena */
  uint32_t unused;
  uint64_t freed_ms;        /* FREE and dirty: when it was freed (parts: merged_age) */
  struct span *next, *prev; /* FREE: its bin; SPARE: the spare list; MAPPED: all mapped */
  union {
    struct {
      struct span *dnext, *dprev; /* FREE and dirty: the arena's dirty list */
    };
    uintptr_t map_base; /* MAPPED: the mapping the block sits in */
  };
} span_t;

HAK_STATIC_ASSERT(sizeof(span_t) == 64, "span record size");

typedef struct {
  pthread_mutex_t lock;
  uintptr_t base, end; /* the arena's slice of the region */
  uintptr_t top;       /* [base, top) is mapped and covered by spans */
  span_t *bins[BINS];  /* FREE spans by size, most recently freed first */
  uint64_t nonempty[BINS / 64];
  span_t *dirty, *dirty_tail; /* FREE spans whose pages may be resident, newest first */
  span_t *spare;              /* unused records */
  uint64_t dirty_pages, live_blocks, live_pages, hits, misses;
  uint64_t moved_pages; /* span_fill: free pages moved into new blocks */
  /* The FILL_GRAIN pieces of [base, base + FILL_SPLITS pieces) pages were moved out of
   * and not known to be resident again (a bit per piece): span_fill asks mincore about
   * these only. Set by a move out, cleared by a move in and by the free of a block that
   * covers the piece (the program wrote it). */
  uint64_t hollow[FILL_SPLITS / 64];
  uint64_t live_peak; /* recent peak of live_pages: its excess halves at each decay pass */
  int64_t committed;  /* bytes of its commit calls less those of its decommit calls */
  int frozen;         /* fork child: a thread was changing the arena at the fork; not used again */
} __attribute__((aligned(64))) arena_t;

static arena_t arenas[ARENAS_MAX];
static uintptr_t region_base, region_end;
static size_t slice_bytes;
static unsigned arena_count;          /* arenas in use; 0 = no region (written last, acquire) */
static unsigned arena_next;           /* round-robin choice of a thread's arena */
static HAK_TLS unsigned thread_arena; /* 1 + the calling thread's arena, 0 = not chosen */
static uint64_t dirty_bytes_total;    /* over every arena (relaxed atomics) */

static span_t **page_map[1u << L1_BITS];

/* ---- The page map: the first and last page of every span, and the first page of a
 * MAPPED block, point at its record. Entries are single atomic words. ---- */

static inline span_t **map_slot(uintptr_t a, int create) {
  uintptr_t i1 = a >> (PAGE_SHIFT + L2_BITS);
  if (i1 >= (1u << L1_BITS)) return NULL;
  span_t **l2 = __atomic_load_n(&page_map[i1], __ATOMIC_ACQUIRE);
  if (!l2) {
    void *fresh;
    if (!create || hak_os_map(sizeof(void *) << L2_BITS, 0, &fresh) != 0) return NULL;
    span_t **expected = NULL;
    if (__atomic_compare_exchange_n(&page_map[i1], &expected, (span_t **)fresh, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      l2 = fresh;
    } else {
      hak_os_release(fresh, sizeof(void *) << L2_BITS);
      l2 = expected;
    }
  }
  return &l2[(a >> PAGE_SHIFT) & ((1u << L2_BITS) - 1)];
}

static inline span_t *map_get(uintptr_t a) {
  span_t **slot = map_slot(a, 0);
  return slot ? __atomic_load_n(slot, __ATOMIC_ACQUIRE) : NULL;
}

/* Points the first and last page of s at it. The slots exist: arena_grow creates them for
 * every page it maps. */
static inline void map_span(span_t *s) {
  __atomic_store_n(map_slot(s->start, 0), s, __ATOMIC_RELEASE);
  __atomic_store_n(map_slot(s->start + (s->pages - 1) * PAGE, 0), s, __ATOMIC_RELEASE);
}

static inline uintptr_t span_end(const span_t *s) { return s->start + s->pages * PAGE; }

/* ---- Hollow pieces (span_fill). ---- */

/* The hollow bit of the piece at p (FILL_GRAIN-aligned) of arena a, as a word and a mask;
 * NULL past the pieces the map covers. */
static inline uint64_t *piece_bit(arena_t *a, uintptr_t p, uint64_t *mask) {
  size_t i = (p - (a->base & ~(FILL_GRAIN - 1))) / FILL_GRAIN;
  if (i >= FILL_SPLITS) return NULL;
  *mask = 1ull << (i % 64);
  return &a->hollow[i / 64];
}

/* Whether pages were moved out of the piece at p (it may read as zero). */
static inline int piece_hollow(arena_t *a, uintptr_t p) {
  uint64_t mask, *w = piece_bit(a, p, &mask);
  return w && (*w & mask);
}

/* Marks the whole pieces of [lo, hi) hollow (on) or resident. */
static void pieces_mark(arena_t *a, uintptr_t lo, uintptr_t hi, int on) {
  for (uintptr_t p = (lo + FILL_GRAIN - 1) & ~(FILL_GRAIN - 1); p + FILL_GRAIN <= hi;
       p += FILL_GRAIN) {
    uint64_t mask, *w = piece_bit(a, p, &mask);
    if (!w) return;
    *w = on ? *w | mask : *w & ~mask;
  }
}

/* ---- Records. ---- */

static span_t *record_new(span_t **spare) {
  if (!*spare) {
    span_t *chunk;
    if (hak_os_meta_alloc(64 * sizeof(span_t), (void **)&chunk) != 0) return NULL;
    for (int i = 0; i < 64; i++) {
      chunk[i].next = *spare;
      *spare = &chunk[i];
    }
  }
  span_t *s = *spare;
  *spare = s->next;
  return s;
}

static void record_free(span_t **spare, span_t *s) {
  s->state = SPAN_SPARE;
  s->next = *spare;
  *spare = s;
}

/* ---- Bins and the dirty list (arena lock held). ---- */

static inline unsigned bin_of(size_t pages) {
  if (pages < 16) return (unsigned)pages;
  unsigned bit = 63u - (unsigned)__builtin_clzll(pages);
  unsigned b = 16 + (bit - 4) * 4 + (unsigned)((pages >> (bit - 2)) & 3);
  return b < BINS ? b : BINS - 1;
}

static void free_insert(arena_t *a, span_t *s) {
  unsigned b = bin_of(s->pages);
  s->state = SPAN_FREE;
  s->bin = (uint8_t)b;
  s->prev = NULL;
  s->next = a->bins[b];
  if (s->next) s->next->prev = s;
  a->bins[b] = s;
  a->nonempty[b / 64] |= 1ull << (b % 64);
  if (s->dirty) {
    s->dprev = NULL;
    s->dnext = a->dirty;
    if (s->dnext)
      s->dnext->dprev = s;
    else
      a->dirty_tail = s;
    a->dirty = s;
    __atomic_store_n(&a->dirty_pages, a->dirty_pages + s->pages, __ATOMIC_RELAXED);
    __atomic_fetch_add(&dirty_bytes_total, s->pages * PAGE, __ATOMIC_RELAXED);
  }
  map_span(s);
}

static void dirty_remove(arena_t *a, span_t *s) {
  if (s->dprev)
    s->dprev->dnext = s->dnext;
  else
    a->dirty = s->dnext;
  if (s->dnext)
    s->dnext->dprev = s->dprev;
  else
    a->dirty_tail = s->dprev;
  __atomic_store_n(&a->dirty_pages, a->dirty_pages - s->pages, __ATOMIC_RELAXED);
  __atomic_fetch_sub(&dirty_bytes_total, s->pages * PAGE, __ATOMIC_RELAXED);
}

static void free_remove(arena_t *a, span_t *s) {
  unsigned b = s->bin;
  if (s->prev)
    s->prev->next = s->next;
  else
    a->bins[b] = s->next;
  if (s->next) s->next->prev = s->prev;
  if (!a->bins[b]) a->nonempty[b / 64] &= ~(1ull << (b % 64));
  if (s->dirty) dirty_remove(a, s);
}

/* A FREE span of at least `pages`: the best fit among the first spans of its own bin, else
 * the most recently freed span of the next bin that has one (all of whose spans fit). */
static span_t *span_find(arena_t *a, size_t pages) {
  unsigned b = bin_of(pages);
  span_t *best = NULL;
  unsigned scanned = 0;
  for (span_t *s = a->bins[b]; s && scanned < BIN_SCAN; s = s->next, scanned++) {
    if (s->pages < pages) continue;
    if (!best || s->pages < best->pages) best = s;
    if (s->pages == pages) break;
  }
  if (best) return best;
  /* Every span of a higher bin fits. Dirty pages first (reusing them costs no new
   * memory), then the lowest address (blocks packed low leave fewer holes); the first
   * two non-empty bins are looked at. */
  span_t *clean = NULL;
  unsigned bins_seen = 0;
  for (unsigned w = (b + 1) / 64; w < BINS / 64 && bins_seen < 2; w++) {
    uint64_t bits = a->nonempty[w];
    if (w == (b + 1) / 64) bits &= ~0ull << ((b + 1) % 64);
    for (; bits && bins_seen < 2; bits &= bits - 1, bins_seen++) {
      scanned = 0;
      for (span_t *s = a->bins[w * 64 + (unsigned)__builtin_ctzll(bits)]; s && scanned < BIN_SCAN;
           s = s->next, scanned++) {
        span_t **pick = s->dirty ? &best : &clean;
        if (!*pick || s->start < (*pick)->start) *pick = s;
      }
      if (best) return best;
    }
  }
  return clean;
}

/* Takes [s->start + lead pages, + pages) out of the FREE span s (removed from its bin by
 * the caller) as a USED span; what is left on either side goes back to the bins. Returns
 * the USED span, or NULL (s back in the bins) when no record is left for a remainder. */
static span_t *span_carve(arena_t *a, span_t *s, size_t lead, size_t pages) {
  size_t tail = s->pages - lead - pages;
  span_t *l = NULL, *t = NULL;
  if ((lead && !(l = record_new(&a->spare))) || (tail && !(t = record_new(&a->spare)))) {
    if (l) record_free(&a->spare, l);
    free_insert(a, s);
    return NULL;
  }
  if (l) {
    *l = (span_t){.start = s->start,
                  .pages = lead,
                  .dirty = s->dirty,
                  .arena = s->arena,
                  .freed_ms = s->freed_ms};
    free_insert(a, l);
  }
  if (t) {
    *t = (span_t){.start = s->start + (lead + pages) * PAGE,
                  .pages = tail,
                  .dirty = s->dirty,
                  .arena = s->arena,
                  .freed_ms = s->freed_ms};
    free_insert(a, t);
  }
  s->start += lead * PAGE;
  s->pages = pages;
  s->state = SPAN_USED;
  map_span(s);
  a->live_blocks++;
  a->live_pages += pages;
  if (a->live_pages > a->live_peak) a->live_peak = a->live_pages;
  return s;
}

/* Maps at least `pages` more at the arena's top: a clean FREE span, in no bin, that the
 * caller joins to its neighbour; NULL when the slice is full or the kernel refuses. */
static span_t *arena_grow(arena_t *a, size_t pages) {
  size_t need = pages * PAGE;
  /* A quarter of the extent at least, so that an arena reaches its peak in a few calls;
   * pages mapped and never touched cost no memory. */
  size_t want = need > (a->top - a->base) / 4 ? need : (a->top - a->base) / 4;
  size_t grow = (want + GROW_BYTES - 1) & ~(GROW_BYTES - 1);
  if (grow > a->end - a->top) grow = a->end - a->top;
  if (grow < need) return NULL;
  /* Page-map slots first: a mapping the map cannot describe is never made. */
  for (uintptr_t p = a->top; p < a->top + grow; p += (PAGE << L2_BITS)) {
    if (!map_slot(p, 1)) return NULL;
  }
  span_t *s = map_slot(a->top + grow - PAGE, 1) ? record_new(&a->spare) : NULL;
  if (!s) return NULL;
  if (hak_os_commit_at((void *)a->top, grow) != 0) {
    if (grow == need || hak_os_commit_at((void *)a->top, need) != 0) {
      record_free(&a->spare, s);
      return NULL;
    }
    grow = need;
  }
  a->committed += (int64_t)grow;
  *s = (span_t){.start = a->top, .pages = grow / PAGE, .arena = (uint8_t)(a - arenas)};
  a->top += grow;
  return s;
}

/* The FREE span ending at the top, if it is clean (fresh or purged pages), else NULL. */
static span_t *clean_last(arena_t *a) {
  span_t *last = a->top > a->base ? map_get(a->top - PAGE) : NULL;
  return last && last->state == SPAN_FREE && !last->dirty && span_end(last) == a->top ? last : NULL;
}

/* The freed time of dirty spans s and o joined: the mean of theirs, weighted by pages.
 * The oldest of the two would purge a block freed a moment ago with the old neighbour
 * it joined, and a program replacing big buffers would refault them (large 5-25M made
 * 20% more page faults than with no decay at all); the newest would let a span that
 * keeps taking small frees stay resident for ever. */
static uint64_t merged_age(const span_t *s, const span_t *o) {
  return (s->freed_ms * s->pages + o->freed_ms * o->pages) / (s->pages + o->pages);
}

/* Puts the FREE span s in the bins, joined with the FREE spans on either side that are
 * as dirty as it is (a clean span never absorbs a dirty one, so the flag stays exact and
 * a clean block needs no clearing). */
static void free_coalesce(arena_t *a, span_t *s) {
  if (s->start > a->base) {
    span_t *l = map_get(s->start - PAGE);
    if (l && l->state == SPAN_FREE && span_end(l) == s->start && l->dirty == s->dirty) {
      free_remove(a, l);
      s->freed_ms = merged_age(s, l);
      s->start = l->start;
      s->pages += l->pages;
      record_free(&a->spare, l);
    }
  }
  if (span_end(s) < a->top) {
    span_t *r = map_get(span_end(s));
    if (r && r->state == SPAN_FREE && r->start == span_end(s) && r->dirty == s->dirty) {
      free_remove(a, r);
      s->freed_ms = merged_age(s, r);
      s->pages += r->pages;
      record_free(&a->spare, r);
    }
  }
  free_insert(a, s);
}

/* Gives back the pages of the arena's oldest dirty spans while its dirty pages exceed
 * 1.5 times the recent peak of its live ones (and DIRTY_FLOOR): freed pages are kept in
 * proportion to what the arena recently served, so holes between blocks cannot hold much
 * more than the blocks did, whatever the decay, while a program that frees and allocates
 * its working set in cycles keeps it (the old copies of growing buffers come to about
 * half of it: at 1.0 times, chains of realloc to 4 MiB ran 5x slower, refaulting). Lock
 * held. */
static void arena_trim_dirty(arena_t *a) {
  uint64_t limit = a->live_peak + a->live_peak / 2;
  if (limit < DIRTY_FLOOR / PAGE) limit = DIRTY_FLOOR / PAGE;
  if (a->dirty_pages <= limit) return;
  limit /= 2; /* down to half, so that the next frees do not each cost a call */
  while (a->dirty_pages > limit) {
    span_t *s = a->dirty_tail;
    size_t excess = a->dirty_pages - limit;
    span_t *c = excess < s->pages ? record_new(&a->spare) : NULL;
    if (c) { /* only the excess, cut from the front of the span as a clean one */
      if (hak_os_decommit((void *)s->start, excess * PAGE) != 0) {
        record_free(&a->spare, c);
        return;
      }
      a->committed -= (int64_t)(excess * PAGE);
      free_remove(a, s);
      *c = (span_t){.start = s->start, .pages = excess, .arena = s->arena};
      s->start += excess * PAGE;
      s->pages -= excess;
      free_insert(a, s);
      free_coalesce(a, c);
      return;
    }
    if (hak_os_decommit((void *)s->start, s->pages * PAGE) != 0) return;
    a->committed -= (int64_t)(s->pages * PAGE);
    free_remove(a, s);
    s->dirty = 0;
    free_coalesce(a, s);
  }
}

/* Frees the USED span s: dirty, joined with dirty neighbours, back in the bins; past the
 * bound on freed memory kept committed, its pages go back at once. */
static void span_release(arena_t *a, span_t *s) {
  hak_asan_poison((void *)s->start, s->pages * PAGE);
  a->live_blocks--;
  a->live_pages -= s->pages;
  s->dirty = 1;
  pieces_mark(a, s->start, span_end(s), 0); /* written by the program: taken as resident */
  s->freed_ms = hak_now_ms();
  uint64_t cap = (uint64_t)hak_opt(HAK_OPT_BIGCACHE_MB) << 20;
  if (__atomic_load_n(&dirty_bytes_total, __ATOMIC_RELAXED) + s->pages * PAGE > cap &&
      hak_os_decommit((void *)s->start, s->pages * PAGE) == 0) {
    s->dirty = 0;
    a->committed -= (int64_t)(s->pages * PAGE);
  }
  free_coalesce(a, s);
  arena_trim_dirty(a);
}

/* A USED span of `pages` aligned to `align` from arena a (lock held); *clean says whether
 * its pages read as zero. */
static span_t *arena_alloc(arena_t *a, size_t pages, size_t align, int *clean) {
  size_t extra = align > PAGE ? align / PAGE - 1 : 0;
  span_t *s = span_find(a, pages + extra);
  if (s) {
    a->hits++;
    free_remove(a, s);
  } else {
    a->misses++;
    span_t *last = clean_last(a); /* grows into the clean span at the top */
    span_t *g = arena_grow(a, pages + extra - (last ? last->pages : 0));
    if (!g) return NULL;
    if (last) {
      free_remove(a, last);
      last->pages += g->pages;
      record_free(&a->spare, g);
      g = last;
    }
    s = g;
  }
  size_t lead = ((((s->start + align - 1) & ~(uintptr_t)(align - 1)) - s->start) / PAGE);
  if (align <= PAGE) lead = 0;
  *clean = !s->dirty;
  return span_carve(a, s, lead, pages);
}

/* Backs the new block d (a USED span that is clean, or has hollow pieces: pages moved out
 * of them, some read as zero) with resident pages of the arena's dirty free spans instead of fresh
 * ones: they move over (mremap, no byte copied, no page fault) and the program's writes fault
 * nothing in. Without this, a program replacing big buffers of random sizes grew the
 * arena with fresh pages each time no hole fitted, while the holes stayed resident until
 * the decay: large 5-25M peaked at 467 MB against jemalloc's 392-401 (which unmaps at
 * once and refaults every page); with it, 393 MB at the same speed.
 * - Pages move in 1 MiB-aligned pieces, into 1 MiB-aligned places: every mapping
 *   boundary a move creates lies on the 1 MiB grid, so an arena's mappings stay fewer
 *   than its extent in MiB however long the program runs, and an arena past FILL_SPLITS
 *   MiB moves nothing (at most 16384 mappings for the 8 arenas; vm.max_map_count is
 *   65530). Blocks of FILL_MIN and more take whole pieces (block_pages), so the holes
 *   they leave move whole. (2 MiB pieces, the huge-page size, left up to 2 MiB resident
 *   past the end of each rounded block: heaps of many 4-8 MiB buffers peaked 8% higher
 *   than with no moves; 1 MiB pieces peak lower than that on every mix tried, and
 *   512 KiB ones were no better on most.)
 * - The spans the pages leave stay dirty and their pieces are marked hollow: they still
 *   join their dirty neighbours. Marked clean, they split the free space into pieces that
 *   fitted no block (peaks rose to 550 MB); given back whole, their unaligned ends were
 *   refaulted (20% slower). A block placed on hollow pieces is filled in turn, so memory
 *   grows only when the program's live blocks do.
 * - Only hollow pieces are asked about (mincore, at least half resident counts as
 *   resident): a piece of d that is not hollow keeps its pages, a source piece that is
 *   not hollow moves (the program wrote it). A flag per span instead sent every piece of
 *   a span with one hollow piece to mincore: 3% of large 5-25M's time.
 * Oldest dirty spans first, at most FILL_SCAN of them, and at most FILL_PROBES hollow
 * pieces plus 4 per piece d needs (a hollow span of a GiB would otherwise cost 1024
 * calls of mincore for any block: the work stays in proportion to d's size, and the
 * mincore of a piece costs far less than the 256 faults it saves); runs of pieces
 * adjacent on both sides move in one call. Returns whether any page moved (d then holds
 * old bytes). Lock held. */
static int span_fill(arena_t *a, span_t *d, int clean) {
  if ((a->top - a->base) / FILL_GRAIN > FILL_SPLITS) return 0;
  uintptr_t lo = (d->start + FILL_GRAIN - 1) & ~(FILL_GRAIN - 1);
  uintptr_t hi = span_end(d) & ~(FILL_GRAIN - 1);
  span_t *next = a->dirty_tail, *src = NULL;
  uintptr_t from = 0, to = 0;         /* the source span's pieces not looked at yet */
  uintptr_t run_from = 0, run_to = 0; /* pieces found and not moved yet: one call */
  size_t run = 0;
  unsigned scanned = 0;
  size_t probes = 0, budget = FILL_PROBES + 4 * ((hi - lo) / FILL_GRAIN);
  int moved = 0;
  for (uintptr_t at = lo; at <= hi; at += FILL_GRAIN) {
    int need = at < hi && (clean || (piece_hollow(a, at) &&
                                     hak_os_resident((void *)at, FILL_GRAIN) < FILL_GRAIN / 2));
    if (need) {
      for (;; from += FILL_GRAIN) { /* the next resident piece of a dirty span */
        while (from >= to && next && scanned++ < FILL_SCAN) {
          src = next;
          next = next->dprev;
          from = (src->start + FILL_GRAIN - 1) & ~(FILL_GRAIN - 1);
          to = span_end(src) & ~(FILL_GRAIN - 1);
        }
        int hollow = from < to && piece_hollow(a, from);
        if (from >= to || (hollow && probes++ >= budget)) {
          need = 0; /* none left within reach: the rest of d stays fresh */
          hi = at;
          break;
        }
        if (!hollow || hak_os_resident((void *)from, FILL_GRAIN) >= FILL_GRAIN / 2) break;
      }
    }
    if (need && run && run_from + run == from && run_to + run == at) {
      run += FILL_GRAIN; /* continues the run on both sides */
    } else {
      if (run) {
        if (hak_os_move_pages((void *)run_from, run, (void *)run_to) != 0) return moved;
        pieces_mark(a, run_from, run_from + run, 1);
        pieces_mark(a, run_to, run_to + run, 0);
        a->moved_pages += run / PAGE;
        moved = 1;
      }
      run = need ? FILL_GRAIN : 0;
      run_from = from;
      run_to = at;
    }
    if (need) from += FILL_GRAIN;
  }
  return moved;
}

/* ---- Arenas: which one serves a thread, which one holds an address. ---- */

static arena_t *arena_of_address(uintptr_t p) {
  unsigned n = __atomic_load_n(&arena_count, __ATOMIC_ACQUIRE);
  if (!n || p < region_base || p >= region_end) return NULL;
  return &arenas[(p - region_base) / slice_bytes];
}

static arena_t *arena_of_thread(void) {
  unsigned n = __atomic_load_n(&arena_count, __ATOMIC_ACQUIRE);
  if (!n) return NULL;
  if (!thread_arena) {
    thread_arena = 1 + __atomic_fetch_add(&arena_next, 1, __ATOMIC_RELAXED) % n;
  }
  return &arenas[thread_arena - 1];
}

static size_t cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  int n = CPU_COUNT(&set);
  return n > 0 ? (size_t)n : 1;
}

void hak_large_init(uintptr_t base, size_t size) {
  if (__atomic_load_n(&arena_count, __ATOMIC_ACQUIRE) || hak_os_page_size() != PAGE) return;
  size_t slice = (size / ARENAS_MAX) & ~(GROW_BYTES - 1);
  if (slice < GROW_BYTES * 4) return;
  region_base = base;
  region_end = base + slice * ARENAS_MAX;
  slice_bytes = slice;
  for (unsigned i = 0; i < ARENAS_MAX; i++) {
    pthread_mutex_init(&arenas[i].lock, NULL);
    arenas[i].base = arenas[i].top = base + i * slice;
    arenas[i].end = arenas[i].base + slice;
  }
  size_t n = 2 * cpu_count();
  __atomic_store_n(&arena_count, n < ARENAS_MAX ? (unsigned)n : ARENAS_MAX, __ATOMIC_RELEASE);
}

/* ---- Direct mappings (huge_lock held): blocks the region does not take. ---- */

typedef struct {
  uintptr_t base;    /* a freed mapping kept for reuse */
  size_t size;       /* its size */
  uint64_t freed_ms; /* when it was freed */
} huge_entry_t;

static pthread_mutex_t huge_lock = PTHREAD_MUTEX_INITIALIZER;
static span_t *huge_spare, *huge_live; /* records; live MAPPED blocks (via next/prev) */
static huge_entry_t huge_cache[HUGE_SLOTS];
static unsigned huge_cached;
static uint64_t huge_live_blocks, huge_live_bytes, huge_cached_bytes, huge_hits, huge_misses;

/* A mapping the kernel refused to unmap (munmap fails with ENOMEM when splitting a merged
 * area would pass vm.max_map_count): its pages are given back at once, and the range is
 * kept on this list, threaded through its own first bytes, until a retry succeeds. */
typedef struct unreleased {
  struct unreleased *next; /* the next refused mapping */
  size_t size;             /* this one's size */
} unreleased_t;

static unreleased_t *unreleased;
static uint64_t unreleased_bytes;

static void release_mapping(uintptr_t base, size_t size) {
  if (hak_os_release((void *)base, size) == 0) return;
  hak_os_decommit((void *)base, size); /* if this fails too, the pages stay: still accounted */
  unreleased_t *u = (unreleased_t *)base;
  hak_asan_unpoison(u, sizeof *u);
  u->next = unreleased;
  u->size = size;
  unreleased = u;
  __atomic_store_n(&unreleased_bytes, unreleased_bytes + size, __ATOMIC_RELAXED);
}

static void retry_unreleased(void) {
  for (unreleased_t **pp = &unreleased; *pp;) {
    unreleased_t *u = *pp;
    unreleased_t *next = u->next;
    size_t size = u->size;
    if (hak_os_release(u, size) == 0) {
      *pp = next;
      __atomic_store_n(&unreleased_bytes, unreleased_bytes - size, __ATOMIC_RELAXED);
    } else {
      pp = &u->next;
    }
  }
}

static void huge_cache_evict(unsigned i) {
  huge_entry_t e = huge_cache[i];
  huge_cache[i] = huge_cache[--huge_cached];
  huge_cached_bytes -= e.size;
  release_mapping(e.base, e.size);
}

/* Keeps a freed mapping for the decay, the oldest one making room. */
static void huge_cache_put(uintptr_t base, size_t size) {
  uint64_t cap = (uint64_t)hak_opt(HAK_OPT_BIGCACHE_MB) << 20;
  if (size > cap) {
    release_mapping(base, size);
    return;
  }
  while (huge_cached && (huge_cached == HUGE_SLOTS || huge_cached_bytes + size > cap)) {
    unsigned oldest = 0;
    for (unsigned i = 1; i < huge_cached; i++) {
      if (huge_cache[i].freed_ms < huge_cache[oldest].freed_ms) oldest = i;
    }
    huge_cache_evict(oldest);
  }
  /* Poisoned only when kept: a mapping unmapped at once faults when used (and poisoning
   * a mapping of gigabytes would cost its eighth in shadow memory first). */
  hak_asan_poison((void *)base, size);
  huge_cache[huge_cached++] = (huge_entry_t){base, size, hak_now_ms()};
  huge_cached_bytes += size;
}

/* The smallest cached mapping of at least `size` and at most twice that. */
static uintptr_t huge_cache_take(size_t *size) {
  int best = -1;
  for (unsigned i = 0; i < huge_cached; i++) {
    size_t s = huge_cache[i].size;
    if (s >= *size && s / 2 <= *size && (best < 0 || s < huge_cache[best].size)) best = (int)i;
  }
  if (best < 0) return 0;
  uintptr_t base = huge_cache[best].base;
  *size = huge_cache[best].size;
  huge_cache[best] = huge_cache[--huge_cached];
  huge_cached_bytes -= *size;
  return base;
}

/* Registers the block at `user` inside the mapping [base, base + size). */
static void *huge_place(uintptr_t base, size_t size, uintptr_t user) {
  span_t **slot = map_slot(user, 1);
  span_t *s = slot ? record_new(&huge_spare) : NULL;
  if (!s) return NULL;
  *s = (span_t){.start = user, .pages = size, .state = SPAN_MAPPED};
  s->map_base = base;
  s->next = huge_live;
  if (huge_live) huge_live->prev = s;
  huge_live = s;
  __atomic_store_n(slot, s, __ATOMIC_RELEASE);
  huge_live_blocks++;
  huge_live_bytes += size;
  return (void *)user;
}

static void huge_unregister(span_t *s) {
  __atomic_store_n(map_slot(s->start, 0), NULL, __ATOMIC_RELEASE);
  if (s->prev)
    s->prev->next = s->next;
  else
    huge_live = s->next;
  if (s->next) s->next->prev = s->prev;
  huge_live_blocks--;
  huge_live_bytes -= s->pages;
  record_free(&huge_spare, s);
}

static span_t *huge_lookup(uintptr_t p) {
  span_t *s = map_get(p);
  return s && s->state == SPAN_MAPPED && s->start == p ? s : NULL;
}

static void *huge_malloc(size_t n, size_t align, int zero) {
  size_t size = (n + align - PAGE + PAGE - 1) & ~(PAGE - 1); /* room to align inside */
  if (align <= PAGE) size = (n + PAGE - 1) & ~(PAGE - 1);
  pthread_mutex_lock(&huge_lock);
  uintptr_t base = align <= PAGE ? huge_cache_take(&size) : 0;
  int hit = base != 0;
  if (hit) {
    huge_hits++;
  } else {
    huge_misses++;
    pthread_mutex_unlock(&huge_lock);
    void *fresh;
    if (hak_os_map(size, 0, &fresh) != 0) {
      errno = ENOMEM;
      return NULL;
    }
    HAK_TRACE_ROUTE(HAK_ROUTE_LARGE_MAP, fresh, 0);
    base = (uintptr_t)fresh;
    pthread_mutex_lock(&huge_lock);
  }
  uintptr_t user = (base + align - 1) & ~(uintptr_t)(align - 1);
  void *p = huge_place(base, size, user);
  if (!p) huge_cache_put(base, size);
  pthread_mutex_unlock(&huge_lock);
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  hak_asan_unpoison(p, base + size - (uintptr_t)p);
  if (zero && hit) memset(p, 0, n);
  return p;
}

/* ---- The tier's interface. ---- */

static size_t pages_for(size_t n) { return (n + PAGE - 1) / PAGE; }

/* The pages of a new block of n bytes: blocks of FILL_MIN and more take whole pieces of
 * FILL_GRAIN, so that the spans they leave when freed start and end on its grid, where
 * span_fill can move every page of them (with the blocks at page sizes, the unaligned
 * ends of every hole stayed resident: large 5-25M peaked at 460 MB with moves, 392 MB for
 * jemalloc). The rest of the last piece is address space the program does not touch. */
static size_t block_pages(size_t n) {
  size_t pages = pages_for(n);
  if (pages < FILL_MIN / PAGE) return pages;
  return (pages + FILL_GRAIN / PAGE - 1) & ~(FILL_GRAIN / PAGE - 1);
}

/* Blocks above this go to their own mapping: a quarter of a slice keeps one arena from
 * being filled by a few blocks. */
static size_t region_max(void) { return slice_bytes / 4; }

/* A block of n bytes aligned to align, cleared if zero. whole: a block of FILL_MIN and
 * more takes whole pieces (block_pages) and, on clean or hollow pieces, is filled with freed
 * pages (span_fill); realloc's moves ask for exact pages (rounded, realloc_grow's copies
 * to 4-5 MiB ran 10% slower: the rounded spans fitted the arena's holes worse, and more
 * was decommitted and faulted in again). */
static void *large_alloc(size_t n, size_t align, int zero, int whole);

void *hak_large_malloc(size_t n, size_t align, int zero) { return large_alloc(n, align, zero, 1); }

static void *large_alloc(size_t n, size_t align, int zero, int whole) {
  if (align < 16) align = 16;
  if (n == 0) n = 1;
  if (align > LARGE_LIMIT || n > LARGE_LIMIT) {
    errno = ENOMEM;
    return NULL;
  }
  arena_t *a = arena_of_thread();
  if (a && n + align <= region_max()) {
    /* The thread's arena, else (frozen in a fork child, or full) each other one. */
    for (unsigned i = 0, count = arena_count; i < count; i++) {
      arena_t *x = &arenas[(unsigned)(a - arenas + i) % count];
      pthread_mutex_lock(&x->lock);
      int clean = 0;
      span_t *s =
          x->frozen ? NULL : arena_alloc(x, whole ? block_pages(n) : pages_for(n), align, &clean);
      if (s && whole && !zero && s->pages >= FILL_MIN / PAGE && span_fill(x, s, clean)) clean = 0;
      pthread_mutex_unlock(&x->lock);
      if (s) {
        HAK_TRACE_ROUTE(HAK_ROUTE_BIGCACHE, (void *)s->start, 0);
        hak_asan_unpoison((void *)s->start, s->pages * PAGE);
        if (zero && !clean) memset((void *)s->start, 0, n);
        return (void *)s->start;
      }
    }
  }
  return huge_malloc(n, align, zero);
}

/* The USED span that starts at p in arena a (lock held), or NULL. */
static span_t *span_lookup(uintptr_t p) {
  if (p & (PAGE - 1)) return NULL;
  span_t *s = map_get(p);
  return s && s->state == SPAN_USED && s->start == p ? s : NULL;
}

/* Whether page-aligned p lies in a FREE span of arena a (lock held): a block freed
 * already. p's page-map entry may be stale (p's span joined its left neighbour): the
 * record it names then is checked to cover p, so no stale entry can make the claim. */
static int in_free_span(arena_t *a, uintptr_t p) {
  if (p & (PAGE - 1)) return 0;
  span_t *s = map_get(p);
  return s && s->state == SPAN_FREE && s->arena == (uint8_t)(a - arenas) && p >= s->start &&
         p < span_end(s);
}

/* A freed mapping in the huge cache starting at p (huge_lock held). */
static int in_huge_cache(uintptr_t p) {
  for (unsigned i = 0; i < huge_cached; i++) {
    if (huge_cache[i].base == p) return 1;
  }
  return 0;
}

int hak_large_freed(const void *ptr) {
  uintptr_t p = (uintptr_t)ptr;
  arena_t *a = arena_of_address(p);
  int freed;
  if (a) {
    pthread_mutex_lock(&a->lock);
    freed = in_free_span(a, p);
    pthread_mutex_unlock(&a->lock);
  } else {
    pthread_mutex_lock(&huge_lock);
    freed = in_huge_cache(p);
    pthread_mutex_unlock(&huge_lock);
  }
  return freed;
}

int hak_large_free(void *ptr) {
  uintptr_t p = (uintptr_t)ptr;
  arena_t *a = arena_of_address(p);
  if (a) {
    pthread_mutex_lock(&a->lock);
    span_t *s = span_lookup(p);
    size_t bytes = s ? s->pages * PAGE : 0;
    int freed_before = !s && in_free_span(a, p);
    if (s && !a->frozen) span_release(a, s);
    pthread_mutex_unlock(&a->lock);
    if (!s) return freed_before ? -1 : 0;
    HAK_TRACE_ROUTE(HAK_ROUTE_BIGCACHE, ptr, 1);
    hak_purge_kick(bytes); /* freed pages start their decay */
    return 1;
  }
  pthread_mutex_lock(&huge_lock);
  span_t *s = huge_lookup(p);
  if (!s) {
    int freed_before = in_huge_cache(p);
    pthread_mutex_unlock(&huge_lock);
    return freed_before ? -1 : 0;
  }
  uintptr_t base = s->map_base;
  size_t size = s->pages;
  huge_unregister(s);
  huge_cache_put(base, size);
  pthread_mutex_unlock(&huge_lock);
  HAK_TRACE_ROUTE(HAK_ROUTE_BIGCACHE, ptr, 1);
  hak_purge_kick(size);
  return 1;
}

size_t hak_large_usable(const void *ptr) {
  uintptr_t p = (uintptr_t)ptr;
  size_t usable = 0;
  arena_t *a = arena_of_address(p);
  if (a) {
    pthread_mutex_lock(&a->lock);
    span_t *s = span_lookup(p);
    if (s) usable = s->pages * PAGE;
    pthread_mutex_unlock(&a->lock);
    return usable;
  }
  if (p & 15) return 0;
  pthread_mutex_lock(&huge_lock);
  span_t *s = huge_lookup(p);
  if (s) usable = s->map_base + s->pages - p;
  pthread_mutex_unlock(&huge_lock);
  return usable;
}

/* Resizes the USED span s of arena a in place (lock held): shrinks by freeing its tail,
 * grows into the free span after it or past the top. Returns 1 if s now has `pages`. */
static int span_resize(arena_t *a, span_t *s, size_t pages) {
  if (pages <= s->pages) {
    if (pages * 2 > s->pages) return 1; /* not worth a split */
    span_t *t = record_new(&a->spare);
    if (!t) return 1;
    *t = (span_t){.start = s->start + pages * PAGE,
                  .pages = s->pages - pages,
                  .state = SPAN_USED,
                  .arena = s->arena};
    s->pages = pages;
    map_span(s);
    a->live_blocks++; /* t is released as a block of its own */
    span_release(a, t);
    return 1;
  }
  /* Growth: into the free span after s (dirty or clean: it becomes part of a block),
   * and past the top when that span, or s, ends there. */
  uintptr_t end = span_end(s);
  span_t *r = NULL;
  if (end < a->top) {
    r = map_get(end);
    if (!r || r->state != SPAN_FREE || r->start != end) return 0; /* a block follows */
  }
  size_t have = s->pages + (r ? r->pages : 0);
  span_t *g = NULL;
  if (have < pages) {
    if ((r ? span_end(r) : end) != a->top) return 0;
    if (!(g = arena_grow(a, pages - have))) return 0;
  }
  if (r) free_remove(a, r);
  size_t rest = have + (g ? g->pages : 0) - pages;
  /* What is left over lies in the last piece: the grown one if any, else r. */
  span_t *left_over = g ? g : r;
  if (g && r) record_free(&a->spare, r);
  a->live_pages += pages - s->pages;
  s->pages = pages;
  map_span(s);
  if (left_over && rest) {
    left_over->start = span_end(s);
    left_over->pages = rest;
    free_insert(a, left_over); /* between s and the top, or a block of another kind */
  } else if (left_over) {
    record_free(&a->spare, left_over);
  }
  return 1;
}

/* Extra bytes a block moved by realloc gets: half its new size, at most 64 MiB. */
static size_t move_room(size_t n) { return n / 2 < REALLOC_HEADROOM ? n / 2 : REALLOC_HEADROOM; }

/* Grows the USED span s of arena a (lock held) into the free span before it (and the one
 * after it, if free), moving its bytes down: the block takes the place it and its free
 * neighbours cover instead of leaving a hole where it was. Returns its new start, or 0
 * when its free neighbours together are too small. */
static uintptr_t span_slide(arena_t *a, span_t *s, size_t pages) {
  span_t *l = s->start > a->base ? map_get(s->start - PAGE) : NULL;
  if (!l || l->state != SPAN_FREE || span_end(l) != s->start) return 0;
  span_t *r = span_end(s) < a->top ? map_get(span_end(s)) : NULL;
  if (r && (r->state != SPAN_FREE || r->start != span_end(s))) r = NULL;
  size_t all = l->pages + s->pages + (r ? r->pages : 0);
  if (all < pages) return 0; /* no headroom: with half the size, realloc_grow held more */
  free_remove(a, l);
  if (r) free_remove(a, r);
  uintptr_t from = s->start;
  size_t old_pages = s->pages;
  s->start = l->start;
  hak_asan_unpoison((void *)s->start, old_pages * PAGE); /* lands (partly) on a free span */
  memmove((void *)s->start, (void *)from, old_pages * PAGE);
  a->live_pages += pages - old_pages;
  s->pages = pages;
  map_span(s);
  /* The rest, after the block: pages of the block's old place (dirty) at least. */
  if (r) record_free(&a->spare, r);
  if (all > pages) {
    hak_asan_poison((void *)span_end(s), (all - pages) * PAGE);
    *l = (span_t){.start = span_end(s),
                  .pages = all - pages,
                  .dirty = 1,
                  .arena = s->arena,
                  .freed_ms = hak_now_ms()};
    free_coalesce(a, l);
  } else {
    record_free(&a->spare, l);
  }
  return s->start;
}

/* Moves the big USED span s of arena a to a new span of the same arena (with headroom)
 * by moving its pages (mremap, no byte copied); the old span, now empty, is freed clean.
 * Lock held. NULL when no span or the kernel refuses (the caller copies instead). A move
 * splits the arena's mapping where the pages land, and the old span's pages must be
 * faulted in again when it is reused, so only blocks of 4 MiB and more move this way
 * (at 1 MiB, realloc_grow ran 1.7x slower): the mappings this adds stay few beside
 * vm.max_map_count. */
static void *span_move(arena_t *a, span_t *s, size_t n) {
  size_t room = move_room(n);
  size_t want = n + room <= region_max() ? n + room : n;
  int clean;
  span_t *d = arena_alloc(a, pages_for(want), PAGE, &clean);
  if (!d) return NULL;
  if (hak_os_move_pages((void *)s->start, s->pages * PAGE, (void *)d->start) != 0) {
    span_release(a, d);
    return NULL;
  }
  a->live_blocks--;
  a->live_pages -= s->pages;
  s->dirty = 0; /* its pages left with the block: it reads as zero */
  hak_asan_poison((void *)s->start, s->pages * PAGE);
  free_coalesce(a, s);
  return (void *)d->start;
}

/* Moves a block to a new place with headroom (so that the next steps of a growing buffer
 * fit), copying its bytes; NULL if no memory. */
static void *move_grow(void *p, size_t old_usable, size_t n) {
  size_t room = move_room(n);
  size_t want = n + room > LARGE_LIMIT ? n : n + room;
  void *q = large_alloc(want, 16, 0, 0);
  if (!q) return NULL;
  memcpy(q, p, old_usable < n ? old_usable : n);
  hak_large_free(p);
  return q;
}

/* Direct mappings grow in place with mremap, else move their pages (no byte copied). */
static void *huge_realloc(span_t *s, size_t n) {
  uintptr_t p = s->start;
  size_t size = (n + (p - s->map_base) + PAGE - 1) & ~(PAGE - 1);
  void *dest;
  if (size <= s->pages) {
    if (size * 2 > s->pages) return (void *)p;
    if (hak_os_remap((void *)s->map_base, s->pages, size, 0, &dest) != 0) return (void *)p;
    huge_live_bytes -= s->pages - size;
    s->pages = size;
    return (void *)p;
  }
  if (p != s->map_base) return NULL; /* an aligned block: the caller moves it */
  size_t room = n < REALLOC_HEADROOM ? n : REALLOC_HEADROOM;
  size = (n + room + PAGE - 1) & ~(PAGE - 1);
  if (hak_os_remap((void *)p, s->pages, size, 0, &dest) == 0) {
    huge_live_bytes += size - s->pages;
    s->pages = size;
    return (void *)p;
  }
  /* The destination and its page-map slot exist before anything moves, so nothing can
   * fail half-way. */
  if (hak_os_map(size, 0, &dest) != 0) return NULL;
  if (!map_slot((uintptr_t)dest, 1) || hak_os_remap_to((void *)p, s->pages, size, dest) != 0) {
    release_mapping((uintptr_t)dest, size);
    return NULL;
  }
  huge_unregister(s); /* its pages moved: the old range is gone */
  return huge_place((uintptr_t)dest, size, (uintptr_t)dest);
}

void *hak_large_realloc(void *ptr, size_t n) {
  uintptr_t p = (uintptr_t)ptr;
  if (n == 0) n = 1;
  if (n > LARGE_LIMIT) {
    errno = ENOMEM;
    return NULL;
  }
  void *result = NULL;
  size_t old_usable = 0;
  arena_t *a = arena_of_address(p);
  if (a) {
    pthread_mutex_lock(&a->lock);
    span_t *s = span_lookup(p);
    if (s) {
      old_usable = s->pages * PAGE;
      if (!a->frozen && n <= region_max()) {
        uintptr_t slid;
        if (span_resize(a, s, pages_for(n))) {
          result = ptr;
        } else if (s->pages >= REMAP_MIN_PAGES) {
          result = span_move(a, s, n);
        } else if ((slid = span_slide(a, s, pages_for(n))) != 0) {
          result = (void *)slid;
        }
      }
    }
    pthread_mutex_unlock(&a->lock);
  } else {
    pthread_mutex_lock(&huge_lock);
    span_t *s = huge_lookup(p);
    if (s) {
      old_usable = s->map_base + s->pages - p;
      result = huge_realloc(s, n);
    }
    pthread_mutex_unlock(&huge_lock);
  }
  if (!result && old_usable) result = move_grow(ptr, old_usable, n);
  if (!result) errno = ENOMEM;
  /* Grown in place, slid or moved: the whole block is the caller's (the front narrows). */
  if (HAK_ASAN && result) hak_asan_unpoison(result, hak_large_usable(result));
  return result;
}

/* ---- Decay. ---- */

/* Decommits the dirty free spans of arena a whose decay is due (all with force). The
 * range stays mapped: unmapping part of a claim that had to be a real reservation would
 * leave a hole the kernel could give to someone else. Lock held. */
static void arena_purge(arena_t *a, uint64_t now, int force) {
  for (span_t *s = a->dirty, *next; s; s = next) {
    next = s->dnext;
    if (!hak_decay_due(s->freed_ms, now, force)) continue;
    if (hak_os_decommit((void *)s->start, s->pages * PAGE) != 0) continue; /* retried */
    a->committed -= (int64_t)(s->pages * PAGE);
    free_remove(a, s);
    s->dirty = 0;
    free_coalesce(a, s); /* clean now: joins its clean neighbours (never on this list) */
  }
}

int hak_large_maintain(int force) {
  int waiting = 0;
  uint64_t now = hak_now_ms();
  for (unsigned i = 0, n = __atomic_load_n(&arena_count, __ATOMIC_ACQUIRE); i < n; i++) {
    arena_t *a = &arenas[i];
    if (!force && !__atomic_load_n(&a->dirty_pages, __ATOMIC_RELAXED)) continue;
    pthread_mutex_lock(&a->lock);
    a->live_peak = a->live_pages + (a->live_peak - a->live_pages) / 2;
    if (!a->frozen) arena_purge(a, now, force);
    waiting |= a->dirty_pages != 0;
    pthread_mutex_unlock(&a->lock);
  }
  if (force || __atomic_load_n(&huge_cached, __ATOMIC_RELAXED) ||
      __atomic_load_n(&unreleased_bytes, __ATOMIC_RELAXED)) {
    pthread_mutex_lock(&huge_lock);
    if (unreleased) retry_unreleased();
    for (unsigned i = huge_cached; i-- > 0;) {
      if (hak_decay_due(huge_cache[i].freed_ms, now, force)) huge_cache_evict(i);
    }
    waiting |= huge_cached != 0 || unreleased_bytes != 0;
    pthread_mutex_unlock(&huge_lock);
  }
  return waiting;
}

/* An arena whose lock was held at the fork is frozen: its spans may be half-changed, so
 * it serves no allocation and takes no free again (its memory stays, unused). The huge
 * cache of a torn fork is dropped. Page-map slots are single stores, consistent at any
 * instant. */
void hak_large_fork_child(void) {
  for (unsigned i = 0; i < ARENAS_MAX; i++) {
    if (hak_fork_child_reset_lock(&arenas[i].lock)) arenas[i].frozen = 1;
  }
  if (hak_fork_child_reset_lock(&huge_lock)) {
    huge_cached = 0;
    huge_cached_bytes = 0;
  }
}

void hak_large_stats(hak_large_stats_t *out) {
  *out = (hak_large_stats_t){0};
  for (unsigned i = 0, n = __atomic_load_n(&arena_count, __ATOMIC_ACQUIRE); i < n; i++) {
    arena_t *a = &arenas[i];
    pthread_mutex_lock(&a->lock);
    out->live_blocks += a->live_blocks;
    out->live_bytes += a->live_pages * PAGE;
    for (span_t *s = a->dirty; s; s = s->dnext) out->cached_blocks++;
    out->cached_bytes += a->dirty_pages * PAGE;
    out->cache_hits += a->hits;
    out->cache_misses += a->misses;
    out->moved_bytes += a->moved_pages * PAGE;
    out->mapped_bytes += a->top - a->base;
    out->os_committed_bytes += a->committed;
    out->resident_bytes += hak_os_resident((void *)a->base, a->top - a->base);
    pthread_mutex_unlock(&a->lock);
  }
  pthread_mutex_lock(&huge_lock);
  out->live_blocks += huge_live_blocks;
  out->live_bytes += huge_live_bytes;
  out->cached_blocks += huge_cached;
  out->cached_bytes += huge_cached_bytes;
  out->cache_hits += huge_hits;
  out->cache_misses += huge_misses;
  out->unreleased_bytes = unreleased_bytes;
  out->huge_blocks = huge_live_blocks;
  for (span_t *s = huge_live; s; s = s->next) {
    out->resident_bytes += hak_os_resident((void *)s->map_base, s->pages);
  }
  for (unsigned i = 0; i < huge_cached; i++) {
    out->resident_bytes += hak_os_resident((void *)huge_cache[i].base, huge_cache[i].size);
  }
  pthread_mutex_unlock(&huge_lock);
}
