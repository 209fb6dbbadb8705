/* Pool tier: spans in per-thread arenas, the page registry, TLS free lists with batch
 * refill (POOL_TLS_PHASE1=1; the sharded pool of =0 is in shared.c), remote frees,
 * thread exit and adoption, decay of empty spans, debug-fail-fast checks. */
#define _GNU_SOURCE
#include "allocator/pool/pool.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "allocator/internal/bits.h"
#include "allocator/internal/clock.h"
#include "allocator/internal/fork.h"
#include "allocator/internal/list.h"
#include "allocator/internal/log.h"
#include "allocator/internal/options.h"
#include "allocator/internal/purge.h"
#include "allocator/internal/remote.h"
#include "allocator/internal/trace.h"
#include "allocator/os_boundary/asan.h"
#include "allocator/os_boundary/os.h"
#include "allocator/pool/pool_internal.h"

/* Four classes per power of two, and two more for a page and a header: programs that
 * allocate pages with a few hundred bytes of their own beside them lost a fifth of each
 * block to the next class (SQLite's page cache asks for 4,368 bytes, a 4 KiB page and its
 * header, and for 4,104; both took 5,120). The fit classes, 2 KiB + 256 and 4 KiB + 512,
 * stop there: a span of up to four 64 KiB pages would leave about a tenth of itself over
 * in blocks of 8 KiB + 512 and above, what the class would save. */
const uint32_t hak_pool_class_size[HAK_POOL_CLASSES] = {
    1280, 1536,  1792,  2048,  2304,  2560,  3072,  3584,  4096,  4608,  5120,  6144,  7168,
    8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536,
};

/* 8 times the class of every size, by (size - 1) / 256 (sizes up to 1 KiB are Tiny's: 0
 * there); a row is 2 KiB of sizes. 8 times: the fast path indexes the 16-byte lists
 * with it scaled by 2 in an address. pool_test checks it against the sizes above. */
#define X8(c) HAK_CACHE_C8(c) /* short, for the table's width */
/* clang-format off */
const uint8_t hak_pool_size_class8[HAK_POOL_MAX / 256] = {
    X8( 0), X8( 0), X8( 0), X8( 0), X8( 0), X8( 1), X8( 2), X8( 3),  /* sizes up to  2 KiB */
    X8( 4), X8( 5), X8( 6), X8( 6), X8( 7), X8( 7), X8( 8), X8( 8),  /* sizes up to  4 KiB */
    X8( 9), X8( 9), X8(10), X8(10), X8(11), X8(11), X8(11), X8(11),  /* sizes up to  6 KiB */
    X8(12), X8(12), X8(12), X8(12), X8(13), X8(13), X8(13), X8(13),  /* sizes up to  8 KiB */
    X8(14), X8(14), X8(14), X8(14), X8(14), X8(14), X8(14), X8(14),  /* sizes up to 10 KiB */
    X8(15), X8(15), X8(15), X8(15), X8(15), X8(15), X8(15), X8(15),  /* sizes up to 12 KiB */
    X8(16), X8(16), X8(16), X8(16), X8(16), X8(16), X8(16), X8(16),  /* sizes up to 14 KiB */
    X8(17), X8(17), X8(17), X8(17), X8(17), X8(17), X8(17), X8(17),  /* sizes up to 16 KiB */
    X8(18), X8(18), X8(18), X8(18), X8(18), X8(18), X8(18), X8(18),  /* sizes up to 18 KiB */
    X8(18), X8(18), X8(18), X8(18), X8(18), X8(18), X8(18), X8(18),  /* sizes up to 20 KiB */
    X8(19), X8(19), X8(19), X8(19), X8(19), X8(19), X8(19), X8(19),  /* sizes up to 22 KiB */
    X8(19), X8(19), X8(19), X8(19), X8(19), X8(19), X8(19), X8(19),  /* sizes up to 24 KiB */
    X8(20), X8(20), X8(20), X8(20), X8(20), X8(20), X8(20), X8(20),  /* sizes up to 26 KiB */
    X8(20), X8(20), X8(20), X8(20), X8(20), X8(20), X8(20), X8(20),  /* sizes up to 28 KiB */
    X8(21), X8(21), X8(21), X8(21), X8(21), X8(21), X8(21), X8(21),  /* sizes up to 30 KiB */
    X8(21), X8(21), X8(21), X8(21), X8(21), X8(21), X8(21), X8(21),  /* sizes up to 32 KiB */
    X8(22), X8(22), X8(22), X8(22), X8(22), X8(22), X8(22), X8(22),  /* sizes up to 34 KiB */
    X8(22), X8(22), X8(22), X8(22), X8(22), X8(22), X8(22), X8(22),  /* sizes up to 36 KiB */
    X8(22), X8(22), X8(22), X8(22), X8(22), X8(22), X8(22), X8(22),  /* sizes up to 38 KiB */
    X8(22), X8(22), X8(22), X8(22), X8(22), X8(22), X8(22), X8(22),  /* sizes up to 40 KiB */
    X8(23), X8(23), X8(23), X8(23), X8(23), X8(23), X8(23), X8(23),  /* sizes up to 42 KiB */
    X8(23), X8(23), X8(23), X8(23), X8(23), X8(23), X8(23), X8(23),  /* sizes up to 44 KiB */
    X8(23), X8(23), X8(23), X8(23), X8(23), X8(23), X8(23), X8(23),  /* sizes up to 46 KiB */
    X8(23), X8(23), X8(23), X8(23), X8(23), X8(23), X8(23), X8(23),  /* sizes up to 48 KiB */
    X8(24), X8(24), X8(24), X8(24), X8(24), X8(24), X8(24), X8(24),  /* sizes up to 50 KiB */
    X8(24), X8(24), X8(24), X8(24), X8(24), X8(24), X8(24), X8(24),  /* sizes up to 52 KiB */
    X8(24), X8(24), X8(24), X8(24), X8(24), X8(24), X8(24), X8(24),  /* sizes up to 54 KiB */
    X8(24), X8(24), X8(24), X8(24), X8(24), X8(24), X8(24), X8(24),  /* sizes up to 56 KiB */
    X8(25), X8(25), X8(25), X8(25), X8(25), X8(25), X8(25), X8(25),  /* sizes up to 58 KiB */
    X8(25), X8(25), X8(25), X8(25), X8(25), X8(25), X8(25), X8(25),  /* sizes up to 60 KiB */
    X8(25), X8(25), X8(25), X8(25), X8(25), X8(25), X8(25), X8(25),  /* sizes up to 62 KiB */
    X8(25), X8(25), X8(25), X8(25), X8(25), X8(25), X8(25), X8(25),  /* sizes up to 64 KiB */
};
/* clang-format on */
#undef X8

