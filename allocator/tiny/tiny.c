/* Tiny tier slow paths: slab and SuperSlab management, refill and overflow of the thread
 * caches, remote frees through per-slab MPSC queues, thread exit and heap adoption,
 * decay of empty SuperSlabs, and the debug-fail-fast checks. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "allocator/internal/bits.h"
#include "allocator/internal/clock.h"
#include "allocator/internal/fork.h"
#include "allocator/internal/list.h"
#include "allocator/internal/options.h"
#include "allocator/internal/purge.h"
#include "allocator/internal/remote.h"
#include "allocator/os_boundary/asan.h"
#include "allocator/os_boundary/os.h"
#include "allocator/tiny/tiny.h"

const uint16_t hak_tiny_class_size[HAK_TINY_CLASSES] = {
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
};

/* 8 times the class of every size, indexed by the size itself: malloc reads its class
 * with one load, no add and shift to a 16-byte granule first (2 instructions of every
 * Tiny malloc; 1 KiB of table, of which a program touches the lines of its sizes), and
 * indexes the 16-byte caches with this value scaled by 2 (an address mode), no shift. */
/* clang-format off */
#define X8(c) HAK_CACHE_C8(c)
/* The 16 sizes of a 16-byte granule, all of class c. */
#define G(c) X8(c), X8(c), X8(c), X8(c), X8(c), X8(c), X8(c), X8(c), \
             X8(c), X8(c), X8(c), X8(c), X8(c), X8(c), X8(c), X8(c)
const uint8_t hak_tiny_size_class8[HAK_TINY_MAX + 1] = {
    X8(0),                       /* size 0 */
    G( 0), G( 1), G( 2), G( 3),  /* sizes    1 ..   64 */
    G( 4), G( 5), G( 6), G( 7),  /* sizes   65 ..  128 */
    G( 8), G( 8), G( 9), G( 9),  /* sizes  129 ..  192 */
    G(10), G(10), G(11), G(11),  /* sizes  193 ..  256 */
    G(12), G(12), G(12), G(12),  /* sizes  257 ..  320 */
    G(13), G(13), G(13), G(13),  /* sizes  321 ..  384 */
    G(14), G(14), G(14), G(14),  /* sizes  385 ..  448 */
    G(15), G(15), G(15), G(15),  /* sizes  449 ..  512 */
    G(16), G(16), G(16), G(16),  /* sizes  513 ..  576 */
    G(16), G(16), G(16), G(16),  /* sizes  577 ..  640 */
    G(17), G(17), G(17), G(17),  /* sizes  641 ..  704 */
    G(17), G(17), G(17), G(17),  /* sizes  705 ..  768 */
    G(18), G(18), G(18), G(18),  /* sizes  769 ..  832 */
    G(18), G(18), G(18), G(18),  /* sizes  833 ..  896 */
    G(19), G(19), G(19), G(19),  /* sizes  897 ..  960 */
    G(19), G(19), G(19), G(19),  /* sizes  961 .. 1024 */
};
/* clang-format on */
#undef G
#undef X8

hak_tiny_geom_t hak_tiny_geom;
hak_tiny_heap_t hak_tiny_empty_heap;
/* What the TLS of a thread whose heap the purge parked points at (heap/heap.h): empty
 * caches, owner of nothing, like the empty heap. */
static hak_tiny_heap_t parked_heap;
HAK_TLS hak_tiny_heap_t *hak_tiny_tls = &hak_tiny_empty_heap;

/* SS_FROZEN: inherited by a fork child from a parent in which another thread was changing
 * the SuperSlab lists; its slabs are used up by their owners and then left alone. */
enum { SS_ACTIVE = 0, SS_EMPTY = 1, SS_DECOMMITTED = 2, SS_FROZEN = 3 };
#define SS_NONE UINT32_MAX
enum { CARVE_UNTOUCHED = 0, CARVE_RESIDENT = 1, CARVE_MIXED = 2 };
#define MAX_SS_PER_CLASS HAK_TINY_MAX_ROWS
#define FILL_ALLOC 0xaa         /* debug: freshly allocated bytes */
#define HOT_CLASSES 12          /* classes up to 256 B are pre-warmed */
#define CACHE_BYTES (32 * 1024) /* per class and thread, ... */
#define CACHE_MIN_BLOCKS 64     /* ... but never fewer blocks than this (cache_max) */
#define CARVE_BYTES (4 * 1024)  /* of never-used memory per refill */

typedef struct {
  uint8_t free_slabs;          /* free slabs of this SuperSlab: on the class list, or cold */
  uint8_t whole;               /* SS_EMPTY: every slab was resident when it emptied */
  uint8_t state;               /* SS_ACTIVE, SS_EMPTY, SS_DECOMMITTED or SS_FROZEN */
  uint8_t on_cold_stack;       /* on its class's cold stack (maybe with no cold slab left) */
  uint32_t cold;               /* its cold slabs, a bit per slab: free, decommitted whole */
  uint32_t next_cold;          /* class stack of SuperSlabs with cold slabs, index + 1 */
  uint32_t due;                /* during a decay pass: its free slabs going cold, a bit each */
  uint32_t next_due;           /* during a decay pass: the SuperSlabs with due slabs, index + 1 */
  uint32_t next_empty;         /* class stack of empty SuperSlabs, index + 1 */
  uint32_t lru_prev, lru_next; /* global LRU of committed empty ones, id + 1 */
  uint64_t emptied_ms;         /* when it last became empty (the decay's clock) */
} ss_meta_t;

typedef struct {
  uint32_t carve_ss;      /* the SuperSlab slabs are carved from (SS_NONE: none) */
  uint32_t carve_next;    /* its next slab to hand out */
  uint8_t carve_pages;    /* what carve_ss's slabs not handed out are: CARVE_UNTOUCHED
                           * (it was new or decommitted), CARVE_RESIDENT (it emptied with
                           * every slab resident) or CARVE_MIXED (it emptied with some) */
  uint32_t top_ss;        /* SuperSlabs (grid rows) of the class ever committed */
  uint32_t empty_head;    /* stack of empty SuperSlabs, index + 1 (0: empty stack) */
  hak_slab_t *free_slabs; /* released slabs of partly used SuperSlabs, still resident */
  uint32_t cold_head;     /* stack of SuperSlabs with cold slabs, index + 1 (lazily popped) */
  uint32_t cold_slabs;    /* cold slabs of the class, in all */
} class_state_t;

/* One lock for slab and SuperSlab bookkeeping: taken once per 64 KiB slab, never on the
 * cache paths. Heaps have their own lock for creation and adoption. */
static pthread_mutex_t tiny_lock = PTHREAD_MUTEX_INITIALIZER;
static hak_heap_registry_t heaps;
static class_state_t classes[HAK_TINY_CLASSES];
/* By SuperSlab number, then class: every class's first SuperSlabs share a page. Rows by
 * class (64 KiB each) made a process fault in a page per class it used for a record or
 * two: a program using every class held 112 KB of .bss instead of 36, and one that only
 * pre-warms 56 KB more. */
static ss_meta_t ss_meta_grid[MAX_SS_PER_CLASS][HAK_TINY_CLASSES];
static uint32_t lru_head, lru_tail, lru_count;

