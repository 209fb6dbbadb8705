/* The malloc family's slow paths: tier dispatch for every function, glibc's semantics
 * for sizes, alignments and errno, and the decay passes run from Large calls.
 * Initialisation and fork are in init.c, statistics in stats.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <string.h>

#include "allocator/front/init.h"
#include "allocator/hakmem.h"
#include "allocator/internal/clock.h"
#include "allocator/internal/link.h"
#include "allocator/internal/log.h"
#include "allocator/internal/purge.h"
#include "allocator/internal/trace.h"
#include "allocator/large/large.h"
#include "allocator/os_boundary/os.h"

static uint64_t maintain_due_ms;
static int maintain_waiting; /* the last pass's answer */

/* Decay work of every tier, run from the purge thread, Large calls and malloc_trim; at
 * most a few times per decay period unless forced, so a Large malloc+free pair stays
 * cheap. */
static HAK_COLD int maintain_pass(uint64_t now, int force);

int hak_front_maintain(int force) {
  uint64_t now = hak_now_ms();
  if (!force && now < __atomic_load_n(&maintain_due_ms, __ATOMIC_RELAXED)) {
    return __atomic_load_n(&maintain_waiting, __ATOMIC_RELAXED);
  }
  return maintain_pass(now, force);
}

/* The pass itself, out of line: a Large malloc+free pair mostly finds none due. */
static int maintain_pass(uint64_t now, int force) {
  __atomic_store_n(&maintain_due_ms, now + hak_decay_step_ms(), __ATOMIC_RELAXED);
  /* The pass runs inside malloc, free and their refusals, which answer in errno: what
   * its own system calls leave there must not reach the caller. */
  int saved = errno;
  int waiting = 0;
  hak_purge_defer_begin(); /* the passes change other heaps and hold the registry locks */
  if (hak_front.ready) waiting |= hak_tiny_maintain(force);
  if (hak_front_pool_ready()) waiting |= hak_pool_maintain(force);
  waiting |= hak_large_maintain(force);
  hak_purge_defer_end();
  __atomic_store_n(&maintain_waiting, waiting, __ATOMIC_RELAXED);
  errno = saved;
  return waiting;
}

static void *large_malloc(size_t n, size_t align, int zero) {
  void *p = hak_large_malloc(n, align, zero);
  if (HAK_ASAN) hak_front_asan_narrow(p, n);
  hak_front_maintain(0);
  return p;
}

void *hak_front_malloc_slow(size_t n) {
  hak_front_ensure_init();
  void *p = NULL;
  if (n <= HAK_TINY_MAX && hak_front.ready) {
    p = hak_tiny_malloc(n);
  } else if (n <= HAK_POOL_MAX && hak_front_pool_ready()) {
    p = hak_pool_malloc(n);
  }
  /* Large also catches what a full Tiny or Pool region cannot serve. */
  return p ? p : large_malloc(n, 16, 0);
}

static void foreign_free(void *p) {
  if (HAK_CHECKS) hak_fatal("free of a pointer hakmem does not own", p, NULL);
  __atomic_fetch_add(&hak_front.foreign_frees, 1, __ATOMIC_RELAXED);
  HAK_TRACE_ROUTE(HAK_ROUTE_FOREIGN, p, 1);
}

hak_owner_t hak_owner_of(const void *p) {
  uintptr_t off = (uintptr_t)p - hak_tiny_geom.base;
  if (hak_in_tiny(off))
    return (hak_owner_t){hak_tiny_owns(off) ? HAK_OWNER_TINY : HAK_OWNER_FOREIGN, off};
  if (hak_in_pool(off)) {
    uintptr_t pool_off = off - hak_tiny_geom.size;
    int cls = hak_pool_registry_class(pool_off);
    return (hak_owner_t){cls >= 0 ? HAK_OWNER_POOL : HAK_OWNER_FOREIGN, pool_off};
  }
  return (hak_owner_t){hak_large_usable(p) ? HAK_OWNER_LARGE : HAK_OWNER_FOREIGN, 0};
}

/* Every free the inline paths did not take: Pool blocks of other threads (and all of
 * them without thread lists or with checks), Large blocks, and pointers of no tier. A
 * pointer in Pool's region goes to Pool whatever the lookup says, so Pool's own checks
 * name what is wrong with it. */
void hak_front_free_slow(void *p) {
  if (p == NULL) return;
  uintptr_t off = (uintptr_t)p - hak_tiny_geom.base;
  if (hak_in_pool(off)) {
    hak_pool_free(p, off - hak_tiny_geom.size);
    return;
  }
  int freed = hak_large_free(p); /* the Large lookup itself; it refuses anything else */
  if (freed <= 0) {
    if (freed < 0 && (HAK_CHECKS || hak_link_on)) hak_fatal("double free of", p, "large");
    foreign_free(p);
    return;
  }
  hak_front_maintain(0);
}