#define FILL_ALLOC 0xaa
#define CHECKED_BYTES 256 /* debug: how much of a freed block is filled and checked */

typedef hak_pool_span_t pool_span_t;
typedef hak_pool_list_t pool_list_t;

/* Debug: how many bytes of a block of `cls` are filled when freed and checked. */
static size_t checked_len(unsigned cls) {
  size_t size = hak_pool_class_size[cls];
  return size < CHECKED_BYTES ? size : CHECKED_BYTES;
}
typedef hak_pool_heap_t pool_heap_t;

hak_pool_geom_t hak_pool_geom;
/* 64: its lists on cache lines of their own, as in the heaps hak_os_meta_alloc makes */
__attribute__((aligned(64))) hak_pool_heap_t hak_pool_empty_heap;
HAK_TLS hak_pool_heap_t *hak_pool_tls = &hak_pool_empty_heap;
/* What the TLS of a thread whose heap the purge parked points at (heap/heap.h): empty
 * lists, owner of nothing, like the empty heap. */
static __attribute__((aligned(64))) pool_heap_t parked_heap;
static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER; /* region top, free spans */
static hak_heap_registry_t heaps;
static size_t registry_committed; /* bytes of the registry made usable, page multiple */
static size_t owners_committed;   /* the same of the owner words */
/* Empty spans, by the class they last held, newest first: a class takes its own back
 * first while they are committed (span_from_free). Its own were written by the same code
 * for the same use: under redis at 20 KB, reply buffers drawn from the spans of the
 * values LPOP had just freed (one list per size, newest first) ran through 20,779
 * distinct blocks where mimalloc kept reusing 800, and each fresh one cost the kernel's
 * first read of its pages when the reply was sent (10x a warm read on the VM of the
 * results): LPOP ran at 0.6x mimalloc. */
static hak_slab_t *free_spans[HAK_POOL_CLASSES];
static uint64_t foreign_frees, orphan_remote_frees;

static unsigned span_pages(unsigned cls) {
  size_t pages =
      (4 * (size_t)hak_pool_class_size[cls] + HAK_POOL_PAGE_SIZE - 1) >> HAK_POOL_PAGE_SHIFT;
  return (unsigned)pages;
}

static char *span_base(const pool_span_t *s) {
  return (char *)(hak_pool_geom.base +
                  ((uintptr_t)(s - hak_pool_geom.registry) << HAK_POOL_PAGE_SHIFT));
}

/* off must be below hak_pool_geom.top (entries past it are not committed). */
static pool_span_t *span_of(uintptr_t off) {
  pool_span_t *e = &hak_pool_geom.registry[off >> HAK_POOL_PAGE_SHIFT];
  return e->kind == HAK_POOL_TAIL ? &hak_pool_geom.registry[e->head] : e;
}

unsigned hak_pool_arena_steps(size_t *out, unsigned max) {
  size_t init = (size_t)hak_opt(HAK_OPT_POOL_TLS_ARENA_MB_INIT) << 20;
  size_t cap = (size_t)hak_opt(HAK_OPT_POOL_TLS_ARENA_MB_MAX) << 20;
  unsigned levels = (unsigned)hak_opt(HAK_OPT_POOL_TLS_ARENA_GROWTH_LEVELS);
  if (cap < init) cap = init; /* a max below the first chunk means "do not grow" */
  unsigned n = 0;
  for (unsigned level = 0; level <= levels && n < max; level++) {
    size_t size = init << level;
    if (size > cap) break;
    out[n++] = size;
    if (size == cap) break;
  }
  return n;
}

static void thread_exit_cb(void *arg);
static const hak_heap_ops_t heap_ops;

/* Bytes of `per_page` bytes a page for the first `size` bytes of the region, in pages. */
static size_t page_table_bytes(size_t size, size_t per_page) {
  size_t page = hak_os_page_size();
  return ((size >> HAK_POOL_PAGE_SHIFT) * per_page + page - 1) & ~(page - 1);
}

size_t hak_pool_registry_bytes(size_t size) {
  return page_table_bytes(size, sizeof(pool_span_t)) +
         page_table_bytes(size, sizeof(hak_pool_list_t *));
}

int hak_pool_init(uintptr_t base, size_t size) {
  hak_pool_geom.base = base;
  hak_pool_geom.size = size;
  /* Right after the region, in the same claim; mapped as the arenas grow: 128 bytes per
   * 64 KiB page in use. */
  hak_pool_geom.registry = (pool_span_t *)(base + size);
  hak_pool_geom.owners =
      (hak_pool_list_t **)(base + size + page_table_bytes(size, sizeof(pool_span_t)));
  hak_pool_shared_init();
  return hak_heap_registry_init(&heaps, &heap_ops, thread_exit_cb);
}