static ss_meta_t *ss_meta(unsigned cls, uint32_t ss) { return &ss_meta_grid[ss][cls]; }
/* Debug builds: each slab's allocated-block bitmap, by slab number (a bit per block, set
 * while the block is allocated, so a double free is decided from the allocator's state,
 * never from the block's contents). Out of band: a slab's header goes back to the OS with
 * its pages, and a bitmap it pointed to was lost and allocated again at each reuse. */
static uint64_t **live_table;
static uint64_t foreign_frees, orphan_remote_frees;

static char *ss_base(unsigned cls, uint32_t ss) {
  uintptr_t cell = (uintptr_t)ss * HAK_TINY_CLASS_SLOTS + cls;
  return (char *)(hak_tiny_geom.base + (cell << HAK_TINY_SS_SHIFT));
}

static hak_tiny_slab_t *slab_at(unsigned cls, uint32_t ss, uint32_t idx) {
  return hak_tiny_slab_of(ss_base(cls, ss) + ((uintptr_t)idx << HAK_TINY_SLAB_SHIFT));
}

/* The SuperSlab's number within its class: its grid row. */
static uint32_t ss_of(const hak_tiny_slab_t *s) {
  return (uint32_t)(((uintptr_t)s - hak_tiny_geom.base) >> HAK_TINY_ROW_SHIFT);
}

static char *block_start(hak_tiny_slab_t *s) { return (char *)s + HAK_TINY_SLAB_HEADER; }

static hak_tiny_cache_t **owner_slot(const hak_tiny_slab_t *s) {
  return hak_tiny_owner_of((uintptr_t)s - hak_tiny_geom.base);
}

static void thread_exit_cb(void *arg);
static const hak_heap_ops_t heap_ops;

int hak_tiny_init(uintptr_t base, size_t size) {
  size_t rows = size >> HAK_TINY_ROW_SHIFT;
  if ((size & (size - 1)) != 0 || rows < 2 || rows > HAK_TINY_MAX_ROWS ||
      (base & (HAK_TINY_SS_SIZE - 1)) != 0) {
    return EINVAL;
  }
  void *owners;
  int err = hak_os_map((size >> HAK_TINY_SLAB_SHIFT) * sizeof(void *), 0, &owners);
  if (err) return err;
  if (!HAK_CLASS_FROM_ADDRESS) {
    void *reg;
    err = hak_os_map(size >> HAK_TINY_SLAB_SHIFT, 0, &reg);
    if (err) {
      hak_os_release(owners, (size >> HAK_TINY_SLAB_SHIFT) * sizeof(void *));
      return err;
    }
    hak_tiny_geom.registry = reg;
  }
  if (HAK_CHECKS) {
    void *table;
    err = hak_os_map((size >> HAK_TINY_SLAB_SHIFT) * sizeof(uint64_t *), 0, &table);
    if (err) {
      hak_os_release(owners, (size >> HAK_TINY_SLAB_SHIFT) * sizeof(void *));
      if (hak_tiny_geom.registry)
        hak_os_release(hak_tiny_geom.registry, size >> HAK_TINY_SLAB_SHIFT);
      hak_tiny_geom.registry = NULL;
      return err;
    }
    live_table = table;
  }
  hak_tiny_geom.owners = owners;
  hak_tiny_geom.base = base;
  /* The size last: from then on free() takes pointers in the region as Tiny's (there are
   * none before the first malloc returns). */
  hak_tiny_geom.size = size;
  for (unsigned c = 0; c < HAK_TINY_CLASSES; c++) classes[c].carve_ss = SS_NONE;
  return hak_heap_registry_init(&heaps, &heap_ops, thread_exit_cb);
}

/* ---- The global LRU of committed empty SuperSlabs (tiny_lock held). ---- */

static ss_meta_t *meta_of_id(uint32_t id) {
  return ss_meta(id / MAX_SS_PER_CLASS, id % MAX_SS_PER_CLASS);
}

static void lru_remove(uint32_t id) {
  ss_meta_t *m = meta_of_id(id);
  if (m->lru_prev)
    meta_of_id(m->lru_prev - 1)->lru_next = m->lru_next;
  else
    lru_head = m->lru_next;
  if (m->lru_next)
    meta_of_id(m->lru_next - 1)->lru_prev = m->lru_prev;
  else
    lru_tail = m->lru_prev;
  m->lru_prev = m->lru_next = 0;
  lru_count--;
}

/* Joins the LRU in the order of emptied_ms, which maintain_locked relies on to stop at the
 * first SuperSlab not due: nearly always at the tail, but one a dead heap's flush emptied
 * is dated back to the heap's death (slab_release). */
static void lru_insert(uint32_t id) {
  ss_meta_t *m = meta_of_id(id);
  uint32_t prev = lru_tail;
  while (prev && meta_of_id(prev - 1)->emptied_ms > m->emptied_ms)
    prev = meta_of_id(prev - 1)->lru_prev;
  uint32_t next = prev ? meta_of_id(prev - 1)->lru_next : lru_head;
  m->lru_prev = prev;
  m->lru_next = next;
  if (prev)
    meta_of_id(prev - 1)->lru_next = id + 1;
  else
    lru_head = id + 1;
  if (next)
    meta_of_id(next - 1)->lru_prev = id + 1;
  else
    lru_tail = id + 1;
  lru_count++;
}

/* Decommits the oldest empty SuperSlabs beyond the LRU size once they have been idle for
 * HAKMEM_DECAY_MS (or at once with force, which also ignores the LRU size). */
static void maintain_locked(uint64_t now, int force) {
  uint64_t keep = force ? 0 : (uint64_t)hak_opt(HAK_OPT_SS_LRU_SIZE);
  while (lru_count > keep) {
    uint32_t id = lru_head - 1;
    ss_meta_t *m = meta_of_id(id);
    if (!hak_decay_due(m->emptied_ms, now, force)) break;
    unsigned cls = id / MAX_SS_PER_CLASS;
    /* Off the LRU only once decommitted: an empty SuperSlab that is still committed must
     * stay on it, since reusing one takes it off the LRU. A refusal is retried later. */
    if (hak_os_decommit(ss_base(cls, id % MAX_SS_PER_CLASS), HAK_TINY_SS_SIZE) != 0) break;
    lru_remove(id);
    m->state = SS_DECOMMITTED;
  }
}

static void free_slabs_unlink(class_state_t *cs, hak_tiny_slab_t *s) {
  /* A node with no predecessor is the head: not so for a cold slab's zeroed header. */
  HAK_ASSERT(s->slab.avail_prev != NULL || cs->free_slabs == &s->slab,
             "a slab unlinked from a class list it is not on at", s);
  HAK_LIST_REMOVE(&cs->free_slabs, &s->slab);
}

static uint32_t slab_index(const hak_tiny_slab_t *s) {
  return (uint32_t)(((uintptr_t)s >> HAK_TINY_SLAB_SHIFT) & (HAK_TINY_SLABS_PER_SS - 1));
}

/* Slabs idx .. idx + n - 1 of SuperSlab ss, free and not resident, become cold: bits of
 * its record, found again through the class's stack of SuperSlabs with cold slabs. */