/* Usable bytes of p, already classified as `o` (0 for no block). */
static size_t usable_of(const void *p, hak_owner_t o) {
  switch (o.kind) {
    case HAK_OWNER_TINY:
      return hak_tiny_usable(o.off);
    case HAK_OWNER_POOL:
      return hak_pool_usable(o.off);
    case HAK_OWNER_LARGE:
      return hak_large_usable(p);
    default:
      return 0;
  }
}

/* Debug builds: whether p, classified as `o`, is a block that was freed already. */
static int block_freed(const void *p, hak_owner_t o) {
  switch (o.kind) {
    case HAK_OWNER_TINY:
      return hak_tiny_block_freed(p, o.off);
    case HAK_OWNER_POOL:
      return hak_pool_block_freed(p, o.off);
    default:
      return hak_large_freed(p);
  }
}

void hak_front_asan_narrow(void *p, size_t n) {
  if (p) hak_asan_narrow(p, n, usable_of(p, hak_owner_of(p)));
}

/* A program that asked for the usable size may use all of it: ASan builds unpoison it. */
size_t hak_front_usable(const void *p) {
  size_t usable = p ? usable_of(p, hak_owner_of(p)) : 0;
  hak_asan_unpoison(p, usable);
  return usable;
}

void *hak_front_calloc(size_t count, size_t size) {
  size_t n;
  if (__builtin_mul_overflow(count, size, &n)) {
    errno = ENOMEM;
    return NULL;
  }
  if (n > HAK_POOL_MAX) {
    hak_front_ensure_init();
    return large_malloc(n, 16, 1); /* fresh mappings are zero: no pages touched */
  }
  void *p = hak_front_malloc(n);
  if (p) memset(p, 0, n);
  return p;
}

void *hak_front_reallocarray(void *p, size_t count, size_t size) {
  size_t n;
  if (__builtin_mul_overflow(count, size, &n)) {
    errno = ENOMEM;
    return NULL;
  }
  return hak_front_realloc(p, n);
}

void *hak_front_realloc(void *p, size_t n) {
  if (p == NULL) return hak_front_malloc(n);
  if (n == 0) { /* glibc: frees and returns NULL */
    hak_front_free(p);
    return NULL;
  }
  hak_owner_t o = hak_owner_of(p);
  size_t usable = usable_of(p, o);
  if (HAK_CHECKS && block_freed(p, o)) hak_fatal("realloc of a freed pointer", p, NULL);
  if (usable == 0) {
    if (HAK_CHECKS) hak_fatal("realloc of a pointer hakmem does not own", p, NULL);
    __atomic_fetch_add(&hak_front.foreign_frees, 1, __ATOMIC_RELAXED);
    errno = EINVAL;
    return NULL;
  }
  hak_asan_unpoison(p, usable); /* copied or moved whole below */
  if (o.kind == HAK_OWNER_LARGE && n > HAK_POOL_MAX) {
    void *q = hak_large_realloc(p, n);
    if (HAK_ASAN) hak_front_asan_narrow(q, n);
    if (q) return q;
  } else if (n <= usable && n > usable / 2) {
    if (HAK_ASAN) hak_front_asan_narrow(p, n);
    return p; /* fits, and not so much smaller that a smaller class would be worth it */
  }
  void *q = hak_front_malloc(n);
  if (!q) return NULL; /* errno is ENOMEM and p is untouched */
  memcpy(q, p, n < usable ? n : usable);
  hak_front_free(p);
  return q;
}

/* A Pool block of at least n bytes aligned to `align` (<= HAK_POOL_PAGE_SIZE): spans start
 * on 64 KiB boundaries, so every block of a class whose size is a multiple of `align` is
 * aligned to it (the powers of two up to 64 KiB are classes). A page-aligned 16-byte
 * block thus costs a 4 KiB block, not a mapping of its own. */
static void *pool_aligned(size_t align, size_t n) {
  size_t want = n > align ? n : align;
  if (want <= HAK_POOL_MIN) want = HAK_POOL_MIN + 1;
  for (unsigned cls = hak_pool_class_of(want); cls < HAK_POOL_CLASSES; cls++) {
    if (hak_pool_class_size[cls] % align == 0) return hak_pool_malloc(hak_pool_class_size[cls]);
  }
  return NULL;
}