/* ---- Spans (arena_lock for the global parts). ---- */

static int arena_grow(pool_heap_t *h, size_t need) {
  size_t steps[16];
  unsigned n = hak_pool_arena_steps(steps, 16);
  size_t size = steps[h->chunk_level < n ? h->chunk_level : n - 1];
  if (size < need) size = need;
  pthread_mutex_lock(&arena_lock);
  int ok = hak_pool_geom.top + size <= hak_pool_geom.size;
  size_t reg_need = page_table_bytes(hak_pool_geom.top + size, sizeof(pool_span_t));
  if (ok && reg_need > registry_committed) {
    ok = hak_os_commit_at((char *)hak_pool_geom.registry + registry_committed,
                          reg_need - registry_committed) == 0;
    if (ok) registry_committed = reg_need;
  }
  size_t owners_need = page_table_bytes(hak_pool_geom.top + size, sizeof(hak_pool_list_t *));
  if (ok && owners_need > owners_committed) {
    ok = hak_os_commit_at((char *)hak_pool_geom.owners + owners_committed,
                          owners_need - owners_committed) == 0;
    if (ok) owners_committed = owners_need;
  }
  /* The region is claimed, not reserved: each chunk is mapped (inaccessible; spans are
   * committed as they are cut) when an arena takes it. Anything in the way fails the
   * growth, and Pool's requests fall back to Large. */
  if (ok) ok = hak_os_reserve_at((void *)(hak_pool_geom.base + hak_pool_geom.top), size) == 0;
  if (ok) {
    h->chunk_pos = hak_pool_geom.top;
    h->chunk_end = hak_pool_geom.top + size;
    /* Published after the registry behind it is committed: free() reads it first. */
    __atomic_store_n(&hak_pool_geom.top, hak_pool_geom.top + size, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&arena_lock);
  if (ok) {
    h->chunk_level++;
    h->arena_chunks++;
  }
  return ok;
}

static pool_span_t *span_from_arena(pool_heap_t *h, unsigned pages) {
  size_t bytes = (size_t)pages << HAK_POOL_PAGE_SHIFT;
  if (h->chunk_end - h->chunk_pos < bytes && !arena_grow(h, bytes)) return NULL;
  uintptr_t off = h->chunk_pos;
  if (hak_os_commit((void *)(hak_pool_geom.base + off), bytes) != 0) return NULL;
  h->chunk_pos += bytes;
  uint32_t head = (uint32_t)(off >> HAK_POOL_PAGE_SHIFT);
  for (unsigned i = 1; i < pages; i++) {
    hak_pool_geom.registry[head + i].head = head;
    hak_pool_geom.registry[head + i].kind = HAK_POOL_TAIL;
  }
  pool_span_t *s = &hak_pool_geom.registry[head];
  s->head = head;
  s->pages = (uint16_t)pages;
  s->committed = 1;
  return s;
}

/* Bytes of committed spans on the free lists: what hak_pool_give_back can return. */
static uint64_t free_committed_bytes;

static void free_committed_add(pool_span_t *s, int sign) {
  uint64_t bytes = (uint64_t)s->pages << HAK_POOL_PAGE_SHIFT;
  __atomic_store_n(&free_committed_bytes,
                   sign > 0 ? free_committed_bytes + bytes : free_committed_bytes - bytes,
                   __ATOMIC_RELAXED);
}

/* An empty span for class cls: the newest one it last held while that is committed; with
 * `any`, otherwise the newest of every class of its size. */
static pool_span_t *span_from_free(unsigned cls, int any) {
  unsigned pages = span_pages(cls);
  pthread_mutex_lock(&arena_lock);
  hak_slab_t **list = &free_spans[cls];
  const pool_span_t *own = (const pool_span_t *)*list;
  if (!own || !own->committed) {
    list = NULL;
    for (unsigned c = 0; any && c < HAK_POOL_CLASSES; c++) {
      const pool_span_t *head = (const pool_span_t *)free_spans[c];
      if (head && span_pages(c) == pages &&
          (!list || head->emptied_ms > ((const pool_span_t *)*list)->emptied_ms))
        list = &free_spans[c];
    }
  }
  pool_span_t *s = list ? (pool_span_t *)*list : NULL;
  if (s) HAK_LIST_REMOVE(list, &s->slab);
  if (s && s->committed) free_committed_add(s, -1);
  pthread_mutex_unlock(&arena_lock);
  if (s && !s->committed) {
    if (hak_os_commit(span_base(s), (size_t)pages << HAK_POOL_PAGE_SHIFT) != 0) {
      pthread_mutex_lock(&arena_lock); /* put it back untouched (not committed) */
      HAK_LIST_PUSH(&free_spans[s->cls], &s->slab);
      pthread_mutex_unlock(&arena_lock);
      return NULL;
    }
    s->committed = 1;
  }
  return s;
}

/* A span's owner goes into its first page's entry (the slow paths read it there) and,
 * as its list of the span's class, into the owner word of each of its pages (the fast
 * free's, see hak_pool_geom_t). */
void hak_pool_span_set_owner(pool_span_t *s, pool_heap_t *h) {
  hak_pool_list_t *word = h ? &h->list[s->cls] : NULL;
  hak_pool_list_t **owners = &hak_pool_geom.owners[s - hak_pool_geom.registry];
  for (unsigned i = 0; i < s->pages; i++) __atomic_store_n(&owners[i], word, __ATOMIC_RELEASE);
  __atomic_store_n(&s->owner, h, __ATOMIC_RELEASE);
}

static void span_to_free(pool_span_t *s) {
  hak_pool_span_set_owner(s, NULL);
  s->emptied_ms = hak_now_ms();
  pthread_mutex_lock(&arena_lock);
  if (s->committed) free_committed_add(s, 1);
  HAK_LIST_PUSH(&free_spans[s->cls], &s->slab);
  pthread_mutex_unlock(&arena_lock);
  hak_purge_kick((uint64_t)s->pages << HAK_POOL_PAGE_SHIFT); /* the span starts its decay */
}

static pool_span_t *span_acquire(pool_heap_t *h, unsigned cls) {
  unsigned pages = span_pages(cls);
  /* The class's own committed empty spans first (see free_spans); then the heap's spare
   * (committed, and no lock to take it), then the arena's other free spans. */
  pool_span_t *spare = h->spare[pages];
  pool_span_t *s = spare && spare->cls == cls ? spare : span_from_free(cls, 0);
  if (!s) s = spare;
  if (s && s == spare) h->spare[pages] = NULL;
  if (!s) s = span_from_free(cls, 1);
  if (!s) s = span_from_arena(h, pages);
  if (!s) return NULL;
  s->free = NULL;
  s->used = 0;
  __atomic_store_n(&s->carved, 0, __ATOMIC_RELAXED);
  s->capacity = (uint32_t)(((size_t)pages << HAK_POOL_PAGE_SHIFT) / hak_pool_class_size[cls]);
  HAK_CHECK(s->capacity <= 64, "a span with more blocks than live_bits has bits at", span_base(s),
            "pool");
  __atomic_store_n(&s->live_bits, 0, __ATOMIC_RELAXED);
  hak_asan_poison(span_base(s), (size_t)pages << HAK_POOL_PAGE_SHIFT); /* none handed out */
  s->cls = (uint8_t)cls;
  s->state = HAK_SLAB_CURRENT;
  s->remote = 0;
  s->pending_next = NULL;
  __atomic_store_n(&s->kind, HAK_POOL_HEAD, __ATOMIC_RELAXED);
  hak_pool_span_set_owner(s, h);
  return s;
}

static void span_release(pool_heap_t *h, pool_span_t *s) {
  if (h->spare[s->pages] == NULL &&
      __atomic_load_n(&h->base.state, __ATOMIC_RELAXED) == HAK_HEAP_LIVE) {
    /* Kept by the heap, empty: its next span of this size costs no lock. A stale free
     * into it finds no owner and is refused. */
    hak_pool_span_set_owner(s, NULL);
    h->spare[s->pages] = s;
    return;
  }
  span_to_free(s);
}

/* ---- A heap's lists (owner, or shard lock held). ---- */

/* Where a span's blocks lie: the links of its lists must stay there. */
static void span_bounds(hak_slab_t *slab, uintptr_t *lo, uintptr_t *len) {
  pool_span_t *s = (pool_span_t *)slab;
  *lo = (uintptr_t)span_base(s);
  *len = (uintptr_t)s->capacity * hak_pool_class_size[s->cls];
}

/* Blocks go back to their own span's free list; an emptied span is released. */
static void return_chain(pool_heap_t *h, pool_span_t *s, void *head, void *tail, uint32_t count) {
  uintptr_t lo, len;
  span_bounds(&s->slab, &lo, &len);
  if (hak_slab_return_chain(&h->avail[s->cls], &s->slab, head, tail, count, lo, len))
    span_release(h, s);
}

void hak_pool_return_block(pool_heap_t *h, pool_span_t *s, void *b) { return_chain(h, s, b, b, 1); }

/* Drained blocks, and a run of a list's blocks of one span, go back to their span all
 * at once. */
static void put_drained(void *tier, hak_slab_t *slab, void *head, void *tail, uint32_t count) {
  return_chain(tier, (pool_span_t *)slab, head, tail, count);
}

static hak_slab_t *span_of_block(const void *b) {
  return &span_of((uintptr_t)b - hak_pool_geom.base)->slab;
}

static void process_pending(pool_heap_t *h) {
  hak_heap_drain(&h->base, h, put_drained, span_bounds);
}

static void heap_drain(void *h) { process_pending(h); }
/* The purge thread, holding the claim of an idle heap: drained blocks go back to their
 * spans (Pool drains into spans anyway), and empty spans of the heap go to the arena. */
static void heap_reclaim(void *h) {
  process_pending(h);
  hak_pool_heap_trim(h);
}
static void heap_bind(void *h) {
  hak_pool_tls = h;
  ((pool_heap_t *)h)->base.tls = (void **)&hak_pool_tls;
}
static void heap_prewarm(void *tier);
static void heap_park(void *tier, uint64_t idle_since_ms);
static uint64_t heap_fingerprint(void *tier) {
  return hak_cache_fingerprint(((pool_heap_t *)tier)->list, HAK_POOL_CLASSES);
}

/* Moves up to `want` blocks of `cls` onto list l: span free lists first, then carving,
 * at most CARVE_BYTES of never-used blocks per call. A carved block gets its link written,
 * which makes its page resident: once the lists could grow to 1 MiB a class, refills of
 * half a list touched megabytes a thread might never use (churn_test's RSS doubled). */
#define CARVE_BYTES (32 * 1024)
uint32_t hak_pool_fill(pool_heap_t *h, unsigned cls, pool_list_t *l, uint32_t want) {
  uint32_t got = 0;
  size_t stride = hak_pool_class_size[cls];
  uint32_t carve_left = stride < CARVE_BYTES ? (uint32_t)(CARVE_BYTES / stride) : 1;
  while (got < want) {
    pool_span_t *s = h->current[cls];
    if (!s) {
      s = (pool_span_t *)h->avail[cls];
      if (s) {
        hak_slab_avail_remove(&h->avail[cls], &s->slab);
        s->state = HAK_SLAB_CURRENT;
      } else if ((carve_left == 0 && got > 0) || !(s = span_acquire(h, cls))) {
        break;
      }
      h->current[cls] = s;
    }
    uintptr_t lo, len;
    span_bounds(&s->slab, &lo, &len);
    uint32_t taken = hak_slab_take_free(&s->slab, &l->head, want - got, lo, len);
    l->room -= (int32_t)taken;
    got += taken;
    uint32_t carve = want - got < carve_left ? want - got : carve_left;
    uint32_t carved =
        hak_slab_carve(&s->slab, span_base(s), stride, checked_len(cls), &l->head, carve);
    carve_left -= carved;
    l->room -= (int32_t)carved;
    got += carved;
    if (hak_slab_exhausted(&s->slab)) {
      s->state = HAK_SLAB_FULL;
      h->current[cls] = NULL;
    } else if (got < want && carve_left == 0) {
      break; /* the rest of this span waits for the next refill */
    }
  }
  if (h->current[cls]) hak_slab_validate(&h->current[cls]->slab);
  return got;
}

/* ---- Debug-fail-fast. ---- */

static const char *class_where(char *buf, size_t cap, unsigned cls) {
  return hak_class_where(buf, cap, "pool", cls);
}

static int filled(const void *p, size_t from, size_t to) {
  return hak_bytes_are(p, from, to, HAK_FILL_FREE);
}

void *hak_pool_checked_alloc(void *p, unsigned cls) {
  char where[32];
  void *next = hak_link_read(p);
  if (next && ((uintptr_t)next - hak_pool_geom.base >= hak_pool_geom.size)) {
    hak_fatal("corrupted free list link in block", p, class_where(where, sizeof where, cls));
  }
  if (!filled(p, sizeof(void *), checked_len(cls))) {
    hak_fatal("write after free to block", p, class_where(where, sizeof where, cls));
  }
  pool_span_t *s = span_of((uintptr_t)p - hak_pool_geom.base);
  hak_bit_set(&s->live_bits, (uint32_t)(((char *)p - span_base(s)) / hak_pool_class_size[cls]));
  hak_fill_bytes(p, FILL_ALLOC, checked_len(cls));
  return p;
}

/* Validates a free; returns the span, or NULL for a pointer that is not a block the span
 * handed out (debug builds abort instead, naming what is wrong). The block checks cost one
 * modulo on this slow path; the carved count only grows, and a thread freeing a block it
 * was handed has seen it grow. Double frees are decided by the allocator's record (debug),
 * never by the block's contents. */
static pool_span_t *checked_span(void *p, uintptr_t off) {
  if (off >= __atomic_load_n(&hak_pool_geom.top, __ATOMIC_ACQUIRE)) return NULL;
  pool_span_t *s = span_of(off);
  if (__atomic_load_n(&s->kind, __ATOMIC_RELAXED) != HAK_POOL_HEAD ||
      __atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) == NULL) {
    return NULL;
  }
  unsigned cls = s->cls;
  size_t stride = hak_pool_class_size[cls];
  uintptr_t rel = (uintptr_t)((char *)p - span_base(s));
  int interior = rel % stride != 0 || rel / stride >= s->capacity;
  int never = !interior && rel / stride >= __atomic_load_n(&s->carved, __ATOMIC_RELAXED);
  if (!HAK_CHECKS) return interior || never ? NULL : s;
  char where[32];
  if (interior) {
    hak_fatal("free of a pointer that is not a block start:", p,
              class_where(where, sizeof where, cls));
  }
  if (never) {
    hak_fatal("free of a block that was never allocated:", p,
              class_where(where, sizeof where, cls));
  }
  if (!hak_bit_clear(&s->live_bits, (uint32_t)(rel / stride))) {
    hak_fatal("double free of", p, class_where(where, sizeof where, cls));
  }
  hak_fill_bytes(p, HAK_FILL_FREE, checked_len(cls));
  return s;
}

