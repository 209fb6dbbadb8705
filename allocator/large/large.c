/* Large tier: mappings, the page map that proves ownership, and the BigCache. */
#define _GNU_SOURCE
#include "allocator/large/large.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "allocator/internal/clock.h"
#include "allocator/internal/fork.h"
#include "allocator/internal/options.h"
#include "allocator/internal/purge.h"
#include "allocator/internal/trace.h"
#include "allocator/os_boundary/os.h"

#define L1_BITS 17 /* address bits 47..30 */
#define L2_BITS 18 /* address bits 29..12 */
#define PAGE_SHIFT 12
#define CACHE_CLASSES 192 /* 4 per power of two up to 2^48 */
#define CACHE_SLOTS 8
#define HEADER_MAGIC 0x6861b16b10c4a11dULL

typedef struct {
  uint64_t magic;  /* HEADER_MAGIC ^ user address: a live block's header */
  char *map_base;  /* the mapping the block sits in */
  size_t map_size; /* its size (page multiple) */
  void *user;      /* the address handed out, 64 bytes or an alignment past map_base */
  char pad[HAK_LARGE_HEADER - 32];
} large_header_t;

HAK_STATIC_ASSERT(sizeof(large_header_t) == HAK_LARGE_HEADER, "large header size");

typedef struct {
  char *base;        /* a freed mapping kept for reuse */
  size_t size;       /* its size */
  uint64_t freed_ms; /* when it was freed (the decay's clock) */
} cache_entry_t;

static large_header_t **page_map[1u << L1_BITS];
static pthread_mutex_t large_lock = PTHREAD_MUTEX_INITIALIZER;
static cache_entry_t cache[CACHE_CLASSES][CACHE_SLOTS];
static uint8_t cache_count[CACHE_CLASSES];
static uint64_t cached_bytes, cached_blocks, live_blocks, live_bytes, cache_hits, cache_misses;

/* Mappings are sized to the page, not to their cache class: rounding them up (to four
 * classes per power of two) cost no memory but up to 25% more address space, which is
 * what an address-space limit counts. *cls is the cache class, four per power of two; a
 * cached mapping serves a request of its class only if it is big enough. */
static size_t class_round(size_t m, unsigned *cls) {
  size_t page = hak_os_page_size();
  m = (m + page - 1) & ~(page - 1);
  unsigned bit = 63u - (unsigned)__builtin_clzll((m - 1) | 1);
  unsigned q = (unsigned)((m - 1) >> (bit >= 2 ? bit - 2 : 0)) & 3u;
  *cls = bit * 4 + q;
  if (*cls >= CACHE_CLASSES) *cls = CACHE_CLASSES - 1;
  return m;
}

/* ---- The page map (writers hold large_lock; readers are lock-free). ---- */

static large_header_t **map_slot(const void *p, int create) {
  uintptr_t a = (uintptr_t)p;
  uintptr_t i1 = a >> (PAGE_SHIFT + L2_BITS);
  if (i1 >= (1u << L1_BITS)) return NULL;
  large_header_t **l2 = __atomic_load_n(&page_map[i1], __ATOMIC_ACQUIRE);
  if (!l2) {
    void *fresh;
    if (!create || hak_os_map(sizeof(void *) << L2_BITS, 0, &fresh) != 0) return NULL;
    l2 = fresh;
    __atomic_store_n(&page_map[i1], l2, __ATOMIC_RELEASE);
  }
  return &l2[(a >> PAGE_SHIFT) & ((1u << L2_BITS) - 1)];
}

static large_header_t *lookup(const void *p) {
  if (((uintptr_t)p & 15) != 0) return NULL;
  large_header_t **slot = map_slot(p, 0);
  if (!slot) return NULL;
  large_header_t *h = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  if (!h || h->user != p || h->magic != (HEADER_MAGIC ^ (uintptr_t)p)) return NULL;
  return h;
}

/* ---- Unmapping (large_lock held). ---- */