/* Tiny blocks of a class whose size is a multiple of `align` (<= 128) are aligned to it:
 * slabs are 64 KiB aligned and blocks start 128 bytes in. Pool serves alignments up to
 * 64 KiB (pool_aligned); Large the rest. A zero-size request gets a block like any other. */
void *hak_front_aligned(size_t align, size_t n, int zero) {
  if (align <= 16) return zero ? hak_front_calloc(1, n) : hak_front_malloc(n);
  hak_front_ensure_init();
  void *p = NULL;
  if (align <= 128 && n <= HAK_TINY_MAX && hak_front.ready) {
    unsigned cls = hak_tiny_class_of(n > align ? n : align);
    while (hak_tiny_class_size[cls] % align) cls++;
    p = hak_tiny_malloc(hak_tiny_class_size[cls]);
  } else if (align <= HAK_POOL_PAGE_SIZE && n <= HAK_POOL_MAX && hak_front_pool_ready()) {
    p = pool_aligned(align, n);
  }
  if (!p) return large_malloc(n, align, zero);
  if (HAK_ASAN) hak_front_asan_narrow(p, n);
  if (zero) memset(p, 0, n);
  return p;
}

static int power_of_two(size_t a) { return a != 0 && (a & (a - 1)) == 0; }

/* Returns the error code and, on failure, also leaves it in errno, as glibc does (programs
 * check either). A success leaves errno as it was. */
int hak_front_posix_memalign(void **out, size_t align, size_t n) {
  if (!power_of_two(align) || align < sizeof(void *)) return EINVAL;
  int saved = errno;
  void *p = hak_front_aligned(align, n, 0);
  if (!p) {
    errno = ENOMEM;
    return ENOMEM;
  }
  errno = saved;
  *out = p;
  return 0;
}

void *hak_front_aligned_alloc(size_t align, size_t n) {
  if (!power_of_two(align)) {
    errno = EINVAL;
    return NULL;
  }
  return hak_front_aligned(align, n, 0);
}

/* glibc: an alignment above SIZE_MAX / 2 + 1 is EINVAL (no power of two is); up to it, a
 * request that cannot be served is ENOMEM. */
void *hak_front_memalign(size_t align, size_t n) {
  if (align > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return NULL;
  }
  size_t a = 1; /* glibc rounds a bad alignment up to the next power of two */
  while (a < align) a <<= 1;
  return hak_front_aligned(a, n, 0);
}

void *hak_front_valloc(size_t n) { return hak_front_aligned(hak_os_page_size(), n, 0); }

void *hak_front_pvalloc(size_t n) {
  size_t page = hak_os_page_size();
  if (n > SIZE_MAX - page) {
    errno = ENOMEM;
    return NULL;
  }
  return hak_front_aligned(page, n ? (n + page - 1) & ~(page - 1) : page, 0);
}

void hak_front_free_sized(void *p, size_t n, size_t align) {
  if (HAK_CHECKS && p) {
    size_t usable = usable_of(p, hak_owner_of(p));
    HAK_CHECK(usable == 0 || n <= usable, "free_sized with a size larger than the block at", p,
              NULL);
    HAK_CHECK(align == 0 || ((uintptr_t)p & (align - 1)) == 0,
              "free_aligned_sized with an alignment the block does not have at", p, NULL);
  }
  hak_front_free(p);
}

/* Every free page goes back now: the calling thread's caches first (its own, so safe to
 * take), then a forced pass (other live heaps' remote frees, dead heaps, every empty
 * SuperSlab, free slab, span and cached mapping). Returns 1 when memory went back. */
int hak_front_trim(size_t pad) {
  (void)pad;
  hak_os_counters_t before, after;
  hak_os_counters(&before);
  hak_heap_remote_flush_all(); /* the batches of remote frees this thread holds */
  if (hak_front.ready) hak_tiny_flush_thread();
  if (hak_front_pool_ready()) hak_pool_flush_thread();
  hak_front_maintain(1);
  hak_os_counters(&after);
  return after.calls[HAK_OS_DECOMMIT] + after.calls[HAK_OS_RELEASE] >
         before.calls[HAK_OS_DECOMMIT] + before.calls[HAK_OS_RELEASE];
}

/* glibc's tunables have no meaning here; the ones programs commonly set are accepted. */
int hak_front_mallopt(int param, int value) {
  (void)value;
  switch (param) {
    case M_TRIM_THRESHOLD:
    case M_TOP_PAD:
    case M_MMAP_THRESHOLD:
    case M_MMAP_MAX:
    case M_ARENA_MAX:
    case M_ARENA_TEST:
    case M_PERTURB:
    case M_CHECK_ACTION:
    case M_MXFAST:
      return 1;
    default:
      return 0;
  }
}