int hak_pool_block_freed(const void *p, uintptr_t off) {
  if (!HAK_CHECKS || off >= __atomic_load_n(&hak_pool_geom.top, __ATOMIC_ACQUIRE)) return 0;
  pool_span_t *s = span_of(off);
  if (__atomic_load_n(&s->kind, __ATOMIC_RELAXED) != HAK_POOL_HEAD ||
      __atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) == NULL) {
    return 0;
  }
  size_t stride = hak_pool_class_size[s->cls];
  uintptr_t rel = (uintptr_t)((const char *)p - span_base(s));
  if (rel % stride != 0 || rel / stride >= __atomic_load_n(&s->carved, __ATOMIC_RELAXED)) return 0;
  uint32_t i = (uint32_t)(rel / stride);
  return (__atomic_load_n(&s->live_bits, __ATOMIC_RELAXED) & ((uint64_t)1 << i)) == 0;
}

static void bad_free(void *p) {
  if (HAK_CHECKS) hak_fatal("free of a pointer hakmem does not own", p, "pool region");
  __atomic_fetch_add(&foreign_frees, 1, __ATOMIC_RELAXED);
  HAK_TRACE_ROUTE(HAK_ROUTE_FOREIGN, p, 1);
}

/* ---- Heaps (POOL_TLS_PHASE1=1). ---- */