static void mark_cold(unsigned cls, uint32_t ss, uint32_t idx, uint32_t n) {
  class_state_t *cs = &classes[cls];
  ss_meta_t *m = ss_meta(cls, ss);
  m->cold |= (uint32_t)(((uint64_t)1 << n) - 1) << idx;
  cs->cold_slabs += n;
  if (!m->on_cold_stack) {
    m->on_cold_stack = 1;
    m->next_cold = cs->cold_head;
    cs->cold_head = ss + 1;
  }
}

/* Slabs idx .. idx + n - 1 of SuperSlab ss, taken off the class list, go back to the OS in
 * one call and become cold; refused, they go back on the list (headers intact) to be
 * retried at the next pass. Returns 1 when refused. */
static int decommit_run(unsigned cls, uint32_t ss, uint32_t idx, uint32_t n) {
  class_state_t *cs = &classes[cls];
  if (hak_os_decommit(ss_base(cls, ss) + ((uintptr_t)idx << HAK_TINY_SLAB_SHIFT),
                      (size_t)n << HAK_TINY_SLAB_SHIFT) != 0) {
    for (uint32_t i = idx; i < idx + n; i++)
      HAK_LIST_PUSH(&cs->free_slabs, &slab_at(cls, ss, i)->slab);
    return 1;
  }
  mark_cold(cls, ss, idx, n);
  return 0;
}

/* Free slabs of SuperSlabs still in use (one live slab keeps 2 MiB otherwise) go back
 * whole once free for the decay, header included: they leave the class list (whose links
 * are in the headers) and become cold, a bit of their SuperSlab's out-of-band record,
 * which is all that is read of them until one is carved afresh. (Keeping the first page
 * for the header and links kept a sixteenth of every fragmented SuperSlab: 6 MB of a
 * 100 MiB burst freed around one live block per MiB.) The due slabs of a SuperSlab go
 * back a run of neighbours per call: each call costs the kernel a TLB shootdown, and one
 * per 64 KiB slab or span made a 300 MiB burst's return take 185 ms of an idle 2-core VM
 * and about 1 s of a busy one (1,545 calls, Tiny's and Pool's, where one call of 85 MB
 * took 4 ms).
 * Returns 1 while some free slab still waits. */
static int decay_free_slabs_locked(uint64_t now, int force) {
  int waiting = 0;
  for (unsigned cls = 0; cls < HAK_TINY_CLASSES; cls++) {
    class_state_t *cs = &classes[cls];
    uint32_t due_head = 0; /* stack of the SuperSlabs with due slabs, index + 1 */
    for (hak_slab_t *l = cs->free_slabs, *next; l; l = next) {
      next = l->avail_next;
      hak_tiny_slab_t *s = (hak_tiny_slab_t *)l;
      if (!hak_decay_due(s->released_ms, now, force)) {
        waiting = 1;
        continue;
      }
      free_slabs_unlink(cs, s); /* before its links go */
      uint32_t ss = ss_of(s);
      ss_meta_t *m = ss_meta(cls, ss);
      if (!m->due) {
        m->next_due = due_head;
        due_head = ss + 1;
      }
      m->due |= (uint32_t)1 << slab_index(s);
    }
    while (due_head) {
      uint32_t ss = due_head - 1;
      ss_meta_t *m = ss_meta(cls, ss);
      due_head = m->next_due;
      for (uint32_t due = m->due; due;) {
        uint32_t idx = (uint32_t)__builtin_ctz(due);
        uint32_t n = (uint32_t)__builtin_ctzll(~((uint64_t)due >> idx)); /* the run's length */
        waiting |= decommit_run(cls, ss, idx, n);
        due &= ~(uint32_t)((((uint64_t)1 << n) - 1) << idx);
      }
      m->due = 0;
    }
  }
  return waiting;
}

/* A cold slab of the class (cold_slabs > 0): the first of the first SuperSlab on the
 * stack that still has one; the entries above it, left by SuperSlabs whose cold slabs
 * were all taken or that emptied, are popped. */
static hak_tiny_slab_t *cold_take(unsigned cls) {
  class_state_t *cs = &classes[cls];
  for (;;) {
    uint32_t ss = cs->cold_head - 1;
    ss_meta_t *m = ss_meta(cls, ss);
    if (m->cold) {
      uint32_t idx = (uint32_t)__builtin_ctz(m->cold);
      m->cold &= m->cold - 1;
      m->free_slabs--;
      cs->cold_slabs--;
      return slab_at(cls, ss, idx);
    }
    cs->cold_head = m->next_cold;
    m->on_cold_stack = 0;
  }
}

int hak_tiny_maintain(int force) {
  uint64_t now = hak_now_ms();
  int waiting = hak_heap_reclaim_idle(&heaps, force);
  waiting |= hak_heap_flush_dead(&heaps, now, force);
  uint64_t keep = (uint64_t)hak_opt(HAK_OPT_SS_LRU_SIZE);
  pthread_mutex_lock(&tiny_lock);
  maintain_locked(now, force);
  waiting |= lru_count > keep;
  waiting |= decay_free_slabs_locked(now, force);
  pthread_mutex_unlock(&tiny_lock);
  return waiting;
}

/* ---- Slabs and SuperSlabs (tiny_lock held). ---- */

/* Makes a SuperSlab the class's carving source: the empty one `link` points to (a link
 * of the class's empty stack: NULL for its head), else a new one. */
static int ss_take(unsigned cls, uint32_t *link) {
  class_state_t *cs = &classes[cls];
  uint32_t ss;
  if (!link) link = &cs->empty_head;
  if (*link) {
    ss = *link - 1;
    ss_meta_t *m = ss_meta(cls, ss);
    if (m->state == SS_DECOMMITTED) {
      hak_purge_relieve(HAK_TINY_SS_SIZE);
      if (hak_os_commit(ss_base(cls, ss), HAK_TINY_SS_SIZE) != 0) return 0;
    } else {
      lru_remove(cls * MAX_SS_PER_CLASS + ss);
    }
    *link = m->next_empty;
  } else {
    if (((uintptr_t)(cs->top_ss + 1) << HAK_TINY_ROW_SHIFT) > hak_tiny_geom.size) return 0;
    ss = cs->top_ss;
    /* The region is claimed, not reserved: a cell is mapped when first used, and a cell
     * something else occupies (EEXIST) stops the class growing; its requests then fall
     * back to Large rather than touch memory that is not ours. */
    hak_purge_relieve(HAK_TINY_SS_SIZE); /* its pages will be touched as it is carved */
    if (hak_os_commit_at(ss_base(cls, ss), HAK_TINY_SS_SIZE) != 0) return 0;
    cs->top_ss++;
    /* Publish before any block of it is handed out: free() reads it to accept pointers. */
    __atomic_store_n(&hak_tiny_geom.rows[cls], (uintptr_t)cs->top_ss, __ATOMIC_RELEASE);
  }
  ss_meta_t *m = ss_meta(cls, ss);
  cs->carve_pages = m->state != SS_EMPTY ? CARVE_UNTOUCHED
                    : m->whole           ? CARVE_RESIDENT
                                         : CARVE_MIXED;
  m->state = SS_ACTIVE;
  m->free_slabs = 0;
  m->cold = 0; /* (none: an empty SuperSlab's slabs are all taken back) */
  cs->carve_ss = ss;
  cs->carve_next = 0;
  return 1;
}

