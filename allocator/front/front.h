/* The front end: size dispatch to the tiers and ownership from the address alone.
 * Tiny and Pool memory lives in one claimed range (mapped as used) [base, base + total): the low
 * half is Tiny's, the high half Pool's; everything else hakmem hands out is a Large mapping. */
#ifndef HAK_ALLOCATOR_FRONT_FRONT_H
#define HAK_ALLOCATOR_FRONT_FRONT_H

#include <stddef.h>
#include <stdint.h>

#include "allocator/internal/config.h"
#include "allocator/os_boundary/asan.h"
#include "allocator/pool/pool.h"
#include "allocator/tiny/tiny.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The claimed range [base, base + total): Tiny's region (hak_tiny_geom) is its first
 * hak_tiny_geom.size bytes, Pool's the rest. */
typedef struct {
  uintptr_t base;
  uintptr_t total;        /* hak_tiny_geom.size without Pool, 0 without Tiny */
  uintptr_t pool_size;    /* total - hak_tiny_geom.size: Pool's region, 0 without Pool */
  int ready;              /* Tiny is in use */
  uint64_t foreign_frees; /* frees of pointers outside every tier (atomic) */
} hak_front_t;

extern HAK_HIDDEN hak_front_t hak_front;

void *hak_front_malloc_slow(size_t n);
void hak_front_free_slow(void *p);
void *hak_front_calloc(size_t count, size_t size);
void *hak_front_realloc(void *p, size_t n);
void *hak_front_aligned(size_t align, size_t n, int zero);
int hak_front_posix_memalign(void **out, size_t align, size_t n);
void *hak_front_aligned_alloc(size_t align, size_t n);
void *hak_front_memalign(size_t align, size_t n);
void *hak_front_valloc(size_t n);
void *hak_front_pvalloc(size_t n);
void *hak_front_reallocarray(void *p, size_t count, size_t size);
size_t hak_front_usable(const void *p);
int hak_front_trim(size_t pad);
void hak_front_malloc_stats(void);
int hak_front_mallopt(int param, int value);
void hak_front_free_sized(void *p, size_t n, size_t align);

/* ASan builds: block p (or NULL), handed out for n bytes, is narrowed to them: the rest
 * of its usable size stays poisoned (internal/asan.h). */
void hak_front_asan_narrow(void *p, size_t n);

/* No readiness check: before initialisation every thread's caches are the empty ones, so
 * the pops miss and the slow path initialises. */
HAK_INLINE void *hak_front_malloc(size_t n) {
  void *p = NULL;
  if (HAK_LIKELY(n <= HAK_TINY_MAX)) {
    p = hak_tiny_pop(n);
  } else if (n <= HAK_POOL_MAX) {
    p = hak_pool_pop(n);
  }
  if (HAK_ASAN) { /* the pops always miss there */
    p = hak_front_malloc_slow(n);
    hak_front_asan_narrow(p, n);
    return p;
  }
  return HAK_LIKELY(p != NULL) ? p : hak_front_malloc_slow(n);
}

/* ---- Ownership: one base, one pair of range predicates, one lookup. ----
 * Offsets are taken from hak_tiny_geom.base. Pool exists only beside Tiny, right after
 * its region, so the one offset serves both checks; without Tiny its size and
 * hak_front.total are 0 (every pointer is outside both), without Pool total is Tiny's
 * size. */

/* `off` lies in Tiny's region. */
HAK_INLINE int hak_in_tiny(uintptr_t off) { return off < hak_tiny_geom.size; }

/* `off` lies in Pool's region (false for Tiny's offsets too: the subtraction wraps). */
HAK_INLINE int hak_in_pool(uintptr_t off) { return off - hak_tiny_geom.size < hak_front.pool_size; }

typedef enum {
  HAK_OWNER_FOREIGN, /* no block hakmem handed out could be there */
  HAK_OWNER_TINY,    /* in a SuperSlab Tiny handed out; off: offset in the Tiny region */
  HAK_OWNER_POOL,    /* in a Pool span in use; off: offset in the Pool region */
  HAK_OWNER_LARGE,   /* a live Large block */
} hak_owner_kind_t;

typedef struct {
  hak_owner_kind_t kind;
  uintptr_t off; /* for Tiny and Pool */
} hak_owner_t;

/* Which tier p belongs to, from its address and hakmem's own tables only: no read of
 * memory hakmem did not map, no system call. Used by realloc, malloc_usable_size and free_sized;
 * free uses the same predicates, and for Large the lookup inside hak_large_free. */
hak_owner_t hak_owner_of(const void *p);

HAK_INLINE void hak_front_free(void *p) {
  uintptr_t off = (uintptr_t)p - hak_tiny_geom.base;
  if (HAK_LIKELY(hak_in_tiny(off))) {
    hak_tiny_free(p, off);
    return;
  }
  /* No hak_in_pool test first: the push takes only offsets below the part of the Pool
   * region handed out so far (which a Tiny offset, wrapped by the subtraction, is not). */
  if (hak_pool_push(p, off - hak_tiny_geom.size)) return;
  hak_front_free_slow(p);
}

#ifdef __cplusplus
}
#endif

#endif /* HAK_ALLOCATOR_FRONT_FRONT_H */