static uint32_t list_cap(unsigned cls) { return hak_pool_list_first(hak_pool_class_size[cls]); }

/* The most list l of heap h may hold now: its class's limit, and what the budget leaves
 * (capacities never drop below list_cap: the growth is what counts). */
static uint32_t list_max(const pool_heap_t *h, const pool_list_t *l, unsigned cls) {
  uint32_t size = hak_pool_class_size[cls], limit = hak_pool_list_limit(size);
  uint64_t left =
      h->list_grown_bytes < HAK_POOL_LIST_BUDGET ? HAK_POOL_LIST_BUDGET - h->list_grown_bytes : 0;
  uint64_t max = l->cap + left / size;
  return (uint32_t)(max < limit ? max : limit);
}

/* Adapts list l of heap h after a refill (overflow = 0) or an overflow (1). */
static void list_adapt(pool_heap_t *h, pool_list_t *l, int overflow) {
  unsigned cls = (unsigned)(l - h->list);
  uint32_t before = l->cap, max = list_max(h, l, cls);
  if (overflow) {
    hak_cache_adapt_overflow(l, &h->adapt[cls], list_cap(cls), max);
  } else {
    hak_cache_adapt_miss(l, &h->adapt[cls], max);
  }
  h->list_grown_bytes += ((int64_t)l->cap - (int64_t)before) * hak_pool_class_size[cls];
}