/* The slabs of the class's carving SuperSlab not handed out yet become cold: free and
 * not resident, which is what a never-used slab is (those of a SuperSlab that emptied
 * with some of them resident go back to the OS first). The class then carves elsewhere.
 * Returns 1 when it cannot (the OS refused). */
static int carve_retire(unsigned cls) {
  class_state_t *cs = &classes[cls];
  uint32_t ss = cs->carve_ss, idx = cs->carve_next, n = HAK_TINY_SLABS_PER_SS - idx;
  if (ss == SS_NONE || n == 0) {
    cs->carve_ss = SS_NONE;
    return 0;
  }
  if (cs->carve_pages == CARVE_MIXED &&
      hak_os_decommit(ss_base(cls, ss) + ((uintptr_t)idx << HAK_TINY_SLAB_SHIFT),
                      (size_t)n << HAK_TINY_SLAB_SHIFT) != 0) {
    return 1;
  }
  cs->carve_ss = SS_NONE;
  ss_meta_t *m = ss_meta(cls, ss);
  m->free_slabs = (uint8_t)(m->free_slabs + n);
  mark_cold(cls, ss, idx, n);
  return 0;
}

/* A slab for `cls`; *fresh tells whether its header must be initialised from scratch.
 * Resident memory first: free slabs, then the slabs of an empty SuperSlab still
 * committed (the carving SuperSlab's untouched slabs are retired for it), and only then
 * memory whose pages the slab will fault in: cold slabs, untouched slabs, new
 * SuperSlabs. Carving on while an emptied SuperSlab waited for its decay made a program
 * that allocates 4 MiB of one size, frees it and allocates it again touch 2 MiB more. */
static hak_tiny_slab_t *slab_acquire(unsigned cls, int *fresh) {
  class_state_t *cs = &classes[cls];
  hak_tiny_slab_t *s = NULL;
  pthread_mutex_lock(&tiny_lock);
  int carving = cs->carve_ss != SS_NONE && cs->carve_next < HAK_TINY_SLABS_PER_SS;
  int resident = carving && cs->carve_pages == CARVE_RESIDENT;
  /* The link to an empty SuperSlab all of whose slabs are resident. The stack is in the
   * order they emptied, and the decay decommits the oldest first: the search stops at
   * the first decommitted one (after a burst, thousands may follow). */
  uint32_t *whole = NULL;
  for (uint32_t *l = &cs->empty_head; !resident && !cs->free_slabs && *l && !whole;
       l = &ss_meta(cls, *l - 1)->next_empty) {
    const ss_meta_t *m = ss_meta(cls, *l - 1);
    if (m->state != SS_EMPTY) break;
    if (m->whole) whole = l;
  }
  if (cs->free_slabs) { /* resident slabs first */
    s = (hak_tiny_slab_t *)cs->free_slabs;
    free_slabs_unlink(cs, s);
    ss_meta(cls, ss_of(s))->free_slabs--;
    *fresh = 0;
  } else if (whole && !carve_retire(cls)) {
    if (ss_take(cls, whole)) { /* (it cannot fail: nothing to commit) */
      s = slab_at(cls, cs->carve_ss, cs->carve_next++);
      *fresh = 1;
    }
  } else if (cs->cold_slabs && !resident) { /* carve afresh */
    s = cold_take(cls);
    *fresh = 1;
  } else if (carving || ss_take(cls, NULL)) {
    s = slab_at(cls, cs->carve_ss, cs->carve_next++);
    *fresh = 1;
  }
  pthread_mutex_unlock(&tiny_lock);
  return s;
}

/* A slab none of whose blocks is out forgets its free list: its next refill carves it
 * afresh, in address order, and its pages past what it had carved stay untouched. (The
 * lists keep the order blocks were freed in, see hak_slab_take_free, so a list is in
 * address order already when its blocks were freed in the order they were handed out;
 * this restores the order that other frees mixed.) */
static void slab_forget_free(hak_tiny_slab_t *s) {
  if (s->carved > s->recarve) s->recarve = s->carved;
  s->free = NULL;
  __atomic_store_n(&s->carved, 0, __ATOMIC_RELAXED); /* see block_kind */
}

/* slab_release's `idle_since_ms` for a slab emptied now. */
#define IDLE_NOW UINT64_MAX

/* An empty slab goes back to its class; a SuperSlab whose slabs are all back becomes empty.
 * Its decay counts from idle_since_ms when that is earlier than now: the blocks a dead
 * heap's caches held have been unused since its thread exited, and dating them from the
 * flush (itself a decay after the exit) returned them only two decays after the exit. */
static void slab_release(hak_tiny_slab_t *s, uint64_t idle_since_ms) {
  unsigned cls = s->cls;
  class_state_t *cs = &classes[cls];
  pthread_mutex_lock(&tiny_lock);
  uint32_t ss = ss_of(s);
  ss_meta_t *m = ss_meta(cls, ss);
  __atomic_store_n(&s->owner, NULL, __ATOMIC_RELAXED);
  __atomic_store_n(owner_slot(s), NULL, __ATOMIC_RELAXED);
  if (m->state == SS_FROZEN) { /* a fork child's distrusted SuperSlab: never reused */
    pthread_mutex_unlock(&tiny_lock);
    return;
  }
  uint64_t now = hak_now_ms();
  s->released_ms = idle_since_ms < now ? idle_since_ms : now;
  slab_forget_free(s);
  HAK_LIST_PUSH(&cs->free_slabs, &s->slab);
  uint32_t handed_out = ss == cs->carve_ss ? cs->carve_next : HAK_TINY_SLABS_PER_SS;
  if (++m->free_slabs == handed_out) {
    m->whole = handed_out == HAK_TINY_SLABS_PER_SS && m->cold == 0; /* before it is cleared */
    /* Idle since its last slab was: the latest of their dates. */
    uint64_t emptied = 0;
    for (uint32_t i = 0; i < handed_out; i++) {
      if (m->cold & ((uint32_t)1 << i)) continue; /* off the list, and idle for longer */
      hak_tiny_slab_t *t = slab_at(cls, ss, i);
      if (t->released_ms > emptied) emptied = t->released_ms;
      free_slabs_unlink(cs, t);
    }
    cs->cold_slabs -= (uint32_t)__builtin_popcount(m->cold);
    m->cold = 0; /* its entry on the cold stack, if any, is popped when reached */
    if (ss == cs->carve_ss) cs->carve_ss = SS_NONE;
    m->state = SS_EMPTY;
    m->emptied_ms = emptied;
    m->next_empty = cs->empty_head;
    cs->empty_head = ss + 1;
    lru_insert(cls * MAX_SS_PER_CLASS + ss);
    maintain_locked(now, 0);
    pthread_mutex_unlock(&tiny_lock);
    hak_purge_kick(HAK_TINY_SS_SIZE); /* the empty SuperSlab starts its decay */
    return;
  }
  pthread_mutex_unlock(&tiny_lock);
  /* The free slab starts its decay. Without this kick a burst freed around one live block
   * per SuperSlab never started the purge thread: 98 of 100 MiB of 64-byte blocks stayed
   * in RAM for good after the program went idle. */
  hak_purge_kick(HAK_TINY_SLAB_SIZE);
}