/* A mapping the kernel refused to unmap (munmap fails with ENOMEM when splitting a merged
 * area would pass vm.max_map_count): its pages are given back at once, and the range is
 * kept on this list, threaded through its own first bytes, until a retry succeeds. */
typedef struct unreleased {
  struct unreleased *next; /* the next refused mapping */
  size_t size;             /* this one's size */
} unreleased_t;

static unreleased_t *unreleased;
static uint64_t unreleased_bytes;

static void release_mapping(char *base, size_t size) {
  if (hak_os_release(base, size) == 0) return;
  hak_os_decommit(base, size); /* if this fails too, the pages stay: still accounted */
  unreleased_t *u = (unreleased_t *)base;
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

/* ---- The BigCache (large_lock held). ---- */

static void cache_evict(unsigned cls, unsigned slot) {
  cache_entry_t e = cache[cls][slot];
  cache[cls][slot] = cache[cls][--cache_count[cls]];
  cached_bytes -= e.size;
  __atomic_store_n(&cached_blocks, cached_blocks - 1, __ATOMIC_RELAXED);
  release_mapping(e.base, e.size);
}

static int cache_put(char *base, size_t size) {
  unsigned cls;
  class_round(size, &cls);
  uint64_t budget = (uint64_t)hak_opt(HAK_OPT_BIGCACHE_MB) << 20;
  if (size > budget) return 0;
  while (cached_bytes + size > budget) {
    unsigned victim = 0; /* the class holding the most bytes gives up an entry */
    for (unsigned c = 1; c < CACHE_CLASSES; c++) {
      if (cache_count[c] && (!cache_count[victim] || c > victim)) victim = c;
    }
    if (!cache_count[victim]) return 0;
    cache_evict(victim, 0);
  }
  if (cache_count[cls] == CACHE_SLOTS) cache_evict(cls, 0);
  cache[cls][cache_count[cls]++] = (cache_entry_t){base, size, hak_now_ms()};
  cached_bytes += size;
  __atomic_store_n(&cached_blocks, cached_blocks + 1, __ATOMIC_RELAXED);
  return 1;
}

/* The newest cached mapping of the class, or of one of the next classes up to twice the
 * size: a slightly bigger block that needs no system call beats a fresh mapping.
 * *size becomes the mapping's size. */
static char *cache_take(unsigned cls, size_t *size) {
  for (unsigned c = cls; c < cls + 5 && c < CACHE_CLASSES; c++) {
    if (cache_count[c] == 0) continue;
    cache_entry_t *e = &cache[c][cache_count[c] - 1];
    if (e->size < *size) continue;
    cache_count[c]--;
    *size = e->size;
    cached_bytes -= e->size;
    __atomic_store_n(&cached_blocks, cached_blocks - 1, __ATOMIC_RELAXED);
    return e->base;
  }
  return NULL;
}

static void maintain_locked(int force) {
  if (unreleased) retry_unreleased();
  uint64_t now = hak_now_ms();
  for (unsigned c = 0; c < CACHE_CLASSES; c++) {
    for (unsigned i = cache_count[c]; i-- > 0;) {
      if (hak_decay_due(cache[c][i].freed_ms, now, force)) cache_evict(c, i);
    }
  }
}

int hak_large_maintain(int force) {
  if (!force && __atomic_load_n(&cached_blocks, __ATOMIC_RELAXED) == 0 &&
      __atomic_load_n(&unreleased_bytes, __ATOMIC_RELAXED) == 0) {
    return 0;
  }
  pthread_mutex_lock(&large_lock);
  maintain_locked(force);
  int waiting = cached_blocks != 0 || unreleased_bytes != 0;
  pthread_mutex_unlock(&large_lock);
  return waiting;
}

/* ---- Blocks. ---- */

static void *place(char *base, size_t map_size, size_t align) {
  uintptr_t user = ((uintptr_t)base + HAK_LARGE_HEADER + align - 1) & ~(uintptr_t)(align - 1);
  large_header_t *h = (large_header_t *)(user - HAK_LARGE_HEADER);
  h->map_base = base;
  h->map_size = map_size;
  h->user = (void *)user;
  h->magic = HEADER_MAGIC ^ user;
  large_header_t **slot = map_slot((void *)user, 1);
  if (!slot) return NULL;
  __atomic_store_n(slot, h, __ATOMIC_RELEASE);
  live_blocks++;
  live_bytes += map_size;
  return (void *)user;
}

/* A block at least this big, or aligned beyond this, cannot be mapped in a 47-bit user
 * address space with its slack; refusing it first keeps every sum below from wrapping. */
#define LARGE_LIMIT ((size_t)1 << 46)

void *hak_large_malloc(size_t n, size_t align, int zero) {
  if (align < 16) align = 16;
  /* The block starts at the first multiple of `align` at least a header into a page-aligned
   * mapping: at most max(align, header) bytes in. A zero-size block still needs a byte
   * inside its mapping, or its address would be the next page's. */
  size_t slack = align > HAK_LARGE_HEADER ? align : HAK_LARGE_HEADER;
  if (n == 0) n = 1;
  if (align > LARGE_LIMIT || n > LARGE_LIMIT) {
    errno = ENOMEM;
    return NULL;
  }
  unsigned cls;
  size_t size = class_round(n + slack, &cls);
  pthread_mutex_lock(&large_lock);
  char *base = cache_take(cls, &size);
  int cache_hit = base != NULL;
  if (base) {
    cache_hits++;
    HAK_TRACE_ROUTE(HAK_ROUTE_BIGCACHE, base, 0);
  } else {
    cache_misses++;
    pthread_mutex_unlock(&large_lock);
    void *fresh;
    if (hak_os_map(size, 0, &fresh) != 0) {
      errno = ENOMEM;
      return NULL;
    }
    HAK_TRACE_ROUTE(HAK_ROUTE_LARGE_MAP, fresh, 0);
    base = fresh;
    pthread_mutex_lock(&large_lock);
  }
  void *p = place(base, size, align);
  if (!p && !cache_put(base, size)) release_mapping(base, size);
  pthread_mutex_unlock(&large_lock);
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  /* A cached mapping may hold old data: clear what the caller can see. */
  if (zero && cache_hit) memset(p, 0, n);
  return p;
}

static void unregister(large_header_t *h) {
  __atomic_store_n(map_slot(h->user, 0), NULL, __ATOMIC_RELEASE);
  h->magic = 0;
  live_blocks--;
  live_bytes -= h->map_size;
}

int hak_large_free(void *p) {
  pthread_mutex_lock(&large_lock);
  large_header_t *h = lookup(p);
  if (!h) {
    pthread_mutex_unlock(&large_lock);
    return 0;
  }
  char *base = h->map_base;
  size_t size = h->map_size;
  unregister(h);
  HAK_TRACE_ROUTE(HAK_ROUTE_BIGCACHE, p, 1);
  int cached = cache_put(base, size);
  if (!cached) release_mapping(base, size);
  pthread_mutex_unlock(&large_lock);
  if (cached) hak_purge_kick(size); /* a cached mapping starts its decay */
  return 1;
}

size_t hak_large_usable(const void *p) {
  large_header_t *h = lookup(p);
  return h ? (size_t)(h->map_base + h->map_size - (char *)p) : 0;
}

/* Grows a block into a mapping with headroom, so the next growth steps of a growing
 * buffer fit without any work. A cached mapping is used when one fits (a copy, but no
 * system call, and the old mapping goes to the cache for the next buffer); otherwise the
 * pages move into a fresh mapping (no byte copied). The destination and its page-map slot
 * exist before anything moves, so nothing can fail half-way. */
static void *move_grow(large_header_t *h, size_t n) {
  unsigned cls;
  size_t size = class_round(2 * n + HAK_LARGE_HEADER, &cls);
  void *old_user = h->user;
  char *old_base = h->map_base;
  size_t old_size = h->map_size;
  char *cached = cache_take(cls, &size);
  if (cached) {
    if (!map_slot(cached + HAK_LARGE_HEADER, 1)) {
      if (!cache_put(cached, size)) release_mapping(cached, size);
      return NULL;
    }
    memcpy(cached + HAK_LARGE_HEADER, old_user, old_size - HAK_LARGE_HEADER);
    unregister(h);
    if (!cache_put(old_base, old_size)) release_mapping(old_base, old_size);
    return place(cached, size, 16);
  }
  /* In place if the address space after the block is free: one call, nothing moves. */
  void *dest;
  if (hak_os_remap(old_base, old_size, size, 0, &dest) == 0) {
    live_bytes += size - old_size;
    h->map_size = size;
    return old_user;
  }
  if (hak_os_map(size, 0, &dest) != 0) return NULL;
  if (!map_slot((char *)dest + HAK_LARGE_HEADER, 1) ||
      hak_os_remap_to(old_base, old_size, size, dest) != 0) {
    release_mapping(dest, size);
    return NULL;
  }
  /* h is unmapped now (its bytes moved to dest): drop the old entry by address. */
  __atomic_store_n(map_slot(old_user, 0), NULL, __ATOMIC_RELEASE);
  live_blocks--;
  live_bytes -= old_size;
  return place(dest, size, 16);
}

void *hak_large_realloc(void *p, size_t n) {
  pthread_mutex_lock(&large_lock);
  large_header_t *h = lookup(p);
  void *result = NULL;
  if (h && (char *)p == h->map_base + HAK_LARGE_HEADER && n <= LARGE_LIMIT) {
    unsigned cls;
    size_t size = class_round(n + HAK_LARGE_HEADER, &cls);
    void *same;
    if (size <= h->map_size && size * 2 > h->map_size) {
      result = p; /* fits, and not so much smaller that giving pages back is worth a call */
    } else if (size > h->map_size) {
      result = move_grow(h, n);
    } else if (hak_os_remap(h->map_base, h->map_size, size, 0, &same) == 0) {
      live_bytes -= h->map_size - size; /* shrinking in place always works */
      h->map_size = size;
      result = p;
    }
  }
  pthread_mutex_unlock(&large_lock);
  if (!result) errno = ENOMEM;
  /* A move may have cached the old mapping (at least 64 KiB). */
  if (result && result != p) hak_purge_kick((uint64_t)64 << 10);
  return result;
}

/* A thread was changing the BigCache at the fork: its entries are dropped (their mappings
 * stay, unused). Page-map slots are single stores, consistent at any instant. */
void hak_large_fork_child(void) {
  if (hak_fork_child_reset_lock(&large_lock)) {
    memset(cache_count, 0, sizeof cache_count);
    cached_bytes = 0;
    cached_blocks = 0;
  }
}

/* Resident bytes of every live block's mapping (a walk of the page map: statistics
 * only) and of every cached mapping. large_lock held. */
static uint64_t resident_locked(void) {
  uint64_t bytes = 0;
  for (size_t i1 = 0; i1 < (1u << L1_BITS); i1++) {
    large_header_t **l2 = page_map[i1];
    if (!l2) continue;
    for (size_t i2 = 0; i2 < (1u << L2_BITS); i2++) {
      large_header_t *h = l2[i2];
      if (h) bytes += hak_os_resident(h->map_base, h->map_size);
    }
  }
  for (unsigned c = 0; c < CACHE_CLASSES; c++) {
    for (unsigned i = 0; i < cache_count[c]; i++) {
      bytes += hak_os_resident(cache[c][i].base, cache[c][i].size);
    }
  }
  return bytes;
}

void hak_large_stats(hak_large_stats_t *out) {
  pthread_mutex_lock(&large_lock);
  *out = (hak_large_stats_t){live_blocks, live_bytes,   cached_blocks,    cached_bytes,
                             cache_hits,  cache_misses, unreleased_bytes, resident_locked()};
  pthread_mutex_unlock(&large_lock);
}