/* Favours the small classes: 4 blocks of each class up to 2 KiB, 2 up to 4 KiB, 53 KiB
 * in all (the budget is 2 MiB per thread); not the fit class of 2304 bytes, which only
 * some programs use. Every pre-warmed block is a touched page for a
 * program that may never use the class, so the counts stay small. */
static void heap_prewarm(void *tier) {
  pool_heap_t *h = tier;
  for (unsigned cls = 0; hak_pool_class_size[cls] <= 4096; cls++) {
    uint32_t size = hak_pool_class_size[cls];
    if (size != 2304) hak_pool_fill(h, cls, &h->list[cls], size <= 2048 ? 4 : 2);
  }
}

/* Gives every listed block back to its span, then drains the pending remote frees. */
static void heap_flush(void *tier) {
  pool_heap_t *h = tier;
  for (unsigned cls = 0; cls < HAK_POOL_CLASSES; cls++) {
    pool_list_t *l = &h->list[cls];
    for (void *b; (b = hak_cache_pop(l, hak_link_pool_mask)) != NULL;) {
      hak_pool_return_block(h, span_of((uintptr_t)b - hak_pool_geom.base), b);
    }
  }
  process_pending(h);
}

/* The engine's hooks (heap/heap.h). */
static void heap_init(void *h) {
  for (unsigned c = 0; c < HAK_POOL_CLASSES; c++) {
    pool_list_t *l = &((pool_heap_t *)h)->list[c];
    hak_cache_set_cap(l, list_cap(c));
    /* Spans start on page (64 KiB) boundaries; blocks follow each other from there. */
    l->align = hak_cache_align_of(hak_pool_class_size[c], HAK_POOL_PAGE_SIZE);
  }
}

static const hak_heap_ops_t heap_ops = HAK_HEAP_OPS(pool_heap_t, &parked_heap);

/* The calling thread's heap on a slow path (see Tiny's). */
HAK_INLINE pool_heap_t *current_heap(void) {
  pool_heap_t *h = hak_pool_tls;
  if (HAK_LIKELY(h != &parked_heap)) return h;
  return hak_heap_unpark(&heaps, (void **)&hak_pool_tls, &hak_pool_empty_heap);
}

/* The miss path of class `cls` on the calling thread's heap h (marked busy). */
static void *refill_and_pop(pool_heap_t *h, unsigned cls) {
  pool_list_t *l = &h->list[cls];
  if (!l->head) {
    if (__atomic_load_n(&h->base.pending, __ATOMIC_RELAXED)) process_pending(h);
    h->refills++;
    list_adapt(h, l, 0);
    HAK_TRACE_ROUTE(HAK_ROUTE_POOL_REFILL, 0, 0);
    if (hak_pool_fill(h, cls, l, l->cap / 2 ? l->cap / 2 : 1) == 0) return NULL;
  }
  void *p = hak_cache_pop(l, hak_link_pool_mask);
  return HAK_CHECKS ? hak_pool_checked_alloc(p, cls) : p;
}

static void *tls_malloc_slow(unsigned cls) {
  hak_heap_remote_flush(); /* this thread's batches of remote frees go on a slow path */
  pool_heap_t *h = current_heap();
  if (h == &hak_pool_empty_heap && !(h = hak_heap_attach(&heaps))) return NULL;
  hak_heap_own(&h->base);
  void *p = refill_and_pop(h, cls);
  hak_heap_disown(&h->base);
  return p;
}

void hak_pool_overflow(pool_list_t *l) {
  pool_heap_t *h = hak_pool_tls;
  hak_heap_own(&h->base);
  h->overflows++;
  list_adapt(h, l, 1);
  /* Down to half the capacity: room = cap - count reaches cap - cap / 2. */
  pool_span_t *last = (pool_span_t *)hak_cache_trim(
      l, (int32_t)(l->cap - l->cap / 2), hak_link_pool_mask, h, span_of_block, put_drained);
  /* Still ours (only this thread releases it), or handed to another thread by now. */
  if (HAK_CHECKS && last && __atomic_load_n(&last->owner, __ATOMIC_ACQUIRE) == h) {
    hak_slab_validate(&last->slab);
  }
  hak_heap_disown(&h->base);
}

static void remote_free(pool_span_t *s, void *p) {
  HAK_TRACE_ROUTE(HAK_ROUTE_POOL_REMOTE, p, 1);
  if (hak_pool_tls != &hak_pool_empty_heap)
    hak_pool_tls->remote_frees++;
  else
    __atomic_fetch_add(&orphan_remote_frees, 1, __ATOMIC_RELAXED);
  hak_heap_remote_free(&heaps, &s->slab, p, hak_pool_class_size[s->cls]);
}

/* ---- Entry points. ---- */