/* Debug: where slab s's allocated-block bitmap is kept (debug builds only). */
static uint64_t **live_slot(const hak_tiny_slab_t *s) {
  return &live_table[((uintptr_t)s - hak_tiny_geom.base) >> HAK_TINY_SLAB_SHIFT];
}

/* Debug: slab s's allocated-block bitmap (NULL: none, the slab goes unchecked). */
static uint64_t *live_bits(const hak_tiny_slab_t *s) { return live_table ? *live_slot(s) : NULL; }

/* Debug: a fresh slab's allocated-block bitmap, all clear (one bit per possible block). */
static void live_bits_init(hak_tiny_slab_t *s) {
  enum { BYTES = HAK_TINY_SLAB_SIZE / 16 / 8 };
  uint64_t **slot = live_slot(s);
  void *bits = *slot;
  if (bits == NULL && hak_os_meta_alloc(BYTES, &bits) != 0) bits = NULL;
  if (bits) memset(bits, 0, BYTES);
  *slot = bits; /* NULL only when out of memory: the slab then goes unchecked */
}

/* What a slab header's guard words hold: its address, scrambled by a constant (and by the
 * process's key), so that neither zeros nor a copied header pass. */
static uintptr_t header_guard(const hak_tiny_slab_t *s) {
  return (uintptr_t)s ^ hak_link_key ^ (uintptr_t)0x9e3779b97f4a7c15u;
}

static void slab_adopt(hak_tiny_heap_t *h, hak_tiny_slab_t *s, unsigned cls, int fresh) {
  s->guard[0] = s->guard[1] = header_guard(s);
  if (fresh) {
    s->free = NULL;
    __atomic_store_n(&s->carved, 0, __ATOMIC_RELAXED);
    s->recarve = 0; /* its pages may have gone back to the OS */
    if (HAK_CHECKS) live_bits_init(s);
    uintptr_t end = ((uintptr_t)s & ~(uintptr_t)(HAK_TINY_SLAB_SIZE - 1)) + HAK_TINY_SLAB_SIZE;
    s->capacity = (uint32_t)((end - (uintptr_t)block_start(s)) / hak_tiny_class_size[cls]);
    hak_asan_poison(block_start(s), end - (uintptr_t)block_start(s)); /* none handed out */
    s->cls = (uint16_t)cls;
    __atomic_store_n(&s->remote, 0, __ATOMIC_RELAXED);
    if (!HAK_CLASS_FROM_ADDRESS) {
      hak_tiny_geom.registry[((uintptr_t)s - hak_tiny_geom.base) >> HAK_TINY_SLAB_SHIFT] =
          (uint8_t)cls;
    }
  }
  s->used = 0;
  s->state = HAK_SLAB_CURRENT;
  s->pending_next = NULL;
  __atomic_store_n(&s->owner, h, __ATOMIC_RELEASE);
  __atomic_store_n(owner_slot(s), hak_tiny_owner_cache(h, cls), __ATOMIC_RELEASE);
}

/* ---- A heap's slab lists (owner only). ---- */

static void avail_push(hak_tiny_heap_t *h, hak_tiny_slab_t *s) {
  hak_slab_avail_push(&h->avail[s->cls], &s->slab);
}

static void avail_remove(hak_tiny_heap_t *h, hak_tiny_slab_t *s) {
  hak_slab_avail_remove(&h->avail[s->cls], &s->slab);
}

/* Where a slab's blocks lie: the links of its lists must stay there. */
static void slab_bounds(hak_slab_t *slab, uintptr_t *lo, uintptr_t *len) {
  hak_tiny_slab_t *s = (hak_tiny_slab_t *)slab;
  *lo = (uintptr_t)block_start(s);
  *len = (uintptr_t)s->capacity * hak_tiny_class_size[s->cls];
}

/* A block goes back to its own slab's free list; an emptied slab goes back to its class. */
static void return_chain(hak_tiny_heap_t *h, hak_tiny_slab_t *s, void *head, void *tail,
                         uint32_t count, uint64_t idle_since_ms) {
  uintptr_t lo, len;
  slab_bounds(&s->slab, &lo, &len);
  if (hak_slab_return_chain(&h->avail[s->cls], &s->slab, head, tail, count, lo, len)) {
    slab_release(s, idle_since_ms);
  } else if (s->used == 0) {
    slab_forget_free(s); /* the current slab */
  }
}

static void return_block(hak_tiny_heap_t *h, hak_tiny_slab_t *s, void *b, uint64_t idle_since_ms) {
  return_chain(h, s, b, b, 1, idle_since_ms);
}

/* Chains of at most this many drained blocks go into the thread cache, longer ones to
 * their slab: a consumer that frees a producer's blocks in bulk returns whole slabs,
 * which then empty and are carved again in order (slab_forget_free); a few blocks freed
 * here and there by other threads are used again at once. */
#define DRAIN_TO_CACHE 32

/* A drained chain goes into the thread cache whole when it is short and fits, not walked:
 * its links become the cache's and are checked as those are, when a pop follows them
 * (debug builds checked each one in the drain). Walking them here made the owner wait for
 * each line the freeing thread had written, one after another; popped one at a time they
 * arrive while the program works between its mallocs (xthread: 1.2x with no walk). A
 * block in a thread cache still counts as used, so nothing is counted twice. */
static void put_drained(void *tier, hak_slab_t *slab, void *head, void *tail, uint32_t count) {
  hak_tiny_heap_t *h = tier;
  hak_tiny_slab_t *s = (hak_tiny_slab_t *)slab;
  hak_tiny_cache_t *c = &h->cache[s->cls];
  if (count > DRAIN_TO_CACHE || (int32_t)count > c->room) {
    return_chain(h, s, head, tail, count, IDLE_NOW);
    return;
  }
  hak_cache_push_chain(c, head, tail, count); /* it fits: no overflow */
}

static void process_pending(hak_tiny_heap_t *h) {
  hak_heap_drain(&h->base, h, put_drained, slab_bounds);
}

static void heap_flush(void *tier);

/* The engine's hooks (heap/heap.h). A remote free into a dead heap only drains the queues,
 * so the heap keeps its warm caches for the thread that adopts it; the decay and
 * malloc_trim also give the cached blocks back to the slabs. */

static void heap_init(void *h) {
  for (unsigned c = 0; c < HAK_TINY_CLASSES; c++) {
    hak_tiny_cache_t *cache = &((hak_tiny_heap_t *)h)->cache[c];
    hak_cache_set_cap(cache, 32);
    /* Blocks start a header (128 bytes) past a colour offset of 128-byte steps. */
    cache->align = hak_cache_align_of(hak_tiny_class_size[c], HAK_TINY_SLAB_HEADER);
  }
}
static void heap_drain(void *h) { process_pending(h); }

static void put_to_slab(void *tier, hak_slab_t *slab, void *head, void *tail, uint32_t count) {
  return_chain(tier, (hak_tiny_slab_t *)slab, head, tail, count, IDLE_NOW);
}
static hak_slab_t *slab_of_block(const void *b) { return &hak_tiny_slab_of(b)->slab; }
/* Heap h's current slabs with no block out (one in a cache counts as out) go back to
 * their class. */