void *hak_pool_malloc(size_t n) {
  unsigned cls = hak_pool_class_of(n);
  void *p;
  if (HAK_POOL_THREAD_CACHE) {
    p = HAK_CHECKS || HAK_ASAN ? NULL : hak_cache_pop(&hak_pool_tls->list[cls], hak_link_pool_mask);
    if (HAK_LIKELY(p != NULL)) {
      HAK_TRACE_ROUTE(HAK_ROUTE_POOL_FAST, p, 0);
      return p;
    }
    p = tls_malloc_slow(cls);
  } else {
    p = hak_pool_shared_malloc(cls);
  }
  if (!p) errno = ENOMEM;
  hak_asan_unpoison(p, hak_pool_class_size[cls]);
  return p;
}

void hak_pool_free(void *p, uintptr_t off) {
  pool_span_t *s = checked_span(p, off);
  if (HAK_UNLIKELY(s == NULL)) {
    bad_free(p);
    return;
  }
  hak_asan_poison(p, hak_pool_class_size[s->cls]);
  if (!HAK_POOL_THREAD_CACHE) {
    hak_pool_shared_free(s, p);
    return;
  }
  pool_heap_t *h = current_heap();
  if (HAK_UNLIKELY(__atomic_load_n(&s->owner, __ATOMIC_RELAXED) != h)) {
    remote_free(s, p);
    return;
  }
  pool_list_t *l = &h->list[s->cls];
  HAK_TRACE_ROUTE(HAK_ROUTE_POOL_FAST, p, 1);
  if (HAK_UNLIKELY(hak_cache_push(l, p))) hak_pool_overflow(l);
}

size_t hak_pool_usable(uintptr_t off) {
  if (off >= __atomic_load_n(&hak_pool_geom.top, __ATOMIC_ACQUIRE)) return 0;
  pool_span_t *s = span_of(off);
  if (s->kind != HAK_POOL_HEAD || __atomic_load_n(&s->owner, __ATOMIC_RELAXED) == NULL) return 0;
  return hak_pool_class_size[s->cls];
}

int hak_pool_registry_class(uintptr_t off) {
  if (off >= __atomic_load_n(&hak_pool_geom.top, __ATOMIC_ACQUIRE)) return -1;
  pool_span_t *s = span_of(off);
  return s->kind == HAK_POOL_HEAD && s->owner ? s->cls : -1;
}

unsigned hak_pool_free_spans_of(unsigned cls) {
  unsigned n = 0;
  pthread_mutex_lock(&arena_lock);
  for (hak_slab_t *s = free_spans[cls]; s; s = s->avail_next) n++;
  pthread_mutex_unlock(&arena_lock);
  return n;
}

/* ---- Thread exit, maintenance, fork, stats. ---- */

/* Spare spans go back to the arena's free list, where the decay finds them. */
static void spares_to_free(pool_heap_t *h) {
  for (unsigned pages = 0; pages <= HAK_POOL_MAX_SPAN_PAGES; pages++) {
    if (h->spare[pages]) span_to_free(h->spare[pages]);
    h->spare[pages] = NULL;
  }
}

void hak_pool_heap_trim(pool_heap_t *h) {
  for (unsigned cls = 0; cls < HAK_POOL_CLASSES; cls++) {
    pool_span_t *s = h->current[cls];
    if (s && s->used == 0) { /* blocks in a list count as used: none is out */
      h->current[cls] = NULL;
      s->state = HAK_SLAB_FULL;
      span_to_free(s);
    }
  }
  spares_to_free(h);
}

/* The idle flush of a live heap (heap/heap.h): its lists go back to their spans, and its
 * spares and empty current spans to the arena, where the decay finds them. */
static void heap_park(void *tier, uint64_t idle_since_ms) {
  (void)idle_since_ms; /* the arena dates free spans itself */
  heap_flush(tier);
  hak_pool_heap_trim(tier);
}

void hak_pool_flush_thread(void) {
  pool_heap_t *h = current_heap();
  if (!HAK_POOL_THREAD_CACHE || h == &hak_pool_empty_heap) return;
  hak_heap_own(&h->base);
  heap_flush(h);
  hak_pool_heap_trim(h);
  hak_heap_disown(&h->base);
}

/* Pool lists are flushed at thread exit (mid-sized blocks are worth more to other
 * threads than warm), and the spares and empty current spans go back before the heap is
 * dead. (The current spans once stayed with the dead heap: 8 threads that each used a
 * class of 40 KB blocks left 1.3 MB resident for good.) */
static void heap_die(pool_heap_t *h) {
  hak_heap_own(&h->base);
  heap_flush(h);
  /* Before the heap is marked dead (from then on a collector may run), and under the
   * claim (a purge pass may release emptied spans to the spares). */
  hak_pool_heap_trim(h);
  hak_heap_disown(&h->base);
  hak_pool_tls = &hak_pool_empty_heap;
  hak_heap_retire(&heaps, h);
}

static void thread_exit_cb(void *arg) {
  if (arg && hak_pool_tls == &parked_heap) hak_heap_rebind(&heaps, arg);
  if (arg && arg == hak_pool_tls) heap_die(arg);
}

/* Marks every page of span s with `pass` (0: unmarked). */
static void span_mark(pool_span_t *s, uint32_t pass) {
  for (unsigned i = 0; i < s->pages; i++) s[i].decay_pass = pass;
}

/* Free spans due for the decay go back to the OS, neighbours in one call: each call
 * costs the kernel a TLB shootdown, and one per 64 KiB span made a 300 MiB burst's return
 * take 185 ms of an idle 2-core VM and 900 ms of a busy one (1,149 calls; 60 ms in runs).
 * Every page of a due span is marked with the pass's number first; then from each span
 * still marked, the marked pages on both sides make one run, whose spans are then read
 * head by head. Only the marks of pages next to a run are read, a field no one writes
 * outside the arena lock (other heaps carve their chunks, which may adjoin, without it).
 * A refused call ends the pass (the next one retries). (A number, not a flag cleared at
 * the end: a refused call leaves marks, and a fork child those of a pass the parent was
 * in.) Returns 1 while some free span still waits. */