static void release_empty_current(hak_tiny_heap_t *h, uint64_t idle_since_ms) {
  for (unsigned cls = 0; cls < HAK_TINY_CLASSES; cls++) {
    hak_tiny_slab_t *s = h->current[cls];
    if (s && s->used == 0) {
      h->current[cls] = NULL;
      s->state = HAK_SLAB_FULL;
      slab_release(s, idle_since_ms);
    }
  }
}

/* The purge thread, holding the claim of an idle heap: the owner may be using its caches
 * right now, so drained blocks go to their slabs, and only its empty current slabs go. */
static void heap_reclaim(void *tier) {
  hak_tiny_heap_t *h = tier;
  hak_heap_drain(&h->base, h, put_to_slab, slab_bounds);
  release_empty_current(h, IDLE_NOW);
}
static void heap_bind(void *h) {
  hak_tiny_tls = h;
  ((hak_tiny_heap_t *)h)->base.tls = (void **)&hak_tiny_tls;
}
static void heap_prewarm(void *tier);
static void heap_park(void *tier, uint64_t idle_since_ms);
static uint64_t heap_fingerprint(void *tier) {
  return hak_cache_fingerprint(((hak_tiny_heap_t *)tier)->cache, HAK_TINY_CLASSES);
}

static const hak_heap_ops_t heap_ops = HAK_HEAP_OPS(hak_tiny_heap_t, &parked_heap);

/* ---- Debug-fail-fast helpers (compiled in every variant, used when HAK_CHECKS). ---- */

static const char *class_where(char *buf, size_t cap, unsigned cls) {
  return hak_class_where(buf, cap, "tiny", cls);
}

/* Pops one block from a cache, checking the link and the free fill (debug). */
static void *cache_pop_checked(hak_tiny_cache_t *c, unsigned cls) {
  char where[32];
  void *p = c->head;
  void *next = hak_link_read(p);
  uintptr_t noff = (uintptr_t)next - hak_tiny_geom.base;
  size_t size = hak_tiny_class_size[cls];
  if (next != NULL && (noff >= hak_tiny_geom.size || !hak_tiny_owns(noff))) {
    hak_fatal("corrupted free list link in block", p, class_where(where, sizeof where, cls));
  }
  if (!hak_bytes_are(p, sizeof(void *), size, HAK_FILL_FREE)) {
    hak_fatal("write after free to block", p, class_where(where, sizeof where, cls));
  }
  hak_cache_pop(c, hak_link_tiny_mask);
  hak_tiny_slab_t *s = hak_tiny_slab_of(p);
  uint64_t *bits = live_bits(s);
  if (bits) hak_bit_set(bits, (uint32_t)(((char *)p - block_start(s)) / size));
  hak_fill_bytes(p, FILL_ALLOC, size);
  return p;
}

/* How a pointer into an owned slab relates to its blocks. */
typedef enum { BLOCK_OK, BLOCK_INTERIOR, BLOCK_NEVER_HANDED_OUT } block_kind_t;

/* Is p the start of a block the slab has carved? One modulo: slow paths only. The carved
 * count grows, and falls back to 0 only when no block of the slab is out
 * (slab_forget_free), so a thread freeing a block it was handed has seen it pass that
 * block. */
static block_kind_t block_kind(hak_tiny_slab_t *s, const void *p, size_t size, uint32_t *index) {
  uintptr_t rel = (uintptr_t)p - (uintptr_t)block_start(s); /* wraps when p is before */
  if (rel % size != 0 || rel / size >= s->capacity) return BLOCK_INTERIOR;
  *index = (uint32_t)(rel / size);
  return *index < __atomic_load_n(&s->carved, __ATOMIC_RELAXED) ? BLOCK_OK : BLOCK_NEVER_HANDED_OUT;
}

int hak_tiny_block_freed(const void *p, uintptr_t off) {
  if (!HAK_CHECKS || !hak_tiny_owns(off)) return 0;
  hak_tiny_slab_t *s = hak_tiny_slab_of(p);
  uint32_t index = 0;
  uint64_t *bits = live_bits(s);
  if (__atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) == NULL || !bits ||
      block_kind(s, p, hak_tiny_class_size[hak_tiny_class_at(off)], &index) != BLOCK_OK) {
    return 0;
  }
  uint64_t bit = (uint64_t)1 << (index & 63);
  return (__atomic_load_n(&bits[index >> 6], __ATOMIC_RELAXED) & bit) == 0;
}

/* ---- Refill and overflow. ---- */

/* Moves up to `want` blocks of slab s's free list into the cache. */
static uint32_t take_free(hak_tiny_slab_t *s, hak_tiny_cache_t *c, uint32_t want) {
  uintptr_t lo, len;
  slab_bounds(&s->slab, &lo, &len);
  uint32_t got = hak_slab_take_free(&s->slab, &c->head, want, lo, len);
  c->room -= (int32_t)got;
  return got;
}

/* Carves up to `want` never-used blocks of slab s into the cache. */
static uint32_t take_carve(hak_tiny_slab_t *s, hak_tiny_cache_t *c, uint32_t want) {
  size_t stride = hak_tiny_class_size[s->cls];
  uint32_t got = hak_slab_carve(&s->slab, block_start(s), stride, stride, &c->head, want);
  c->room -= (int32_t)got;
  return got;
}

/* Fills the cache of `cls` with up to `want` blocks: freed blocks first (the current
 * slab's, then another slab's), never-used memory only when no freed block is left, and
 * then at most CARVE_BYTES of it per refill, so the heap touches no page ahead of need
 * (blocks a slab carves again after forgetting its list do not count).
 * Returns how many blocks it got. */
static uint32_t fill(hak_tiny_heap_t *h, unsigned cls, uint32_t want) {
  hak_tiny_cache_t *c = &h->cache[cls];
  uint32_t got = 0;
  uint32_t carve_left = CARVE_BYTES / hak_tiny_class_size[cls];
  if (carve_left == 0) carve_left = 1;
  while (got < want) {
    hak_tiny_slab_t *s = h->current[cls];
    if (s) {
      got += take_free(s, c, want - got);
      hak_tiny_slab_t *a = (hak_tiny_slab_t *)h->avail[cls];
      if (got < want && s->carved < s->capacity && a && a->free) {
        avail_remove(h, a);
        avail_push(h, s);
        a->state = HAK_SLAB_CURRENT;
        h->current[cls] = a;
        continue;
      }
      /* Blocks the slab had carved before it forgot its list touch no new page. */
      uint32_t again = s->recarve > s->carved ? s->recarve - s->carved : 0;
      uint32_t carve = want - got < carve_left + again ? want - got : carve_left + again;
      uint32_t carved = take_carve(s, c, carve);
      got += carved;
      carve_left -= carved > again ? carved - again : 0;
      if (got > 0 && carve_left == 0) break;
      if (!hak_slab_exhausted(&s->slab)) break;
      s->state = HAK_SLAB_FULL;
      h->current[cls] = NULL;
      continue;
    }
    int fresh = 0;
    s = (hak_tiny_slab_t *)h->avail[cls];
    if (s) {
      avail_remove(h, s);
      s->state = HAK_SLAB_CURRENT;
    } else {
      s = slab_acquire(cls, &fresh);
      if (!s) break;
      slab_adopt(h, s, cls, fresh);
    }
    h->current[cls] = s;
  }
  if (h->current[cls]) hak_slab_validate(&h->current[cls]->slab);
  return got;
}

/* A cache holds at most HAKMEM_TINY_CACHE_MAX blocks and at most CACHE_BYTES of them
 * (big classes would otherwise park megabytes per thread), but CACHE_MIN_BLOCKS even in
 * the classes above 512 B: a class's free count swings by a number of blocks whatever
 * their size, and with 32 blocks random_mixed (1,024 live blocks of 16 B-1 KiB) made a
 * refill or a trim every 625 allocations, each moving half a cache through its slabs;
 * with 64, one in 3,500, and 2.5% more operations a second. */
static uint32_t cache_max(unsigned cls) {
  uint32_t by_bytes = hak_cache_blocks(CACHE_BYTES, hak_tiny_class_size[cls], CACHE_MIN_BLOCKS);
  uint32_t max = (uint32_t)hak_opt(HAK_OPT_TINY_CACHE_MAX);
  return by_bytes < max ? by_bytes : max;
}

static void heap_prewarm(void *tier) {
  hak_tiny_heap_t *h = tier;
  for (unsigned cls = 0; cls < HOT_CLASSES; cls++) {
    uint32_t n = HAK_TINY_PREWARM_BUDGET / HOT_CLASSES / hak_tiny_class_size[cls];
    if (n > 64) n = 64;
    if (h->cache[cls].cap < n) hak_cache_set_cap(&h->cache[cls], n);
    fill(h, cls, n);
  }
}

/* The miss path of class `cls` on the calling thread's heap h (marked busy). */
static void *refill_and_pop(hak_tiny_heap_t *h, unsigned cls) {
  hak_tiny_cache_t *c = &h->cache[cls];
  /* Blocks other threads freed come first: the drain puts them into the caches (up to
   * each cache's room), and a refill on top of them would overfill this one. */
  if (c->head == NULL && __atomic_load_n(&h->base.pending, __ATOMIC_RELAXED)) process_pending(h);
  if (c->head == NULL) {
    hak_cache_adapt_miss(c, &h->adapt[cls], cache_max(cls));
    h->refills++;
    HAK_TRACE_ROUTE(HAK_ROUTE_TINY_REFILL, 0, 0);
    if (fill(h, cls, c->cap / 2 > 0 ? c->cap / 2 : 1) == 0) {
      errno = ENOMEM;
      return NULL;
    }
  }
  void *p = HAK_CHECKS ? cache_pop_checked(c, cls) : hak_cache_pop(c, hak_link_tiny_mask);
  hak_asan_unpoison(p, hak_tiny_class_size[cls]);
  return p;
}

/* The calling thread's heap on a slow path: bound again if the purge parked it
 * (heap/heap.h), else as the TLS says (the empty heap if it has none). */
HAK_INLINE hak_tiny_heap_t *current_heap(void) {
  hak_tiny_heap_t *h = hak_tiny_tls;
  if (HAK_LIKELY(h != &parked_heap)) return h;
  return hak_heap_unpark(&heaps, (void **)&hak_tiny_tls, &hak_tiny_empty_heap);
}

void *hak_tiny_malloc_slow(unsigned cls) {
  hak_heap_remote_flush(); /* this thread's batches of remote frees go on a slow path */
  hak_tiny_heap_t *h = current_heap();
  if (h == &hak_tiny_empty_heap) {
    h = hak_heap_attach(&heaps);
    if (!h) {
      errno = ENOMEM;
      return NULL;
    }
  }
  hak_heap_own(&h->base);
  void *p = refill_and_pop(h, cls);
  hak_heap_disown(&h->base);
  return p;
}

void hak_tiny_overflow(hak_tiny_cache_t *c) {
  hak_tiny_heap_t *h = hak_tiny_tls;
  hak_heap_own(&h->base);
  unsigned cls = (unsigned)(c - h->cache);
  hak_cache_adapt_overflow(c, &h->adapt[cls], 16, cache_max(cls));
  h->overflows++;
  /* Down to half the capacity: room = cap - count reaches cap - cap / 2. */
  int32_t room = (int32_t)(c->cap - c->cap / 2);
  hak_tiny_slab_t *last =
      (hak_tiny_slab_t *)hak_cache_trim(c, room, hak_link_tiny_mask, h, slab_of_block, put_to_slab);
  /* Still ours (only this thread releases it), or handed to another thread by now. */
  if (HAK_CHECKS && last && __atomic_load_n(&last->owner, __ATOMIC_ACQUIRE) == h) {
    hak_slab_validate(&last->slab);
  }
  hak_heap_disown(&h->base);
}

/* ---- Frees of blocks owned by other threads. ---- */

void hak_tiny_free_remote(hak_tiny_slab_t *s, void *p) {
  hak_tiny_heap_t *owner = __atomic_load_n(&s->owner, __ATOMIC_ACQUIRE);
  if (HAK_UNLIKELY(owner == NULL)) {
    __atomic_fetch_add(&foreign_frees, 1, __ATOMIC_RELAXED);
    return;
  }
  HAK_TRACE_ROUTE(HAK_ROUTE_TINY_REMOTE, p, 1);
  hak_tiny_heap_t *self = hak_tiny_tls;
  if (self != &hak_tiny_empty_heap)
    self->remote_frees++;
  else
    __atomic_fetch_add(&orphan_remote_frees, 1, __ATOMIC_RELAXED);
  hak_heap_remote_free(&heaps, &s->slab, p, hak_tiny_class_size[s->cls]);
}

HAK_COLD void hak_tiny_bad_free(const void *p) {
  if (HAK_CHECKS) hak_fatal("free of a pointer hakmem does not own", p, "tiny region");
  __atomic_fetch_add(&foreign_frees, 1, __ATOMIC_RELAXED);
  HAK_TRACE_ROUTE(HAK_ROUTE_FOREIGN, p, 1);
}

void hak_tiny_free_slow(void *p) {
  uintptr_t off = (uintptr_t)p - hak_tiny_geom.base;
  if (!hak_tiny_owns(off)) {
    hak_tiny_bad_free(p);
    return;
  }
  hak_tiny_slab_t *s = hak_tiny_slab_of(p);
  unsigned cls = hak_tiny_class_at(off);
  size_t size = hak_tiny_class_size[cls];
  uint32_t index = 0;
  block_kind_t kind = block_kind(s, p, size, &index);
  if (HAK_CHECKS) {
    char where[32];
    hak_tiny_heap_t *owner = __atomic_load_n(&s->owner, __ATOMIC_ACQUIRE);
    hak_tiny_cache_t *listed = __atomic_load_n(owner_slot(s), __ATOMIC_ACQUIRE);
    if (owner == NULL && listed == NULL) {
      hak_fatal("free of memory that is not allocated:", p, class_where(where, sizeof where, cls));
    }
    if (s->guard[0] != header_guard(s) || s->guard[1] != header_guard(s) ||
        hak_tiny_owner_cache(owner, cls) != listed) {
      hak_fatal("overflow into the slab header at", s, class_where(where, sizeof where, cls));
    }
    if (kind == BLOCK_INTERIOR) {
      hak_fatal("free of a pointer that is not a block start:", p,
                class_where(where, sizeof where, cls));
    }
    if (kind == BLOCK_NEVER_HANDED_OUT) {
      hak_fatal("free of a block that was never allocated:", p,
                class_where(where, sizeof where, cls));
    }
    /* Decided by the allocator's record, not by the block's contents. */
    uint64_t *bits = live_bits(s);
    if (bits && !hak_bit_clear(bits, index)) {
      hak_fatal("double free of", p, class_where(where, sizeof where, cls));
    }
    hak_fill_bytes(p, HAK_FILL_FREE, size);
  } else if (kind != BLOCK_OK) { /* release: refused, never put on a list */
    hak_tiny_bad_free(p);
    return;
  }
  hak_asan_poison(p, size);
  hak_tiny_heap_t *h = current_heap();
  if (s->owner != h) {
    hak_tiny_free_remote(s, p);
    return;
  }
  hak_tiny_cache_t *c = &h->cache[cls];
  if (hak_cache_push(c, p)) hak_tiny_overflow(c);
}