static uint32_t decay_passes;
static int decay_free_spans_locked(uint64_t now, int force) {
  int waiting = 0;
  uint32_t pass = ++decay_passes ? decay_passes : ++decay_passes; /* 0: never marked */
  pool_span_t *reg = hak_pool_geom.registry;
  size_t top = hak_pool_geom.top >> HAK_POOL_PAGE_SHIFT;
  for (unsigned cls = 0; cls < HAK_POOL_CLASSES; cls++) {
    for (pool_span_t *s = (pool_span_t *)free_spans[cls]; s; s = (pool_span_t *)s->avail_next) {
      if (!s->committed) continue;
      if (hak_decay_due(s->emptied_ms, now, force))
        span_mark(s, pass);
      else
        waiting = 1;
    }
  }
  for (unsigned cls = 0; cls < HAK_POOL_CLASSES; cls++) {
    for (pool_span_t *s = (pool_span_t *)free_spans[cls]; s; s = (pool_span_t *)s->avail_next) {
      if (s->decay_pass != pass) continue;
      size_t first = (size_t)(s - reg), end = first + s->pages;
      while (first > 0 && reg[first - 1].decay_pass == pass) first--;
      while (end < top && reg[end].decay_pass == pass) end++;
      if (hak_os_decommit(span_base(&reg[first]), (end - first) << HAK_POOL_PAGE_SHIFT) != 0)
        return 1;                                                      /* the next pass retries */
      for (size_t page = first; page < end; page += reg[page].pages) { /* heads: whole spans */
        span_mark(&reg[page], 0); /* done: not in a run again in this pass */
        free_committed_add(&reg[page], -1);
        reg[page].committed = 0;
      }
    }
  }
  return waiting;
}

int hak_pool_maintain(int force) {
  uint64_t now = hak_now_ms();
  int waiting = 0;
  if (HAK_POOL_THREAD_CACHE) {
    waiting |= hak_heap_reclaim_idle(&heaps, force);
    waiting |= hak_heap_flush_dead(&heaps, now, force);
  } else {
    hak_pool_shared_trim(force);
  }
  pthread_mutex_lock(&arena_lock);
  waiting |= decay_free_spans_locked(now, force);
  pthread_mutex_unlock(&arena_lock);
  return waiting;
}

void hak_pool_give_back(uint64_t bytes) {
  if (!__atomic_load_n(&free_committed_bytes, __ATOMIC_RELAXED)) return;
  pthread_mutex_lock(&arena_lock);
  uint64_t given = 0;
  for (unsigned cls = HAK_POOL_CLASSES; cls-- > 0 && given < bytes;) { /* the biggest first */
    for (pool_span_t *s = (pool_span_t *)free_spans[cls]; s && given < bytes;
         s = (pool_span_t *)s->avail_next) {
      size_t size = (size_t)s->pages << HAK_POOL_PAGE_SHIFT;
      if (!s->committed || hak_os_decommit(span_base(s), size) != 0) continue;
      free_committed_add(s, -1);
      s->committed = 0;
      given += size;
    }
  }
  pthread_mutex_unlock(&arena_lock);
}

/* The child's repair (see hak_tiny_fork_child). Free spans a thread was moving are
 * dropped with their list: they stay committed and unused. */
void hak_pool_fork_child(void) {
  if (hak_fork_child_reset_lock(&arena_lock)) {
    for (unsigned cls = 0; cls < HAK_POOL_CLASSES; cls++) free_spans[cls] = NULL;
    free_committed_bytes = 0;
  }
  hak_pool_shared_fork_child();
  pool_heap_t *self = hak_pool_tls;
  if (self == &parked_heap && !(self = hak_heap_fork_unpark(&heaps)))
    self = hak_pool_tls = &hak_pool_empty_heap;
  if (self != &hak_pool_empty_heap && !hak_heap_intact_in_child(&self->base))
    hak_pool_tls = &hak_pool_empty_heap;
  hak_heap_fork_child(&heaps, hak_pool_tls != &hak_pool_empty_heap ? hak_pool_tls : NULL);
}

void hak_pool_add_heap_stats(const pool_heap_t *h, hak_pool_stats_t *out) {
  out->refills += h->refills;
  out->overflows += h->overflows;
  out->remote_frees += h->remote_frees;
  out->arena_chunks += h->arena_chunks;
}

void hak_pool_stats(hak_pool_stats_t *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&heaps.lock);
  for (hak_heap_t *b = heaps.all; b; b = b->next_all) {
    hak_pool_add_heap_stats(hak_heap_tier(&heaps, b), out);
  }
  pthread_mutex_unlock(&heaps.lock);
  hak_pool_shared_stats(out);
  out->remote_frees += __atomic_load_n(&orphan_remote_frees, __ATOMIC_RELAXED);
  out->foreign_frees = __atomic_load_n(&foreign_frees, __ATOMIC_RELAXED);
  out->idle_flushes = __atomic_load_n(&heaps.parks, __ATOMIC_RELAXED);
  pthread_mutex_lock(&arena_lock);
  for (uintptr_t page = 0; page < (hak_pool_geom.top >> HAK_POOL_PAGE_SHIFT); page++) {
    const pool_span_t *s = &hak_pool_geom.registry[page];
    /* The owner is written by purge passes too, under the reclaim lock, not this one. */
    if (s->kind == HAK_POOL_HEAD && __atomic_load_n(&s->owner, __ATOMIC_RELAXED) && s->used) {
      out->pages_in_use += s->pages;
    }
  }
  uintptr_t top = hak_pool_geom.top;
  pthread_mutex_unlock(&arena_lock);
  out->resident_bytes = hak_os_resident((void *)hak_pool_geom.base, top);
}