/* ---- Thread exit, fork, stats. ---- */

/* Gives the remote frees waiting for heap h, then its cached blocks, back to their slabs,
 * and its current slabs left with no block out to the class (a dead heap kept one per
 * class it had used, 1.5 MB for a thread of 24 classes); the cached blocks and current
 * slabs have been unused since idle_since_ms (or IDLE_NOW). */
static void flush_caches(hak_tiny_heap_t *h, uint64_t idle_since_ms) {
  hak_heap_drain(&h->base, h, put_to_slab, slab_bounds);
  for (unsigned cls = 0; cls < HAK_TINY_CLASSES; cls++) {
    hak_tiny_cache_t *c = &h->cache[cls];
    for (void *b; (b = hak_cache_pop(c, hak_link_tiny_mask)) != NULL;)
      return_block(h, hak_tiny_slab_of(b), b, idle_since_ms);
  }
  release_empty_current(h, idle_since_ms);
}

/* The engine's flush of a heap dead for the decay: its caches have not been touched
 * since its thread exited, so their slabs are due to go back in this very pass. */
static void heap_flush(void *tier) {
  hak_tiny_heap_t *h = tier;
  flush_caches(h, h->base.died_ms);
}

/* The idle flush of a live heap whose thread has been blocked since idle_since_ms. */
static void heap_park(void *tier, uint64_t idle_since_ms) { flush_caches(tier, idle_since_ms); }

void hak_tiny_flush_thread(void) {
  hak_tiny_heap_t *h = current_heap();
  if (h == &hak_tiny_empty_heap) return;
  hak_heap_own(&h->base);
  flush_caches(h, IDLE_NOW);
  hak_heap_disown(&h->base);
}

/* A dying thread leaves its caches in the heap: the next thread adopts them warm, so a
 * thread exit costs O(1) instead of a flush and a refill of thousands of blocks. Blocks
 * of heaps that stay dead are flushed after the decay (hak_tiny_maintain) or when other
 * threads' frees collect the heap. */
static void heap_die(hak_tiny_heap_t *h) {
  hak_heap_own(&h->base);
  process_pending(h);
  hak_heap_disown(&h->base);
  hak_tiny_tls = &hak_tiny_empty_heap;
  hak_heap_retire(&heaps, h);
}

static void thread_exit_cb(void *arg) {
  hak_tiny_heap_t *h = arg;
  if (h && hak_tiny_tls == &parked_heap) hak_heap_rebind(&heaps, h);
  if (h && h == hak_tiny_tls) heap_die(h);
}

/* A thread was changing the SuperSlab lists when the parent forked: none of them can be
 * trusted. Every SuperSlab handed out so far is frozen (its slabs serve their owners
 * until used up, then are left alone), and the class starts afresh on new rows. */
static void freeze_superslabs(void) {
  for (unsigned cls = 0; cls < HAK_TINY_CLASSES; cls++) {
    class_state_t *cs = &classes[cls];
    for (uint32_t ss = 0; ss < cs->top_ss && ss < MAX_SS_PER_CLASS; ss++) {
      ss_meta(cls, ss)->state = SS_FROZEN;
      ss_meta(cls, ss)->on_cold_stack = 0; /* the stacks start afresh too */
      ss_meta(cls, ss)->due = 0;           /* as a decay pass may have left them */
    }
    cs->free_slabs = NULL;
    cs->cold_head = cs->cold_slabs = 0;
    cs->empty_head = 0;
    cs->carve_ss = SS_NONE;
  }
  lru_head = lru_tail = lru_count = 0;
}

/* In the child only the forking thread exists. Its heap is kept unless the fork came from
 * a signal handler that interrupted a change of it; the engine orphans the others. */
void hak_tiny_fork_child(void) {
  int lists_torn = hak_fork_child_reset_lock(&tiny_lock);
  hak_tiny_heap_t *self = hak_tiny_tls;
  if (self == &parked_heap && !(self = hak_heap_fork_unpark(&heaps)))
    self = hak_tiny_tls = &hak_tiny_empty_heap;
  if (self != &hak_tiny_empty_heap && !hak_heap_intact_in_child(&self->base))
    hak_tiny_tls = &hak_tiny_empty_heap;
  hak_heap_fork_child(&heaps, hak_tiny_tls != &hak_tiny_empty_heap ? hak_tiny_tls : NULL);
  if (lists_torn) freeze_superslabs();
}

void hak_tiny_stats(hak_tiny_stats_t *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&heaps.lock);
  for (hak_heap_t *b = heaps.all; b; b = b->next_all) {
    const hak_tiny_heap_t *h = hak_heap_tier(&heaps, b);
    out->refills += h->refills;
    out->overflows += h->overflows;
    out->remote_frees += h->remote_frees;
  }
  pthread_mutex_unlock(&heaps.lock);
  out->remote_frees += __atomic_load_n(&orphan_remote_frees, __ATOMIC_RELAXED);
  out->idle_flushes = __atomic_load_n(&heaps.parks, __ATOMIC_RELAXED);
  pthread_mutex_lock(&tiny_lock);
  for (unsigned cls = 0; cls < HAK_TINY_CLASSES; cls++) {
    const class_state_t *cs = &classes[cls];
    out->superslabs += cs->top_ss;
    for (uint32_t ss = 0; ss < cs->top_ss; ss++) {
      const ss_meta_t *m = ss_meta(cls, ss);
      if (m->state != SS_DECOMMITTED)
        out->resident_bytes += hak_os_resident(ss_base(cls, ss), HAK_TINY_SS_SIZE);
      if (m->state != SS_ACTIVE) {
        out->empty_superslabs++;
        out->decommitted_superslabs += m->state == SS_DECOMMITTED;
        continue;
      }
      uint32_t handed = ss == cs->carve_ss ? cs->carve_next : HAK_TINY_SLABS_PER_SS;
      out->slabs_in_use += handed - m->free_slabs;
    }
  }
  pthread_mutex_unlock(&tiny_lock);
}

uint64_t hak_tiny_foreign_frees(void) { return __atomic_load_n(&foreign_frees, __ATOMIC_RELAXED); }
